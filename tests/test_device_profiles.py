"""The named device profiles (l2l_pcm.pcm.DEVICE_PROFILES) and the conventions each one switches on."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2l_pcm.chip import Chip, ChipConfig
from l2l_pcm.chip.crossbar import program_layer, read_statistics, reprogram_layer
from l2l_pcm.errors import ConfigError
from l2l_pcm.pcm import DEVICE_PROFILES, PCMDevice, device_from_json, device_profile, profile_name

AUTHORS = device_profile("authors")
AIHWKIT = device_profile("aihwkit")
KEY = jax.random.PRNGKey(0)


def test_profiles_are_named_and_round_trip_through_json():
    assert set(DEVICE_PROFILES) == {"ibm", "authors", "hermes", "aihwkit"}
    assert device_profile("ibm") == PCMDevice()
    for name, device in DEVICE_PROFILES.items():
        assert profile_name(device) == name
        import dataclasses

        assert device_from_json(dataclasses.asdict(device)) == device
        assert device_from_json(name) == device
    assert profile_name(AUTHORS.replace(t0_s=2.0)) == "custom"
    with pytest.raises(ConfigError, match="unknown device profile 'hermes2'"):
        device_profile("hermes2")
    with pytest.raises(ConfigError, match="unknown PCMDevice fields"):
        device_from_json({"g_max": 25.0})
    with pytest.raises(ConfigError, match="fixed_age_s"):
        PCMDevice(initial_programming="authors_jitter")
    with pytest.raises(ConfigError, match="reprogram_from"):
        PCMDevice(reprogram_from="somewhere")


def test_authors_initial_write_is_jitter_plus_drift_at_ratio_32_and_reflects_large_weights():
    w = jnp.asarray([0.5, -0.25, 0.0, 0.9, -2.47, 1.8])
    key_jitter, key_nu = jax.random.split(KEY)
    g_target, g_prog, nu = AUTHORS.program_weights(KEY, w)
    read = read_statistics(AUTHORS, program_layer(AUTHORS, KEY, w, 0.0), 12345.0, False).mean
    # the same draws as the authors' arithmetic: clip(clip(w) + u + clip(w·32^-ν) − w)
    nu_w = nu[0]
    decay = 32.0 ** (-nu_w)
    jitter = 0.01 * jax.random.uniform(key_jitter, w.shape, minval=-1.0, maxval=1.0)
    expected = np.clip(np.clip(w, -1, 1) + jitter + np.clip(w * decay, -1, 1) - w, -1, 1)
    np.testing.assert_allclose(read, expected, atol=1e-6)
    assert float(read[4]) > 0.3  # −2.47 comes back positive (≈ 0.47), as in the authors' code
    assert np.all(np.abs(np.asarray(read[:4]) - np.asarray(w[:4]) * np.asarray(decay[:4])) <= 0.01 + 1e-6)
    # the age on the chip clock does not matter: t/t0 is 32 at every read
    later = read_statistics(AUTHORS, program_layer(AUTHORS, KEY, w, 0.0), 3e7, False).mean
    np.testing.assert_array_equal(read, later)


def test_authors_reprogram_starts_from_the_drifted_weight_and_drifts_again():
    w = jnp.full((64, 64), 0.5)
    state = program_layer(AUTHORS.replace(prog_noise_scale=0.0), KEY, w, 0.0)
    device = AUTHORS.replace(prog_noise_scale=0.0)
    read0 = read_statistics(device, state, 10.0, False).mean
    update = jnp.zeros((64, 64)).at[:, :32].set(0.125)
    new_state, touched = reprogram_layer(device, jax.random.PRNGKey(1), state, update, 10.0)
    read1 = read_statistics(device, new_state, 11.0, False).mean
    # untouched weights keep their value; touched ones are (drifted + Δ) drifted again by a fresh ν'
    np.testing.assert_array_equal(read1[:, 32:], read0[:, 32:])
    fresh_decay = 32.0 ** (-new_state.nu[0, :, :32])
    np.testing.assert_allclose(read1[:, :32], (read0[:, :32] + 0.125) * fresh_decay, rtol=1e-5)
    assert int(touched.sum()) == 64 * 32  # only the active polarity of the touched pairs
    # with the project's default the target is the last target + Δ, read before drift sets in
    ibm = PCMDevice(prog_noise_scale=0.0)
    s_ibm = program_layer(ibm, KEY, w, 0.0)
    s_ibm, _ = reprogram_layer(ibm, KEY, s_ibm, update, 3600.0)
    np.testing.assert_allclose(read_statistics(ibm, s_ibm, 3601.0, False).mean[:, :32], 0.625, rtol=1e-6)


def test_idle_device_noise_only_in_the_published_model():
    g_target = jnp.zeros((2, 10_000))
    g_prog, _ = PCMDevice().program(KEY, g_target)
    assert float(g_prog.mean()) > 0.05  # half-normal of σ_prog(0) = 0.26 µS
    g_prog, _ = AUTHORS.program(KEY, g_target)
    assert float(jnp.abs(g_prog).max()) == 0.0


def test_authors_read_noise_is_microsiemens_log_divisor_one_and_two_devices():
    g, t = 20.0, 32.0
    expected = g * min(0.0088 / g**0.65, 0.2) * math.sqrt(math.log((t + 250e-9) / 250e-9)) / math.sqrt(2)
    assert float(AUTHORS.read_noise_std_uS(jnp.float32(g), jnp.float32(g), 1e6)) == pytest.approx(expected, rel=1e-5)


def test_aihwkit_conventions():
    nu = jnp.asarray(0.05)
    # time origin: ((t + t0)/t0)^-nu, and already drifting at t < t0
    assert float(AIHWKIT.drift_factor(nu, 1.0)) == pytest.approx((21.0 / 20.0) ** -0.05, rel=1e-6)
    assert float(PCMDevice().drift_factor(nu, 1.0)) == 1.0
    # g_P clipped only at 0
    g_prog, _ = AIHWKIT.program(KEY, jnp.full((10_000,), 25.0))
    assert float(g_prog.max()) > 25.0
    assert float(PCMDevice().program(KEY, jnp.full((10_000,), 25.0))[0].max()) <= 25.0
    # σ_prog scales with g_max / 25 µS
    assert float(AIHWKIT.replace(g_max_uS=50.0).prog_noise_std_uS(jnp.float32(25.0))) == pytest.approx(
        2 * float(PCMDevice(g_max_uS=50.0).prog_noise_std_uS(jnp.float32(25.0))), rel=1e-6
    )
    # Q_s on the programmed conductance
    sigma_target = AIHWKIT.read_noise_std_uS(jnp.float32(1.0), jnp.float32(1.0), 3600.0, jnp.float32(2.0))
    sigma_prog = AIHWKIT.replace(read_noise_q_from="target").read_noise_std_uS(
        jnp.float32(2.0), jnp.float32(1.0), 3600.0
    )
    assert float(sigma_target) == pytest.approx(float(sigma_prog), rel=1e-6)


def test_clamped_reads_have_the_rectified_normal_moments():
    g_now, sigma = jnp.asarray([0.0, 0.2, 5.0]), jnp.asarray([0.5, 0.5, 0.5])
    mean, var = AIHWKIT.read_moments(g_now, sigma)
    draws = jnp.maximum(g_now[:, None] + sigma[:, None] * jax.random.normal(KEY, (3, 400_000)), 0.0)
    np.testing.assert_allclose(mean, draws.mean(axis=1), rtol=5e-3)
    np.testing.assert_allclose(var, draws.var(axis=1), rtol=1e-2)
    assert float(mean[0]) == pytest.approx(0.5 / math.sqrt(2 * math.pi), rel=1e-5)
    # one clamped read through the sampling path is never negative
    reads = AIHWKIT.read(KEY, jnp.zeros(1000), jnp.zeros(1000) + 0.01, jnp.zeros(1000), 3600.0)
    assert float(reads.min()) >= 0.0


@pytest.mark.parametrize("name", sorted(DEVICE_PROFILES))
def test_every_profile_runs_on_the_chip(name):
    chip = Chip(ChipConfig(device=device_profile(name)))
    chip.place_dense("layer", (32, 8))
    weights = 0.4 * jax.random.normal(KEY, (32, 8))
    chip.program("layer", weights, KEY)
    chip.advance(3600.0, warn_fixed_age=False)  # a fixed-age profile reads at its age (warns by default)
    report = chip.reprogram("layer", jnp.zeros((32, 8)).at[0, 0].set(0.25), KEY, rounding="nearest")
    assert 1 <= report.devices_touched <= 2
    out = chip.mvm("layer", jnp.ones((4, 32)), KEY)
    assert out.shape == (4, 8) and bool(jnp.all(jnp.isfinite(out)))
