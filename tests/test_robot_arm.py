"""Tests of the robot-arm kinematics and the target trajectories (l2l_pcm.robot.arm / .tasks)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2l_pcm.errors import ConfigError
from l2l_pcm.robot.arm import ScorbotER7, TwoLinkArm
from l2l_pcm.robot.tasks import (
    Trajectories,
    hann_window,
    integrate_velocities,
    sample_trajectories,
    smoothing_matrix,
    spike_decode_xyz,
    spike_encode_xyz,
)

SCORBOT = ScorbotER7()
TWO_LINK = TwoLinkArm()


@pytest.fixture
def x64():
    """Enable float64 for one test and restore the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


# ---------------------------------------------------------------------------------------------------------
# arm.py

# the authors' closed-form kinematics (their Scorbot.direct_kinematics) at these poses: q1, q2 in degrees, q3 = q4 = 0
SCORBOT_REFERENCE_POSES = [
    ((0, 0), (0.9200, -0.0330, 0.3585)),
    ((90, 0), (-0.0330, -0.9200, 0.3585)),
    ((-130, 0), (-0.5661, 0.7260, 0.3585)),
    ((0, 70), (0.3476, -0.0330, 1.1760)),
    ((0, -70), (0.3476, -0.0330, -0.4590)),
    ((45, 30), (0.5448, -0.5915, 0.7935)),
    ((-60, -45), (0.3612, 0.5596, -0.2567)),
    ((120, 60), (-0.2711, -0.4035, 1.1119)),
]


@pytest.mark.parametrize(("q_deg", "xyz"), SCORBOT_REFERENCE_POSES)
def test_scorbot_reference_poses_of_the_authors_formula(q_deg, xyz, x64):
    got = np.asarray(SCORBOT.forward_kinematics(jnp.deg2rad(jnp.asarray(q_deg, jnp.float64))))
    # the table is printed to 4 decimals: 1e-4 m plus half a printed digit
    np.testing.assert_allclose(got, xyz, atol=1.5e-4)


def _closed_form(q: np.ndarray) -> np.ndarray:
    # the authors' Scorbot.direct_kinematics, written out independently of the class
    d1, a1, a2, a3, a4, d = 0.3585, 0.050, 0.300, 0.350, 0.22, -0.098 + 0.065
    q1, q2, q3, q4 = q
    r = a1 + a2 * np.cos(q2) + a3 * np.cos(q2 + q3) + a4 * np.cos(q2 + q3 - q4)
    z = d1 + a2 * np.sin(q2) + a3 * np.sin(q2 + q3) + a4 * np.sin(q2 + q3 - q4)
    return np.array([r * np.cos(q1) + d * np.sin(q1), -r * np.sin(q1) + d * np.cos(q1), z])


def test_scorbot_all_four_joints_follow_the_closed_form(x64):
    rng = np.random.default_rng(0)
    qs = rng.uniform(-math.pi, math.pi, size=(16, 4))
    got = np.asarray(SCORBOT.forward_kinematics_full(jnp.asarray(qs)))
    np.testing.assert_allclose(got, np.stack([_closed_form(q) for q in qs]), atol=1e-12)
    # task-level kinematics fills q3 = q4 = 0, and with them the arm is one straight link of 0.87 m
    q12 = qs[:, :2]
    want = np.stack([_closed_form(np.r_[q, 0.0, 0.0]) for q in q12])
    np.testing.assert_allclose(np.asarray(SCORBOT.forward_kinematics(jnp.asarray(q12))), want, atol=1e-12)
    np.testing.assert_allclose(want[:, 2], 0.3585 + 0.87 * np.sin(q12[:, 1]), atol=1e-12)


def test_scorbot_constants():
    arm = SCORBOT
    assert arm.moving_joints == (0, 1) and arm.n_moving == 2 and arm.n_joints == 4
    assert arm.home_angles == (0.0, 0.0)
    np.testing.assert_allclose(arm.joint_limits_rad, np.deg2rad([[-130, 130], [-70, 70]]))
    np.testing.assert_allclose(arm.forward_kinematics(jnp.zeros(2)), (0.920, -0.033, 0.3585), atol=1e-6)


