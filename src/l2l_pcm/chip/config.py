"""The hardware configuration of a chip (:class:`ChipConfig`) and the small records a chip returns.

Apart from :mod:`l2l_pcm.chip.chip` so that the pure layer functions (:mod:`l2l_pcm.chip.layers`) and the
stateful chip both import it, and neither imports the other's module in a circle.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from l2l_pcm.chip.crossbar import MVMSpec
from l2l_pcm.chip.energy import EnergyModel
from l2l_pcm.errors import ConfigError, check_int, check_number
from l2l_pcm.pcm import PCMDevice, device_from_json
from l2l_pcm.validation import merged, parse
from l2l_pcm.vocabulary import (
    CONVERTER_BITS,
    DRIFT_COMPENSATIONS,
    READ_NOISE_MODES,
    READ_NOISE_RNGS,
    UPDATE_ROUNDINGS,
)

CALIBRATION_VECTORS = 32
"""Known binary patterns a compensating chip reads (each with its complement) through every layer to
measure its drift; every read is counted."""


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


MAX_ARRAYS = 4096
MAX_ARRAY_SIDE = 4096
"""Bounds of the emulated arrays (resources: a chip keeps per-array bookkeeping; IBM's HERMES chip has 64
cores of 256x256): 10^9 arrays were accepted and exhausted 24 GB of memory before this bound."""


@dataclasses.dataclass(frozen=True)
class ArraysConfig:
    """The crossbar arrays layers are placed on: two arrays (Ortner et al. 2025, arXiv:2405.05141, Fig. 2e) of
    256×256, the size of IBM's HERMES core (Khaddam-Aljameh et al., IEEE JSSC 2022)."""

    count: int = 2
    """Number of crossbar arrays; a network that does not fit is refused with the count it needs."""
    rows: int = 256
    """Word lines (inputs) per array; taller layers are split over arrays and summed digitally."""
    cols: int = 256
    """Bit lines (outputs, one differential pair each) per array; wider layers are split too."""

    def __post_init__(self) -> None:
        for name, most in (("count", MAX_ARRAYS), ("rows", MAX_ARRAY_SIDE), ("cols", MAX_ARRAY_SIDE)):
            if check_int(f"arrays.{name}", getattr(self, name)) > most:
                raise ConfigError(f"arrays.{name} must be at most {most:,}, got {getattr(self, name)!r}")


@dataclasses.dataclass(frozen=True)
class ForwardConfig:
    """How a crossbar is read: converters at its edges and the read noise of every read."""

    dac_bits: int | None = None
    """Input precision; None = ideal analog inputs."""
    dac_range: float = 1.0
    """Inputs are clipped to ±dac_range when ``dac_bits`` is set."""
    adc_bits: int | None = None
    """Output precision per tile; None = ideal."""
    adc_range: float = 32.0
    """Per-tile outputs are clipped to ±adc_range (weight×input units) when ``adc_bits`` is set."""
    read_noise_mode: str = "per_read"
    """"per_read": fresh device noise for every input vector (exact). "per_batch": one draw per MVM call
    shared by its vectors (aihwkit-style, about 2x faster). See :func:`analog_matmul`."""
    read_noise_rng: str = "counter"
    """Generator of the read noise: "counter" (:func:`~l2l_pcm.chip.crossbar.counter_normal`, the default: the
    same distribution as ``jax.random.normal``, an MVM with exact per-read noise about 1.3x faster on CPU)
    or "threefry" (``jax.random``; the shipped models and the authors' imported ones were measured with it
    and keep it in their hardware config, so their published numbers reproduce exactly)."""

    def __post_init__(self) -> None:
        for name in ("dac_bits", "adc_bits"):
            value = getattr(self, name)
            low, high = CONVERTER_BITS
            if value is not None and not (isinstance(value, int) and low <= value <= high):
                raise ConfigError(f"forward.{name} must be None or an integer in [{low}, {high}], got {value!r}")
        if self.read_noise_rng not in READ_NOISE_RNGS:
            raise ConfigError(f"forward.read_noise_rng must be one of {READ_NOISE_RNGS}, got {self.read_noise_rng!r}")
        if self.read_noise_mode not in READ_NOISE_MODES:
            raise ConfigError(
                f"forward.read_noise_mode must be one of {READ_NOISE_MODES}, got {self.read_noise_mode!r}"
            )
        for name in ("dac_range", "adc_range"):
            check_number(f"forward.{name}", getattr(self, name))


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
    """How weights are written after deployment: the grid, its rounding and the time between writes."""

    step: float = 1.0 / 16
    """Granularity of on-chip weight updates, in weight units (1/16 of w_max)."""
    rounding: str = "stochastic"
    """How an update is rounded to ``step`` (hardware-aware training, the software PCM model and the chip):
    "stochastic" (unbiased, the authors' few-shot choice) or "nearest" (the authors' robot rule; updates
    below half a step are dropped: fewer devices)."""
    seconds_between: float = 1.0
    """Chip time between writing an update and the next read: devices an update re-programmed are this
    old when read (the few-shot inner steps, the robot's pass 2)."""

    def __post_init__(self) -> None:
        if not (_finite(self.step) and self.step > 0):
            raise ConfigError(f"update.step must be a finite number > 0, got {self.step!r}")
        if self.rounding not in UPDATE_ROUNDINGS:
            raise ConfigError(f"update.rounding must be one of {UPDATE_ROUNDINGS}, got {self.rounding!r}")
        if not (_finite(self.seconds_between) and self.seconds_between >= 0):
            raise ConfigError(f"update.seconds_between must be a finite number >= 0, got {self.seconds_between!r}")


