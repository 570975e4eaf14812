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
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from l2l_pcm.chip import ChipConfig, chip_for_model, deploy
from l2l_pcm.fewshot.maml import MAMLConfig
from l2l_pcm.fewshot.model import CONV_NAMES, accuracy, embed, readout_gradient
from l2l_pcm.pcm import keep_largest

READOUT = "readout"


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

    def features(self, support_x, query_x, key) -> tuple[jax.Array, jax.Array]:
        """Penultimate activations of one task's support and query images, conv layers on the chip."""
        keys = jax.random.split(key, len(CONV_NAMES))
        return embed(lambda i, x: self.chip.conv2d(CONV_NAMES[i], x, keys[i]), support_x, query_x, self.config.cnn)

    def adapt(self, support_x, support_y, query_x, query_y, key) -> ChipTaskResult:
        """Run one task from the deployed state; see the module docstring."""
        self.chip.restore(self._deployed)
        key_features, key_steps = jax.random.split(key)
        f_support, f_query = self.features(support_x, query_x, key_features)
        touched = np.zeros(self.chip.placements[READOUT].state_shape, dtype=bool)
        accuracies, devices, clipped = [], 0, 0
        energy_before = self.chip.energy_pJ(READOUT)
        for step, step_key in enumerate(jax.random.split(key_steps, self.config.inner_steps + 1)):
            key_query, key_support, key_update = jax.random.split(step_key, 3)
            query_logits = self.chip.mvm(READOUT, f_query, key_query)
            accuracies.append(float(accuracy(query_logits, query_y)))
            if step == self.config.inner_steps:
                break
            logits = self.chip.mvm(READOUT, f_support, key_support)
            update = -self.config.inner_lr * readout_gradient(f_support, logits, jnp.asarray(support_y))
            update = keep_largest(update, self.config.update_budget)
            report = self.chip.reprogram(READOUT, update, key_update, rounding=self.chip.config.update.rounding)
            touched |= report.touched
            devices += report.devices_touched
            clipped += report.weights_clipped
            self.chip.advance(self.chip.config.update.seconds_between, warn_fixed_age=False)
        energy_pJ = self.chip.energy_pJ(READOUT) - energy_before
        predictions = np.asarray(jnp.argmax(query_logits, axis=-1))
        return ChipTaskResult(np.asarray(accuracies), devices, int(touched.sum()), predictions, energy_pJ, clipped)
