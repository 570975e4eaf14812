"""Few-shot meta-training on Omniglot background alphabets (the loop itself is :mod:`l2l_pcm.training`).

Tasks of iteration ``i`` come from seed ``(seed, i)``, so a resumed run draws the same tasks and noise
as an uninterrupted one. Validation uses held-out background alphabets, never the evaluation set.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from l2l_pcm import distributed, training
from l2l_pcm.checkpoint import checkpoint_kind, load_checkpoint, save_checkpoint
from l2l_pcm.errors import CheckpointError, ConfigError
from l2l_pcm.fewshot.data import TaskSampler
from l2l_pcm.fewshot.evaluate import validate
from l2l_pcm.fewshot.maml import MAMLConfig, make_optimizer, train_step
from l2l_pcm.fewshot.model import init_params
from l2l_pcm.fewshot.omniglot import OmniglotImages, load_omniglot, split_background
from l2l_pcm.fewshot.pretrain import CHECKPOINT_KIND as PRETRAIN_KIND
from l2l_pcm.fewshot.pretrain import pretrained_body
from l2l_pcm.training import MetaTrainer

CHECKPOINT_KIND = "fewshot-maml"
SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "fewshot_omniglot_5way5shot.safetensors"


def save_fewshot_checkpoint(path, params, config: MAMLConfig, extra: dict | None = None, opt_state=None) -> Path:
    trees = {"params": params} if opt_state is None else {"params": params, "opt": opt_state}
    return save_checkpoint(path, CHECKPOINT_KIND, trees, {"config": config.to_json(), **(extra or {})})


def load_fewshot_checkpoint(path, with_optimizer: bool = False):
    """(params, config, metadata[, opt_state]) from a few-shot checkpoint; clear errors for foreign files."""
    config, _ = training.checkpoint_config(path, CHECKPOINT_KIND, MAMLConfig.from_json)
    params = init_params(jax.random.PRNGKey(0), config.cnn)
    templates = {"params": params}
    if with_optimizer:
        templates["opt"] = make_optimizer(config).init(params)
    trees, metadata = load_checkpoint(path, CHECKPOINT_KIND, templates)
    if with_optimizer:
        return trees["params"], config, metadata, trees["opt"]
    return trees["params"], config, metadata


def initial_parameters(path, config: MAMLConfig) -> tuple[dict, dict]:
    """(params, metadata) of the checkpoint a run starts from: a few-shot checkpoint of the same model,
    or a supervised pre-training one (:mod:`l2l_pcm.fewshot.pretrain`: its conv body, a zero readout)."""
    if checkpoint_kind(path) == PRETRAIN_KIND:
        return pretrained_body(path, config)
    params, source, metadata = load_fewshot_checkpoint(path)
    if source.cnn != config.cnn:
        raise CheckpointError(f"{path} has model {source.cnn}, this run needs {config.cnn}")
    return params, metadata


def make_trainer(
    config: MAMLConfig,
    train_set: OmniglotImages | np.ndarray,
    val_set: OmniglotImages | np.ndarray,
    init_from: str | Path | None = None,
) -> MetaTrainer:
    """The few-shot :class:`MetaTrainer` on given images (:func:`train` passes Omniglot's background split;
    tests pass synthetic images). The device is the config's hardware's, its one home."""
    if config.variant == "pcm" and config.hardware.drift_compensation in ("array", "column"):
        raise ConfigError(
            f"hardware.drift_compensation {config.hardware.drift_compensation!r}: the few-shot pcm training "
            "model has the oracle 'global' compensation, not the chip's calibrated one; train with 'none' or "
            "'global' (a trained model can still be deployed with calibrated compensation)"
        )
    train_sampler = TaskSampler(train_set, config.ways, config.shots, config.queries, config.augment_rotations)
    val_sampler = TaskSampler(val_set, config.ways, config.shots, config.queries, augment_rotations=False)

    history = []
    if init_from is not None:
        source_params, source_metadata = initial_parameters(init_from, config)
        history = training.training_record(source_metadata)

    def init():
        params = init_params(jax.random.PRNGKey(config.seed), config.cnn)
        if init_from is not None:
            params = dict(source_params)
        if not config.learn_initial_readout:  # held at zero: meta_gradient gives it no gradient
            params["readout"] = jnp.zeros_like(params["readout"])
        return params, make_optimizer(config).init(params)

    def step(params, opt_state, iteration):
        batch = distributed.shard_tasks(train_sampler.sample(config.seed * 1_000_003 + iteration, config.meta_batch))
        key = jax.random.fold_in(jax.random.PRNGKey(config.seed), iteration)
        params, opt_state, loss, accuracies = train_step(params, opt_state, batch, key, config)
        return params, opt_state, float(loss), {"train_accuracy": float(accuracies[-1])}

    def validation(params):
        accuracy, ci95 = validate(params, val_sampler, config, config.validation_tasks, seed=1)
        return {"val_accuracy": accuracy, "val_ci95": ci95}

    return MetaTrainer(CHECKPOINT_KIND, config, init, step, validation, score_name="val_accuracy", history=history)


def train(
    config: MAMLConfig,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    init_from: str | Path | None = None,
    overwrite: bool = False,
) -> dict:
    """Meta-train, writing ``last.safetensors``, ``best.safetensors`` and ``metrics.csv/json`` to ``out_dir``.

    ``init_from``: start from the parameters of another few-shot checkpoint of the same model size
    (fresh optimiser state), e.g. to continue a run with a changed inner learning rate.
    """
    train_set, val_set = split_background(load_omniglot("background", data_dir))
    return training.run(
        make_trainer(config, train_set, val_set, init_from),
        out_dir,
        resume=resume,
        progress=progress,
        overwrite=overwrite,
        inputs=() if init_from is None else (init_from,),
    )
