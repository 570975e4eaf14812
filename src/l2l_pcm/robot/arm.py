"""Forward kinematics of the robot arms used in the robot scenario (Ortner et al. 2025, arXiv:2405.05141).

The network of the robot task outputs joint *angular velocities*; the outer loss also compares the
resulting end-effector positions with the targets, so the kinematics must be pure JAX, vectorised
over any leading (batch, time) dimensions and differentiable.

Two arms are provided:

* :class:`ScorbotER7` -- the Scorbot ER-VII of the authors' code, their closed-form kinematics (base and
  shoulder move, elbow and wrist are held at their home position).
* :class:`TwoLinkArm` -- a planar two-link arm, the code's ``--use_scorbot=False`` alternative.

Every arm exposes the same small interface, which is all :mod:`l2l_pcm.robot.tasks` relies on:

* ``n_joints`` / ``forward_kinematics_full(q[..., n_joints]) -> xyz[..., 3]``,
* ``moving_joints`` / ``n_moving`` / ``forward_kinematics(q_moving[..., n_moving]) -> xyz[..., 3]``,
* ``home_angles`` (commanded start angles of the moving joints, rad),
* ``joint_limits_rad`` (the safe space of the moving joints, ``((low, high), ...)`` in rad),
* ``velocity_step_std`` (default Brownian step of the target joint velocities, rad/s).

All fields are plain floats / tuples so the dataclasses are frozen and hashable and can be passed
to :func:`jax.jit` as static arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp

from l2l_pcm.errors import ConfigError

__all__ = ["ScorbotER7", "TwoLinkArm", "Arm"]


def _as_float_array(q: jnp.ndarray) -> jnp.ndarray:
    """Return ``q`` as a JAX floating array (integers promote to float32, float64 is kept)."""
    q = jnp.asarray(q)
    if not jnp.issubdtype(q.dtype, jnp.floating):
        q = q.astype(jnp.float32)
    return q


def _check_last_dim(q: jnp.ndarray, n: int, what: str) -> None:
    if q.ndim == 0 or q.shape[-1] != n:
        raise ConfigError(f"{what}: last dimension must be {n} joint angles, got shape {tuple(q.shape)}")


def _check_limits(limits: tuple[tuple[float, float], ...], n: int, field: str) -> None:
    if len(limits) != n:
        raise ConfigError(f"{field}: need {n} (low, high) pairs, got {limits!r}")
    for pair in limits:
        if len(pair) != 2 or not (math.isfinite(pair[0]) and math.isfinite(pair[1])) or pair[0] >= pair[1]:
            raise ConfigError(f"{field}: each entry must be a finite (low, high) with low < high, got {pair!r}")


def _check_moving(moving: tuple[int, ...], n_joints: int, field: str = "moving_joints") -> None:
    if len(moving) == 0 or len(set(moving)) != len(moving) or any(not 0 <= j < n_joints for j in moving):
        raise ConfigError(f"{field}: must be distinct joint indices in [0, {n_joints}), got {moving!r}")


@dataclass(frozen=True)
class ScorbotER7:
    r"""Scorbot ER-VII (5-axis vertical articulated arm), position kinematics of its first 4 joints.

    Joints (commanded angles ``q``, rad): ``q1`` base (about the vertical axis), ``q2`` shoulder,
    ``q3`` elbow, ``q4`` wrist pitch. Wrist roll does not move the tool point and is omitted. In the
    task only ``moving_joints = (0, 1)`` move; ``q3 = q4 = 0``.

    The authors' closed form (``Scorbot.direct_kinematics``, ``online_learning_robot/module/scorbot.py`` in
    github.com/IGITUGraz/RapidLearningInMemoryComputing; their home offsets 23.6°, −22.0°, 22.4° enter it twice
    with opposite signs and cancel exactly, so they do not appear here). With ``d = d2 + d3``::

        r = a1 + a2 cos q2 + a3 cos(q2 + q3) + a4 cos(q2 + q3 - q4)
        x = r cos q1 + d sin q1
        y = -r sin q1 + d cos q1
        z = d1 + a2 sin q2 + a3 sin(q2 + q3) + a4 sin(q2 + q3 - q4)

    Start pose ``q = 0``: (0.920, −0.033, 0.3585) m. With the shoulder's ±70° the tool point reaches
    below the table (z < 0) and above 1 m.
    """

    d1: float = 0.3585
    """Height of the shoulder axis above the base frame origin (m)."""
    a1: float = 0.050
    """Radial offset of the shoulder axis from the base axis (m)."""
    a2: float = 0.300
    """Upper-arm length, shoulder to elbow axis (m)."""
    a3: float = 0.350
    """Forearm length, elbow to wrist-pitch axis (m)."""
    a4: float = 0.22
    """Wrist-pitch axis to tool point (m)."""
    d2: float = -0.098
    """Lateral offset of the upper arm along the shoulder axis (m)."""
    d3: float = 0.065
    """Lateral offset of the forearm along the elbow axis (m)."""
    safe_space_deg: tuple[tuple[float, float], ...] = ((-130.0, 130.0), (-70.0, 70.0))
    """Allowed commanded angle range of each moving joint (deg); target angles are clipped to it."""
    moving_joints: tuple[int, ...] = (0, 1)
    """Indices of the joints driven by the network (base, shoulder); the others stay at 0."""
    home_angles: tuple[float, ...] = (0.0, 0.0)
    """Commanded start angles of the moving joints (rad); trajectories start here."""
    velocity_step_std: float = 0.65 * math.sqrt(0.01)
    """Default std of the Brownian steps of the target joint velocities (rad/s per step)."""

    n_joints = 4

    def __post_init__(self) -> None:
        for name in ("a2", "a3", "a4"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"ScorbotER7.{name}: link length must be finite and > 0, got {value!r}")
        for name in ("d1", "a1", "d2", "d3"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ConfigError(f"ScorbotER7.{name}: must be finite, got {value!r}")
        _check_moving(self.moving_joints, self.n_joints)
        _check_limits(self.safe_space_deg, len(self.moving_joints), "ScorbotER7.safe_space_deg")
        _check_home(self)
        _check_step_std(self)

    @property
    def n_moving(self) -> int:
        """Number of joints driven in the task."""
        return len(self.moving_joints)

    @property
    def joint_limits_rad(self) -> tuple[tuple[float, float], ...]:
        """Safe space of the moving joints in rad, ``((low, high), ...)``."""
        return tuple((math.radians(lo), math.radians(hi)) for lo, hi in self.safe_space_deg)

    def _plane_points(self, q: jnp.ndarray) -> list[tuple[jnp.ndarray, jnp.ndarray]]:
        """(r, z) of shoulder, elbow, wrist and tool point in the arm's vertical plane."""
        q2, q23, q234 = q[..., 1], q[..., 1] + q[..., 2], q[..., 1] + q[..., 2] - q[..., 3]
        r, z = self.a1 + jnp.zeros_like(q2), self.d1 + jnp.zeros_like(q2)
        points = [(r, z)]
        for length, angle in ((self.a2, q2), (self.a3, q23), (self.a4, q234)):
            r, z = r + length * jnp.cos(angle), z + length * jnp.sin(angle)
            points.append((r, z))
        return points

    def _to_base_frame(self, q1: jnp.ndarray, r: jnp.ndarray, z: jnp.ndarray) -> jnp.ndarray:
        d = self.d2 + self.d3
        c, s = jnp.cos(q1), jnp.sin(q1)
        return jnp.stack([r * c + d * s, -r * s + d * c, z], axis=-1)

    def forward_kinematics_full(self, q: jnp.ndarray) -> jnp.ndarray:
        """Tool-point position ``xyz[..., 3]`` (m) for commanded angles ``q[..., 4]`` (rad)."""
        q = _as_float_array(q)
        _check_last_dim(q, self.n_joints, "ScorbotER7.forward_kinematics_full q")
        r, z = self._plane_points(q)[-1]
        return self._to_base_frame(q[..., 0], r, z)

    def full_angles(self, q_moving: jnp.ndarray) -> jnp.ndarray:
        """Embed moving-joint angles ``[..., n_moving]`` into ``[..., 4]`` with the others at 0."""
        q_moving = _as_float_array(q_moving)
        _check_last_dim(q_moving, self.n_moving, "ScorbotER7.forward_kinematics q")
        zero = jnp.zeros_like(q_moving[..., 0])
        slot = {j: k for k, j in enumerate(self.moving_joints)}
        cols = [q_moving[..., slot[j]] if j in slot else zero for j in range(self.n_joints)]
        return jnp.stack(cols, axis=-1)

    def forward_kinematics(self, q_moving: jnp.ndarray) -> jnp.ndarray:
        """Task-level kinematics: ``xyz[..., 3]`` for the moving joints ``q[..., n_moving]`` (rad)."""
        return self.forward_kinematics_full(self.full_angles(q_moving))

    def joint_positions(self, q_moving: jnp.ndarray) -> jnp.ndarray:
        """Points ``[..., 6, 3]`` to draw the arm: floor, base top, shoulder, elbow, wrist, tool point."""
        q = self.full_angles(q_moving)
        origin = jnp.zeros(q.shape[:-1] + (3,), dtype=q.dtype)
        points = [origin, origin.at[..., 2].set(self.d1)]
        points += [self._to_base_frame(q[..., 0], r, z) for r, z in self._plane_points(q)]
        return jnp.stack(points, axis=-2)


