"""The meta-training loop shared by both scenarios.

Progress bar, validation every N iterations, metrics as CSV and JSON, atomic checkpoints
(``last.safetensors`` every N iterations, ``best.safetensors`` on a better validation score), resume,
and a NaN/inf guard that stops and keeps the last good checkpoint. A scenario supplies a
:class:`MetaTrainer`: its pure pieces (init, one step, validation) and its config.

Randomness of iteration ``i`` is derived from ``(seed, i)`` by the scenario, so a resumed run draws
the same tasks and noise as an uninterrupted one. The same loop runs data-parallel over several
processes (see :mod:`l2l_pcm.distributed`): the scenario shards its meta-batch, the loop replicates the
state, and only process 0 writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from l2l_pcm import _io, distributed
from l2l_pcm.checkpoint import FORMAT_VERSION, check_format, load_checkpoint, migrated_config, save_checkpoint
from l2l_pcm.errors import CheckpointError, ConfigError, L2LPCMError
from l2l_pcm.validation import merged

LAST = "last.safetensors"
BEST = "best.safetensors"
METRICS = ("metrics.csv", "metrics.json")


@dataclasses.dataclass
class MetaTrainer:
    """What the loop needs from a scenario."""

    kind: str
    """Checkpoint kind, e.g. "fewshot-maml"; loading a checkpoint of another kind fails clearly."""
    config: Any
    """A frozen dataclass with ``iterations``, ``validate_every``, ``checkpoint_every``, ``to_json()`` and
    ``from_json()`` (fields added later take their defaults when an older checkpoint is resumed)."""
    init: Callable[[], tuple[Any, Any]]
    """() -> (params, optimiser state), deterministic from the config's seed."""
    step: Callable[[Any, Any, int], tuple[Any, Any, float, dict]]
    """(params, opt_state, iteration) -> (params, opt_state, loss, {metric: value}); passes its meta-batch
    through :func:`l2l_pcm.distributed.shard_tasks`."""
    validate: Callable[[Any], dict]
    """params -> validation metrics, including "score" (higher is better)."""
    score_name: str = "score"
    history: list[dict] = dataclasses.field(default_factory=list)
    """Metric rows of the earlier stages this run continues (``--init-from``), from :func:`training_record`;
    saved with every checkpoint, so an exported model keeps its whole training record."""


def training_record(metadata: dict) -> list[dict]:
    """All metric rows behind a checkpoint, earlier stages (``--init-from``) included.

    Rows carry ``stage`` (1, 2, …) and ``iteration``/``seconds`` counted from the first stage's start;
    the checkpoint's own rows (up to the iteration it was saved at) are the last stage. A run started
    from the checkpoint keeps this as its ``history``.
    """
    history = [dict(row) for row in metadata.get("history", [])]
    stage = max((row["stage"] for row in history), default=0) + 1
    # a stage ends where its checkpoint was saved, which can lie after its last validation row
    offset_it = max((row.get("stage_end", row["iteration"]) for row in history), default=0)
    offset_s = max((row.get("stage_end_seconds", row["seconds"]) for row in history), default=0.0)
    rows = [row for row in metadata.get("metrics", []) if row["iteration"] <= metadata.get("iteration", math.inf)]
    end = metadata.get("iteration", max((row["iteration"] for row in rows), default=0))
    end_s = metadata.get("seconds", max((row["seconds"] for row in rows), default=0.0))
    for row in rows:
        shifted = {"iteration": row["iteration"] + offset_it, "seconds": round(row["seconds"] + offset_s, 1)}
        ends = {"stage_end": offset_it + end, "stage_end_seconds": round(offset_s + end_s, 1)}
        history.append({**row, **shifted, "stage": stage, **ends})
    return history


MAX_EVAL_TASKS = 100_000
"""The most tasks one evaluation takes (600 few-shot tasks take minutes on the chip; 1e8 would run for
days without a word): more is refused before any work starts."""


def check_task_count(tasks: object) -> int:
    """An evaluation's number of tasks: an integer in 2..MAX_EVAL_TASKS (two at least, for an interval)."""
    if isinstance(tasks, bool) or not isinstance(tasks, int) or not 2 <= tasks <= MAX_EVAL_TASKS:
        raise ConfigError(
            f"number of tasks must be an integer in 2..{MAX_EVAL_TASKS:,} (two at least, for a confidence "
            f"interval), got {tasks!r}"
        )
    return tasks


