"""The trainee SNN on the emulated chip: one natural-e-prop update written with ``reprogram``.

Deployment: the trainee's plastic weights, stacked as ``[W_in; W_rec]`` (5 + 250 = 255 rows × 250
columns, one 256×256 array), are programmed once and the hardware's age in use passes
(``clock.deployment_age_s``, or its training age). Per task,
from that deployed state:

1. pass 1 runs the trainee with every synaptic MVM read through the chip (fresh read noise per step);
   the LIF dynamics, eligibility traces, the readout ``W_out`` (not adapted) and the learning-signal
   generator run digitally;
2. the e-prop update ΔW = −η Σ_t L_j ψ_j ē_i is quantized to 1/16 (``hardware.update.rounding``) and written with
   :meth:`Chip.reprogram`: only devices whose quantized update is non-zero are re-programmed;
3. ``hardware.update.seconds_between`` later, pass 2 runs the trainee again through the chip.

The chip is built from the checkpoint's hardware configuration (``RobotConfig.hardware``) unless a ``ChipConfig`` is
given. With ``RobotConfig.w_out_on_pcm`` the readout ``W_out`` is a second layer on the chip, read with
noise at every step; otherwise it runs digitally.

Self-connections do not exist on the chip (their cells are left unused: masked digitally).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from l2l_pcm.chip import AnalogLayer, ChipConfig, WeightStatistics, chip_for_model, deploy
from l2l_pcm.eprop import WeightMemory, WeightUpdate
from l2l_pcm.errors import ConfigError
from l2l_pcm.robot.model import RobotConfig
from l2l_pcm.snn import recurrent_mask, stack_weights

TRAINEE = "trainee"
READOUT = "trainee_readout"


@dataclasses.dataclass
class ChipUpdateRecord:
    """What the on-chip updates of the last batch of tasks did, per task."""

    devices_reprogrammed: list[int] = dataclasses.field(default_factory=list)


class ChipTrainee:
    """The trainee's plastic weights on an emulated PCM chip, exposed as a :class:`WeightMemory`."""

    def __init__(
        self,
        params: dict,
        config: RobotConfig,
        key: jax.Array,
        chip_config: ChipConfig | None = None,
    ) -> None:
        self.config = config
        if not config.quantize_update:
            raise ConfigError(
                "a model meta-trained without update quantization (quantize_update false) cannot be "
                "deployed on a chip, which writes updates on its 1/16 grid"
            )
        self.chip = chip_for_model(chip_config, config.hardware)
        w_stack = stack_weights(params["trainee_w_in"], params["trainee_w_rec"])
        self.mask = recurrent_mask(config.trainee, w_stack.dtype)
        layers = {TRAINEE: w_stack * self.mask}
        if config.w_out_on_pcm:
            layers[READOUT] = params["trainee_w_out"]
        # as meta-trained: weights in device units, |w| > w_max written the device's way; calibrated drift
        # compensation holds them as they read at the age the model was meta-trained with
        clock = self.chip.config.clock
        deploy(layers, self.chip, key, scaling="none", reference_age_s=clock.training_age_s)
        self.chip.advance(clock.age_in_use_s, warn_fixed_age=False)
        self._deployed = self.chip.snapshot()
        self.record = ChipUpdateRecord()

    @property
    def devices(self) -> int:
        return self.chip.placements[TRAINEE].devices

    def _trainee(self, stats: WeightStatistics | None = None) -> AnalogLayer:
        """The trainee as the layer API reads it (absent self-connections masked), with ``stats`` if given."""
        layer = self.chip.layer(TRAINEE)
        stats = layer.stats if stats is None else stats
        return dataclasses.replace(layer, stats=WeightStatistics(stats.mean * self.mask, stats.variance * self.mask))

    def memory(self) -> WeightMemory:
        """Reads through the chip's layers (their reads are booked on it); pass 2 re-programs the deployed
        chip once per task."""

        def read_initial(w_stack, key):
            self.chip.restore(self._deployed)
            return self._trainee(), None

        def read_readout(w_out, key):
            self.chip.restore(self._deployed)
            return self.chip.layer(READOUT)

        def read_updated(carry, update: WeightUpdate, key):
            means, variances = [], []
            self.record = ChipUpdateRecord()
            applied = np.asarray(update.applied)
            for task, task_key in enumerate(jax.random.split(key, applied.shape[0])):
                self.chip.restore(self._deployed)
                # rounded to the 1/16 grid by the model's update rule already: nearest rounding writes it exactly
                # meta-trained with re-programmed weights read fresh (not aged to the deployment age)
                report = self.chip.reprogram(
                    TRAINEE, applied[task], task_key, rounding="nearest", relative_to="programmed"
                )
                self.chip.advance(self.chip.config.update.seconds_between, warn_fixed_age=False)
                stats = self.chip.read_statistics(TRAINEE)
                means.append(stats.mean)
                variances.append(stats.variance)
                self.record.devices_reprogrammed.append(report.devices_touched)
            self.chip.restore(self._deployed)
            return self._trainee(WeightStatistics(jnp.stack(means), jnp.stack(variances)))

        return WeightMemory(read_initial, read_updated, read_readout if self.config.w_out_on_pcm else None)
