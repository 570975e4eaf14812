"""Few-shot meta-training on Omniglot background alphabets (the loop itself is :mod:`l2l_pcm.training`).

Tasks of iteration ``i`` come from seed ``(seed, i)``, so a resumed run draws the same tasks and noise
as an uninterrupted one. Validation uses held-out background alphabets, never the evaluation set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from l2l_pcm import distributed, training
from l2l_pcm.checkpoint import checkpoint_kind, load_checkpoint, save_checkpoint
from l2l_pcm.errors import CheckpointError, ConfigError, check_seed
from l2l_pcm.fewshot.data import TaskSampler
from l2l_pcm.fewshot.evaluate import validate
from l2l_pcm.fewshot.maml import MAMLConfig, make_optimizer, train_step, with_method_parameters
from l2l_pcm.fewshot.model import init_params
from l2l_pcm.fewshot.omniglot import OmniglotImages, load_omniglot, split_background
from l2l_pcm.fewshot.pretrain import CHECKPOINT_KIND as PRETRAIN_KIND
from l2l_pcm.fewshot.pretrain import PretrainConfig, pretrained_body
from l2l_pcm.training import MetaTrainer
from l2l_pcm.validation import parse

CHECKPOINT_KIND = "fewshot-maml"
SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "fewshot_omniglot_5way5shot.safetensors"


@dataclasses.dataclass(frozen=True)
class FewshotTrainConfig:
    """A few-shot meta-training run: the model (:class:`MAMLConfig`, what the compiled step depends on) and
    the loop's length, cadence and seed (which it does not: runs that differ only here share compiled code)."""

    model: MAMLConfig = MAMLConfig()
    iterations: int = 3000
    validate_every: int = 250
    validation_tasks: int = 200
    checkpoint_every: int = 250
    seed: int = 0
    """Seed of the initial weights and of every iteration's tasks and noise, ``(seed, iteration)``."""

    def __post_init__(self) -> None:
        if not isinstance(self.model, MAMLConfig):
            raise ConfigError(f"few-shot run config: model must be a MAMLConfig, got {type(self.model).__name__}")
        for name in ("iterations", "validate_every", "validation_tasks", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        check_seed("seed", self.seed)

    @property
    def schedule_steps(self) -> int:
        """The outer learning-rate schedule's length: the run's iterations for a cosine schedule, else 0."""
        return self.iterations if self.model.outer_lr_schedule == "cosine" else 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping, path: str = "few-shot config") -> FewshotTrainConfig:
        """From a JSON object ``{"iterations": ..., "model": {MAMLConfig fields}}``, type-checked field by field."""
        if isinstance(data, FewshotTrainConfig):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a JSON object of FewshotTrainConfig fields, got {data!r}")
        data = dict(data)
        model_fields = sorted(set(data) & {field.name for field in dataclasses.fields(MAMLConfig)})
        if model_fields:
            raise ConfigError(f'{path}: model settings belong in its "model" object: {model_fields}')
        if "model" in data:
            data["model"] = MAMLConfig.from_json(data["model"], f"{path}.model")
        return parse(cls, data, path)


def save_fewshot_checkpoint(
    path, params, config: MAMLConfig | FewshotTrainConfig, extra: dict | None = None, opt_state=None
) -> Path:
    """A few-shot checkpoint of ``params``; a bare model config is stored with the default run settings."""
    if isinstance(config, MAMLConfig):
        config = FewshotTrainConfig(model=config)
    trees = {"params": params} if opt_state is None else {"params": params, "opt": opt_state}
    return save_checkpoint(path, CHECKPOINT_KIND, trees, {"config": config.to_json(), **(extra or {})})


def load_fewshot_checkpoint(path, with_optimizer: bool = False):
    """(params, model config, metadata[, opt_state]) from a few-shot checkpoint; clear errors for foreign
    files. The run settings it was trained with are ``FewshotTrainConfig.from_json(migrated_config(metadata))``."""
    run, _ = training.checkpoint_config(path, CHECKPOINT_KIND, FewshotTrainConfig.from_json)
    config = run.model
    params = with_method_parameters(init_params(jax.random.PRNGKey(0), config.cnn), config)
    templates = {"params": params}
    if with_optimizer:
        templates["opt"] = make_optimizer(config, run.schedule_steps).init(params)
    trees, metadata = load_checkpoint(path, CHECKPOINT_KIND, templates)
    if with_optimizer:
        return trees["params"], config, metadata, trees["opt"]
    return trees["params"], config, metadata


