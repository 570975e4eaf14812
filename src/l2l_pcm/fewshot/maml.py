r"""MAML on the readout (the paper's inner loop), meta-training all weights, in one jitted computation.

Inner loop (per task, readout only, SGD, ``inner_steps`` = 4, lr 0.1):
:math:`W_{k+1} = W_k - \eta\,F_s^T(\mathrm{softmax}(F_s W_k) - Y_s)/N_s`.
Outer loop: Adam on the conv kernels and the initial readout :math:`W_0`, loss = query cross-entropy
after the last inner step, gradients through the inner loop (second order). One meta-batch is one
compiled computation: evaluation ``vmap``s the tasks, training scans over them (:func:`meta_gradient`).

Methods (``MAMLConfig.method``), each a way to learn a task from its support set, meta-trained in
software and run on the chip by :class:`l2l_pcm.fewshot.deploy.ChipFewShotLearner`:

* ``maml_head`` (the paper's, ANIL-style; Raghu et al. 2020, arXiv 1909.09157): the inner loop above,
  on the readout only;
* ``maml`` (Finn et al. 2017, arXiv 1703.03400): the inner loop adapts every layer (fp32 in software;
  on the chip every layer's update is written through the core);
* ``metasgd`` (Li et al. 2017, arXiv 1707.09835): the readout's inner step is ``−α ⊙ gradient`` with a
  meta-learned rate per weight (``params["inner_rates"]``, started at ``inner_lr``);
* ``protonet`` (Snell et al. 2017, arXiv 1703.05175): no gradient steps; the class means of the support
  features (prototypes) are written to the zero readout in one programming (``inner_steps`` = 1), and a
  digital bias −‖c‖²/2 per class makes the logits −‖f − c‖²/2 up to a constant per vector;
* ``finetune`` (Chen et al. 2019, arXiv 1904.04232): the ``maml_head`` inner loop from a zero readout on
  a body trained by plain supervised classification (:mod:`l2l_pcm.fewshot.pretrain`), not meta-trained.

Variants (``MAMLConfig.variant``):

* ``fp32``: plain floating point;
* ``4bit``: every weight read through a 4-bit stochastic-rounding quantizer (straight-through), and the
  readout re-quantized after each inner step;
* ``pcm``: hardware-aware, on the chip's own pure functions (:mod:`l2l_pcm.chip.crossbar`): conv kernels
  and readout programmed once per meta-batch (programming noise), read at ``hardware.clock.training_age_s``
  (drift, read noise; straight-through); the readout read with fresh noise per vector, inner updates
  quantized to ``hardware.update.step`` (1/16), rounded as ``hardware.update.rounding`` says,
  re-programming only the devices they change, as the chip applies them (:func:`adapt_task`).

All weights are kept in the PCM range [−w_max, w_max] after every outer step (the readout in
±``readout_scale``·w_max, the range its devices map to).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from l2l_pcm import distributed
from l2l_pcm.chip import (
    ChipConfig,
    LayerState,
    WeightStatistics,
    analog_matmul,
    program_layer,
    read_statistics,
    refuse_hardware_fields,
    reprogram_layer,
    straight_through,
    weight_sample,
)
from l2l_pcm.errors import ConfigError
from l2l_pcm.fewshot.model import (
    CONV_NAMES,
    CNNConfig,
    accuracy,
    conv3x3_stride2,
    cross_entropy,
    embed,
    readout_gradient,
    software_conv,
)
from l2l_pcm.pcm import PCMDevice, keep_largest, quantize, quantize_weights
from l2l_pcm.validation import parse

VARIANTS = ("fp32", "4bit", "pcm")
METHODS = ("maml_head", "maml", "metasgd", "protonet", "finetune")
INNER_RATES = "inner_rates"
"""Meta-SGD's learned per-weight inner learning rates (shape of the readout), a digital parameter."""
READOUT_SCALE_RANGE = (1e-6, 1e6)
"""Readout weights per device unit the float32 readout can hold (updates are divided by the scale)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no count


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class MAMLConfig:
    ways: int = 5
    shots: int = 5
    queries: int = 5
    channels: int = 56
    inner_steps: int = 4
    inner_lr: float = 0.1
    meta_batch: int = 32
    outer_lr: float = 1e-3
    outer_lr_schedule: str = "constant"
    """"constant", or "cosine": decays the outer learning rate to 0 over ``iterations`` (a fine-tuning
    stage that must end within a time budget ends on a small learning rate)."""
    variant: str = "fp32"
    weight_bits: int = 4
    update_budget: int = 0
    """At most this many readout weights change per inner step (the largest updates; 0 = no limit), in
    every variant and on the chip: a cap on the devices re-programmed per task."""
    learn_initial_readout: bool = True
    """Meta-learn the readout's initial weights W0 (MAML), or keep them at zero. Labels are a fresh
    permutation in every task, so no W0 that differs between columns can help a task, and one learned
    without a budget can lean on all inner updates to undo it (the budget then cannot); at zero, the
    first inner step writes each class's support mean (a prototype), which a budget keeps the largest
    entries of."""
    readout_scale: float = 1.0
    """Readout weight per device weight unit: the readout is stored as W / readout_scale, so its range is
    ±readout_scale·w_max and its update step ``hardware.update.step``·readout_scale (pcm and 4-bit variants, and the
    chip). 1 is the authors' mapping (w = g/g_max). The readout starts at zero and is written only by a
    few small updates, so a smaller scale spends the devices' range on them: finer steps, and less
    programming and read noise relative to them; too small, and updates clip (the chip counts them)."""
    augment_rotations: bool = True
    normalisation: str = "support"
    """"support" (no leak between query images) or "per_set" (the authors' transductive rule); see
    :class:`l2l_pcm.fewshot.model.CNNConfig`."""
    norm_epsilon: float = 1e-5
    """ε of the normalisation (the authors' Keras BatchNorm: 1e-3)."""
    ink: str = "one"
    """Pixel polarity the model expects: "one" (ink = 1) or "zero" (the authors' background = 1)."""
    method: str = "maml_head"
    """How a task is learned from its support set: one of ``METHODS`` (see the module docstring)."""
    hardware: ChipConfig = ChipConfig()
    """The hardware tree, every hardware setting's one home: its device model is the ``pcm`` variant's, its
    ``update`` section (step 1/16, rounding, time between inner updates) how inner updates are written in
    the ``pcm`` variant and on the chip, its ``clock.training_age_s`` the age the ``pcm`` variant reads at,
    and the chip the model is deployed on is built from it."""

    def __post_init__(self) -> None:
        for name in (
            "ways",
            "shots",
            "queries",
            "channels",
            "inner_steps",
            "meta_batch",
            "weight_bits",
            "update_budget",
        ):
            value = getattr(self, name)
            may_be_zero = name in ("inner_steps", "update_budget")
            if not (_is_int(value) and value >= (0 if may_be_zero else 1)):
                kind = "a non-negative" if may_be_zero else "a positive"
                raise ConfigError(f"{name} must be {kind} integer, got {value!r}")
        if not 2 <= self.weight_bits <= 24:  # a sign bit at least; float32 resolves no more than 24 bits
            raise ConfigError(f"weight_bits must be in 2..24, got {self.weight_bits}")
        if self.shots + self.queries > 20:
            raise ConfigError(
                f"shots + queries = {self.shots + self.queries} exceeds the 20 drawings per Omniglot class"
            )
        for name in ("inner_lr", "outer_lr", "readout_scale"):
            value = getattr(self, name)
            if not (_is_number(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        low, high = READOUT_SCALE_RANGE
        if not low <= self.readout_scale <= high:  # float32 weights: 1e-300 is 0, and updates / 0 are NaN
            raise ConfigError(
                f"readout_scale must be in [{low:g}, {high:g}] (the readout is float32: a scale outside divides "
                f"its updates into inf/NaN), got {self.readout_scale!r}"
            )
        for name in ("augment_rotations", "learn_initial_readout"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.outer_lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"outer_lr_schedule must be 'constant' or 'cosine', got {self.outer_lr_schedule!r}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if not isinstance(self.hardware, ChipConfig):
            raise ConfigError(f"hardware must be a ChipConfig, got {self.hardware!r}")
        self._check_method()
        _ = self.cnn  # validates normalisation, norm_epsilon and ink

    def _check_method(self) -> None:
        """Refuse settings a method cannot honour, rather than ignore them."""
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.method == "protonet" and self.inner_steps != 1:
            raise ConfigError(
                f"method 'protonet' writes the prototypes in one programming: inner_steps must be 1, got "
                f"{self.inner_steps}"
            )
        if self.method in ("protonet", "finetune") and self.learn_initial_readout:
            raise ConfigError(
                f"method {self.method!r} starts every task from a zero readout: set learn_initial_readout to false"
            )
        if self.method == "maml":
            if self.variant != "fp32":
                raise ConfigError(
                    f"method 'maml' adapts every layer in the inner loop, which the software model runs in fp32 "
                    f"only, got variant {self.variant!r} (the chip still writes every layer's update through "
                    "the core)"
                )
            if self.update_budget:
                raise ConfigError(
                    "update_budget caps the readout's updates; method 'maml' updates every layer: leave it at 0"
                )

    @property
    def device(self) -> PCMDevice:
        return self.hardware.device

    def with_hardware(self, **settings) -> MAMLConfig:
        """This config with hardware settings changed by their paths in the tree, as keywords with ``__``
        for ``.`` (``device="authors"``, ``update__rounding="nearest"``; see :meth:`ChipConfig.with_settings`)."""
        changes = {name.replace("__", "."): value for name, value in settings.items()}
        return dataclasses.replace(self, hardware=self.hardware.with_settings(changes))

    @property
    def cnn(self) -> CNNConfig:
        return CNNConfig(
            channels=self.channels,
            ways=self.ways,
            normalisation=self.normalisation,
            norm_epsilon=self.norm_epsilon,
            ink=self.ink,
        )

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict, path: str = "few-shot config") -> MAMLConfig:
        """From a JSON object, type-checked field by field; hardware settings only inside ``hardware``."""
        if isinstance(data, MAMLConfig):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a JSON object of MAMLConfig fields, got {data!r}")
        data = dict(data)
        refuse_hardware_fields(data, path)
        if "hardware" in data:
            data["hardware"] = ChipConfig.from_json(data["hardware"], f"{path}.hardware")
        return parse(cls, data, path)


def read_weights(config: MAMLConfig, weights: jax.Array, key: jax.Array, scale: float = 1.0) -> jax.Array:
    """The weights the forward pass sees under the variant (straight-through gradients); ``scale`` is the
    layer's weight per device unit (``readout_scale`` for the readout, 1 for the conv kernels).

    ``pcm``: the chip's own physics (:func:`l2l_pcm.chip.program_layer`, :func:`~l2l_pcm.chip.read_statistics`
    at ``hardware.clock.training_age_s``, with the hardware's oracle drift compensation if set), and one read of
    every weight (:func:`~l2l_pcm.chip.weight_sample`): the conv body's read noise is drawn once per
    meta-batch and shared by its images ("per_batch"), where the chip draws it per patch; the readout is
    read per vector (:func:`adapt_task`)."""
    if config.variant == "4bit":
        return scale * quantize_weights(weights / scale, config.weight_bits, config.device.w_max, key)
    if config.variant == "pcm":
        key_program, key_read = jax.random.split(key)
        state = program_layer(config.device, key_program, jax.lax.stop_gradient(weights) / scale, 0.0)
        stats = _pcm_statistics(config, weights, state, config.hardware.clock.training_age_s, scale)
        return weight_sample(stats, key_read, config.hardware.forward.read_noise_rng)
    return weights


def _pcm_statistics(config: MAMLConfig, weights, state: LayerState, now_s, scale: float):
    """Read statistics of a layer's devices at chip time ``now_s`` in weight units, with a straight-through
    mean: the forward value is what the devices return, the gradient reaches ``weights`` (clipped to the
    layer's range) as if they were exact."""
    stats = read_statistics(config.device, state, now_s, config.hardware.drift_compensation == "global")
    return straight_through(
        weights, WeightStatistics(scale * stats.mean, scale**2 * stats.variance), scale * config.device.w_max
    )


def inner_update(config: MAMLConfig, readout, gradient, key) -> jax.Array:
    """One inner SGD step on the readout, written as the variant's hardware would store it (the ``pcm``
    variant's device state follows in :func:`adapt_task`)."""
    return _write(config, readout, keep_largest(-config.inner_lr * gradient, config.update_budget), key)


def _write(config: MAMLConfig, readout, step, key) -> jax.Array:
    """``readout + step`` as the variant stores it (pcm: on the device grid; 4bit: re-quantized)."""
    scale = config.readout_scale
    if config.variant == "pcm":
        return _pcm_write(config, readout, step, key)[0]
    if config.variant == "4bit":
        return scale * quantize_weights((readout + step) / scale, config.weight_bits, config.device.w_max, key)
    return readout + step


def _pcm_write(config: MAMLConfig, readout, step, key) -> tuple[jax.Array, jax.Array]:
    """An inner step as :meth:`Chip.reprogram` writes it: on the update grid in device units (rounded with
    ``key`` if stochastic; straight-through), added to the readout within its range. Returns the new
    readout and the update in device units (what the devices are re-programmed with)."""
    rounding_key = key if config.hardware.update.rounding == "stochastic" else None
    update = quantize(step / config.readout_scale, config.hardware.update.step, rounding_key)
    limit = config.readout_scale * config.device.w_max
    return jnp.clip(readout + config.readout_scale * update, -limit, limit), update


def readout_state(config: MAMLConfig, readout0: jax.Array, key: jax.Array) -> LayerState | None:
    """The ``pcm`` variant's readout devices as programmed at deployment (one chip per meta-batch, shared by
    its tasks, as every chip task starts from the deployed state); None for the other variants."""
    if config.variant != "pcm":
        return None
    return program_layer(config.device, key, jax.lax.stop_gradient(readout0) / config.readout_scale, 0.0)


class TaskOutputs(NamedTuple):
    """What one task's inner loop shows besides its loss."""

    accuracies: jax.Array
    """Query accuracy after 0..inner_steps updates."""
    updates_clipped: jax.Array
    """Readout weights an update would have taken past ±readout_scale·w_max (summed over the steps; the
    ``pcm`` and ``4bit`` variants store the readout in that range, as the chip does, and count them alike)."""


def prototypes(features: jax.Array, labels: jax.Array, ways: int) -> jax.Array:
    """Class means of ``features`` [N, D] as readout columns [D, ways] (ProtoNet's prototypes)."""
    one_hot = jax.nn.one_hot(labels, ways, dtype=features.dtype)
    return features.T @ one_hot / jnp.maximum(jnp.sum(one_hot, axis=0), 1.0)


def prototype_bias(readout: jax.Array) -> jax.Array:
    """−‖c‖²/2 per column: with it, ``f @ c − ‖c‖²/2`` = −‖f − c‖²/2 + ‖f‖²/2 (the same for every class)."""
    return -0.5 * jnp.sum(jnp.square(readout), axis=0)


def inner_step(config: MAMLConfig, readout, f_support, y_support, logits, rates=None) -> jax.Array:
    """The update a task's inner step writes to the readout, before the budget: the SGD step (Meta-SGD:
    with per-weight rates ``rates``), or for ProtoNet the prototypes less what the readout holds."""
    if config.method == "protonet":
        return prototypes(f_support, y_support, config.ways) - readout
    rate = config.inner_lr if rates is None else rates
    return -rate * readout_gradient(f_support, logits, y_support)


def adapt_task(config: MAMLConfig, readout0, f_support, y_support, f_query, y_query, key, state=None, rates=None):
    """Run the inner loop on one task's features; returns (final query loss, :class:`TaskOutputs`).

    ``pcm`` (``state`` from :func:`readout_state`, or programmed for this task if None): the chip's inner
    loop, on the chip's pure functions. The readout is read at ``hardware.clock.training_age_s``, with fresh read
    noise for every support and query vector (:func:`l2l_pcm.chip.analog_matmul`); each update is quantized, written by
    :func:`~l2l_pcm.chip.reprogram_layer` (only the devices it changes get fresh programming noise and
    drift exponents, and their own programming time), and ``hardware.update.seconds_between`` pass before the next
    read, as on the chip (:class:`l2l_pcm.fewshot.deploy.ChipFewShotLearner`). ``rates``: Meta-SGD's
    per-weight inner rates (:func:`inner_step`)."""
    readout = readout0
    bias = None  # ProtoNet's digital −‖c‖²/2, once the prototypes are written
    now_s = config.hardware.clock.training_age_s
    if state is None:  # a task on its own: its readout programmed for it
        state = readout_state(config, readout0, jax.random.fold_in(key, 0x5EAD))
    accuracies, clipped = [], jnp.zeros((), jnp.int32)
    limit = config.readout_scale * config.device.w_max
    for step, step_key in enumerate(jax.random.split(key, config.inner_steps + 1)):
        key_read, key_update = jax.random.split(step_key)
        if config.variant == "pcm":
            key_query, key_support = jax.random.split(key_read)
            stats = _pcm_statistics(config, readout, state, now_s, config.readout_scale)
            rng = config.hardware.forward.read_noise_rng

            def logits(features, read_key, stats=stats, rng=rng):
                return analog_matmul(features, stats, read_key, "per_read", rng)
        else:
            w = read_weights(config, readout, key_read, config.readout_scale)
            key_query = key_support = None

            def logits(features, read_key, w=w):
                return features @ w

        query_logits = logits(f_query, key_query)
        if bias is not None:
            query_logits = query_logits + bias
        accuracies.append(accuracy(query_logits, y_query))
        if step == config.inner_steps:
            loss = cross_entropy(query_logits, y_query)
            break
        support_logits = None if config.method == "protonet" else logits(f_support, key_support)
        step_update = inner_step(config, readout, f_support, y_support, support_logits, rates)
        delta = keep_largest(step_update, config.update_budget)  # the readout's step
        if config.variant == "pcm":
            key_round, key_program = jax.random.split(key_update)
            written, update = _pcm_write(config, readout, delta, key_round)
            clipped += _past(readout + config.readout_scale * update, limit)
            readout = written
            state, _ = reprogram_layer(config.device, key_program, state, jax.lax.stop_gradient(update), now_s)
            now_s = now_s + config.hardware.update.seconds_between
        else:
            if config.variant == "4bit":
                clipped += _past(readout + delta, limit)
            readout = _write(config, readout, delta, key_update)
        if config.method == "protonet":
            bias = prototype_bias(readout)
    return loss, TaskOutputs(jnp.stack(accuracies), clipped)


def _past(weights: jax.Array, limit: float) -> jax.Array:
    """How many of ``weights`` lie beyond ±``limit`` (no gradient: a count for the user, not the loss)."""
    return jnp.sum(jnp.abs(jax.lax.stop_gradient(weights)) > limit).astype(jnp.int32)


def read_kernels(config: MAMLConfig, conv_params: dict, key: jax.Array) -> list[jax.Array]:
    """The conv kernels the forward pass sees, read once per meta-batch (one chip for all its tasks)."""
    keys = jax.random.split(key, len(CONV_NAMES))
    return [read_weights(config, conv_params[name], k) for name, k in zip(CONV_NAMES, keys, strict=True)]


def support_loss(config: MAMLConfig, weights, support_x, support_y, query_x, conv=software_conv):
    """(support cross-entropy, query features) of ``weights = (kernels, readout)`` on one task's images: the
    loss full MAML's inner steps descend, in software and (from a read of the chip's weights) on the chip."""
    kernels, readout = weights
    f_s, f_q = embed(lambda i, x: conv(kernels[i], x), support_x, query_x, config.cnn)
    return cross_entropy(f_s @ readout, support_y), f_q


def adapt_all_layers(config: MAMLConfig, kernels, readout0, task, conv=software_conv):
    """Full MAML's inner loop on one task (fp32): every step embeds the images with the adapted kernels
    and takes an SGD step on the support loss in all layers (second order through the steps); the query
    features come from the same forward pass as the step's gradient. Returns (final query loss,
    :class:`TaskOutputs`)."""
    support_x, support_y, query_x, query_y = task
    step_loss = jax.value_and_grad(lambda w: support_loss(config, w, support_x, support_y, query_x, conv), has_aux=True)
    weights = (list(kernels), readout0)
    accuracies = []
    for step in range(config.inner_steps + 1):
        if step == config.inner_steps:  # no step after the last: the forward pass alone
            f_q = support_loss(config, weights, support_x, support_y, query_x, conv)[1]
        else:
            (_, f_q), grads = step_loss(weights)
        query_logits = f_q @ weights[1]
        accuracies.append(accuracy(query_logits, query_y))
        if step == config.inner_steps:
            break
        weights = jax.tree.map(lambda w, g: w - config.inner_lr * g, weights, grads)
    return cross_entropy(query_logits, query_y), TaskOutputs(jnp.stack(accuracies), jnp.zeros((), jnp.int32))


def one_task_outputs(config: MAMLConfig, kernels, readout0, task, key, conv=software_conv, state=None, rates=None):
    """(final query loss, :class:`TaskOutputs`) of one task ``(sx, sy, qx, qy)``."""
    if config.method == "maml":
        return adapt_all_layers(config, kernels, readout0, task, conv)
    support_x, support_y, query_x, query_y = task
    f_s, f_q = embed(lambda i, x: conv(kernels[i], x), support_x, query_x, config.cnn)
    return adapt_task(config, readout0, f_s, support_y, f_q, query_y, key, state, rates)


def _split_keys(key: jax.Array, tasks: int) -> tuple[jax.Array, jax.Array]:
    key_conv, key_tasks = jax.random.split(key)
    return key_conv, jax.random.split(key_tasks, tasks)


def _readout_key(key_conv: jax.Array) -> jax.Array:
    """The readout's programming key of a meta-batch (apart from the conv kernels' keys)."""
    return jax.random.fold_in(key_conv, len(CONV_NAMES))


def _conv_params(params: dict) -> dict:
    return {name: params[name] for name in CONV_NAMES}


def task_outputs(params, batch, key, config: MAMLConfig):
    """Query loss [tasks] and :class:`TaskOutputs` (accuracies [tasks, K+1]) of a batch of tasks (vmapped).

    Conv kernels are read once per batch (one chip), the readout once per task and step.
    """
    key_conv, task_keys = _split_keys(key, batch[0].shape[0])
    kernels = read_kernels(config, _conv_params(params), key_conv)
    state = readout_state(config, params["readout"], _readout_key(key_conv))

    rates = params.get(INNER_RATES)

    def one_task(sx, sy, qx, qy, task_key):
        task = (sx, sy, qx, qy)
        return one_task_outputs(config, kernels, params["readout"], task, task_key, state=state, rates=rates)

    return jax.vmap(one_task)(*batch, task_keys)


def meta_batch_loss(params, batch, key, config: MAMLConfig):
    """Mean query loss over a meta-batch, and mean accuracy per inner step [K+1]: the outer objective."""
    losses, outputs = task_outputs(params, batch, key, config)
    return jnp.mean(losses), jnp.mean(outputs.accuracies, axis=0)


def meta_gradient(params, batch, key, config: MAMLConfig):
    """((loss, accuracies), gradient) of :func:`meta_batch_loss`, computed one task at a time.

    The mean loss is a sum of per-task losses that share only the weights, so its gradient is the mean
    of per-task gradients: each task's ``value_and_grad`` runs inside a scan
    (:func:`l2l_pcm.distributed.sum_over_tasks`) with the im2col conv :func:`conv3x3_stride2`, and the
    kernels' straight-through read is differentiated once for the summed gradient. Same noise draws and
    the same maths as ``value_and_grad(meta_batch_loss)`` (tested), about 4× faster on a CPU.
    """
    tasks = batch[0].shape[0]
    key_conv, task_keys = _split_keys(key, tasks)
    kernels, read_backward = jax.vjp(
        lambda conv_params: read_kernels(config, conv_params, key_conv), _conv_params(params)
    )

    state = readout_state(config, params["readout"], _readout_key(key_conv))

    def task_loss(shared, task):
        kernels, readout0, rates = shared
        return one_task_outputs(
            config, kernels, readout0, task[:4], task[4], conv=conv3x3_stride2, state=state, rates=rates
        )

    def task_sums(shared, task):
        (loss, outputs), grads = jax.value_and_grad(task_loss, has_aux=True)(shared, task)
        return loss, outputs.accuracies, grads

    loss, accuracies, (kernel_grads, readout_grad, rates_grad) = distributed.sum_over_tasks(
        task_sums, (kernels, params["readout"], params.get(INNER_RATES)), (*batch, task_keys)
    )
    (conv_grads,) = read_backward([g / tasks for g in kernel_grads])
    if not config.learn_initial_readout:
        readout_grad = jnp.zeros_like(readout_grad)
    grads = {**conv_grads, "readout": readout_grad / tasks}
    if rates_grad is not None:
        grads[INNER_RATES] = rates_grad / tasks
    return (loss / tasks, accuracies / tasks), grads


def with_method_parameters(params: dict, config: MAMLConfig) -> dict:
    """``params`` with what the method learns besides the weights: Meta-SGD's inner rates (at ``inner_lr``
    where absent). Refuses rates a method would not use, rather than carry them silently."""
    params = dict(params)
    if config.method == "metasgd":
        if INNER_RATES not in params:
            params[INNER_RATES] = jnp.full_like(params["readout"], config.inner_lr)
    elif INNER_RATES in params:
        raise ConfigError(f"parameters carry Meta-SGD inner rates, but method is {config.method!r}")
    return params


def weight_bounds(params: dict, config: MAMLConfig) -> dict[str, float]:
    """The range each parameter is kept in after an outer step: the devices' ±w_max (the readout's
    ±readout_scale·w_max); Meta-SGD's rates are digital and unbounded."""
    bounds = {name: config.device.w_max * (config.readout_scale if name == "readout" else 1.0) for name in params}
    bounds.pop(INNER_RATES, None)
    return bounds


def make_optimizer(config: MAMLConfig, schedule_steps: int = 0) -> optax.GradientTransformation:
    """Adam at ``outer_lr``; with the cosine schedule, decaying to 0 over ``schedule_steps`` (the run's
    iterations: a run-loop setting, so it is passed in, and only a cosine run's compiled step depends on it)."""
    if config.outer_lr_schedule == "cosine":
        if not (_is_int(schedule_steps) and schedule_steps >= 1):
            raise ConfigError(f"the cosine schedule needs the run's iterations (>= 1), got {schedule_steps!r}")
        return optax.adam(optax.cosine_decay_schedule(config.outer_lr, schedule_steps))
    return optax.adam(config.outer_lr)


@functools.partial(jax.jit, static_argnames=("config", "schedule_steps"))
def train_step(params, opt_state, batch, key, config: MAMLConfig, schedule_steps: int = 0):
    """One outer iteration: meta-gradient through the inner loop, Adam, projection onto the weight range
    (±w_max; the readout ±readout_scale·w_max). Keyed on the model config alone (and, for a cosine schedule,
    its length), so runs of another length, seed or cadence share the compiled step."""
    (loss, accuracies), grads = meta_gradient(params, batch, key, config)
    updates, opt_state = make_optimizer(config, schedule_steps).update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    bounds = weight_bounds(params, config)
    params = {name: jnp.clip(w, -bounds[name], bounds[name]) if name in bounds else w for name, w in params.items()}
    return params, opt_state, loss, accuracies


@functools.partial(jax.jit, static_argnames=("config",))
def evaluate_batch(params, batch, key, config: MAMLConfig) -> TaskOutputs:
    """Query accuracy per inner step [tasks, K+1] and clipped readout updates [tasks] of a batch of tasks,
    in software."""
    return task_outputs(params, batch, key, config)[1]
