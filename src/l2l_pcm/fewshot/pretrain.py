"""Supervised pre-training of the few-shot conv body: a starting point for meta-training.

Why: MAML learns the conv body only through the readout's 4-step adaptation on 32 tasks per outer
iteration, a slow and (in the ``pcm`` variant, with stochastic update rounding and an update budget)
noisy signal. Classifying every meta-training class at once with one linear head teaches the body to
tell characters apart at a fraction of the cost: no inner loop, one forward and backward pass per image.
``l2l-pcm fewshot train --init-from RUN/best.safetensors`` then meta-trains from this body, with the
readout's initial weights at zero.

The body sees what it will see on tasks: every batch is made of support-set-shaped groups (``ways``
classes × ``shots`` drawings, drawn like a meta-training task, rotations included) and each group is
standardised with its own statistics, the model's ``support`` rule (:func:`l2l_pcm.fewshot.model.embed`).
With rotation augmentation, each 90° turn of a class is a class of its own, as in meta-training.
Validation is the few-shot metric of meta-training: query accuracy after the inner loop, from a zero
readout, on held-out background alphabets, so the record of both stages is on one scale.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from l2l_pcm import distributed, training
from l2l_pcm.checkpoint import load_checkpoint
from l2l_pcm.errors import CheckpointError, ConfigError, check_seed
from l2l_pcm.fewshot.data import TaskSampler
from l2l_pcm.fewshot.evaluate import validate
from l2l_pcm.fewshot.maml import MAMLConfig, _is_int, _is_number
from l2l_pcm.fewshot.model import CONV_NAMES, conv3x3_stride2, cross_entropy, embed, init_params
from l2l_pcm.fewshot.omniglot import OmniglotImages, load_omniglot, split_background
from l2l_pcm.validation import parse

CHECKPOINT_KIND = "fewshot-pretrain"


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    iterations: int = 3000
    groups: int = 32
    """Support-set-shaped groups (``ways`` × ``shots`` images, normalised together) per batch."""
    learning_rate: float = 3e-3
    lr_schedule: str = "cosine"
    """"cosine" (decays to 0 over ``iterations``) or "constant"."""
    validate_every: int = 250
    validation_tasks: int = 200
    checkpoint_every: int = 250
    seed: int = 0
    fewshot: MAMLConfig = MAMLConfig(variant="fp32", inner_lr=0.4, update_budget=24)
    """The few-shot setting the body is pre-trained for: model size and normalisation, the group shape
    (``ways``, ``shots``), rotation augmentation, and the inner loop validation runs (variant, inner lr,
    update budget). Give the meta-training config here to validate as meta-training will."""

    def __post_init__(self) -> None:
        for name in ("iterations", "groups", "validate_every", "validation_tasks", "checkpoint_every"):
            value = getattr(self, name)
            if not (_is_int(value) and value >= 1):
                raise ConfigError(f"pretraining {name} must be a positive integer, got {value!r}")
        if not (_is_number(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"pretraining learning_rate must be a finite number > 0, got {self.learning_rate!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        check_seed("seed", self.seed)
        if not isinstance(self.fewshot, MAMLConfig):
            raise ConfigError(f"fewshot must be a MAMLConfig, got {self.fewshot!r}")

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "fewshot": self.fewshot.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> PretrainConfig:
        """From a JSON object, type-checked field by field (the few-shot model's config nested)."""
        if isinstance(data, Mapping) and isinstance(data.get("fewshot"), Mapping):
            data = {**data, "fewshot": MAMLConfig.from_json(data["fewshot"], "pretraining config.fewshot")}
        return parse(cls, data, "pretraining config")


def class_count(train_classes: int, fewshot: MAMLConfig) -> int:
    """Classes of the head: each class, or each (class, quarter turn) with rotation augmentation."""
    return train_classes * (4 if fewshot.augment_rotations else 1)


def init_pretrain_params(key: jax.Array, fewshot: MAMLConfig, head_classes: int) -> dict:
    """The few-shot model's parameters (readout at zero, unused here) plus the classification head."""
    params = init_params(key, fewshot.cnn)
    params["head"] = jnp.zeros((fewshot.channels, head_classes))
    return params


def make_optimizer(config: PretrainConfig) -> optax.GradientTransformation:
    if config.lr_schedule == "cosine":
        return optax.adam(optax.cosine_decay_schedule(config.learning_rate, config.iterations))
    return optax.adam(config.learning_rate)


def group_loss(fewshot: MAMLConfig, body_and_head, group):
    """(cross-entropy, accuracy) of one group's images against all classes, with the group's statistics."""
    kernels, head = body_and_head
    images, labels = group
    features, _ = embed(lambda i, x: conv3x3_stride2(kernels[i], x), images, images[:0], fewshot.cnn)
    logits = features @ head
    return cross_entropy(logits, labels), jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def batch_gradient(params, images, labels, fewshot: MAMLConfig):
    """(mean loss, mean accuracy, gradient) over ``[groups, ...]`` images, summed group by group in a scan
    (:func:`l2l_pcm.distributed.sum_over_tasks`, as meta-training sums tasks). The readout gets no gradient."""
    groups = images.shape[0]
    kernels = [params[name] for name in CONV_NAMES]

    def group_sums(shared, group):
        (loss, acc), grads = jax.value_and_grad(functools.partial(group_loss, fewshot), has_aux=True)(shared, group)
        return loss, acc, grads

    loss, acc, (kernel_grads, head_grad) = distributed.sum_over_tasks(
        group_sums, (kernels, params["head"]), (images, labels)
    )
    grads = {name: g / groups for name, g in zip(CONV_NAMES, kernel_grads, strict=True)}
    grads["head"] = head_grad / groups
    grads["readout"] = jnp.zeros_like(params["readout"])
    return loss / groups, acc / groups, grads


@functools.partial(jax.jit, static_argnames=("config",))
def pretrain_step(params, opt_state, images, labels, config: PretrainConfig):
    """One batch: :func:`batch_gradient`, Adam, conv kernels clipped to the PCM range (the head is digital)."""
    loss, acc, grads = batch_gradient(params, images, labels, config.fewshot)
    updates, opt_state = make_optimizer(config).update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    w_max = config.fewshot.device.w_max
    params = {name: value if name == "head" else jnp.clip(value, -w_max, w_max) for name, value in params.items()}
    return params, opt_state, loss, acc


def sample_groups(sampler: TaskSampler, seed: int, groups: int, rotations: bool) -> tuple[np.ndarray, np.ndarray]:
    """``groups`` support sets ``[groups, ways·shots, H, W, 1]`` and their head labels ``[groups, ways·shots]``."""
    support_x, support_y, _, _, indices = sampler.sample(seed, groups, return_indices=True)
    head_label = indices.classes * 4 + indices.rotations if rotations else indices.classes
    labels = np.take_along_axis(head_label, support_y.astype(np.int64), axis=1)
    return support_x, labels.astype(np.int32)


def make_trainer(
    config: PretrainConfig, train_set: OmniglotImages | np.ndarray, val_set: OmniglotImages | np.ndarray
) -> training.MetaTrainer:
    """The pre-training run as a :class:`~l2l_pcm.training.MetaTrainer` (checkpoints, resume, validation)."""
    fewshot = config.fewshot
    train_images = train_set.images if isinstance(train_set, OmniglotImages) else np.asarray(train_set)
    # queries=1: the sampler must leave a drawing beside the support set, which pre-training does not use
    sampler = TaskSampler(train_images, fewshot.ways, fewshot.shots, 1, fewshot.augment_rotations)
    val_sampler = TaskSampler(val_set, fewshot.ways, fewshot.shots, fewshot.queries)
    head_classes = class_count(sampler.n_classes, fewshot)

    def init():
        params = init_pretrain_params(jax.random.PRNGKey(config.seed), fewshot, head_classes)
        return params, make_optimizer(config).init(params)

    def step(params, opt_state, iteration):
        seed = config.seed * 1_000_003 + iteration
        batch = distributed.shard_tasks(sample_groups(sampler, seed, config.groups, fewshot.augment_rotations))
        params, opt_state, loss, acc = pretrain_step(params, opt_state, *batch, config)
        return params, opt_state, float(loss), {"train_accuracy": float(acc)}

    def validation(params):
        body = {name: params[name] for name in (*CONV_NAMES, "readout")}
        accuracy, ci95 = validate(body, val_sampler, fewshot, config.validation_tasks, seed=1)
        return {"val_accuracy": accuracy, "val_ci95": ci95}

    return training.MetaTrainer(CHECKPOINT_KIND, config, init, step, validation, score_name="val_accuracy")


def pretrained_body(path: str | Path, fewshot: MAMLConfig) -> tuple[dict, dict]:
    """(few-shot params with a zero readout, metadata) from a pre-training checkpoint, for ``--init-from``."""
    source, metadata = training.checkpoint_config(path, CHECKPOINT_KIND, PretrainConfig.from_json)
    if source.fewshot.cnn != fewshot.cnn:
        raise CheckpointError(f"{path} pre-trained model {source.fewshot.cnn}, this run needs {fewshot.cnn}")
    shapes = source.fewshot.cnn.kernel_shapes()
    template = {name: np.zeros(shapes[name], np.float32) for name in CONV_NAMES}  # the head stays behind
    trees, _ = load_checkpoint(path, CHECKPOINT_KIND, {"params": template})
    params = dict(trees["params"])
    params["readout"] = jnp.zeros((fewshot.channels, fewshot.ways))
    return params, metadata


def pretrain(
    config: PretrainConfig,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    tensorboard: str | Path | None = None,
) -> dict:
    """Pre-train on Omniglot's background meta-training alphabets into ``out_dir`` (as ``fewshot train``)."""
    train_set, val_set = split_background(load_omniglot("background", data_dir))
    trainer = make_trainer(config, train_set, val_set)
    return training.run(trainer, out_dir, resume, progress, overwrite, tensorboard=tensorboard)