MAX_AGE_S = 1000 * 365 * 86400.0
"""The oldest a device may be (1000 years): the drift law (Nandakumar et al. 2019; Joshi et al. 2020,
Nat. Commun. 11, 2473) is fitted to measurements over
days, and float32 reads of t^-nu overflow to NaN far beyond (an age of 1e40 s did)."""


@dataclasses.dataclass(frozen=True)
class ClockConfig:
    """The two ages of a model's weights, named apart: the one it was meta-trained at and the one it is used at."""

    training_age_s: float = 3600.0
    """Time since programming at which hardware-aware training and the software PCM model read the
    weights; calibrated drift compensation holds deployed weights as they read at this age."""
    deployment_age_s: float | None = None
    """Time since programming at which the chip is used (evaluation, sweeps); None = ``training_age_s``."""

    def __post_init__(self) -> None:
        if not (_finite(self.training_age_s) and 0 <= self.training_age_s <= MAX_AGE_S):
            raise ConfigError(
                f"clock.training_age_s must be a number of seconds in [0, {MAX_AGE_S:g}] (1000 years), "
                f"got {self.training_age_s!r}"
            )
        age = self.deployment_age_s
        if age is not None and not (_finite(age) and 0 <= age <= MAX_AGE_S):
            raise ConfigError(
                f"clock.deployment_age_s must be None or a number of seconds in [0, {MAX_AGE_S:g}] (1000 years), "
                f"got {age!r}"
            )

    @property
    def age_in_use_s(self) -> float:
        """The chip's age when it is used: the deployment age, or the training age if none is set."""
        return self.training_age_s if self.deployment_age_s is None else self.deployment_age_s


