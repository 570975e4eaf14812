"""The meta-trained CNN on the emulated chip, with the inner loop running on the chip.

Deployment: the four conv layers (im2col matrices; conv2–4 split 252 + 252 rows over the two arrays, as
in the paper's Fig. 2e) and the readout are programmed once, the kernels as they are and the readout at
``MAMLConfig.readout_scale`` weight units per device unit; then the hardware's age in use passes
(``clock.deployment_age_s``, or its training age).

Per task, starting from that deployed state (a snapshot: as if each task had its own identically
programmed chip):

1. support and query images go through the conv layers on the chip (read noise on every MVM); ReLU,
   normalisation with support statistics and max-pool run digitally, and the penultimate activations
   are kept digitally for the task;
2. each of the ``inner_steps`` updates reads the readout on the chip for the support features, forms
   the gradient digitally as the outer product of penultimate activations and output errors
   F^T(softmax − Y)/N (no backpropagation through the chip), and writes −lr·gradient with
   :meth:`Chip.reprogram`: only the ``MAMLConfig.update_budget`` largest entries are kept (if set),
   rounding to 1/16 as ``hardware.update.rounding`` says, only devices whose update is non-zero are
   re-programmed;
3. query accuracy is read after every step (step 0 = before any update).

The other methods (:data:`l2l_pcm.fewshot.maml.METHODS`) change step 2: Meta-SGD multiplies the gradient by
its learned per-weight rates (digital); ProtoNet writes the support features' class means to the zero
readout in one :meth:`Chip.reprogram` and adds the digital bias −‖c‖²/2 of the written prototypes
(:attr:`Chip.intended_weights`); full MAML reads every layer's weights (one noise-free read,
:meth:`Chip.read_weights`), forms every layer's gradient digitally from them and writes each layer's
update with :meth:`Chip.reprogram`, re-embedding the images on the chip after every step.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from l2l_pcm.chip import ChipConfig, chip_for_model, deploy
from l2l_pcm.errors import ConfigError
from l2l_pcm.fewshot.maml import INNER_RATES, MAMLConfig, inner_step, prototype_bias, support_loss
from l2l_pcm.fewshot.model import CONV_NAMES, accuracy, embed
from l2l_pcm.pcm import keep_largest

READOUT = "readout"


class EveryLayer(NamedTuple):
    """What full MAML's inner loop needs beyond the readout (:func:`adapt_on_chip`)."""

    layers: tuple[str, ...]
    """Every layer the task re-programs."""
    features: Callable[[int], tuple[jax.Array, jax.Array]]
    """(support, query) features before step ``step`` ≥ 1, from the adapted layers."""
    updates: Callable[[], dict[str, jax.Array]]
    """Each layer's update for the weights the chip holds now."""


@dataclasses.dataclass(frozen=True)
class ChipTaskResult:
    accuracy_per_step: np.ndarray
    """Query accuracy after 0..inner_steps updates."""
    devices_reprogrammed: int
    """Devices re-programmed by the task's updates (summed over steps: programming operations)."""
    unique_devices_reprogrammed: int
    predictions: np.ndarray
    """Query predictions after the last update."""
    energy_pJ: float
    """Estimated energy of the adaptation: readout MVMs + programming (see :mod:`l2l_pcm.chip.energy`)."""
    updates_clipped: int = 0
    """Readout updates that would have taken a weight past the devices' range (±readout_scale·w_max)."""


