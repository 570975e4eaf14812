"""Statistics of l2l-pcm's ``aihwkit`` device profile against IBM aihwkit 1.1.0, on a grid of weights and ages.

Not part of l2l-pcm's extras or CI: it needs an environment with aihwkit 1.1.0 and torch next to l2l-pcm (the
one ``benchmarks/aihwkit_compare.py`` describes)::

    python3.11 -m venv aihw && aihw/bin/pip install "aihwkit==1.1.0" "torch==2.10.0" && aihw/bin/pip install -e .
    aihw/bin/python benchmarks/aihwkit_profile_check.py [--devices 20000] [--seed 0] [--tile-rows 512]

For every weight w in {-1, -0.5, 0, 0.25, 0.5, 1} (units of w_max = 1; a differential pair, positive part on
G+, negative on G-, g = |w| g_max, g_max = 25 µS) and every age t in {1 s, 1 h, 1 day, 30 days} after
programming, ``--devices`` pairs are programmed once and read once at each age (fresh read noise per age),
four ways:

* A, l2l-pcm's chip: ``Chip(ChipConfig(device=device_profile("aihwkit")))``, one layer [6, devices] with one
  grid weight per row (``scaling="none"``), ``advance`` to the age, ``chip.mvm`` with the six one-hot inputs;
  A', the same profile one level down: ``PCMDevice.program_weights`` then ``PCMDevice.read`` (clamped samples;
  the chip draws a normal with the clamped read's exact mean and variance);
* B, aihwkit's ``PCMLikeNoiseModel(g_max=25)`` applied to the two conductances of each pair:
  ``apply_programming_noise_to_conductance`` and ``generate_drift_coefficients`` on the targets, then
  ``apply_drift_noise_to_conductance(g_prog, nu, t)`` (drift and the 1/f read noise of age t, clamp at 0);
  read weight (G+ - G-)/g_max. Both count t from the end of programming, with t0 = 20 s.
* C, aihwkit's ``AnalogLinear(6, devices, bias=False)`` with ``InferenceRPUConfig`` (its default
  ``PCMLikeNoiseModel`` with ``SinglePairConductanceConverter``, g_max = 25 µS; drift compensation off and
  ``forward.is_perfect`` so the forward adds no converter or output noise), weights [devices, 6] with one grid
  weight per input column: ``program_analog_weights()`` once, ``drift_analog_weights(t)`` per age, forward
  of the six one-hot inputs. aihwkit splits the layer into tiles of ``--tile-rows`` outputs (its default
  ``mapping.max_output_size`` = 512; 0 = one tile); every tile holds the weights ±1, so it maps max|W| = 1 to
  g_max at programming, and each drift call re-maps the *programmed* weights with the tile's noisy max|W_P|.

Prints one row per grid point: the mean of B, the differences A - B and C - B (weight units) and the standard
error of such a difference, the std of B, the ratios A/B, A'/B and C/B, and the standard error of a std ratio
of two independent samples (from each sample's kurtosis: SE(s)/s = sqrt((kurtosis - 1)/(4 n)), 1/sqrt(2n) for
a normal; at w = 0 it came out below the spread over seeds). Then a summary:
for A and A' against B, the largest |z| and the mean z² over the grid (z = difference / its standard error, std
ratio and mean; one model: |z| mostly below 2 and mean z² near 1), and the range of C/B at w = 0 and |w| = 1.
About 3 s of compute (6 s with imports) on two CPU cores at 20,000 devices; ``--seed`` 0 to 4, pooled, gave
the table of docs/device-models.md, "Comparison with aihwkit".
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import numpy as np
import torch
from aihwkit.inference import PCMLikeNoiseModel
from aihwkit.nn import AnalogLinear
from aihwkit.simulator.configs import InferenceRPUConfig

from l2l_pcm.chip import ArraysConfig, Chip, ChipConfig
from l2l_pcm.pcm import device_profile

WEIGHTS = (-1.0, -0.5, 0.0, 0.25, 0.5, 1.0)
AGES = (("1 s", 1.0), ("1 h", 3600.0), ("1 day", 86400.0), ("30 days", 30 * 86400.0))
G_MAX_US = 25.0
ARRAY_COLS = 4096
PRIME = "A'"  # the name of path A' (an f-string of Python 3.11 cannot hold the quote)


def grid(devices: int) -> np.ndarray:
    """[6, devices]: row i holds grid weight i."""
    return np.repeat(np.asarray(WEIGHTS, np.float32)[:, None], devices, axis=1)


# ------------------------------------------------------------------------------------------ l2l-pcm
def l2l_chip(devices: int, seed: int) -> np.ndarray:
    """A: reads [ages, weights, devices] through the chip."""
    arrays = ArraysConfig(count=math.ceil(devices / ARRAY_COLS), rows=256, cols=ARRAY_COLS)
    chip = Chip(ChipConfig(device=device_profile("aihwkit"), arrays=arrays))
    chip.place_dense("grid", (len(WEIGHTS), devices))
    key_program, key_read = jax.random.split(jax.random.PRNGKey(seed))
    chip.program("grid", grid(devices), key_program)
    one_hot = np.eye(len(WEIGHTS), dtype=np.float32)
    reads = []
    for index, (_, age) in enumerate(AGES):
        chip.advance(age - chip.now_s)
        reads.append(np.asarray(chip.mvm("grid", one_hot, jax.random.fold_in(key_read, index))))
    return np.stack(reads)


def l2l_device(devices: int, seed: int) -> np.ndarray:
    """A': reads [ages, weights, devices] from ``PCMDevice.program_weights`` and ``PCMDevice.read``."""
    device = device_profile("aihwkit")
    key_program, key_read = jax.random.split(jax.random.PRNGKey(seed + 1))
    g_target, g_prog, nu = device.program_weights(key_program, grid(devices))
    reads = []
    for index, (_, age) in enumerate(AGES):
        g_read = device.read(jax.random.fold_in(key_read, index), g_target, g_prog, nu, age)
        reads.append(np.asarray(device.conductances_to_weights(g_read)))
    return np.stack(reads)