def test_scorbot_float32_close_to_float64():
    q = np.array([0.3, -0.5, 0.2, 0.1])
    np.testing.assert_allclose(SCORBOT.forward_kinematics_full(jnp.asarray(q, jnp.float32)), _closed_form(q), atol=1e-6)


@pytest.mark.parametrize("phi", [0.3, -1.1, 2.0])
def test_scorbot_base_rotation_rotates_about_z(phi):
    rng = np.random.default_rng(1)
    q = rng.uniform(-1.0, 1.0, size=(5, 4)).astype(np.float32)
    p = np.asarray(SCORBOT.forward_kinematics_full(jnp.asarray(q)))
    q_rot = q.copy()
    q_rot[:, 0] += phi
    p_rot = np.asarray(SCORBOT.forward_kinematics_full(jnp.asarray(q_rot)))
    c, s = math.cos(phi), math.sin(phi)  # positive q1 turns clockwise seen from above (authors' sign)
    want = np.stack([c * p[:, 0] + s * p[:, 1], -s * p[:, 0] + c * p[:, 1], p[:, 2]], axis=1)
    np.testing.assert_allclose(p_rot, want, atol=1e-5)


def test_scorbot_reach_covers_below_the_table_and_above_one_metre():
    q = jax.random.uniform(jax.random.PRNGKey(2), (4000, 2), minval=-1.0, maxval=1.0)
    q = q * jnp.asarray([math.radians(130), math.radians(70)])
    xyz = np.asarray(SCORBOT.forward_kinematics(q))
    assert xyz[:, 2].min() < 0.0 and xyz[:, 2].max() > 1.0
    assert np.hypot(xyz[:, 0], xyz[:, 1]).max() <= math.hypot(0.92, 0.033) + 1e-5


@pytest.mark.parametrize(
    ("q", "xyz"),
    [
        ((0.0, 0.0), (1.0, 0.0, 0.0)),
        ((math.pi / 2, 0.0), (0.0, 1.0, 0.0)),
        ((0.0, math.pi / 2), (0.5, 0.5, 0.0)),
        ((math.pi, 0.0), (-1.0, 0.0, 0.0)),
        ((0.0, math.pi), (0.0, 0.0, 0.0)),
        ((math.pi / 4, -math.pi / 2), (0.5 * math.sqrt(2), 0.0, 0.0)),
    ],
)
def test_two_link_known_poses(q, xyz):
    np.testing.assert_allclose(TWO_LINK.forward_kinematics(jnp.asarray(q)), xyz, atol=1e-6)


def test_two_link_interface():
    # the authors' BrownianTrajectories: links of 0.5 m, start angles (0, pi/2), Brownian step std 1.0 * sqrt(0.01)
    assert (TWO_LINK.l1, TWO_LINK.l2) == (0.5, 0.5) and TWO_LINK.velocity_step_std == pytest.approx(0.1)
    assert SCORBOT.velocity_step_std == pytest.approx(0.065)
    assert TWO_LINK.home_angles == (0.0, math.pi / 2)
    assert TWO_LINK.moving_joints == (0, 1) and TWO_LINK.n_moving == 2
    assert TWO_LINK.joint_limits_rad == ((-math.pi, math.pi), (-math.pi, math.pi))
    np.testing.assert_allclose(TWO_LINK.forward_kinematics(jnp.asarray(TWO_LINK.home_angles)), (0.5, 0.5, 0), atol=1e-6)


