"""Checkpoints of training runs: parameter and optimiser pytrees as safetensors, everything else as JSON.

A pytree is stored leaf by leaf under its key path (``params/conv1``, ``opt/0/mu/readout``...), and
restored into the structure of a freshly initialised template, so a checkpoint of another scenario or
another model size fails with a message naming the first mismatching tensor instead of loading garbage.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

from l2l_pcm import _io
from l2l_pcm.chip.config import SCENARIO_FIELD_HOMES, sectioned_hardware
from l2l_pcm.errors import CheckpointError


def _leaf_name(path) -> str:
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def flatten(prefix: str, tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {f"{prefix}/{_leaf_name(path)}": np.asarray(leaf) for path, leaf in leaves}


def unflatten(prefix: str, tensors: Mapping[str, np.ndarray], template, source: str):
    """Fill ``template``'s structure with ``tensors[prefix/...]``, checking every name, shape and dtype."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, leaf in paths:
        name = f"{prefix}/{_leaf_name(path)}"
        if name not in tensors:
            raise CheckpointError(f"{source}: tensor '{name}' is missing (checkpoint of another model?)")
        value = tensors[name]
        expected = np.shape(leaf)
        if value.size == 1 and int(np.prod(expected)) == 1:
            value = value.reshape(expected)  # safetensors stores 0-d arrays as shape (1,)
        if value.shape != expected:
            raise CheckpointError(
                f"{source}: tensor '{name}' has shape {value.shape}, model needs {expected} (other model size?)"
            )
        if not np.all(np.isfinite(value)) and np.issubdtype(value.dtype, np.floating):
            raise CheckpointError(f"{source}: tensor '{name}' contains NaN or inf")
        leaves.append(jax.numpy.asarray(value, dtype=np.asarray(leaf).dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


FORMAT_VERSION = 6
"""Version of the checkpoint format. 1 (no ``format_version`` field): files before the authors' Scorbot
kinematics and LSB-first target code; 2: since; 3: the model config holds one ``hardware`` tree
(:class:`l2l_pcm.chip.ChipConfig`) instead of separate ``device`` and update-step fields; 4: the chip's
default read-noise generator is the counter-based one (a format-3 hardware tree without
``read_noise_rng`` was measured with threefry, and keeps it); 5: the hardware tree has sections
(arrays, forward, update, clock) and holds the update rounding, the time between updates and the
training age that the scenario configs held; 6: a few-shot run's config is ``{run settings, "model":
MAMLConfig}`` (iterations, cadences and seed left the model config), and a robot run's seed moved from its
model config to the run config. Loaders refuse newer files, and
:func:`migrated_config` says what an older one means."""

FEWSHOT_RUN_FIELDS = ("iterations", "validate_every", "validation_tasks", "checkpoint_every", "seed")
"""Run-loop settings a few-shot model config held until format 5."""


def format_version(metadata: Mapping) -> int:
    version = metadata.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"checkpoint format_version must be an integer >= 1, got {version!r}")
    return version


def _config_levels(config: dict):
    """The config and every nested config object in it (a robot run's ``model``, a pretraining's ``fewshot``)."""
    yield config
    for value in config.values():
        if isinstance(value, dict) and value is not config.get("hardware"):
            yield from _config_levels(value)


def _is_robot_model(level: Mapping) -> bool:
    return "trainee" in level and "lsg" in level


def migrated_config(metadata: Mapping) -> dict:
    """A checkpoint's config in the current format: the one place that says what older formats meant.

    Format ≤ 2: ``device`` and the update step (``update_step``, or the robot's ``quantize_step``; a null
    one meant exact updates) beside the other fields become the ``hardware`` tree. Format ≤ 3: a hardware
    tree without ``read_noise_rng`` keeps the generator it was measured with, threefry (the default until
    format 4). Format ≤ 4: the flat tree gets its sections (:func:`l2l_pcm.chip.config.sectioned_hardware`),
    and the scenario's hardware fields (:data:`~l2l_pcm.chip.config.SCENARIO_FIELD_HOMES`) move into it;
    a robot model rounded its updates to the nearest step (hard-coded until format 5). Format ≤ 5: a few-shot
    model config's run-loop settings (:data:`FEWSHOT_RUN_FIELDS`) move beside it, into its run config."""
    config = metadata.get("config")
    if not isinstance(config, Mapping):
        raise CheckpointError(f"checkpoint config must be a JSON object, got {config!r}")
    config = copy.deepcopy(dict(config))
    version = format_version(metadata)
    for level in list(_config_levels(config)):
        if version < 3 and "hardware" not in level and "device" in level:
            if "quantize_step" in level and level["quantize_step"] is None:  # a robot trained with exact updates
                level["quantize_update"] = False
            hardware = {"device": level.pop("device")}
            for step in ("update_step", "quantize_step"):
                if level.get(step) is not None:
                    hardware["update_step"] = level.pop(step)
                level.pop(step, None)
            level["hardware"] = hardware
        if version < 4 and isinstance(level.get("hardware"), dict):
            level["hardware"].setdefault("read_noise_rng", "threefry")
        moved = [name for name in SCENARIO_FIELD_HOMES if name in level]
        if version < 5 and (isinstance(level.get("hardware"), dict) or moved or _is_robot_model(level)):
            hardware = sectioned_hardware(level.get("hardware", {}))
            if _is_robot_model(level):
                hardware.setdefault("update", {})["rounding"] = "nearest"
            for name in moved:
                *sections, field = SCENARIO_FIELD_HOMES[name].split(".")
                home = hardware
                for section in sections:
                    home = home.setdefault(section, {})
                home[field] = level.pop(name)
            level["hardware"] = hardware
    if version < 6 and "ways" in config and "model" not in config:  # a few-shot run: model and run apart
        run = {name: config.pop(name) for name in FEWSHOT_RUN_FIELDS if name in config}
        config = {**run, "model": config}
    if version < 6 and isinstance(config.get("fewshot"), dict):  # a pretraining's few-shot model
        for name in FEWSHOT_RUN_FIELDS:
            config["fewshot"].pop(name, None)
    if version < 6 and isinstance(config.get("model"), dict) and "seed" in config["model"]:  # a robot run's seed
        config["seed"] = config["model"].pop("seed")
    return config


def check_format(path, metadata: Mapping) -> int:
    """The file's format version; a file from a newer l2l-pcm is refused instead of being misread."""
    version = format_version(metadata)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version}, this l2l-pcm reads up to {FORMAT_VERSION}: upgrade l2l-pcm"
        )
    return version


def save_checkpoint(path: str | os.PathLike, kind: str, trees: Mapping[str, object], metadata: Mapping) -> Path:
    """Atomically write pytrees (e.g. ``{"params": ..., "opt": ...}``) and JSON ``metadata`` of ``kind``."""
    tensors = {}
    for prefix, tree in trees.items():
        tensors.update(flatten(prefix, tree))
    return _io.save_tensors(path, tensors, {**metadata, "kind": kind, "format_version": FORMAT_VERSION})


def checkpoint_kind(path: str | os.PathLike) -> str | None:
    """The ``kind`` a checkpoint says it holds (clear errors for a missing or foreign file)."""
    return _io.load_tensors(path)[1].get("kind")


def load_checkpoint(path: str | os.PathLike, kind: str, templates: Mapping[str, object]) -> tuple[dict, dict]:
    """Load what :func:`save_checkpoint` wrote into the given templates; returns (trees, metadata)."""
    tensors, metadata = _io.load_tensors(path, kind=kind)
    trees = {prefix: unflatten(prefix, tensors, template, str(path)) for prefix, template in templates.items()}
    return trees, metadata