# ------------------------------------------------------------------------------------------ aihwkit
def aihwkit_functions(devices: int, seed: int) -> np.ndarray:
    """B: reads [ages, weights, devices] from ``PCMLikeNoiseModel``'s per-conductance functions."""
    torch.manual_seed(seed + 2)
    model = PCMLikeNoiseModel(g_max=G_MAX_US)
    weights = torch.from_numpy(grid(devices))
    targets = [weights.clamp(min=0.0) * G_MAX_US, (-weights).clamp(min=0.0) * G_MAX_US]
    programmed = [model.apply_programming_noise_to_conductance(g) for g in targets]
    nus = [model.generate_drift_coefficients(g) for g in targets]
    reads = []
    for _, age in AGES:
        g_plus, g_minus = (
            model.apply_drift_noise_to_conductance(g, nu, age) for g, nu in zip(programmed, nus, strict=True)
        )
        reads.append(((g_plus - g_minus) / G_MAX_US).numpy())
    return np.stack(reads)


def aihwkit_linear(devices: int, seed: int, tile_rows: int) -> np.ndarray:
    """C: reads [ages, weights, devices] through an ``AnalogLinear`` with aihwkit's inference tiles."""
    torch.manual_seed(seed + 3)
    rpu_config = InferenceRPUConfig()
    rpu_config.noise_model = PCMLikeNoiseModel(g_max=G_MAX_US)
    rpu_config.drift_compensation = None
    rpu_config.forward.is_perfect = True
    rpu_config.mapping.max_output_size = tile_rows
    rpu_config.mapping.max_input_size = 0 if tile_rows == 0 else 512
    layer = AnalogLinear(len(WEIGHTS), devices, bias=False, rpu_config=rpu_config)
    layer.set_weights(torch.from_numpy(grid(devices).T.copy()))
    layer.eval()
    one_hot = torch.eye(len(WEIGHTS))
    with torch.no_grad():
        exact = layer(one_hot).numpy()
        if not np.array_equal(exact, grid(devices)):
            raise RuntimeError("the tile does not hold the grid weights exactly before programming")
        layer.program_analog_weights()
        reads = []
        for _, age in AGES:
            layer.drift_analog_weights(age)
            reads.append(layer(one_hot).numpy())
    return np.stack(reads)


