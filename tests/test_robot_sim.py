"""The simulated Scorbot (optional extra ``sim``): its geometry is the authors' arm, its controllers track,
its motors saturate, and ``robot eval --dynamics mujoco`` scores the executed path."""

import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_robot_arm import SCORBOT_REFERENCE_POSES
from test_robot_eval import small_robot

from l2l_pcm.cli import main
from l2l_pcm.errors import ConfigError
from l2l_pcm.robot.arm import ScorbotER7
from l2l_pcm.robot.tasks import sample_trajectories

pytest.importorskip("mujoco")
pytest.importorskip("mujoco.mjx")

from l2l_pcm.robot.sim import ScorbotDynamics, ScorbotMJX, below_table  # noqa: E402

BATCH = 4  # one batch size for every rollout here: MJX compiles once per shape


@pytest.fixture(scope="module")
def arm_sim():
    return ScorbotMJX()


@pytest.mark.parametrize(("q_deg", "xyz"), SCORBOT_REFERENCE_POSES)
def test_the_models_tool_point_is_the_authors_closed_form_at_the_reference_poses(arm_sim, q_deg, xyz):
    q = np.deg2rad([*q_deg, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(arm_sim.tool_position(q), xyz, atol=1.5e-4)  # the table has 4 decimals


def test_every_joint_of_the_model_follows_the_closed_form(arm_sim):
    rng = np.random.default_rng(0)
    for q in rng.uniform(-1.5, 1.5, size=(20, 5)):  # wrist roll too: it turns about the tool axis
        expected = np.asarray(ScorbotER7().forward_kinematics_full(jnp.asarray(q[:4], jnp.float32)))
        np.testing.assert_allclose(arm_sim.tool_position(q), expected, atol=2e-6)  # float32 closed form


def test_the_controllers_track_the_targets_and_hold_the_home_pose_against_gravity(arm_sim):
    arm = ScorbotER7()
    targets = sample_trajectories(jax.random.PRNGKey(0), arm, BATCH - 1, n_steps=249, dt=0.01, window=120)
    omega = jnp.concatenate([targets.angular_velocity, jnp.zeros((1, 249, 2))])
    executed = arm_sim.execute(omega)
    floor = np.mean((np.asarray(executed.xyz[:-1]) - np.asarray(targets.xyz)) ** 2, axis=(1, 2))
    assert np.all(floor < 1e-3)  # a few cm at most, against ~0.15 m² for an untrained network
    assert np.all(floor > 1e-7)  # but not the kinematics: the arm lags, droops and saturates
    home = arm.forward_kinematics(jnp.zeros(2))
    assert float(jnp.max(jnp.linalg.norm(executed.xyz[-1] - home, axis=-1))) < 2e-3  # gravity held
    # the motors' voltage stays within the supply, and the wrist holds its angle within a few degrees
    assert float(jnp.max(jnp.abs(executed.voltages))) <= 24.0 + 1e-4
    assert float(jnp.max(jnp.abs(executed.angles[..., 3]))) < math.radians(5)


def test_a_command_beyond_the_motors_is_limited_by_the_supply_voltage(arm_sim):
    """Commanding 5 rad/s at the base: the set-point runs away, the drive saturates at 24 V, and the joint
    turns no faster than the motor's no-load speed 24 V / (n k_t)."""
    dynamics = ScorbotDynamics()
    omega = jnp.zeros((BATCH, 249, 2)).at[:, :40, 0].set(5.0)
    executed = arm_sim.execute(omega)
    speed = np.abs(np.diff(np.asarray(executed.angles[0, :40, 0]))) / 0.01
    no_load = dynamics.supply_voltage_V / (dynamics.gear_ratios[0] * dynamics.torque_constants_Nm_per_A[0])
    assert speed.max() <= no_load * 1.01 and speed.max() < 5.0
    assert float(jnp.max(jnp.abs(executed.voltages[0, :40, 0]))) == pytest.approx(24.0)


def test_below_table_counts_trajectories_that_reach_under_the_mounting_plane():
    xyz = jnp.zeros((3, 5, 3)).at[..., 2].set(0.3).at[1, 2, 2].set(-0.01)
    assert below_table(xyz).tolist() == [False, True, False]


def test_the_table_is_a_visual_geom_only_when_asked_for():
    from l2l_pcm.robot.sim import mjcf

    assert 'name="table"' in mjcf(dynamics=ScorbotDynamics(table=True)) and 'name="table"' not in mjcf()
    assert 'contact="disable"' in mjcf(dynamics=ScorbotDynamics(table=True))  # drawn, never touched


def test_settings_that_cannot_be_simulated_are_refused():
    with pytest.raises(ConfigError, match="whole number of physics steps"):
        ScorbotMJX(tick_s=0.0123)
    with pytest.raises(ConfigError, match="gear_ratios"):
        ScorbotDynamics(gear_ratios=(1.0, 2.0))
    with pytest.raises(ConfigError, match="moving"):
        ScorbotMJX(ScorbotER7(moving_joints=(0, 2)))


def test_robot_eval_scores_the_executed_path(tmp_path, capsys):
    from l2l_pcm.robot.train import RobotTrainConfig, train

    config = RobotTrainConfig(model=small_robot(batch=2), iterations=1, validate_every=1, validation_tasks=2)
    train(config, tmp_path / "run", progress=False)
    capsys.readouterr()  # the validation line
    checkpoint = str(tmp_path / "run" / "last.safetensors")
    args = ["robot", "eval", "--checkpoint", checkpoint, "--tasks", "3", "--json"]
    assert main([*args, "--dynamics", "mujoco", "--per-task", str(tmp_path / "tasks.json")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dynamics"] == "mujoco" and 0 < result["mse_floor"] < result["mse_after"]
    assert result["mse_after"] != pytest.approx(result["mse_after_kinematic"], rel=1e-6)  # another path
    assert main(args) == 0
    kinematic = json.loads(capsys.readouterr().out)
    assert kinematic["mse_after"] == pytest.approx(result["mse_after_kinematic"], rel=1e-6)
    assert kinematic["dynamics"] == "kinematic" and "mse_floor" not in kinematic
    rows = json.loads((tmp_path / "tasks.json").read_text())["rows"]
    assert len(rows) == 3 and all(0 < row["mse_floor"] for row in rows)


def test_without_the_extra_the_arm_is_one_clear_error(monkeypatch):
    from l2l_pcm.robot import sim

    monkeypatch.setitem(sys.modules, "mujoco", None)
    with pytest.raises(ConfigError, match=r"pip install 'l2l-pcm\[sim\]'"):
        sim.ScorbotMJX()


def test_importing_the_simulator_prints_nothing_on_stdout():
    """MJX prints a note about its optional GPU backend on import; a `--json` line must stay the only output."""
    import subprocess

    code = "from l2l_pcm.robot.sim import ScorbotMJX; ScorbotMJX()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == ""


def test_dynamics_in_the_loop_is_a_checked_setting():
    from l2l_pcm.robot.model import RobotConfig

    with pytest.raises(ConfigError, match="dynamics must be one of"):
        RobotConfig(dynamics="physics")
    with pytest.raises(ConfigError, match="arm must be 'scorbot'"):
        RobotConfig(dynamics="mujoco", arm="two_link")


@pytest.mark.slow  # compiling the gradient through 60 ticks of MJX takes about a minute
def test_the_meta_gradient_flows_through_the_simulated_arm():
    import dataclasses

    from l2l_pcm.robot.model import init_params, meta_loss
    from l2l_pcm.robot.train import trajectories

    config = dataclasses.replace(small_robot(batch=2), dynamics="mujoco")
    params = init_params(jax.random.PRNGKey(0), config)
    targets = trajectories(config, jax.random.PRNGKey(1), 2)
    (loss, aux), grads = jax.value_and_grad(meta_loss, has_aux=True)(params, targets, jax.random.PRNGKey(2), config)
    kinematic = meta_loss(params, targets, jax.random.PRNGKey(2), dataclasses.replace(config, dynamics="kinematic"))
    assert np.isfinite(float(loss)) and float(loss) != pytest.approx(float(kinematic[0]), rel=1e-6)
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree_util.tree_leaves(grads)]
    assert all(np.isfinite(norms)) and max(norms) > 0
    # the simulated arm first built inside one traced function serves another (validation) without leaking
    from l2l_pcm.robot.train import validate

    assert np.isfinite(validate(params, config, 2)["val_mse_after"])
