"""The hardware configuration of a chip (:class:`ChipConfig`) and the small records a chip returns.

Apart from :mod:`l2l_pcm.chip.chip` so that the pure layer functions (:mod:`l2l_pcm.chip.layers`) and the
stateful chip both import it, and neither imports the other's module in a circle.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from l2l_pcm.chip.crossbar import READ_NOISE_MODES, READ_NOISE_RNGS, MVMSpec
from l2l_pcm.chip.energy import EnergyModel
from l2l_pcm.errors import ConfigError, check_int, check_number
from l2l_pcm.pcm import PCMDevice, device_from_json
from l2l_pcm.validation import parse

DRIFT_COMPENSATIONS = ("none", "global", "array", "column")
CALIBRATION_VECTORS = 32
"""Known binary patterns a compensating chip reads (each with its complement) through every layer to
measure its drift; every read is counted."""


@dataclasses.dataclass(frozen=True)
class ChipConfig:
    """The hardware configuration: device model, update grid, arrays, converters, drift compensation,
    read-noise mode, energy model. Defaults: two 256×256 arrays of differential cells (paper.md §2).

    One tree for everything hardware (after aihwkit's ``rpu_config``): each model config holds one
    (``MAMLConfig.hardware``, ``RobotConfig.hardware``), hardware-aware training and the software PCM
    model read their device and update step from it, every checkpoint stores it, and the chip a model
    is deployed on is built from it (``--hardware FILE.json`` / ``--device`` override it on the CLI).
    """

    n_arrays: int = 2
    array_rows: int = 256
    array_cols: int = 256
    device: PCMDevice = PCMDevice()
    update_step: float = 1.0 / 16
    """Granularity of on-chip weight updates, in weight units (1/16 of w_max)."""
    dac_bits: int | None = None
    """Input precision; None = ideal analog inputs."""
    dac_range: float = 1.0
    """Inputs are clipped to ±dac_range when ``dac_bits`` is set."""
    adc_bits: int | None = None
    """Output precision per tile; None = ideal."""
    adc_range: float = 32.0
    """Per-tile outputs are clipped to ±adc_range (weight×input units) when ``adc_bits`` is set."""
    drift_compensation: str = "none"
    """"none"; "global": the oracle factor of :func:`read_statistics` (noise-free total conductance, one per
    layer; ``true`` in older configs); "array" / "column": measured, as a chip can, by a noisy read of
    ``CALIBRATION_VECTORS`` known inputs whenever the layer is read after its state or the clock changed
    (counted in ``calibration_vectors`` and the MVM counters), one gain per array tile or per column;
    updates are then written relative to the compensated weights (:meth:`Chip.reprogram`)."""
    read_noise_mode: str = "per_read"
    """"per_read": fresh device noise for every input vector (exact). "per_batch": one draw per MVM call
    shared by its vectors (aihwkit-style, about 2x faster). See :func:`analog_matmul`."""
    read_noise_rng: str = "counter"
    """Generator of the read noise: "counter" (:func:`~l2l_pcm.chip.crossbar.counter_normal`, the default: the
    same distribution as ``jax.random.normal``, an MVM with exact per-read noise about 1.3x faster on CPU)
    or "threefry" (``jax.random``; the shipped models and the authors' imported ones were measured with it
    and keep it in their hardware config, so their published numbers reproduce exactly)."""
    energy: EnergyModel = EnergyModel()

    def __post_init__(self) -> None:
        if isinstance(self.drift_compensation, bool):  # configs and checkpoints before "global" had a name
            object.__setattr__(self, "drift_compensation", "global" if self.drift_compensation else "none")
        if self.drift_compensation not in DRIFT_COMPENSATIONS:
            raise ConfigError(
                f"ChipConfig.drift_compensation must be one of {DRIFT_COMPENSATIONS}, got {self.drift_compensation!r}"
            )
        for name in ("n_arrays", "array_rows", "array_cols"):
            check_int(f"ChipConfig.{name}", getattr(self, name))
        if not (math.isfinite(self.update_step) and 0 < self.update_step <= self.device.w_max):
            raise ConfigError(f"ChipConfig.update_step must be in (0, w_max], got {self.update_step!r}")
        for name in ("dac_bits", "adc_bits"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and 2 <= value <= 32):
                raise ConfigError(f"ChipConfig.{name} must be None or an integer in [2, 32], got {value!r}")
        if self.read_noise_rng not in READ_NOISE_RNGS:
            raise ConfigError(
                f"ChipConfig.read_noise_rng must be one of {READ_NOISE_RNGS}, got {self.read_noise_rng!r}"
            )
        if self.read_noise_mode not in READ_NOISE_MODES:
            raise ConfigError(
                f"ChipConfig.read_noise_mode must be one of {READ_NOISE_MODES}, got {self.read_noise_mode!r}"
            )
        for name in ("dac_range", "adc_range"):
            check_number(f"ChipConfig.{name}", getattr(self, name))

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def software_mvm_spec(self) -> MVMSpec:
        """The crossbar a software model of this hardware reads through: one ideal tile, this hardware's
        read-noise mode and generator (converters are the chip's alone)."""
        return MVMSpec(read_noise_mode=self.read_noise_mode, read_noise_rng=self.read_noise_rng)

    @classmethod
    def from_json(cls, data: Mapping, path: str = "hardware") -> ChipConfig:
        """From a JSON object of fields (missing ones keep their defaults; ``device`` may be a profile name),
        type-checked field by field (:func:`l2l_pcm.validation.parse`): a wrong type, an unknown field or a
        value out of range is one :class:`ConfigError` naming the field's path under ``path``."""
        if isinstance(data, ChipConfig):
            return data
        if isinstance(data, Mapping):
            data = dict(data)
            if isinstance(data.get("drift_compensation"), bool):  # configs before "global" had a name
                data["drift_compensation"] = "global" if data["drift_compensation"] else "none"
            if "device" in data:
                data["device"] = device_from_json(data["device"], f"{path}.device")
        return parse(cls, data, path)


def hardware_from_fields(data: dict, step_field: str, path: str = "hardware") -> ChipConfig:
    """Pop a model config's hardware from its JSON ``data``: ``"hardware"``, or (checkpoints of format 2
    and older configs) the separate ``"device"`` and ``step_field`` it replaces; both at once is refused,
    since the two could disagree."""
    legacy = {name: data.pop(name) for name in ("device", step_field) if name in data}
    if "hardware" in data:
        if legacy:
            raise ConfigError(
                f'give the device and update step inside "hardware", not also as {sorted(legacy)}: '
                "one setting, one place"
            )
        return ChipConfig.from_json(data.pop("hardware"), path)
    fields = {}
    if "device" in legacy:
        fields["device"] = legacy["device"]
    if legacy.get(step_field) is not None:
        fields["update_step"] = legacy[step_field]
    return ChipConfig.from_json(fields, path)


@dataclasses.dataclass(frozen=True)
class ReprogramReport:
    """What one on-chip update did."""

    devices_touched: int
    pairs_touched: int
    rows_touched: int
    devices_in_layer: int
    energy_pJ: float
    latency_ns: float
    touched: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    """Boolean mask of the devices re-programmed, shaped like the layer's state (None for a full program)."""
    weights_clipped: int = 0
    """Weights beyond the devices' range (after scaling) that were stored at ±w_max instead: by a full
    program, or by an update that would have taken its weight past ±w_max."""

    @property
    def fraction_touched(self) -> float:
        return self.devices_touched / self.devices_in_layer


@dataclasses.dataclass(frozen=True)
class Periphery:
    """One layer's converter ranges (defaults: the ChipConfig's; set or calibrated per layer)."""

    dac_range: float
    adc_range: float
    dac_unsigned: bool = False
