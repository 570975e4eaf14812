"""Meta-training loop: progress bar, validation, metrics files, atomic checkpoints, resume, NaN guard.

Everything random is derived from ``(seed, iteration)``, so a resumed run draws the same tasks and
noise as an uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import sys
import time
from pathlib import Path

import jax
import numpy as np

from l2l_pcm import _io
from l2l_pcm.checkpoint import load_checkpoint, save_checkpoint
from l2l_pcm.errors import CheckpointError, L2LPCMError
from l2l_pcm.fewshot.data import TaskSampler, load_omniglot, split_background
from l2l_pcm.fewshot.maml import MAMLConfig, evaluate_batch, make_optimizer, train_step
from l2l_pcm.fewshot.model import init_params
from l2l_pcm.pcm import PCMDevice

CHECKPOINT_KIND = "fewshot-maml"
SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "fewshot_omniglot_5way5shot.safetensors"
LAST = "last.safetensors"
BEST = "best.safetensors"
METRIC_FIELDS = ("iteration", "seconds", "train_loss", "train_accuracy", "val_accuracy", "val_ci95")


def save_fewshot_checkpoint(path, params, config: MAMLConfig, extra: dict | None = None, opt_state=None) -> Path:
    trees = {"params": params} if opt_state is None else {"params": params, "opt": opt_state}
    return save_checkpoint(path, CHECKPOINT_KIND, trees, {"config": config.to_json(), **(extra or {})})


def load_fewshot_checkpoint(path, with_optimizer: bool = False):
    """(params, config, metadata[, opt_state]) from a few-shot checkpoint; clear errors for foreign files."""
    from l2l_pcm._io import load_tensors

    _, metadata = load_tensors(path, kind=CHECKPOINT_KIND)
    try:
        config = MAMLConfig.from_json(metadata["config"])
    except (KeyError, TypeError, L2LPCMError) as exc:
        raise CheckpointError(f"{path}: unusable few-shot config ({exc})") from None
    params = init_params(jax.random.PRNGKey(0), config.cnn)
    templates = {"params": params}
    if with_optimizer:
        templates["opt"] = make_optimizer(config).init(params)
    trees, metadata = load_checkpoint(path, CHECKPOINT_KIND, templates)
    if with_optimizer:
        return trees["params"], config, metadata, trees["opt"]
    return trees["params"], config, metadata


def mean_ci95(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(values.size))


def validate(params, sampler: TaskSampler, config: MAMLConfig, device: PCMDevice, tasks: int, seed: int):
    """Final-step query accuracy over ``tasks`` validation tasks (mean, 95 % CI)."""
    finals = []
    batch_size = config.meta_batch
    for start in range(0, tasks, batch_size):
        n = min(batch_size, tasks - start)
        batch = sampler.sample(seed * 1_000_003 + start, n)
        accuracies = evaluate_batch(params, batch, jax.random.PRNGKey(seed + start), config, device)
        finals.extend(np.asarray(accuracies[:, -1]).tolist())
    return mean_ci95(finals)


def _write_metrics(out_dir: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    _io.atomic_write_text(out_dir / "metrics.csv", buffer.getvalue())
    _io.atomic_write_text(out_dir / "metrics.json", json.dumps(rows, indent=1))


def train(
    config: MAMLConfig,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    device: PCMDevice | None = None,
) -> dict:
    """Meta-train, writing ``last.safetensors``, ``best.safetensors`` and ``metrics.csv/json`` to ``out_dir``."""
    from tqdm.auto import tqdm

    device = device or PCMDevice()
    out_dir = Path(out_dir)
    background = load_omniglot("background", data_dir)
    train_set, val_set = split_background(background)
    train_sampler = TaskSampler(train_set, config.ways, config.shots, config.queries, config.augment_rotations)
    val_sampler = TaskSampler(val_set, config.ways, config.shots, config.queries, augment_rotations=False)

    params = init_params(jax.random.PRNGKey(config.seed), config.cnn)
    opt_state = make_optimizer(config).init(params)
    start, rows, best, elapsed = 0, [], -1.0, 0.0
    if resume and (out_dir / LAST).exists():
        params, saved_config, meta, opt_state = load_fewshot_checkpoint(out_dir / LAST, with_optimizer=True)
        if dataclasses.replace(saved_config, iterations=config.iterations) != config:
            raise CheckpointError(
                f"{out_dir / LAST} was trained with another config (only --iterations may change on resume); "
                "start a new --out folder"
            )
        start, rows, best, elapsed = meta["iteration"], meta["metrics"], meta["best_val_accuracy"], meta["seconds"]

    def checkpoint(iteration: int, path: str) -> None:
        extra = {"iteration": iteration, "metrics": rows, "best_val_accuracy": best, "seconds": elapsed}
        save_fewshot_checkpoint(out_dir / path, params, config, extra, opt_state)

    bar = tqdm(
        range(start, config.iterations),
        initial=start,
        total=config.iterations,
        disable=not progress,
        desc="meta-train",
        unit="it",
    )
    loss_avg = acc_avg = None
    tic = time.perf_counter()
    for iteration in bar:
        batch = train_sampler.sample(config.seed * 1_000_003 + iteration, config.meta_batch)
        key = jax.random.fold_in(jax.random.PRNGKey(config.seed), iteration)
        new_params, new_opt, loss, accuracies = train_step(params, opt_state, batch, key, config, device)
        loss = float(loss)
        if not math.isfinite(loss):
            bar.close()
            raise L2LPCMError(
                f"training loss became {loss} at iteration {iteration + 1}; stopped, last good checkpoint "
                f"{out_dir / LAST} (iteration {rows[-1]['iteration'] if rows else 0}) is kept"
            )
        params, opt_state = new_params, new_opt
        final_accuracy = float(accuracies[-1])
        loss_avg = loss if loss_avg is None else 0.95 * loss_avg + 0.05 * loss
        acc_avg = final_accuracy if acc_avg is None else 0.95 * acc_avg + 0.05 * final_accuracy
        bar.set_postfix(loss=f"{loss_avg:.3f}", acc=f"{acc_avg:.3f}")
        done = iteration + 1
        if done % config.validate_every == 0 or done == config.iterations:
            val_acc, val_ci = validate(params, val_sampler, config, device, config.validation_tasks, seed=1)
            elapsed += time.perf_counter() - tic
            tic = time.perf_counter()
            rows.append(
                {
                    "iteration": done,
                    "seconds": round(elapsed, 1),
                    "train_loss": loss_avg,
                    "train_accuracy": acc_avg,
                    "val_accuracy": val_acc,
                    "val_ci95": val_ci,
                }
            )
            message = f"it {done}: val accuracy {100 * val_acc:.2f} ± {100 * val_ci:.2f} % ({elapsed / 60:.1f} min)"
            bar.write(message)
            sys.stdout.flush()
            if val_acc > best:
                best = val_acc
                checkpoint(done, BEST)
            _write_metrics(out_dir, rows)
        if done % config.checkpoint_every == 0 or done == config.iterations:
            elapsed += time.perf_counter() - tic
            tic = time.perf_counter()
            checkpoint(done, LAST)
    bar.close()
    return {
        "iterations": config.iterations,
        "seconds": round(elapsed, 1),
        "best_val_accuracy": best,
        "out_dir": str(out_dir),
    }
