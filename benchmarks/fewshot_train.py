"""Seconds per MAML outer iteration at meta-batch 32 and peak memory, per training variant.

Each variant runs in its own process (so peak RSS is that variant's), on real Omniglot tasks, timed
after compilation, median of ``--iterations`` steps. Reference on this 2-core machine: the authors'
TensorFlow code takes 12–14 s per outer iteration at meta-batch 32 without its noise model.
The machine's fp32 matmul peak (a 2048³ ``jnp.dot``, best of 5) is measured too, and each variant's
step is reported as a fraction of it, counting the step's conv GEMM work (forward, kernel gradient and
image gradient; the first layer needs no image gradient) as the FLOPs.
Usage: ``python benchmarks/fewshot_train.py [--iterations N] [--variants fp32,pcm]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

AUTHORS_SECONDS = 12.0


def step_gflop(meta_batch: int) -> float:
    """Conv GEMM GFLOP of one outer iteration (the inner loop and the readout are negligible)."""
    from l2l_pcm.fewshot.maml import MAMLConfig

    config = MAMLConfig(meta_batch=meta_batch)
    images = meta_batch * config.ways * (config.shots + config.queries)
    size, c_in, total = 28, 1, 0.0
    for layer in range(4):
        size = (size + 1) // 2
        forward = 2 * images * size * size * 9 * c_in * config.channels
        total += forward * (2 if layer == 0 else 3)
        c_in = config.channels
    return total / 1e9


def matmul_peak_gflops(size: int = 2048) -> float:
    import jax

    a = jax.random.normal(jax.random.PRNGKey(0), (size, size))
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def run_variant(variant: str, iterations: int, meta_batch: int) -> dict:
    import jax

    from l2l_pcm.fewshot.data import TaskSampler
    from l2l_pcm.fewshot.maml import MAMLConfig, make_optimizer, train_step
    from l2l_pcm.fewshot.model import init_params
    from l2l_pcm.fewshot.omniglot import load_omniglot, split_background

    config = MAMLConfig(variant=variant, meta_batch=meta_batch)
    train_set, _ = split_background(load_omniglot("background"))
    sampler = TaskSampler(train_set, config.ways, config.shots, config.queries, augment_rotations=True)
    params = init_params(jax.random.PRNGKey(0), config.cnn)
    opt_state = make_optimizer(config).init(params)
    times = []
    for it in range(iterations + 1):
        start = time.perf_counter()
        batch = sampler.sample(it, meta_batch)
        params, opt_state, loss, _ = train_step(params, opt_state, batch, jax.random.PRNGKey(it), config)
        loss.block_until_ready()
        if it:  # the first call compiles
            times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "variant": variant,
        "meta_batch": meta_batch,
        "seconds_median": statistics.median(times),
        "seconds_min": min(times),
        "peak_rss_mb": peak_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--variants", default="fp32,4bit,pcm")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.child, args.iterations, args.meta_batch)))
        return
    peak = matmul_peak_gflops()
    gflop = step_gflop(args.meta_batch)
    rows = []
    for variant in args.variants.split(","):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                variant,
                "--iterations",
                str(args.iterations),
                "--meta-batch",
                str(args.meta_batch),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"{'variant':>8} | {'meta-batch':>10} | {'s/iter (median)':>15} | {'min':>6} | {'peak RSS MB':>11} | "
        f"{'% fp32 peak':>11} | vs authors"
    )
    for r in rows:
        print(
            f"{r['variant']:>8} | {r['meta_batch']:>10} | {r['seconds_median']:15.3f} | {r['seconds_min']:6.3f} | "
            f"{r['peak_rss_mb']:11.0f} | {100 * gflop / r['seconds_median'] / peak:11.0f} | "
            f"{AUTHORS_SECONDS / r['seconds_median']:.1f}x faster"
        )
    slowest = max(r["seconds_median"] for r in rows)
    print(f"matmul_peak_gflops: {peak:.0f}")
    print(f"step_gflop: {gflop:.1f}")
    print(f"fraction_of_fp32_peak: {gflop / slowest / peak:.2f}")
    print(f"peak_memory_mb: {max(r['peak_rss_mb'] for r in rows):.0f}")
    print(f"seconds_per_iteration: {slowest:.3f}")
    print(f"speedup_vs_authors: {AUTHORS_SECONDS / slowest:.1f}")


if __name__ == "__main__":
    main()