class ChipFewShotLearner:
    """A few-shot learner whose weights live on an emulated PCM chip."""

    def __init__(
        self,
        params: dict,
        config: MAMLConfig,
        key: jax.Array,
        chip_config: ChipConfig | None = None,
    ) -> None:
        self.config = config
        self.rates = params.get(INNER_RATES)  # Meta-SGD's, digital
        self.adapted = (*CONV_NAMES, READOUT) if config.method == "maml" else (READOUT,)
        """The layers a task re-programs."""
        self.chip = chip_for_model(chip_config, config.hardware)
        # as meta-trained: weights in device units (the update step is 1/16 of w_max); calibrated drift
        # compensation holds them as they read at the age the model was meta-trained with
        layers = {name: params[name] for name in (*CONV_NAMES, READOUT)}
        scaling = {READOUT: config.readout_scale}  # the conv kernels as they are ("none")
        clock = self.chip.config.clock
        deploy(layers, self.chip, key, scaling=scaling, reference_age_s=clock.training_age_s)
        self.chip.advance(clock.age_in_use_s, warn_fixed_age=False)
        self._deployed = self.chip.snapshot()

    @property
    def readout_devices(self) -> int:
        return self.chip.placements[READOUT].devices

    @property
    def adapted_devices(self) -> int:
        """Devices of the layers a task may re-program (the readout; every layer for full MAML)."""
        return sum(self.chip.placements[name].devices for name in self.adapted)

    def features(self, support_x, query_x, key) -> tuple[jax.Array, jax.Array]:
        """Penultimate activations of one task's support and query images, conv layers on the chip."""
        keys = jax.random.split(key, len(CONV_NAMES))
        return embed(lambda i, x: self.chip.conv2d(CONV_NAMES[i], x, keys[i]), support_x, query_x, self.config.cnn)

    def adapt(self, support_x, support_y, query_x, query_y, key) -> ChipTaskResult:
        """Run one task from the deployed state; see the module docstring."""
        self.chip.restore(self._deployed)
        key_features, key_steps = jax.random.split(key)
        features = self.features(support_x, query_x, key_features)
        every_layer = None
        if self.config.method == "maml":  # the adapted conv layers embed the images anew at every step
            every_layer = EveryLayer(
                layers=self.adapted,
                features=lambda step: self.features(support_x, query_x, jax.random.fold_in(key_features, step)),
                updates=lambda: self._all_layer_updates(support_x, jnp.asarray(support_y), query_x),
            )
        return adapt_on_chip(
            self.chip, self.config, features, support_y, query_y, key_steps, rates=self.rates, every_layer=every_layer
        )

    def _all_layer_updates(self, support_x, support_y, query_x) -> dict[str, jax.Array]:
        """Full MAML's step: every layer's −lr·gradient of the support loss, formed digitally from one
        noise-free read of the weights on the chip (the gradient is not backpropagated through the chip)."""
        kernels = [self.chip.read_weights(name).reshape(self.chip.placements[name].kernel_shape) for name in CONV_NAMES]
        weights = (kernels, self.chip.read_weights(READOUT))
        grads = _support_gradient(self.config, weights, jnp.asarray(support_x), support_y, jnp.asarray(query_x))
        names = (*CONV_NAMES, READOUT)
        return {name: -self.config.inner_lr * g for name, g in zip(names, [*grads[0], grads[1]], strict=True)}


@functools.partial(jax.jit, static_argnames=("config",))
def _support_gradient(config: MAMLConfig, weights, support_x, support_y, query_x):
    """Gradient of the support cross-entropy with respect to (kernels, readout), in software."""
    return jax.grad(lambda w: support_loss(config, w, support_x, support_y, query_x)[0])(weights)