def load_learner(path) -> tuple[dict, MAMLConfig, dict]:
    """(params, model config, metadata) of any few-shot learner's checkpoint: a meta-trained one, or a
    supervised pre-training run's, which is a ``finetune`` learner: its conv body, a zero readout, and the
    inner loop of its config's ``fewshot`` settings (the one its validation ran)."""
    if checkpoint_kind(path) != PRETRAIN_KIND:
        return load_fewshot_checkpoint(path)
    source, _ = training.checkpoint_config(path, PRETRAIN_KIND, PretrainConfig.from_json)
    config = dataclasses.replace(source.fewshot, method="finetune", learn_initial_readout=False)
    params, metadata = pretrained_body(path, config)
    return params, config, metadata


def initial_parameters(path, config: MAMLConfig) -> tuple[dict, dict]:
    """(params, metadata) of the checkpoint a run starts from: a few-shot checkpoint of the same model,
    or a supervised pre-training one (:mod:`l2l_pcm.fewshot.pretrain`: its conv body, a zero readout)."""
    if checkpoint_kind(path) == PRETRAIN_KIND:
        params, metadata = pretrained_body(path, config)
        return with_method_parameters(params, config), metadata
    params, source, metadata = load_fewshot_checkpoint(path)
    if source.cnn != config.cnn:
        raise CheckpointError(f"{path} has model {source.cnn}, this run needs {config.cnn}")
    return with_method_parameters(params, config), metadata


def make_trainer(
    run: FewshotTrainConfig | MAMLConfig,
    train_set: OmniglotImages | np.ndarray,
    val_set: OmniglotImages | np.ndarray,
    init_from: str | Path | None = None,
) -> MetaTrainer:
    """The few-shot :class:`MetaTrainer` on given images (:func:`train` passes Omniglot's background split;
    tests pass synthetic images); a bare model config runs with the default run settings. The device is the
    model's hardware's, its one home."""
    run = FewshotTrainConfig(model=run) if isinstance(run, MAMLConfig) else run
    config = run.model
    if config.method == "finetune":
        raise ConfigError(
            "method 'finetune' is not meta-trained: its body learns by supervised classification "
            "(`l2l-pcm fewshot pretrain`), and a pre-training checkpoint is a finetune learner"
        )
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
        params = with_method_parameters(init_params(jax.random.PRNGKey(run.seed), config.cnn), config)
        if init_from is not None:
            params = dict(source_params)
        if not config.learn_initial_readout:  # held at zero: meta_gradient gives it no gradient
            params["readout"] = jnp.zeros_like(params["readout"])
        return params, make_optimizer(config, run.schedule_steps).init(params)

    def step(params, opt_state, iteration):
        batch = distributed.shard_tasks(train_sampler.sample(run.seed * 1_000_003 + iteration, config.meta_batch))
        key = jax.random.fold_in(jax.random.PRNGKey(run.seed), iteration)
        params, opt_state, loss, accuracies = train_step(params, opt_state, batch, key, config, run.schedule_steps)
        return params, opt_state, float(loss), {"train_accuracy": float(accuracies[-1])}

    def validation(params):
        accuracy, ci95 = validate(params, val_sampler, config, run.validation_tasks, seed=1)
        return {"val_accuracy": accuracy, "val_ci95": ci95}

    return MetaTrainer(CHECKPOINT_KIND, run, init, step, validation, score_name="val_accuracy", history=history)


def train(
    config: FewshotTrainConfig,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    init_from: str | Path | None = None,
    overwrite: bool = False,
    tensorboard: str | Path | None = None,
) -> dict:
    """Meta-train, writing ``last.safetensors``, ``best.safetensors`` and ``metrics.csv/json`` to ``out_dir``
    (a bare model config runs with the default run settings).

    ``init_from``: start from the parameters of another few-shot checkpoint of the same model size
    (fresh optimiser state), e.g. to continue a run with a changed inner learning rate. ``tensorboard``: also
    write the metrics as TensorBoard event files to this folder (:func:`l2l_pcm.training.run`).
    """
    config = FewshotTrainConfig(model=config) if isinstance(config, MAMLConfig) else config
    train_set, val_set = split_background(load_omniglot("background", data_dir))
    return training.run(
        make_trainer(config, train_set, val_set, init_from),
        out_dir,
        resume=resume,
        progress=progress,
        overwrite=overwrite,
        inputs=() if init_from is None else (init_from,),
        tensorboard=tensorboard,
    )