# ------------------------------------------------------------------------------------------ report
def moments(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, std and relative standard error of the std, over the last axis (float64)."""
    x = samples.astype(np.float64)
    mean = x.mean(axis=-1)
    centred = x - mean[..., None]
    var = (centred**2).mean(axis=-1)
    kurtosis = (centred**4).mean(axis=-1) / np.maximum(var, 1e-300) ** 2
    return mean, np.sqrt(var), np.sqrt((kurtosis - 1.0) / (4.0 * x.shape[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20_000, help="pairs per grid weight (default 20000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tile-rows", type=int, default=512, help="aihwkit mapping.max_output_size of path C (0: one tile)"
    )
    args = parser.parse_args()
    n = args.devices
    start = time.perf_counter()
    paths, seconds = {}, {}
    for name, run in (
        ("A", lambda: l2l_chip(n, args.seed)),
        ("A'", lambda: l2l_device(n, args.seed)),
        ("B", lambda: aihwkit_functions(n, args.seed)),
        ("C", lambda: aihwkit_linear(n, args.seed, args.tile_rows)),
    ):
        begin = time.perf_counter()
        paths[name] = moments(run())
        seconds[name] = time.perf_counter() - begin
    mean, std, rel_se = ({name: stats[i] for name, stats in paths.items()} for i in range(3))

    print(
        f"aihwkit 1.1.0 PCMLikeNoiseModel vs l2l-pcm profile 'aihwkit': {n:,} devices per grid point, seed "
        f"{args.seed}, C on tiles of {args.tile_rows or n} rows"
    )
    print("A = l2l-pcm chip.mvm, A' = PCMDevice.read, B = PCMLikeNoiseModel functions on both devices of the pair,")
    print("C = aihwkit AnalogLinear (program_analog_weights, drift_analog_weights). Weights in units of w_max.")
    header = (
        f"{'w':>5} {'age':>7} | {'mean B':>8} {'A-B':>8} {'C-B':>8} {'±SE':>7} | "
        f"{'std B':>7} {'A/B':>6} {PRIME + '/B':>6} {'C/B':>6} {'±SE':>6}"
    )
    print(header)
    print("-" * len(header))
    z_std: dict[str, list[float]] = {"A": [], PRIME: []}
    z_mean: dict[str, list[float]] = {"A": [], PRIME: []}
    c_ratio: dict[str, list[float]] = {"w = 0": [], "|w| = 1": []}
    for a, (age_name, _) in enumerate(AGES):
        for i, w in enumerate(WEIGHTS):
            se_ratio = math.hypot(rel_se["A"][a, i], rel_se["B"][a, i])
            se_mean = math.hypot(std["A"][a, i], std["B"][a, i]) / math.sqrt(n)
            ratios = {name: std[name][a, i] / std["B"][a, i] for name in ("A", "A'", "C")}
            for name in z_std:
                se = math.hypot(rel_se[name][a, i], rel_se["B"][a, i])
                z_std[name].append((ratios[name] - 1.0) / se)
                se_m = math.hypot(std[name][a, i], std["B"][a, i]) / math.sqrt(n)
                z_mean[name].append((mean[name][a, i] - mean["B"][a, i]) / se_m)
            if w == 0.0:
                c_ratio["w = 0"].append(ratios["C"])
            elif abs(w) == 1.0:
                c_ratio["|w| = 1"].append(ratios["C"])
            print(
                f"{w:>5g} {age_name:>7} | {mean['B'][a, i]:>8.4f} {mean['A'][a, i] - mean['B'][a, i]:>+8.4f} "
                f"{mean['C'][a, i] - mean['B'][a, i]:>+8.4f} {se_mean:>7.4f} | {std['B'][a, i]:>7.4f} "
                f"{ratios['A']:>6.3f} {ratios[PRIME]:>6.3f} {ratios['C']:>6.3f} {se_ratio:>6.3f}"
            )
    print()
    for name in z_std:
        for what, z in (("std ratio", np.asarray(z_std[name])), ("mean", np.asarray(z_mean[name]))):
            print(
                f"{name} vs B, {what}: largest |z| {np.abs(z).max():.2f}, mean z² {np.mean(z**2):.2f} over the "
                f"{z.size} grid points (same model: |z| mostly < 2, mean z² near 1)"
            )
    for label, values in c_ratio.items():
        print(f"C/B std at {label}: {min(values):.3f} … {max(values):.3f}")
    timing = ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items())
    print(f"wall time {time.perf_counter() - start:.1f} s ({timing})")


if __name__ == "__main__":
    main()