@dataclass(frozen=True)
class TwoLinkArm:
    """Planar two-link arm in the x-y plane (the code's ``--use_scorbot=False`` arm).

    ``x = l1 cos q1 + l2 cos(q1 + q2)``, ``y = l1 sin q1 + l2 sin(q1 + q2)``, ``z = 0``.
    Both joints move; trajectories start at ``(0, pi/2)`` (an "L" shape, tip at ``(0.5, 0.5)``).
    The joint limits ``+-pi`` are a choice of this package (the code does not state any): they
    cover every configuration once and only clip wandering angles.
    """

    l1: float = 0.5
    """Length of the first link (m)."""
    l2: float = 0.5
    """Length of the second link (m)."""
    home_angles: tuple[float, ...] = (0.0, math.pi / 2)
    """Start angles of the two joints (rad)."""
    joint_limits_rad: tuple[tuple[float, float], ...] = ((-math.pi, math.pi), (-math.pi, math.pi))
    """Allowed range of each joint angle (rad); target angles are clipped to it."""
    velocity_step_std: float = 1.0 * math.sqrt(0.01)
    """Default std of the Brownian steps of the target joint velocities (rad/s per step)."""
    moving_joints: tuple[int, ...] = (0, 1)
    """Both joints move."""

    n_joints = 2

    def __post_init__(self) -> None:
        for name in ("l1", "l2"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"TwoLinkArm.{name}: link length must be finite and > 0, got {value!r}")
        _check_moving(self.moving_joints, self.n_joints)
        if self.moving_joints != (0, 1):
            raise ConfigError(f"TwoLinkArm.moving_joints: both joints move, must be (0, 1), got {self.moving_joints!r}")
        _check_limits(self.joint_limits_rad, self.n_joints, "TwoLinkArm.joint_limits_rad")
        _check_home(self)
        _check_step_std(self)

    @property
    def n_moving(self) -> int:
        """Number of joints driven in the task (both)."""
        return self.n_joints

    def forward_kinematics_full(self, q: jnp.ndarray) -> jnp.ndarray:
        """Tip position ``xyz[..., 3]`` (m, ``z = 0``) for joint angles ``q[..., 2]`` (rad)."""
        q = _as_float_array(q)
        _check_last_dim(q, self.n_joints, "TwoLinkArm.forward_kinematics q")
        q1, q12 = q[..., 0], q[..., 0] + q[..., 1]
        x = self.l1 * jnp.cos(q1) + self.l2 * jnp.cos(q12)
        y = self.l1 * jnp.sin(q1) + self.l2 * jnp.sin(q12)
        return jnp.stack([x, y, jnp.zeros_like(x)], axis=-1)

    def joint_positions(self, q_moving: jnp.ndarray) -> jnp.ndarray:
        """Points ``[..., 3, 3]`` to draw the arm: base, elbow, tip (z = 0)."""
        q = _as_float_array(q_moving)
        zero = jnp.zeros_like(q[..., 0])
        elbow = jnp.stack([self.l1 * jnp.cos(q[..., 0]), self.l1 * jnp.sin(q[..., 0]), zero], axis=-1)
        return jnp.stack([jnp.zeros_like(elbow), elbow, self.forward_kinematics(q)], axis=-2)

    def forward_kinematics(self, q_moving: jnp.ndarray) -> jnp.ndarray:
        """Same as :meth:`forward_kinematics_full` (every joint moves)."""
        return self.forward_kinematics_full(q_moving)


Arm = ScorbotER7 | TwoLinkArm
"""Any arm model accepted by :mod:`l2l_pcm.robot.tasks`."""


def _check_home(arm: ScorbotER7 | TwoLinkArm) -> None:
    name = type(arm).__name__
    home = arm.home_angles
    if len(home) != arm.n_moving:
        raise ConfigError(f"{name}.home_angles: need {arm.n_moving} values, got {home!r}")
    for value, (lo, hi) in zip(home, arm.joint_limits_rad, strict=True):
        if not lo <= value <= hi:
            raise ConfigError(f"{name}.home_angles: {home!r} lies outside the joint limits {arm.joint_limits_rad!r}")


def _check_step_std(arm: ScorbotER7 | TwoLinkArm) -> None:
    value = arm.velocity_step_std
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{type(arm).__name__}.velocity_step_std: must be finite and >= 0, got {value!r}")