def test_scorbot_gradient_matches_finite_differences(x64):
    rng = np.random.default_rng(3)
    q0 = jnp.asarray(rng.uniform(-1.0, 1.0, size=4))
    direction = jnp.asarray([0.3, -0.2, 0.5])

    def f(q):
        return jnp.dot(SCORBOT.forward_kinematics_full(q), direction)

    grad = np.asarray(jax.grad(f)(q0))
    eps = 1e-6
    fd = np.array([(f(q0.at[i].add(eps)) - f(q0.at[i].add(-eps))) / (2 * eps) for i in range(4)])
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)
    jac = jax.jacfwd(SCORBOT.forward_kinematics)(q0[:2])
    assert jac.shape == (3, 2) and np.all(np.isfinite(jac))
    # two-link analytic jacobian
    q = jnp.asarray([0.4, 0.7])
    jac2 = np.asarray(jax.jacfwd(TWO_LINK.forward_kinematics)(q))
    s1, s12, c1, c12 = np.sin(0.4), np.sin(1.1), np.cos(0.4), np.cos(1.1)
    np.testing.assert_allclose(
        jac2, [[-0.5 * s1 - 0.5 * s12, -0.5 * s12], [0.5 * c1 + 0.5 * c12, 0.5 * c12], [0, 0]], atol=1e-12
    )


@pytest.mark.parametrize("arm", [SCORBOT, TWO_LINK], ids=["scorbot", "two_link"])
def test_fk_batch_shapes(arm):
    q = jnp.zeros((3, 7, 2))
    assert arm.forward_kinematics(q).shape == (3, 7, 3)
    assert arm.forward_kinematics(jnp.zeros(2)).shape == (3,)
    assert jax.jit(arm.forward_kinematics)(q).shape == (3, 7, 3)
    with pytest.raises(ConfigError, match="last dimension"):
        arm.forward_kinematics(jnp.zeros((3, 5)))


def test_arm_invalid_parameters():
    with pytest.raises(ConfigError, match="a2"):
        ScorbotER7(a2=-0.3)
    with pytest.raises(ConfigError, match="safe_space_deg"):
        ScorbotER7(safe_space_deg=((10.0, -10.0), (-70.0, 70.0)))
    with pytest.raises(ConfigError, match="moving_joints"):
        ScorbotER7(moving_joints=(0, 4))
    with pytest.raises(ConfigError, match="home_angles"):
        TwoLinkArm(joint_limits_rad=((-1.0, 1.0), (-1.0, 1.0)))
    with pytest.raises(ConfigError, match="l1"):
        TwoLinkArm(l1=0.0)


# ---------------------------------------------------------------------------------------------------------
# tasks.py


@pytest.fixture(scope="module")
def scorbot_batch() -> Trajectories:
    return sample_trajectories(jax.random.PRNGKey(0), SCORBOT, 64)


def test_sample_shapes_and_dtypes(scorbot_batch):
    tr = scorbot_batch
    assert tr.angular_velocity.shape == (64, 249, 2)
    assert tr.angles.shape == (64, 249, 2)
    assert tr.xyz.shape == (64, 249, 3)
    assert all(x.dtype == jnp.float32 for x in tr)
    small = sample_trajectories(jax.random.PRNGKey(0), TWO_LINK, 1, n_steps=50, window=10)
    assert small.xyz.shape == (1, 50, 3)


def test_sample_reproducible_and_key_dependent():
    a = sample_trajectories(jax.random.PRNGKey(5), SCORBOT, 4, n_steps=100, window=30)
    b = sample_trajectories(jax.random.PRNGKey(5), SCORBOT, 4, n_steps=100, window=30)
    c = sample_trajectories(jax.random.PRNGKey(6), SCORBOT, 4, n_steps=100, window=30)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a.angular_velocity, c.angular_velocity)
    # the tasks of a batch differ from each other
    assert not np.allclose(a.angular_velocity[0], a.angular_velocity[1])


def test_sample_jit_compatible():
    fn = jax.jit(sample_trajectories, static_argnames=("arm", "batch", "n_steps", "window"))
    a = fn(jax.random.PRNGKey(1), SCORBOT, 3, n_steps=80, window=20, dt=0.01)
    b = sample_trajectories(jax.random.PRNGKey(1), SCORBOT, 3, n_steps=80, window=20)
    np.testing.assert_allclose(a.xyz, b.xyz, atol=1e-6)


