"""Throughput of chip MVMs with per-read noise vs a plain float32 matmul of the same shape.

Exact per-read noise needs a second matmul for the output variance (x² @ σ²) and one normal per
output, so its floor is about 2x; "per_batch" noise (one device-noise draw per call) needs one matmul.
Both run jitted on the same inputs in one process, taking turns round by round, best of several rounds
each, so the ratio is robust to a shared machine's noise. Also timed: the layer API, ``analog_dense(chip.layer(...))``
jitted (no Python per call; its reads are booked on the chip by a callback), and the chip with the
threefry noise generator (``ChipConfig(forward=ForwardConfig(read_noise_rng="threefry"))``, the default
before the counter-based one), against the same plain matmul.
Usage: ``python benchmarks/chip_mvm.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import time

import jax

from l2l_pcm.chip import Chip, ChipConfig, ForwardConfig, analog_dense

SHAPES = ((1024, 504, 56), (1024, 256, 256))
MODES = ("per_read", "per_batch")


def best_times(fns, repeats: int, inner: int) -> list[float]:
    """Seconds per call of each of ``fns``, best of ``repeats`` rounds; the functions take turns within
    every round, so a slow spell of a shared machine hits them alike and their ratio stays put."""
    for fn in fns:
        jax.block_until_ready(fn())
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for index, fn in enumerate(fns):
            start = time.perf_counter()
            for _ in range(inner):
                out = fn()
            jax.block_until_ready(out)
            best[index] = min(best[index], (time.perf_counter() - start) / inner)
    return best


def programmed_chip(config: ChipConfig, weights, key) -> Chip:
    chip = Chip(config)
    chip.place_dense("layer", weights.shape)
    chip.program("layer", weights, key)
    chip.advance(3600.0)
    return chip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--inner", type=int, default=30)
    args = parser.parse_args()
    key = jax.random.PRNGKey(0)
    matmul = jax.jit(lambda x, w: x @ w)
    dense = jax.jit(analog_dense)
    calls = args.inner * (args.repeats + 1)

    def with_fresh_keys(fn):  # fn(key) -> a call without arguments, a new key every time
        keys = iter(jax.random.split(key, calls))
        return lambda: fn(next(keys))

    variants = {
        "per_read": lambda chip, x: lambda k: chip.mvm("layer", x, k),
        "per_batch": lambda chip, x: lambda k: chip.mvm("layer", x, k),
        "threefry": lambda chip, x: lambda k: chip.mvm("layer", x, k),
        "layer API": lambda chip, x: (lambda layer: lambda k: dense(layer, x, k))(chip.layer("layer")),
    }
    configs = {
        "per_read": ChipConfig(),
        "per_batch": ChipConfig(forward=ForwardConfig(read_noise_mode="per_batch")),
        "threefry": ChipConfig(forward=ForwardConfig(read_noise_rng="threefry")),
        "layer API": ChipConfig(),
    }
    ratios = {name: [] for name in variants}
    chip_ms = {name: [] for name in variants}
    print(f"{'batch x fan_in x fan_out':>26} | {'variant':>11} | {'matmul ms':>9} | {'chip ms':>8} | {'ratio':>5}")
    for batch, fan_in, fan_out in SHAPES:
        weights = 0.3 * jax.random.normal(key, (fan_in, fan_out))
        x = jax.random.uniform(key, (batch, fan_in))
        for name, make in variants.items():
            run = make(programmed_chip(configs[name], weights, key), x)
            t_matmul, t_chip = best_times(
                [lambda x=x, w=weights: matmul(x, w), with_fresh_keys(run)], args.repeats, args.inner
            )
            ratios[name].append(t_chip / t_matmul)
            chip_ms[name].append(t_chip * 1e3)
            print(
                f"{f'{batch} x {fan_in} x {fan_out}':>26} | {name:>11} | {t_matmul * 1e3:9.3f} | "
                f"{t_chip * 1e3:8.3f} | {t_chip / t_matmul:5.2f}"
            )
    print(f"ratio_chip_to_matmul_per_batch_noise: {max(ratios['per_batch']):.2f}")
    print(f"ratio_layer_api_to_matmul (jitted analog_dense, exact noise, worst shape): {max(ratios['layer API']):.2f}")
    print(f"ratio_chip_to_matmul_threefry (read_noise_rng='threefry', worst shape): {max(ratios['threefry']):.2f}")
    print("(default: exact per-read noise, counter-based generator, worst shape:)")
    worst = max(range(len(SHAPES)), key=lambda i: ratios["per_read"][i])
    print(f"chip_ms_per_mvm: {chip_ms['per_read'][worst]:.3f}")
    print(f"ratio_chip_to_matmul: {ratios['per_read'][worst]:.2f}")


if __name__ == "__main__":
    main()