@dataclasses.dataclass(frozen=True)
class ChipConfig:
    """The hardware, one typed tree with one home per setting (after aihwkit's ``rpu_config``):

    - ``device``: the PCM cell and its physics (:class:`~l2l_pcm.pcm.PCMDevice`: conductance range, w_max,
      devices per polarity, programming/drift/read noise, the authors' conventions such as a fixed age);
    - ``arrays``: the crossbar arrays (:class:`ArraysConfig`);
    - ``forward``: converters and read noise (:class:`ForwardConfig`);
    - ``update``: step, rounding and time between writes (:class:`UpdateConfig`);
    - ``drift_compensation``: "none", "global", "array" or "column" (below);
    - ``clock``: training age and deployment age (:class:`ClockConfig`);
    - ``energy``: the energy model (:class:`~l2l_pcm.chip.energy.EnergyModel`).

    Each model config holds one (``MAMLConfig.hardware``, ``RobotConfig.hardware``); hardware-aware
    training, the software PCM model and the chip a model is deployed on all read it, every checkpoint
    stores it, and ``--hardware FILE.json`` (this tree as JSON) / ``--device`` override it on the CLI.
    Change settings by their paths with :meth:`with_settings` (``{"forward.dac_bits": 8}``).
    """

    device: PCMDevice = PCMDevice()
    arrays: ArraysConfig = ArraysConfig()
    forward: ForwardConfig = ForwardConfig()
    update: UpdateConfig = UpdateConfig()
    drift_compensation: str = "none"
    """"none"; "global": the oracle factor of :func:`read_statistics` (noise-free total conductance, one per
    layer); "array" / "column": measured, as a chip can, by a noisy read of ``CALIBRATION_VECTORS`` known
    inputs whenever the layer is read after its state or the clock changed (counted in
    ``calibration_vectors`` and the MVM counters), one gain per array tile or per column; updates are then
    written relative to the compensated weights (:meth:`Chip.reprogram`)."""
    clock: ClockConfig = ClockConfig()
    energy: EnergyModel = EnergyModel()

    def __post_init__(self) -> None:
        for name, kind in (
            ("device", PCMDevice),
            ("arrays", ArraysConfig),
            ("forward", ForwardConfig),
            ("update", UpdateConfig),
            ("clock", ClockConfig),
            ("energy", EnergyModel),
        ):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")
        if isinstance(self.drift_compensation, bool):  # configs and checkpoints before "global" had a name
            object.__setattr__(self, "drift_compensation", "global" if self.drift_compensation else "none")
        if self.drift_compensation not in DRIFT_COMPENSATIONS:
            raise ConfigError(
                f"drift_compensation must be one of {DRIFT_COMPENSATIONS}, got {self.drift_compensation!r}"
            )
        if self.update.step > self.device.w_max:
            raise ConfigError(f"update.step must be in (0, w_max={self.device.w_max:g}], got {self.update.step!r}")
        self.device.refuse_fixed_age(self.clock.deployment_age_s, "clock.deployment_age_s")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def updated(self, data: Mapping, path: str = "hardware") -> ChipConfig:
        """This tree with a partial JSON tree laid over it (``{"forward": {"dac_bits": 8}}``): fields the
        data leaves out keep this tree's values, not the class defaults (a model's hardware, overridden by
        a file, keeps its training age and update rule); parsed and checked like :meth:`from_json`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a JSON object of hardware settings, got {data!r}")

        moved = [name for name in data if name in FLAT_HOMES]
        if moved:  # refused by from_json with their homes, not merged beside the sections
            return ChipConfig.from_json(data, path)
        return ChipConfig.from_json(merged(self.to_json(), data), path)

    def with_settings(self, settings: Mapping[str, object], path: str = "hardware") -> ChipConfig:
        """This tree with settings changed by their dotted paths (``{"forward.dac_bits": 8,
        "clock.deployment_age_s": 86400}``; ``"device"`` takes a profile name or a PCMDevice), parsed and
        checked like a JSON file: a wrong path, type or value is one :class:`ConfigError` naming it."""
        tree: dict = {}
        for dotted, value in settings.items():
            *parents, name = str(dotted).split(".")
            level = tree
            for part in parents:
                level = level.setdefault(part, {})
            level[name] = dataclasses.asdict(value) if isinstance(value, PCMDevice) else value
        return self.updated(tree, path)

    def software_mvm_spec(self) -> MVMSpec:
        """The crossbar a software model of this hardware reads through: one ideal tile, this hardware's
        read-noise mode and generator (converters are the chip's alone)."""
        return MVMSpec(read_noise_mode=self.forward.read_noise_mode, read_noise_rng=self.forward.read_noise_rng)

    def for_software_model(
        self, requested: ChipConfig, reads_per_vector: bool = True, has_devices: bool = True
    ) -> ChipConfig:
        """``requested`` (a tree to evaluate a model of this tree with), checked for a software model: it
        applies the device, the update rule, the training age and the read-noise generator (and the
        read-noise mode when it reads ``per_vector``), and nothing of the rest, which only a chip has.
        A change there would be silently ignored, so it is refused, naming the setting; a model without
        devices (``has_devices=False``, e.g. fp32) takes no tree other than its own."""
        if not has_devices and requested != self:
            raise ConfigError(
                "the fp32 software model has no devices: a hardware tree other than the model's does not "
                "apply to it (evaluate with a precision that has devices, e.g. pcm, or on the chip)"
            )
        only_chip = [f"{section}.{field.name}" for section in ("arrays", "energy") for field in _fields(self, section)]
        only_chip += ["forward.dac_bits", "forward.dac_range", "forward.adc_bits", "forward.adc_range"]
        only_chip += ["drift_compensation", "clock.deployment_age_s"]
        if not reads_per_vector:
            only_chip.append("forward.read_noise_mode")
        for dotted in only_chip:
            section, _, name = dotted.partition(".")
            ours, theirs = getattr(self, section), getattr(requested, section)
            if name:
                ours, theirs = getattr(ours, name), getattr(theirs, name)
            if ours != theirs:
                raise ConfigError(
                    f"hardware.{dotted} applies to the chip only (the software model has no arrays, converters, "
                    f"drift compensation, energy model or deployment clock): evaluate on the chip, or keep the "
                    f"model's ({ours!r})"
                )
        return requested

    @classmethod
    def from_json(cls, data: Mapping, path: str = "hardware") -> ChipConfig:
        """From a JSON object of this tree (missing fields keep their defaults; ``device`` may be a profile
        name), type-checked field by field (:func:`l2l_pcm.validation.parse`): a wrong type, an unknown
        field or a value out of range is one :class:`ConfigError` naming the field's path under ``path``.
        A setting of the flat config (checkpoint formats 3-4) is refused with its home in the tree;
        checkpoints are migrated by :func:`l2l_pcm.checkpoint.migrated_config`."""
        if isinstance(data, ChipConfig):
            return data
        if isinstance(data, Mapping):
            data = dict(data)
            moved = {name: home for name, home in FLAT_HOMES.items() if name in data}
            if moved:
                homes = ", ".join(f"{name} -> {home}" for name, home in moved.items())
                raise ConfigError(
                    f"{path}: settings of the flat hardware config given; their homes in the tree: {homes}"
                )
            if "device" in data:
                data["device"] = device_from_json(data["device"], f"{path}.device")
        return parse(cls, data, path)


def _fields(tree: ChipConfig, section: str) -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(getattr(tree, section))


FLAT_HOMES = {
    "n_arrays": "arrays.count",
    "array_rows": "arrays.rows",
    "array_cols": "arrays.cols",
    "update_step": "update.step",
    "dac_bits": "forward.dac_bits",
    "dac_range": "forward.dac_range",
    "adc_bits": "forward.adc_bits",
    "adc_range": "forward.adc_range",
    "read_noise_mode": "forward.read_noise_mode",
    "read_noise_rng": "forward.read_noise_rng",
}
"""Where each field of the flat hardware config (checkpoint formats 3 and 4) lives in the tree."""


SCENARIO_FIELD_HOMES = {
    "device": "device",
    "update_step": "update.step",
    "quantize_step": "update.step",
    "update_rounding": "update.rounding",
    "seconds_between_updates": "update.seconds_between",
    "seconds_after_update": "update.seconds_between",
    "time_since_programming_s": "clock.training_age_s",
}
"""Hardware settings the scenario configs held beside their ``hardware`` (checkpoint formats ≤ 4), and
their one home in the tree since."""


def refuse_hardware_fields(data: Mapping, path: str) -> None:
    """A scenario config's JSON holds hardware settings only inside its ``hardware`` tree: a setting given
    beside it is refused with its home there (it could disagree with the tree's)."""
    moved = [name for name in data if name in SCENARIO_FIELD_HOMES]
    if moved:
        homes = ", ".join(f"{name} -> hardware.{SCENARIO_FIELD_HOMES[name]}" for name in moved)
        raise ConfigError(f"{path}: hardware settings belong in the config's hardware tree: {homes}")


def sectioned_hardware(flat: Mapping) -> dict:
    """A flat hardware JSON object (checkpoint formats 3-4) as the sectioned tree (format 5)."""
    tree: dict = {}
    for name, value in flat.items():
        if name == "drift_compensation" and isinstance(value, bool):  # configs before "global" had a name
            value = "global" if value else "none"
        *parents, leaf = FLAT_HOMES.get(name, name).split(".")
        level = tree
        for part in parents:
            level = level.setdefault(part, {})
        level[leaf] = value
    return tree


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