@pytest.mark.parametrize("arm", [SCORBOT, TWO_LINK], ids=["scorbot", "two_link"])
def test_sample_limits_and_kinematics(arm):
    tr = sample_trajectories(jax.random.PRNGKey(7), arm, 32)
    lim = np.asarray(arm.joint_limits_rad, np.float32)
    angles = np.asarray(tr.angles)
    assert np.all(angles >= lim[:, 0]) and np.all(angles <= lim[:, 1])
    assert np.all(np.abs(tr.angular_velocity) <= np.float32(math.pi))
    np.testing.assert_allclose(tr.xyz, arm.forward_kinematics(tr.angles), atol=1e-6)
    # angles start near the start pose and integrate the velocities (where not clipped)
    want = np.asarray(arm.home_angles) + 0.01 * np.cumsum(np.asarray(tr.angular_velocity, np.float64), axis=1)
    inside = (want > lim[:, 0]) & (want < lim[:, 1])
    np.testing.assert_allclose(angles[inside], want[inside], atol=1e-5)
    np.testing.assert_allclose(angles[:, 0], np.asarray(arm.home_angles) + 0.01 * tr.angular_velocity[:, 0], atol=1e-6)


def test_sample_clips_velocity():
    tr = sample_trajectories(jax.random.PRNGKey(8), SCORBOT, 8, velocity_step_std=1.0, max_velocity=0.5)
    omega = np.abs(np.asarray(tr.angular_velocity))
    assert omega.max() <= 0.5 + 1e-7 and np.mean(omega == np.float32(0.5)) > 0.1


def test_sample_smoothness(scorbot_batch):
    sigma = SCORBOT.velocity_step_std
    d_omega = np.diff(np.asarray(scorbot_batch.angular_velocity), axis=1)
    # raw Brownian increments have std sigma; the Hann-smoothed walk's increments ~ sigma*sqrt(1.5/120)
    assert d_omega.std() < 0.25 * sigma
    # and the velocities do wander (std of a random walk over 249 steps >> sigma)
    assert np.asarray(scorbot_batch.angular_velocity).std() > 3 * sigma


def test_smoothing_matrix_properties():
    s = smoothing_matrix(249, 120)
    h = hann_window(120)
    assert abs(h.sum() - 1.0) < 1e-12 and h[0] == 0.0
    # interior rows sum to 1 (constant signal preserved); rows near the start lose the zero padding
    np.testing.assert_allclose(s[60:].sum(axis=1), 1.0, atol=1e-12)
    assert s[0].sum() < 0.6
    # a constant walk is preserved at the mirrored end
    np.testing.assert_allclose(s @ np.ones(249), np.clip(s.sum(axis=1), 0, 1))
    assert hann_window(1).tolist() == [1.0] and hann_window(2).tolist() == [0.5, 0.5]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"batch": 0}, "batch"),
        ({"batch": 2.5}, "batch"),
        ({"n_steps": 0}, "n_steps"),
        ({"window": 0}, "window"),
        ({"window": 300}, "window"),
        ({"dt": 0.0}, "dt"),
        ({"dt": -0.01}, "dt"),
        ({"max_velocity": 0.0}, "max_velocity"),
        ({"velocity_step_std": -1.0}, "velocity_step_std"),
    ],
)
def test_sample_invalid_sizes(kwargs, field):
    args = {"batch": 2, **kwargs}
    with pytest.raises(ConfigError, match=field):
        sample_trajectories(jax.random.PRNGKey(0), SCORBOT, **args)


