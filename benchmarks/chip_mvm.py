"""Throughput of chip MVMs with per-read noise vs a plain float32 matmul of the same shape.

Exact per-read noise needs a second matmul for the output variance (x² @ σ²) and one normal per
output, so its floor is about 2x; "per_batch" noise (one device-noise draw per call) needs one matmul.
Both run jitted on the same inputs in one process, interleaved, best of several repeats each, so the
ratio is robust to a shared machine's noise. Also timed: the layer API, ``analog_dense(chip.layer(...))``
inside one jitted function (no Python per call, no counters), against the same plain matmul. Usage: ``python benchmarks/chip_mvm.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import time

import jax

from l2l_pcm.chip import Chip, ChipConfig, analog_dense

SHAPES = ((1024, 504, 56), (1024, 256, 256))
MODES = ("per_read", "per_batch")


def best_time(fn, repeats: int, inner: int) -> float:
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn()
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--inner", type=int, default=50)
    args = parser.parse_args()
    key = jax.random.PRNGKey(0)
    matmul = jax.jit(lambda x, w: x @ w)
    ratios = {mode: [] for mode in MODES}
    chip_ms = {mode: [] for mode in MODES}
    api_ratios = []
    print(f"{'batch x fan_in x fan_out':>26} | {'read noise':>10} | {'matmul ms':>9} | {'chip ms':>8} | {'ratio':>5}")
    for batch, fan_in, fan_out in SHAPES:
        weights = 0.3 * jax.random.normal(key, (fan_in, fan_out))
        x = jax.random.uniform(key, (batch, fan_in))
        for mode in MODES:
            chip = Chip(ChipConfig(read_noise_mode=mode))
            chip.place_dense("layer", (fan_in, fan_out))
            chip.program("layer", weights, key)
            chip.advance(3600.0)
            keys = iter(jax.random.split(key, 2 * args.inner * (args.repeats + 1)))
            t_matmul = best_time(lambda x=x, w=weights: matmul(x, w), args.repeats, args.inner)
            t_chip = best_time(lambda c=chip, x=x, k=keys: c.mvm("layer", x, next(k)), args.repeats, args.inner)
            if mode == "per_read":
                layer = chip.layer("layer")
                dense = jax.jit(analog_dense)
                t_api = best_time(lambda x=x, k=keys: dense(layer, x, next(k)), args.repeats, args.inner)
                api_ratios.append(t_api / t_matmul)
            ratios[mode].append(t_chip / t_matmul)
            chip_ms[mode].append(t_chip * 1e3)
            print(
                f"{f'{batch} x {fan_in} x {fan_out}':>26} | {mode:>10} | {t_matmul * 1e3:9.3f} | "
                f"{t_chip * 1e3:8.3f} | {t_chip / t_matmul:5.2f}"
            )
    print(f"ratio_chip_to_matmul_per_batch_noise: {max(ratios['per_batch']):.2f}")
    print(f"ratio_layer_api_to_matmul (jitted analog_dense, per-read noise, worst shape): {max(api_ratios):.2f}")
    print("(default mode, exact per-read noise, worst shape:)")
    worst = max(range(len(SHAPES)), key=lambda i: ratios["per_read"][i])
    print(f"chip_ms_per_mvm: {chip_ms['per_read'][worst]:.3f}")
    print(f"ratio_chip_to_matmul: {ratios['per_read'][worst]:.2f}")


if __name__ == "__main__":
    main()
