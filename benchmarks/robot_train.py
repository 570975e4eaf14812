"""Seconds per meta-training iteration of the robot scenario (full-size networks, T = 249, Scorbot).

One iteration = trainee pass 1, LSG, e-prop update, trainee pass 2 with per-task weights, outer loss,
BPTT through all of it and Adam (:func:`l2l_pcm.robot.model.train_step`). Reported per batch size:
best of ``--repeats`` timed iterations after compilation, analytic FLOPs (matmuls and einsums only,
2 FLOPs per multiply-add, backward = 2x forward), the XLA cost model's count for comparison, and the
achieved fraction of a plain float32 2048x2048 matmul's throughput measured in the same process.
Peak memory is the process-wide ``ru_maxrss`` (all batch sizes and compilations together).

On a shared machine the numbers move with the other load; the load average and this process's CPU
share during the timed iterations are printed to judge that. Usage:
``python benchmarks/robot_train.py [--batches 16 90] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import jax
import jax.numpy as jnp

from l2l_pcm.robot.model import RobotConfig, init_params, make_optimizer, train_step
from l2l_pcm.robot.tasks import sample_trajectories


def analytic_flops(config: RobotConfig, batch: int) -> float:
    """FLOPs of one train step: forward matmuls ×3 (forward + gradients of both operands).

    Pass 1 runs once for all tasks (batch 1): its input is the task-independent clock.
    """
    trainee, lsg, steps = config.trainee, config.lsg, config.n_steps
    mac = 2 * steps
    per_task = mac * (
        lsg.n_stack * lsg.n_rec  # LSG recurrence + input, one stacked read per step
        + lsg.n_rec * lsg.n_out  # LSG readout = learning signals
        + trainee.n_stack * trainee.n_rec  # e-prop contraction over time
        + trainee.n_stack * trainee.n_rec  # trainee pass 2, per-task weights
        + trainee.n_rec * trainee.n_out  # trainee readout, pass 2
    )
    shared = mac * (trainee.n_stack * trainee.n_rec + trainee.n_rec * trainee.n_out)  # pass 1
    return 3.0 * (batch * per_task + shared)


def xla_flops(compiled) -> float | None:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):
        analysis = analysis[0] if analysis else None
    return None if not analysis or "flops" not in analysis else float(analysis["flops"])


def best_of(fn, repeats: int) -> tuple[float, float]:
    """Best wall time of ``repeats`` calls, and this process's CPU share of the machine meanwhile."""
    best, wall, cpu = float("inf"), 0.0, 0.0
    for _ in range(repeats):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        jax.block_until_ready(fn())
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        best, wall = min(best, elapsed), wall + elapsed
        cpu += after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    return best, cpu / (wall * (os.cpu_count() or 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 90])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--hardware-aware",
        action="store_true",
        help="time the hardware-aware step (PCM model, per-read noise) the shipped model used; "
        "the analytic FLOP count then undercounts (pass 1 runs per task, plus noise matmuls)",
    )
    args = parser.parse_args()
    print(f"devices: {jax.devices()}, cores: {os.cpu_count()}, load average at start: {os.getloadavg()}")

    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (2048, 2048), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    t_matmul, _ = best_of(lambda: matmul(x), 10)
    matmul_gflops = 2 * 2048**3 / t_matmul / 1e9
    print(f"float32 2048x2048 matmul: {t_matmul * 1e3:.1f} ms = {matmul_gflops:.1f} GFLOP/s")

    fractions = {}
    seconds = {}
    for batch in args.batches:
        config = RobotConfig(batch=batch, hardware_aware=args.hardware_aware)
        params = init_params(key, config)
        targets = sample_trajectories(jax.random.fold_in(key, batch), config.arm_model, batch, config.n_steps)
        opt_state = make_optimizer(config).init(params)
        start = time.perf_counter()
        compiled = train_step.lower(params, opt_state, targets, key, config).compile()
        _, _, loss, aux = jax.block_until_ready(compiled(params, opt_state, targets, key))
        first = time.perf_counter() - start
        seconds[batch], cpu_share = best_of(
            lambda c=compiled, p=params, o=opt_state, t=targets: c(p, o, t, key), args.repeats
        )
        flops = analytic_flops(config, batch)
        gflops = flops / seconds[batch] / 1e9
        fractions[batch] = gflops / matmul_gflops
        xla = xla_flops(compiled)
        print(
            f"batch {batch}: {seconds[batch]:.3f} s/iteration (best of {args.repeats}; compile + first "
            f"{first:.1f} s; CPU share of the machine {cpu_share:.0%}), {flops / 1e9:.1f} GFLOP analytic "
            f"-> {gflops:.1f} GFLOP/s = {fractions[batch]:.1%} of matmul; XLA cost model "
            + (f"{xla / 1e9:.2f} GFLOP (counts each scan body once)" if xla is not None else "n/a")
        )
        print(
            f"  at init: loss {float(loss):.4f}, mse_xyz before/after {float(aux['mse_xyz_before']):.5f}/"
            f"{float(aux['mse_xyz_after']):.5f}, mse_omega before/after {float(aux['mse_omega_before']):.4f}/"
            f"{float(aux['mse_omega_after']):.4f}, rates trainee {float(aux['rate_trainee_hz']):.1f} Hz, "
            f"LSG {float(aux['rate_lsg_hz']):.1f} Hz, fraction of synapses updated {float(aux['fraction_updated']):.4f}"
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS (process-wide, all runs above): {peak_mb:.0f} MB; load average at end: {os.getloadavg()}")
    headline = 16 if 16 in seconds else args.batches[0]
    print(f"seconds_per_iteration_batch{headline}: {seconds[headline]:.3f}")
    print(f"fraction_of_matmul_peak: {fractions[headline]:.3f}")
    print(f"peak_memory_mb: {peak_mb:.0f}")


if __name__ == "__main__":
    main()
