"""Checks a person can read: device statistics against their equations, and a drift demo on the chip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from l2l_pcm.chip.chip import Chip, ChipConfig
from l2l_pcm.errors import ConfigError
from l2l_pcm.pcm import PCMDevice
from l2l_pcm.plotting import human_time_axis, pyplot, save_figure

DEFAULT_GRID_uS = (1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0)
READ_CHECK_TIME_S = 3600.0
DEMO_TIMES_S = (1.0, 10.0, 60.0, 600.0, 3600.0, 36000.0, 86400.0)


MAX_SAMPLES = 10_000_000
"""The most samples per conductance :func:`device_statistics` draws (about 200 MB of float32 arrays)."""


def device_statistics(
    device: PCMDevice, key: jax.Array, g_targets_uS=DEFAULT_GRID_uS, samples: int = 100_000
) -> list[dict]:
    """Sample the device model at each target conductance and compare with its equations.

    Per target: programming-noise std of g_P − g_T; mean and std of the drift exponent ν (targets are
    the folded-normal moments of |N(μ_ν, σ_ν)|); read-noise std of one read at
    t = ``READ_CHECK_TIME_S`` of a device sitting exactly at g_T (so only read noise varies).
    The grid stays away from 0 and g_max, where clipping to [0, g_max] narrows the programming noise.
    """
    if not 2 <= samples <= MAX_SAMPLES:
        raise ConfigError(
            f"samples must be in 2..{MAX_SAMPLES:,} (memory: 5 float32 arrays of that size), got {samples}"
        )
    rows = []
    for g_target, sample_key in zip(g_targets_uS, jax.random.split(key, len(g_targets_uS)), strict=True):
        if not 0 < g_target <= device.g_max_uS:
            raise ConfigError(f"target conductance {g_target} µS is outside (0, g_max={device.g_max_uS}] µS")
        key_prog, key_read = jax.random.split(sample_key)
        g = jnp.full((samples,), g_target, dtype=jnp.float32)
        g_prog, nu = device.program(key_prog, g)
        zero_nu = jnp.zeros_like(g)
        g_read = device.read(key_read, g, g, zero_nu, READ_CHECK_TIME_S)
        nu_mean, nu_std = device.drift_nu_moments(jnp.float32(g_target))
        read_std = device.read_noise_std_uS(jnp.float32(g_target), jnp.float32(g_target), READ_CHECK_TIME_S)
        rows.append(
            {
                "g_target_uS": float(g_target),
                "prog_std_target_uS": float(device.prog_noise_std_uS(jnp.float32(g_target))),
                "prog_std_measured_uS": float(jnp.std(g_prog - g)),
                "nu_mean_target": float(nu_mean),
                "nu_mean_measured": float(jnp.mean(nu)),
                "nu_std_target": float(nu_std),
                "nu_std_measured": float(jnp.std(nu)),
                "read_std_target_uS": float(read_std),
                "read_std_measured_uS": float(jnp.std(g_read - g)),
                "read_time_s": float(device.effective_age_s(READ_CHECK_TIME_S)),
                "samples": int(samples),
            }
        )
    return rows


@dataclasses.dataclass
class DriftDemoResult:
    """Weight error per read time: without compensation, with the calibrated per-array compensation a chip
    can do (``*_compensated``, ``drift_compensation="array"``) and with the oracle global factor no chip can
    measure (``*_oracle``, a reference); then the devices small updates touch."""

    times_s: list[float]
    error_mean: list[float]
    error_std: list[float]
    error_mean_compensated: list[float]
    error_std_compensated: list[float]
    update_rows: list[dict]
    error_mean_oracle: list[float] = dataclasses.field(default_factory=list)
    error_std_oracle: list[float] = dataclasses.field(default_factory=list)
    shape: tuple[int, int] | None = None
    weight_std: float | None = None


def drift_demo(key: jax.Array, shape=(256, 128), weight_std: float = 0.3, times_s=DEMO_TIMES_S) -> DriftDemoResult:
    """Program a random layer, read it as time passes, then apply small updates and count devices touched.

    Weight error = (read weight − target weight)·sign(target): negative means "towards zero", so its
    mean shows drift and its std the spread from programming and read noise (one noisy read of every
    weight). Three identical chips are run (same devices): without compensation, with the calibrated
    per-array compensation (``drift_compensation="array"``: the chip's own reads of known patterns
    against its record of the layer as programmed), and with the oracle ``"global"`` factor from the
    noise-free device state, which no chip can measure (a reference).
    """
    key_w, key_prog, key_read, key_update = jax.random.split(key, 4)
    target = jnp.clip(weight_std * jax.random.normal(key_w, shape), -1, 1)
    chips = {}
    for compensation in ("none", "array", "global"):
        chip = Chip(ChipConfig(drift_compensation=compensation))
        chip.place_dense("layer", shape)
        chip.program("layer", target, key_prog)
        chips[compensation] = chip
    result = DriftDemoResult([], [], [], [], [], [], shape=tuple(shape), weight_std=weight_std)
    series = {
        "none": (result.error_mean, result.error_std),
        "array": (result.error_mean_compensated, result.error_std_compensated),
        "global": (result.error_mean_oracle, result.error_std_oracle),
    }
    eye = jnp.eye(shape[0], dtype=jnp.float32)
    for t, read_key in zip(times_s, jax.random.split(key_read, len(times_s)), strict=True):
        result.times_s.append(float(t))
        for compensation, chip in chips.items():
            chip.advance(t - chip.now_s)
            read = chip.mvm("layer", eye, read_key)  # one noisy read of every weight
            error = np.asarray((read - target) * jnp.sign(target))
            means, stds = series[compensation]
            means.append(float(error.mean()))
            stds.append(float(error.std()))
    chip = chips["none"]
    for scale, update_key in zip((1e-2, 3e-2, 1e-1), jax.random.split(key_update, 3), strict=True):
        update = scale * jax.random.normal(update_key, shape)
        report = chip.reprogram("layer", update, update_key, rounding="nearest")
        expected = int(jnp.sum(jnp.round(update * 16) != 0))
        result.update_rows.append(
            {
                "update_std": scale,
                "nonzero_quantized_updates": expected,
                "pairs_touched": report.pairs_touched,
                "devices_touched": report.devices_touched,
                "devices_in_layer": report.devices_in_layer,
                "fraction_devices_touched": report.fraction_touched,
                "energy_estimate_pJ": report.energy_pJ,
            }
        )
    return result


def plot_drift_demo(result: DriftDemoResult, path: str | Path) -> Path:
    """Weight error (mean ± std over devices) against time since programming, log time axis: without
    compensation and with the calibrated per-array compensation; the oracle global factor, where the
    result has it, as a thin dashed reference."""
    plt = pyplot()
    times = np.asarray(result.times_s)
    fig, ax = plt.subplots(figsize=(10.0, 8.0), dpi=110, layout="constrained")
    for mean, std, label, color in (
        (result.error_mean, result.error_std, "no compensation", "tab:red"),
        (result.error_mean_compensated, result.error_std_compensated, "calibrated compensation, per array", "tab:blue"),
    ):
        mean, std = np.asarray(mean), np.asarray(std)
        ax.plot(times, mean, marker="o", color=color, label=f"mean error, {label}")
        ax.fill_between(times, mean - std, mean + std, color=color, alpha=0.15, label=f"± 1 std over devices, {label}")
    if result.error_mean_oracle:
        ax.plot(
            times,
            result.error_mean_oracle,
            color="black",
            linestyle="--",
            linewidth=1,
            label="mean error, oracle global factor (reference: no chip can measure it)",
        )
    ax.axhline(0, color="black", linewidth=0.8)
    human_time_axis(ax, times, at_data=True)
    ax.set_xlabel("time since programming (log scale)")
    ax.set_ylabel("weight error (read − target)·sign(target)\n(weight units, w_max = 1)")
    layer = f"one {result.shape[0]}×{result.shape[1]} layer, " if result.shape else ""
    weights = f"weights ~ N(0, {result.weight_std:g}²), " if result.weight_std is not None else ""
    ax.set_title(
        "emulated PCM chip: weights drift towards zero, read noise widens the spread\n"
        f"{layer}{weights}one read of every weight per age"
    )
    fig.legend(loc="outside lower center", frameon=False)
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)
