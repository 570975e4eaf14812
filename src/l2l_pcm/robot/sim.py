"""The Scorbot ER-VII with physics: a MuJoCo model whose joint controllers execute the network's commands.

The robot task scores the end-effector path that the commanded joint velocities produce. With
:class:`~l2l_pcm.robot.arm.ScorbotER7` that path is the closed-form kinematics of the integrated commands: a
perfect arm. :class:`ScorbotMJX` instead sends the commands to the arm's own controllers and simulates what
the arm does, with MuJoCo's JAX port MJX (Todorov et al. 2012, IROS; mujoco.readthedocs.io/en/stable/mjx.html),
batched with ``vmap``:

* **Geometry** built here from primitives so that the tool point *is* the authors' closed form at every pose
  (a test, to 1e-4 m): base yaw, shoulder, elbow and wrist pitch hinges at the constants of ``ScorbotER7``
  (d1 = 358.5 mm, a1 = 50 mm, a2 = 300 mm; these three agree across the published sources; a3 = 350 mm,
  a4 = 220 mm, the lateral offsets, as in Ortner et al.'s code), and a wrist roll on the tool axis.
* **Masses**: the moving links' masses of the CAD-exported Scorbot ER-VII model (URDF in
  github.com/rorromr/scorbot, ``scorbot_description``; the same values are in RTC-research-group/ED-Scorbot):
  body 9.79 kg, upper arm 5.45 kg, forearm 2.19 kg, flange 0.24 kg, gripper 1.59 kg + 2 × 0.1 kg fingers.
  Inertias are those of uniform-density primitives of this geometry carrying these masses.
* **Joint ranges**: the ER-VII manual's total travels (base 310°, shoulder 170°, elbow 225°, pitch 180°,
  roll 360°; Eshed Robotec, Scorbot-ER VII User's Manual, 1996, as quoted by A.-G. Ungureanu, thesis, 2025,
  Table 4.1), taken symmetric about the home pose.
* **Motors**: DC servo motors behind gear trains, driven by a voltage of at most ±24 V (Eshed Robotec, ACL Reference
  Guide for Controller-A, 1995, p. 7-3: DAC ±5000 ≙ ±24 V). Pittman GM9434 on axes 1–3 (torque constant 0.0365
  N·m/A, 2.96 Ω, rotor 4.17e-6 kg·m²) and GM9413 on the wrist (0.0395 N·m/A, 8.33 Ω, 2.80e-6 kg·m²), the constants
  of github.com/rorromr/scorbot's EtherCAT retrofit (which motor sits on which axis is not stated there: the larger
  current limit of axes 1–3 suggests this assignment). No gear ratio of the ER-VII is published; those of its
  successor, the ER-IX (214.1, 243.8, 213.3, 180, 100; SCORBOT-ER IX User's Manual, p. 6-7), are used. A motor gives
  the joint τ = n·k_t/R·(V − n·k_t·q̇): the back-EMF term is a joint damping n²k_t²/R (integrated implicitly by
  MuJoCo) and the rotor adds n²·J_rotor of reflected inertia (``armature``). Voltage saturation thus limits torque
  *and* speed (no-load 24 V/(n·k_t) ≈ 3.1 rad/s at the base), as on the real arm.
* **Controller**: one PID position loop per axis, as Controller-A runs (ACL Reference Guide, pp. 7-3 f.: P, I
  and D parameters per axis), its output the motor voltage. The network's velocity commands arrive every
  10 ms (Controller-A's trajectory tick, ACL p. 7-5; the task's ``velocity_dt_s``) and are integrated into
  the position set-points of base and shoulder (clipped to the task's safe space); elbow, pitch and roll
  hold their home angles; the commanded velocity is fed forward into the D term. The gains are not
  published; :class:`ScorbotDynamics` documents the choice. The integrators start at the voltage that holds
  the home pose against gravity: the arm has been standing at home before the task starts.

No collision is simulated: the table (``table=True``) is a visual geom of the MJCF only, and the trajectories
that reach below it are counted (:func:`below_table`), because the authors' targets reach below the table top
with the shoulder's ±70°.
Optional extra ``sim`` (``mujoco==3.17.0``, ``mujoco-mjx==3.17.0``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from l2l_pcm.errors import ConfigError
from l2l_pcm.robot.arm import ScorbotER7

JOINTS = ("base", "shoulder", "elbow", "wrist_pitch", "wrist_roll")


def _import_mujoco():
    """MuJoCo and MJX, or one clear error naming the extra that installs them."""
    import contextlib
    import io

    try:
        # MJX 3.17 prints "Failed to import warp" (its optional GPU backend) to stdout on import, which would
        # break a `--json` line: keep it off stdout
        with contextlib.redirect_stdout(io.StringIO()):
            import mujoco
            from mujoco import mjx
    except ImportError:
        raise ConfigError(
            "the MuJoCo arm needs the optional extra: pip install 'l2l-pcm[sim]' (mujoco and mujoco-mjx 3.17.0)"
        ) from None
    return mujoco, mjx


@dataclasses.dataclass(frozen=True)
class ScorbotDynamics:
    """Every physical and control constant of the simulated arm (joint order: base, shoulder, elbow, wrist
    pitch, wrist roll). Sources in the module docstring; where none exists, the field says so."""

    link_masses_kg: tuple[float, float, float, float, float] = (9.7868, 5.4535, 2.194, 0.24441, 1.79126)
    """Body (turns with the base), upper arm, forearm, flange (pitch), gripper with fingers (roll): CAD masses."""
    gear_ratios: tuple[float, ...] = (214.13, 243.8, 213.33, 180.0, 100.0)
    """Motor turns per joint turn (the ER-IX's published ratios; the ER-VII's are not published)."""
    torque_constants_Nm_per_A: tuple[float, ...] = (0.0365, 0.0365, 0.0365, 0.0395, 0.0395)
    """Motor torque constant k_t (= back-EMF constant in SI units)."""
    winding_resistances_ohm: tuple[float, ...] = (2.96, 2.96, 2.96, 8.33, 8.33)
    rotor_inertias_kgm2: tuple[float, ...] = (4.17e-6, 4.17e-6, 4.17e-6, 2.80e-6, 2.80e-6)
    """GM9434 and GM9413 rotor inertias (github.com/rorromr/scorbot, ``matlab/motor_code.m``)."""
    supply_voltage_V: float = 24.0
    joint_ranges_deg: tuple[tuple[float, float], ...] = (
        (-155.0, 155.0),
        (-85.0, 85.0),
        (-112.5, 112.5),
        (-90.0, 90.0),
        (-180.0, 180.0),
    )
    viscous_friction_Nms: tuple[float, ...] = (0.5, 0.5, 0.5, 0.1, 0.05)
    """Gear-train viscous friction at the joint (N·m·s/rad). Not published: an assumption, small next to the
    back-EMF damping n²k_t²/R (20.6 N·m·s/rad at the base)."""
    kp_V_per_rad: tuple[float, ...] = (300.0, 300.0, 300.0, 150.0, 50.0)
    """Proportional gain. Chosen here (Controller-A's defaults are not printed in its guide): about a 5 Hz
    position loop on the joint-side inertia, so a 0.08 rad error saturates the 24 V drive."""
    ki_V_per_rad_s: tuple[float, ...] = (600.0, 600.0, 600.0, 300.0, 100.0)
    """Integral gain (removes the gravity droop; the integrator is clamped to the supply voltage)."""
    kd_V_s_per_rad: tuple[float, ...] = (2.0, 2.0, 2.0, 1.0, 0.5)
    """Derivative gain on the velocity error (commanded − measured); the motors' back-EMF adds the rest."""
    timestep_s: float = 0.005
    """Physics and controller step (two per 10 ms command tick)."""
    table: bool = False
    """Add the table top (z = 0, the base's mounting plane) to the MJCF as a visual geom; never a collision."""

    def __post_init__(self) -> None:
        for name in (
            "link_masses_kg",
            "gear_ratios",
            "torque_constants_Nm_per_A",
            "winding_resistances_ohm",
            "rotor_inertias_kgm2",
            "viscous_friction_Nms",
            "kp_V_per_rad",
            "ki_V_per_rad_s",
            "kd_V_s_per_rad",
        ):
            values = getattr(self, name)
            if len(values) != len(JOINTS) or not all(math.isfinite(v) and v >= 0 for v in values):
                raise ConfigError(f"ScorbotDynamics.{name}: need {len(JOINTS)} finite values >= 0, got {values!r}")
        if not all(v > 0 for v in self.link_masses_kg + self.gear_ratios + self.winding_resistances_ohm):
            raise ConfigError("ScorbotDynamics: masses, gear ratios and resistances must be > 0")
        if not (math.isfinite(self.supply_voltage_V) and self.supply_voltage_V > 0):
            raise ConfigError(f"ScorbotDynamics.supply_voltage_V must be > 0, got {self.supply_voltage_V!r}")
        if not (math.isfinite(self.timestep_s) and 0 < self.timestep_s <= 0.01):
            raise ConfigError(f"ScorbotDynamics.timestep_s must be in (0, 0.01] s, got {self.timestep_s!r}")

    @property
    def torque_per_volt(self) -> np.ndarray:
        """Joint torque per motor volt at rest, n·k_t/R (N·m/V)."""
        return np.asarray(self.gear_ratios) * np.asarray(self.torque_constants_Nm_per_A) / np.asarray(
            self.winding_resistances_ohm
        )

    @property
    def back_emf_damping(self) -> np.ndarray:
        """n²·k_t²/R (N·m·s/rad): the motor's torque drop per joint speed at a fixed voltage."""
        n, kt = np.asarray(self.gear_ratios), np.asarray(self.torque_constants_Nm_per_A)
        return n**2 * kt**2 / np.asarray(self.winding_resistances_ohm)


class Executed(NamedTuple):
    """What the simulated arm did, sampled at the end of every 10 ms command tick."""

    xyz: jax.Array
    """Tool-point path ``[..., T, 3]`` (m)."""
    angles: jax.Array
    """Joint angles ``[..., T, 5]`` (rad), base to roll."""
    voltages: jax.Array
    """Motor voltages ``[..., T, 5]`` (V) at the tick's last controller step."""


def mjcf(arm: ScorbotER7 | None = None, dynamics: ScorbotDynamics | None = None) -> str:
    """The arm as an MJCF document (MuJoCo's XML; mujoco.readthedocs.io/en/stable/XMLreference.html)."""
    arm = ScorbotER7() if arm is None else arm
    d = ScorbotDynamics() if dynamics is None else dynamics
    armature = np.asarray(d.gear_ratios) ** 2 * np.asarray(d.rotor_inertias_kgm2)
    damping = d.back_emf_damping + np.asarray(d.viscous_friction_Nms)
    ranges = [f"{math.radians(lo):.6f} {math.radians(hi):.6f}" for lo, hi in d.joint_ranges_deg]
    body, upper, fore, flange, gripper = d.link_masses_kg
    volts = d.supply_voltage_V
    column = (arm.d1 - 0.1) / 2

    def joint(i: int, axis: str) -> str:
        return (
            f'<joint name="{JOINTS[i]}" type="hinge" axis="{axis}" range="{ranges[i]}" '
            f'armature="{armature[i]:.6g}" damping="{damping[i]:.6g}"/>'
        )

    actuators = "\n    ".join(
        f'<motor name="{name}" joint="{name}" gear="{gain:.6g}" ctrlrange="{-volts} {volts}"/>'
        for name, gain in zip(JOINTS, d.torque_per_volt, strict=True)
    )
    table = (
        '<geom name="table" type="box" size="0.8 0.8 0.01" pos="0.4 0 -0.01" rgba="0.6 0.5 0.4 0.5"/>'
        if d.table
        else ""
    )
    return f"""<mujoco model="scorbot_er7">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{d.timestep_s}" gravity="0 0 -9.81" integrator="implicitfast">
    <flag contact="disable" constraint="disable"/>
  </option>
  <worldbody>
    {table}
    <geom name="pedestal" type="cylinder" size="0.09 0.05" pos="0 0 0.05" mass="3.5594"/>
    <body name="body">
      {joint(0, "0 0 -1")}
      <geom type="cylinder" size="0.07 {column:.6g}" pos="0 0 {0.1 + column:.6g}" mass="{body}"/>
      <body name="upper_arm" pos="{arm.a1} {arm.d2} {arm.d1}">
        {joint(1, "0 -1 0")}
        <geom type="capsule" fromto="0 0 0 {arm.a2} 0 0" size="0.045" mass="{upper}"/>
        <body name="forearm" pos="{arm.a2} {arm.d3} 0">
          {joint(2, "0 -1 0")}
          <geom type="capsule" fromto="0 0 0 {arm.a3} 0 0" size="0.035" mass="{fore}"/>
          <body name="flange" pos="{arm.a3} 0 0">
            {joint(3, "0 1 0")}
            <geom type="sphere" size="0.03" mass="{flange}"/>
            <body name="gripper">
              {joint(4, "1 0 0")}
              <geom type="capsule" fromto="0.02 0 0 {arm.a4 - 0.02:.6g} 0 0" size="0.03" mass="{gripper}"/>
              <site name="tool" pos="{arm.a4} 0 0" size="0.01"/>
            </body>
          </body>
        </body>
      </body>
    </body>
  </worldbody>
  <actuator>
    {actuators}
  </actuator>
</mujoco>
"""


class ScorbotMJX:
    """The simulated arm: ``execute(omega)`` runs a batch of velocity-command sequences through the
    controllers and the physics and returns the executed paths.

    ``omega[..., T, 2]``: base and shoulder velocities (rad/s), one per ``tick_s`` (the network's output
    steps). Set-points start at the home pose and are clipped to ``arm.joint_limits_rad``.
    """

    def __init__(
        self,
        arm: ScorbotER7 | None = None,
        dynamics: ScorbotDynamics | None = None,
        tick_s: float = 0.01,
    ):
        arm = ScorbotER7() if arm is None else arm
        dynamics = ScorbotDynamics() if dynamics is None else dynamics
        if not isinstance(arm, ScorbotER7) or arm.moving_joints != (0, 1) or any(arm.home_angles):
            raise ConfigError(
                "the simulated arm is the Scorbot ER-VII with base and shoulder moving from home; got "
                f"{type(arm).__name__} moving joints {getattr(arm, 'moving_joints', None)}"
            )
        substeps = tick_s / dynamics.timestep_s
        if abs(substeps - round(substeps)) > 1e-9 or round(substeps) < 1:
            raise ConfigError(
                f"the command tick {tick_s} s must be a whole number of physics steps of {dynamics.timestep_s} s"
            )
        mujoco, mjx = _import_mujoco()
        self.arm, self.dynamics, self.tick_s, self.substeps = arm, dynamics, tick_s, int(round(substeps))
        self.model = mujoco.MjModel.from_xml_string(mjcf(arm, dynamics))
        self.tool_site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "tool")
        self._mjx = mjx
        with jax.ensure_compile_time_eval():  # concrete arrays even when first built inside a traced loss
            self._device_model = mjx.put_model(self.model)
        data = mujoco.MjData(self.model)
        mujoco.mj_forward(self.model, data)
        # the voltage that holds the home pose against gravity (qfrc_bias at rest is gravity alone)
        self.holding_voltage = np.asarray(data.qfrc_bias) / dynamics.torque_per_volt

    def tool_position(self, q) -> np.ndarray:
        """Tool point (m) at joint angles ``q[5]`` (or ``q[4]``, roll 0) by MuJoCo's own kinematics."""
        import mujoco

        data = mujoco.MjData(self.model)
        q = np.asarray(q, dtype=np.float64)
        data.qpos[: q.shape[-1]] = q
        mujoco.mj_kinematics(self.model, data)
        return np.array(data.site_xpos[self.tool_site])

    @functools.cached_property
    def _rollout(self):
        with jax.ensure_compile_time_eval():  # its constants stay concrete when first built inside a trace
            return self._build_rollout()

    def _build_rollout(self):
        mjx, model, d = self._mjx, self._device_model, self.dynamics
        kp, ki, kd = (jnp.asarray(g, jnp.float32) for g in (d.kp_V_per_rad, d.ki_V_per_rad_s, d.kd_V_s_per_rad))
        vmax = d.supply_voltage_V
        limits = np.asarray(self.arm.joint_limits_rad, np.float32)
        low, high = jnp.asarray(limits[:, 0]), jnp.asarray(limits[:, 1])
        hold = jnp.asarray(self.holding_voltage, jnp.float32)
        h, tick, site = d.timestep_s, self.tick_s, self.tool_site
        windup = vmax / jnp.maximum(ki, 1e-9)  # the integrator alone never asks for more than the supply
        integral0 = jnp.where(ki > 0, hold / jnp.maximum(ki, 1e-9), 0.0)

        def rollout(omega):
            data = mjx.make_data(model)

            def tick_step(carry, command):
                data, setpoint, integral = carry
                moving = jnp.clip(setpoint[:2] + tick * command, low, high)
                setpoint = setpoint.at[:2].set(moving)
                velocity = jnp.zeros(len(JOINTS), omega.dtype).at[:2].set(command)

                def control_step(inner, _):
                    data, integral = inner
                    error = setpoint - data.qpos
                    integral = jnp.clip(integral + h * error, -windup, windup)
                    drive = jnp.clip(kp * error + ki * integral + kd * (velocity - data.qvel), -vmax, vmax)
                    data = mjx.step(model, data.replace(ctrl=drive))
                    return (data, integral), drive

                (data, integral), volts = jax.lax.scan(control_step, (data, integral), None, length=self.substeps)
                return (data, setpoint, integral), (data.site_xpos[site], data.qpos, volts[-1])

            start = (data, jnp.zeros(len(JOINTS), jnp.float32), integral0)
            _, (xyz, angles, volts) = jax.lax.scan(tick_step, start, omega.astype(jnp.float32))
            return Executed(xyz, angles, volts)

        return jax.jit(jax.vmap(rollout))

    def execute(self, omega) -> Executed:
        """Simulate every command sequence of ``omega[..., T, 2]`` (leading dimensions batched)."""
        omega = jnp.asarray(omega)
        if omega.ndim < 2 or omega.shape[-1] != 2:
            raise ConfigError(f"omega: expected [..., T, 2] base and shoulder velocities, got {tuple(omega.shape)}")
        lead = omega.shape[:-2]
        flat = omega.reshape((-1,) + omega.shape[-2:])
        result = self._rollout(flat)
        return Executed(*(x.reshape(lead + x.shape[1:]) for x in result))


@functools.lru_cache(maxsize=4)
def arm_simulation(arm: ScorbotER7, tick_s: float) -> ScorbotMJX:
    """One simulated arm per (arm, command tick), shared by meta-training's loss and validation (its compiled
    rollout is built once)."""
    return ScorbotMJX(arm, tick_s=tick_s)


def executed_trajectories(arm_sim: ScorbotMJX, commanded):
    """The :class:`~l2l_pcm.robot.tasks.Trajectories` the arm executes for commanded ones (same velocities;
    the angles of base and shoulder and the tool path as simulated), for the scenario's figures."""
    executed = arm_sim.execute(commanded.angular_velocity)
    return commanded._replace(angles=executed.angles[..., :2], xyz=executed.xyz)


def below_table(xyz, table_z: float = 0.0) -> np.ndarray:
    """Per trajectory ``xyz[B, T, 3]``: does the tool point go below the table top (the base's mounting plane)?"""
    return np.asarray(jnp.any(jnp.asarray(xyz)[..., 2] < table_z, axis=-1))