def test_integrate_velocities_differentiable(scorbot_batch):
    target = scorbot_batch

    def loss(omega):
        pred = integrate_velocities(SCORBOT, omega, 0.01)
        return 0.5 * jnp.mean((pred.angular_velocity - target.angular_velocity) ** 2) + 0.5 * jnp.mean(
            (pred.xyz - target.xyz) ** 2
        )

    omega = 0.5 * target.angular_velocity + 0.1
    value, grad = jax.value_and_grad(loss)(omega)
    assert np.isfinite(value) and grad.shape == omega.shape
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    # the same function reproduces the targets from the target velocities
    again = integrate_velocities(SCORBOT, target.angular_velocity)
    np.testing.assert_allclose(again.xyz, target.xyz, atol=1e-6)
    # clipped angles have zero gradient, others pass
    g = jax.grad(lambda w: integrate_velocities(TWO_LINK, w, 1.0).angles.sum())(jnp.asarray([[[5.0, 0.0]]]))
    np.testing.assert_allclose(g, [[[0.0, 1.0]]])
    with pytest.raises(ConfigError, match="omega"):
        integrate_velocities(SCORBOT, jnp.zeros((4, 3)))


@pytest.mark.parametrize("code", ["full_range", "authors"])
def test_spike_encode_round_trip(code):
    xyz = jax.random.uniform(jax.random.PRNGKey(9), (4, 10, 3), minval=-0.99, maxval=0.99)
    spikes = spike_encode_xyz(xyz, code=code)
    assert spikes.shape == (4, 10, 48) and spikes.dtype == jnp.float32
    assert set(np.unique(spikes).tolist()) <= {0.0, 1.0}
    back = np.asarray(spike_decode_xyz(spikes, code=code))
    resolution = 2.0**-15 * (1.0 if code == "authors" else 1.25)
    err = np.asarray(xyz) - back
    assert np.all(err >= -1e-6) and np.all(err < resolution + 1e-6)


def test_spike_encode_authors_bit_order_and_wrap_around():
    # n = int((c + 1) * 2**15), bit k of n is neuron k: least significant bit first (the authors' get_data)
    c = 0.3
    n = int((c + 1) * 2**15)
    code = np.asarray(spike_encode_xyz(jnp.asarray([c, c, c]), code="authors"))[:16]
    np.testing.assert_array_equal(code, [(n >> k) & 1 for k in range(16)])
    spikes = np.asarray(spike_encode_xyz(jnp.asarray([0.0, -1.0, 1.1]), code="authors"))
    np.testing.assert_array_equal(spikes[:16], [0] * 15 + [1])  # 2**15: only the last neuron
    np.testing.assert_array_equal(spikes[16:32], [0] * 16)
    # z = 1.1 wraps around and is sent like -0.9
    like = np.asarray(spike_encode_xyz(jnp.asarray([0.0, 0.0, -0.9]), code="authors"))
    np.testing.assert_array_equal(spikes[32:], like[32:])


def test_spike_encode_full_range_covers_the_reach_without_wrapping():
    z = jnp.asarray([[0.0, 0.0, -0.46], [0.0, 0.0, 1.1], [0.0, 0.0, 1.18]])
    back = np.asarray(spike_decode_xyz(spike_encode_xyz(z)))
    np.testing.assert_allclose(back, z, atol=1e-4)
    # saturates instead of wrapping beyond the range
    far = np.asarray(spike_encode_xyz(jnp.asarray([5.0, -5.0, 0.0])))
    np.testing.assert_array_equal(far[:16], [1] * 16)
    np.testing.assert_array_equal(far[16:32], [0] * 16)
    assert spike_encode_xyz(jnp.zeros((2, 3)), bits=4).shape == (2, 12)
    with pytest.raises(ConfigError, match="bits"):
        spike_encode_xyz(jnp.zeros(3), bits=0)
    with pytest.raises(ConfigError, match="xyz"):
        spike_encode_xyz(jnp.zeros(2))
    with pytest.raises(ConfigError, match="xyz code"):
        spike_encode_xyz(jnp.zeros(3), code="msb")


def test_integrate_velocities_clipping_is_an_option():
    omega = jnp.full((1, 200, 2), 2.0)  # 4 rad after 200 steps: beyond the safe space
    clipped = integrate_velocities(SCORBOT, omega)
    free = integrate_velocities(SCORBOT, omega, clip_angles=False)
    assert float(clipped.angles.max()) == pytest.approx(math.radians(130))
    assert float(free.angles.max()) == pytest.approx(4.0, rel=1e-4)