def checkpoint_config(path, kind: str, config_from_json: Callable[[dict], Any]):
    """Read only the config of a checkpoint (to build templates before loading tensors)."""
    _, metadata = _io.load_tensors(path, kind=kind)
    check_format(path, metadata)
    try:
        return config_from_json(migrated_config(metadata)), metadata
    except (KeyError, TypeError, L2LPCMError) as exc:
        raise CheckpointError(f"{path}: unusable {kind} config ({exc})") from None


def _write_metrics(out_dir: Path, rows: list[dict]) -> None:
    _io.atomic_write_csv(out_dir / METRICS[0], rows)
    _io.atomic_write_text(out_dir / METRICS[1], json.dumps(rows, indent=1))


class TrainingStopped(L2LPCMError):
    """SIGINT/SIGTERM stopped a run after saving ``last.safetensors`` at the iteration it had reached."""


def _check_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """No run is lost: never start over a finished or running one by accident, never resume from nothing."""
    if resume and not (out_dir / LAST).exists():
        raise L2LPCMError(
            f"--resume: no checkpoint to continue in {out_dir} ({LAST} not found); leave out --resume to start a run"
        )
    existing = [name for name in (LAST, BEST, *METRICS) if (out_dir / name).exists()]
    if not resume and not overwrite and existing:
        raise L2LPCMError(
            f"{out_dir} already holds a training run ({', '.join(existing)}); continue it with --resume, "
            "or pass --overwrite to replace it"
        )


