import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2l_pcm.chip.diagnostics import DEFAULT_GRID_uS, device_statistics
from l2l_pcm.errors import ConfigError
from l2l_pcm.pcm import PCMDevice, keep_largest, quantize, quantize_weights

SAMPLES = 100_000


@pytest.fixture(scope="module")
def stats_rows():
    return device_statistics(PCMDevice(), jax.random.PRNGKey(7), DEFAULT_GRID_uS, samples=SAMPLES)


def test_grid_covers_the_conductance_range(stats_rows):
    targets = [row["g_target_uS"] for row in stats_rows]
    assert len(targets) >= 10 and min(targets) <= 2 and max(targets) >= 20
    assert all(row["samples"] >= 100_000 for row in stats_rows)


def test_programming_noise_matches_polynomial(stats_rows):
    for row in stats_rows:
        # std of a sample std is σ/sqrt(2n): 0.22 % at 1e5 samples; allow 5 of those
        tolerance = 5 / math.sqrt(2 * SAMPLES)
        assert row["prog_std_measured_uS"] == pytest.approx(row["prog_std_target_uS"], rel=tolerance), row
    g = 0.5 * 25.0
    expected = 0.26348 + 1.9650 * 0.5 - 1.1731 * 0.25
    assert float(PCMDevice().prog_noise_std_uS(jnp.float32(g))) == pytest.approx(expected, rel=1e-6)


def test_drift_exponent_matches_folded_normal(stats_rows):
    for row in stats_rows:
        standard_error = row["nu_std_target"] / math.sqrt(SAMPLES)
        assert abs(row["nu_mean_measured"] - row["nu_mean_target"]) < 5 * standard_error, row
        assert row["nu_std_measured"] == pytest.approx(row["nu_std_target"], rel=5 / math.sqrt(2 * SAMPLES)), row


def test_drift_constants_at_known_points():
    device = PCMDevice()
    mu, sigma = device.drift_nu_mean_std(jnp.array([25.0, 0.025]))
    # ĝ = 1: μ = 0.0244 → clipped up to 0.049; σ = −0.0059 → clipped up to 0.008
    assert np.allclose(mu, [0.049, min(-0.0155 * math.log(1e-3) + 0.0244, 0.1)], rtol=1e-5)
    assert np.allclose(sigma, [0.008, min(-0.0125 * math.log(1e-3) - 0.0059, 0.045)], rtol=1e-5)


def test_read_noise_matches_equation(stats_rows):
    for row in stats_rows:
        assert row["read_std_measured_uS"] == pytest.approx(row["read_std_target_uS"], rel=5 / math.sqrt(2 * SAMPLES))
    device = PCMDevice()
    g, t = 25.0, 32.0
    expected = g * 0.0088 * math.sqrt(math.log((t + 250e-9) / (2 * 250e-9)))
    assert float(device.read_noise_std_uS(jnp.float32(g), jnp.float32(g), t)) == pytest.approx(expected, rel=1e-5)


def test_authors_read_noise_convention_is_about_eight_times_smaller():
    published = PCMDevice()
    authors = PCMDevice(read_noise_uses_microsiemens=True)
    g = jnp.float32(25.0)
    ratio = published.read_noise_std_uS(g, g, 32.0) / authors.read_noise_std_uS(g, g, 32.0)
    assert float(ratio) == pytest.approx(25.0**0.65, rel=1e-5)  # ≈ 8.1


def test_drift_law_and_no_drift_before_t0():
    device = PCMDevice()
    g = jnp.array([10.0, 20.0])
    nu = jnp.array([0.05, 0.1])
    assert np.allclose(device.drift(g, nu, 5.0), g)
    t = 20.0 * 32
    assert np.allclose(device.drift(g, nu, t), g * 32.0 ** (-nu), rtol=1e-6)


def test_differential_pair_round_trip():
    device = PCMDevice()
    w = jnp.array([-1.5, -0.5, 0.0, 0.25, 1.0])
    g = device.weights_to_conductances(w)
    assert g.shape == (2, 5)
    assert np.all(np.asarray(g) >= 0) and np.all(np.asarray(g) <= 25.0)
    assert np.allclose(device.conductances_to_weights(g), jnp.clip(w, -1, 1))
    assert float(g[0, 3]) == pytest.approx(6.25) and float(g[1, 3]) == 0.0