def adapt_on_chip(
    chip,
    learner: MAMLConfig,
    features: tuple[jax.Array, jax.Array],
    support_y,
    query_y,
    key: jax.Array,
    *,
    readout: str = READOUT,
    rates=None,
    every_layer=None,
) -> ChipTaskResult:
    """One task's inner loop on ``chip``, for any model: ``features`` = (support, query) features, from the
    chip's layers or anywhere; the chip layer ``readout`` holds the readout as deployed. ``learner`` says
    the method, ``inner_steps``, ``inner_lr``, ``update_budget`` and ``ways`` (a :class:`MAMLConfig`); updates
    are written with :meth:`Chip.reprogram` as ``chip.config.update`` says, and the clock advances its
    ``seconds_between`` after each. ``rates``: Meta-SGD's per-weight rates. ``every_layer`` (full MAML): the
    layers it adapts, their features re-embedded before each step ≥ 1, and every layer's update."""
    adapted = (readout,) if every_layer is None else tuple(every_layer.layers)
    touched = {name: np.zeros(chip.placements[name].state_shape, dtype=bool) for name in adapted}
    accuracies, devices, clipped = [], 0, 0
    energy_before = chip.energy_pJ(*adapted)
    support_y = jnp.asarray(support_y)
    f_support, f_query = features
    bias = None
    for step, step_key in enumerate(jax.random.split(key, learner.inner_steps + 1)):
        key_query, key_support, key_update = jax.random.split(step_key, 3)
        if step and every_layer is not None:
            f_support, f_query = every_layer.features(step)
        query_logits = chip.mvm(readout, f_query, key_query)
        if bias is not None:
            query_logits = query_logits + bias
        accuracies.append(float(accuracy(query_logits, query_y)))
        if step == learner.inner_steps:
            break
        if every_layer is not None:
            updates = every_layer.updates()
        else:
            logits = None if learner.method == "protonet" else chip.mvm(readout, f_support, key_support)
            held = chip.intended_weights(readout) if learner.method == "protonet" else None
            update = inner_step(learner, held, f_support, support_y, logits, rates)
            updates = {readout: keep_largest(update, learner.update_budget)}
        update_keys = [key_update] if len(updates) == 1 else jax.random.split(key_update, len(updates))
        for name, update_key in zip(updates, update_keys, strict=True):
            report = chip.reprogram(name, updates[name], update_key, rounding=chip.config.update.rounding)
            touched[name] |= report.touched
            devices += report.devices_touched
            clipped += report.weights_clipped if name == readout else 0
        if learner.method == "protonet":
            bias = prototype_bias(chip.intended_weights(readout))
        chip.advance(chip.config.update.seconds_between, warn_fixed_age=False)
    energy_pJ = chip.energy_pJ(*adapted) - energy_before
    predictions = np.asarray(jnp.argmax(query_logits, axis=-1))
    unique = int(sum(mask.sum() for mask in touched.values()))
    return ChipTaskResult(np.asarray(accuracies), devices, unique, predictions, energy_pJ, clipped)


def tasks_on_chip(
    chip,
    learner: MAMLConfig,
    embed: Callable[[jax.Array, jax.Array], jax.Array],
    tasks,
    key: jax.Array,
    *,
    readout_scale: float,
    readout: str = READOUT,
) -> list[ChipTaskResult]:
    """Few-shot tasks learned on ``chip`` by any model: ``embed(images, key)`` gives features [N, D] (the
    model's layers read from the chip, e.g. through :func:`l2l_pcm.flax_chip.to_chip`); a zero readout
    [D, ways] is placed and programmed at ``readout_scale`` weight units per device unit (its range
    ±readout_scale·w_max); then every task ``(support_x, support_y, query_x, query_y)`` of the stacked
    ``tasks`` starts from that state and is learned by :func:`adapt_on_chip` (readout-only methods)."""
    support_x, support_y, query_x, query_y = tasks
    if learner.method == "maml":
        raise ConfigError("full MAML adapts every layer: tasks_on_chip runs the readout-only methods")
    width = int(embed(jnp.asarray(support_x[0]), key).shape[-1])
    chip.place_dense(readout, (width, learner.ways))
    chip.program(readout, jnp.zeros((width, learner.ways)), jax.random.fold_in(key, 1), scaling=readout_scale)
    deployed, results = chip.snapshot(), []
    for i in range(len(support_x)):
        chip.restore(deployed)
        key_support, key_query, key_adapt = jax.random.split(jax.random.fold_in(key, 2 + i), 3)
        features = (embed(jnp.asarray(support_x[i]), key_support), embed(jnp.asarray(query_x[i]), key_query))
        results.append(adapt_on_chip(chip, learner, features, support_y[i], query_y[i], key_adapt, readout=readout))
    return results