class _StopSignals:
    """Turn SIGINT/SIGTERM into a request to stop after the current iteration (main thread only)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> _StopSignals:
        # several processes: JAX's preemption notifier owns SIGTERM once jax.distributed is up, and the
        # processes agree on where to stop through distributed.reached_stop_point
        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


LOCK = ".l2l-pcm.lock"
"""The advisory lock a run holds on its folder for its whole life (and the sidecar naming its holder)."""


@contextlib.contextmanager
def run_folder_lock(out_dir: Path):
    """Hold ``out_dir``'s lock (filelock: an OS file lock, released by the OS when a process dies, so a lock
    left by a killed run never blocks the next); a second writer gets one error naming the holder."""
    import socket

    from filelock import FileLock, Timeout

    lock = FileLock(out_dir / LOCK, timeout=0)
    owner = out_dir / f"{LOCK}.owner"
    try:
        lock.acquire()
    except Timeout:
        holder = owner.read_text().strip() if owner.is_file() else "another process"
        raise L2LPCMError(
            f"{out_dir} is being written by another l2l-pcm run ({holder}); wait for it to finish, or use another --out"
        ) from None
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        owner.write_text(f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n")
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def run(
    trainer: MetaTrainer,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    inputs: tuple = (),
    tensorboard: str | Path | None = None,
) -> dict:
    """Meta-train into ``out_dir``; with ``resume`` continue from ``out_dir/last.safetensors``.

    ``inputs``: files the run reads (``--init-from``): none may be one of the files the run writes.
    ``tensorboard``: a folder for TensorBoard event files of every validation row (the metrics CSV/JSON are
    written either way); needs the optional extra ``tensorboard`` (tensorboardX), checked before training.

    One writer per folder: the run holds :func:`run_folder_lock` for its whole life (process 0 of a
    multi-process run).
    Refuses to start over an existing run unless ``overwrite``, and to resume where no checkpoint exists.
    SIGINT/SIGTERM stop the run after the current iteration with a checkpoint of it
    (:class:`TrainingStopped`); in a multi-process run a SIGTERM to any process stops all of them at one
    agreed iteration (:func:`l2l_pcm.distributed.reached_stop_point`). Temp files of a previously killed
    write are removed first; every file written is atomic.
    """
    if not str(out_dir).strip():
        raise L2LPCMError("--out is empty (an unset variable?): name the run folder")
    out_dir = Path(out_dir)
    for source in inputs:
        for name in (LAST, BEST, *METRICS):
            if Path(source).resolve() == (out_dir / name).resolve():
                raise L2LPCMError(
                    f"{source} is the run's own {name}, which the run writes: copy it elsewhere to start from it, "
                    "or continue the run with --resume"
                )
    if not distributed.is_main():
        return _run(trainer, out_dir, resume, progress, overwrite)
    board = _TensorBoard(tensorboard) if tensorboard is not None else None  # a missing extra fails here, early
    _check_out_dir(out_dir, resume, overwrite)  # before the folder is made: a mistyped --out leaves nothing
    _io.writable_folder(out_dir)
    with run_folder_lock(out_dir):
        try:
            return _run(trainer, out_dir, resume, progress, overwrite, board)
        finally:
            if board is not None:
                board.close()


class _TensorBoard:
    """Validation rows as TensorBoard scalars (tensorboardX's event-file writer, github.com/lanpa/tensorboardX:
    a small writer that needs neither TensorFlow nor PyTorch). The tag is the metric's name; the step is the
    iteration, so a resumed run continues its curves."""

    def __init__(self, folder: str | Path):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the optional extra: pip install 'l2l-pcm[tensorboard]' (tensorboardX)"
            ) from None
        if not str(folder).strip():
            raise ConfigError("--tensorboard is empty: name a folder for the event files")
        self.writer = SummaryWriter(logdir=str(folder))

    def log(self, row: dict) -> None:
        for name, value in row.items():
            if name != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(name, value, global_step=row["iteration"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _run(
    trainer: MetaTrainer,
    out_dir: Path,
    resume: bool,
    progress: bool,
    overwrite: bool,
    board: _TensorBoard | None = None,
) -> dict:
    from tqdm.auto import tqdm

    config = trainer.config
    main = distributed.is_main()
    if main:
        _check_out_dir(out_dir, resume, overwrite)  # again, under the lock: no other run can start between
        _io.remove_stale_temporaries(out_dir, (LAST, BEST, *METRICS))
    params, opt_state = trainer.init()
    start, rows, best, elapsed = 0, [], -math.inf, 0.0
    history = trainer.history
    resumed_from = None
    if resume and (out_dir / LAST).exists():
        trees, meta = load_checkpoint(out_dir / LAST, trainer.kind, {"params": params, "opt": opt_state})
        saved = dataclasses.replace(type(config).from_json(migrated_config(meta)), iterations=config.iterations)
        if saved != config:
            raise CheckpointError(
                f"{out_dir / LAST} was trained with another config (only --iterations may change on resume); "
                "start a new --out folder"
            )
        params, opt_state = trees["params"], trees["opt"]
        start, rows, best, elapsed = meta["iteration"], meta["metrics"], meta["best_score"], meta["seconds"]
        if config.iterations <= start:
            raise ConfigError(
                f"--resume: {out_dir / LAST} is at iteration {start}, and the run is to end at iteration "
                f"{config.iterations}: nothing to do; give --iterations above {start} to train on"
            )
        history = meta.get("history") or history
        if main and progress:  # errors stay one line on stderr; the summary says it always
            print(f"resuming {out_dir} from iteration {start}", file=sys.stderr, flush=True)
        resumed_from = start
    params, opt_state, start = distributed.replicate((params, opt_state, np.int32(start)))
    start = int(start)
    saved_at = start  # iteration of the last.safetensors on disk (0: none yet)

    def checkpoint(iteration: int, name: str) -> None:
        if not main:
            return
        metadata = {
            "config": config.to_json(),
            "iteration": iteration,
            "metrics": rows,
            "best_score": best,
            "seconds": elapsed,
            "history": history,
        }
        trees = distributed.local({"params": params, "opt": opt_state})
        save_checkpoint(out_dir / name, trainer.kind, trees, metadata)

    bar = tqdm(
        range(start, config.iterations),
        initial=start,
        total=config.iterations,
        disable=not (progress and main),
        desc=f"{trainer.kind} train",
        unit="it",
    )
    averages: dict[str, float] = {}
    tic = time.perf_counter()
    with _StopSignals(enabled=jax.process_count() == 1) as signals:
        for iteration in bar:
            new_params, new_opt, loss, metrics = trainer.step(params, opt_state, iteration)
            if not math.isfinite(loss):
                bar.close()
                kept = (
                    f"last good checkpoint {out_dir / LAST} (iteration {saved_at}) is kept"
                    if saved_at
                    else "no checkpoint yet"
                )
                raise L2LPCMError(f"training loss became {loss} at iteration {iteration + 1}; stopped, {kept}")
            params, opt_state = new_params, new_opt
            for name, value in {"train_loss": loss, **metrics}.items():
                averages[name] = value if name not in averages else 0.95 * averages[name] + 0.05 * value
            bar.set_postfix({name: f"{value:.3g}" for name, value in list(averages.items())[:3]})
            done = iteration + 1
            if done % config.validate_every == 0 or done == config.iterations:
                validation = trainer.validate(distributed.local(params))
                elapsed += time.perf_counter() - tic
                tic = time.perf_counter()
                rows.append({"iteration": done, "seconds": round(elapsed, 1), **averages, **validation})
                if validation[trainer.score_name] > best:
                    best = validation[trainer.score_name]
                    checkpoint(done, BEST)
                if main:
                    summary = ", ".join(f"{k} {v:.4g}" for k, v in validation.items())
                    bar.write(f"it {done}: {summary} ({elapsed / 60:.1f} min)")
                    sys.stdout.flush()
                    _write_metrics(out_dir, rows)
                    if board is not None:
                        board.log(rows[-1])
            if done % config.checkpoint_every == 0 or done == config.iterations:
                elapsed += time.perf_counter() - tic
                tic = time.perf_counter()
                checkpoint(done, LAST)
                saved_at = done
            if signals.received is not None or distributed.reached_stop_point(done):
                bar.close()
                if saved_at != done:
                    elapsed += time.perf_counter() - tic
                    checkpoint(done, LAST)
                raise TrainingStopped(f"stopped at iteration {done}; continue with --resume")
    bar.close()
    return {
        "resumed_from_iteration": resumed_from,
        "iterations": config.iterations,
        "seconds": round(elapsed, 1),
        f"best_{trainer.score_name}": best,
        "out_dir": str(out_dir),
    }


def export_checkpoint(
    source,
    destination,
    config_changes: Mapping[str, Any] | None = None,
    config_from_json: Callable | None = None,
    *,
    load: Callable | None = None,
    overwrite: bool = False,
) -> Path:
    """Copy a training checkpoint without its optimiser state (what a user needs to deploy it).

    ``config_changes`` set deployment fields the training did not choose (a readout scale, an update
    budget, ``hardware.forward.dac_bits``: a dotted path reaches into the config's sections; a JSON object
    merges into the section it names, field by field); the changed config must pass ``config_from_json``
    (the kind's own validation), and the changes are recorded in the metadata as ``export_changes``, so
    the file says how it differs from its run. ``load``, the kind's loader, reads the copy exactly as an
    evaluation will (config against tensors) before it takes the destination's name, so a copy that
    would fail there is never written. The destination is never the source, and an existing file is
    replaced only with ``overwrite``.
    """
    destination = _io.refuse_output(destination, (source,), overwrite)
    tensors, metadata = _io.load_tensors(source)
    if "kind" not in metadata or "config" not in metadata:
        raise CheckpointError(f"{source} is not a training checkpoint (no kind/config)")
    params = {name: value for name, value in tensors.items() if name.startswith("params/")}
    if not params:
        raise CheckpointError(f"{source} holds no parameters")
    metadata = {**metadata, "exported_from": str(Path(source).name)}
    if config_changes:
        config = migrated_config(metadata)
        for dotted, value in config_changes.items():  # "readout_scale", or a path "hardware.forward.dac_bits"
            *parents, name = dotted.split(".")
            level = config
            for part in parents:
                if not isinstance(level.get(part), dict):
                    raise ConfigError(f"--set {dotted}: {part!r} is not a section of the checkpoint's config")
                level = level[part]
            level.update(merged(level, {name: value}))
        if config_from_json is None:
            raise ConfigError("changing a checkpoint's config on export needs its config class to check it")
        config_from_json(config)
        earlier = metadata.get("export_changes", {})
        metadata = {
            **metadata,
            "config": config,
            "format_version": FORMAT_VERSION,
            "export_changes": {**earlier, **config_changes},
        }
    if load is None:
        return _io.save_tensors(destination, params, metadata)
    checking = destination.with_name(f".{destination.name}.checking")
    _io.save_tensors(checking, params, metadata)
    try:
        load(checking)
    except L2LPCMError as exc:
        checking.unlink(missing_ok=True)
        message = str(exc).replace(str(checking), str(destination))
        raise type(exc)(f"the exported copy would not load, so it is not written: {message}") from None
    except BaseException:
        checking.unlink(missing_ok=True)
        raise
    os.replace(checking, destination)
    return destination