def test_program_is_vmappable_and_jittable(key):
    device = PCMDevice()
    batch = jnp.full((4, 8, 3), 12.5)
    keys = jax.random.split(key, 4)
    g_prog, nu = jax.jit(jax.vmap(device.program))(keys, batch)
    assert g_prog.shape == batch.shape and nu.shape == batch.shape
    assert not np.allclose(g_prog[0], g_prog[1])  # independent keys give independent noise


def test_noisy_weights_forward_noise_backward_straight_through(key):
    device = PCMDevice()
    w = jnp.linspace(-0.9, 0.9, 50)
    noisy = device.noisy_weights(key, w, 3600.0)
    assert 0.005 < float(jnp.std(noisy - w)) < 0.2
    grad = jax.grad(lambda v: jnp.sum(device.noisy_weights(key, v, 3600.0) * jnp.arange(50.0)))(w)
    assert np.allclose(grad, jnp.arange(50.0))
    assert np.allclose(device.noiseless().noisy_weights(key, w, 3600.0), w, atol=1e-6)


def test_quantize_nearest_and_straight_through():
    x = jnp.array([0.0, 0.03, 0.032, -0.04, 0.5])
    q = quantize(x, 1 / 16)
    assert np.allclose(q, jnp.array([0.0, 0.0, 0.0625, -0.0625, 0.5]))
    assert np.allclose(jax.grad(lambda v: jnp.sum(quantize(v, 1 / 16) * 3.0))(x), 3.0)


def test_stochastic_rounding_is_unbiased_and_on_grid(key):
    x = jnp.full((200_000,), 0.02)
    q = quantize(x, 1 / 16, key)
    values = np.unique(np.asarray(q))
    assert set(np.round(values * 16).astype(int)) <= {0, 1}
    assert float(jnp.mean(q)) == pytest.approx(0.02, rel=0.02)


def test_keep_largest_keeps_exactly_the_budget(key):
    update = jax.random.normal(key, (56, 5))
    kept = keep_largest(update, 32)
    assert int(jnp.sum(kept != 0)) == 32
    smallest_kept = float(jnp.min(jnp.abs(kept[kept != 0])))
    assert smallest_kept >= float(jnp.max(jnp.abs(jnp.where(kept == 0, update, 0.0))))
    assert np.array_equal(np.asarray(kept[kept != 0]), np.asarray(update[kept != 0]))
    ties = keep_largest(jnp.ones((4, 4)), 3)  # ties: still exactly 3
    assert int(jnp.sum(ties != 0)) == 3
    assert np.array_equal(keep_largest(update, 0), update)
    assert np.array_equal(keep_largest(update, 10_000), update)
    grad = jax.grad(lambda u: jnp.sum(keep_largest(u, 32) * 2.0))(update)
    assert np.array_equal(np.asarray(grad != 0), np.asarray(kept != 0))
    with pytest.raises(ConfigError, match="update budget"):
        keep_largest(update, -1)


def test_four_bit_weights_have_fifteen_levels(key):
    w = jnp.linspace(-1.2, 1.2, 10_001)
    q = quantize_weights(w, 4)
    assert len(np.unique(np.asarray(q))) == 15
    assert float(jnp.max(jnp.abs(q))) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "field,value",
    [
        ("g_max_uS", -25.0),
        ("g_max_uS", float("nan")),
        ("t_read_s", 0.0),
        ("t0_s", -1.0),
        ("drift_mu_clip", (0.2, 0.1)),
        ("read_noise_scale", -1.0),
        ("g_max_uS", 1e6),
    ],
)
def test_out_of_range_device_constants_are_rejected(field, value):
    with pytest.raises(ConfigError, match=field):
        PCMDevice(**{field: value})


def test_bad_quantization_step():
    with pytest.raises(ConfigError, match="step"):
        quantize(jnp.ones(3), 0.0)
    with pytest.raises(ConfigError, match="bits"):
        quantize_weights(jnp.ones(3), 1)
