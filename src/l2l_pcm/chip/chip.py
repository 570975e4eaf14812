"""The emulated in-memory-computing chip: arrays, placement, programmed state, clock and counters."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import zlib
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from l2l_pcm import _io
from l2l_pcm.chip.crossbar import (
    READ_NOISE_MODES,
    READ_NOISE_RNGS,
    LayerState,
    MVMSpec,
    WeightStatistics,
    analog_mvm,
    calibration_gains,
    program_layer,
    read_statistics,
    reprogram_layer,
)
from l2l_pcm.chip.energy import EnergyModel
from l2l_pcm.chip.layers import AnalogLayer, conv_kernel_to_matrix, image_patches, weight_scale
from l2l_pcm.chip.layout import ArraySpace, LayerPlacement, place_layer
from l2l_pcm.errors import CheckpointError, ConfigError, check_int, check_number
from l2l_pcm.pcm import PCMDevice, device_from_json, quantize

STATE_KIND = "chip-state"
STATE_VERSION = 1
COUNTER_NAMES = (
    "devices_programmed",
    "program_events",
    "rows_programmed",
    "mvm_vectors",
    "array_mvms",
    "macs",
    "weights_clipped",
    "dac_conversions",
    "dac_saturated",
    "adc_conversions",
    "adc_saturated",
    "calibration_vectors",
)
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
    read_noise_rng: str = "threefry"
    """Generator of the read noise: "threefry" (``jax.random``, the default every published number was
    measured with) or "counter" (:func:`~l2l_pcm.chip.crossbar.counter_normal`: the same distribution,
    another stream, an MVM with exact per-read noise about 1.3x faster on CPU)."""
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
    def from_json(cls, data: Mapping) -> ChipConfig:
        """From a JSON object of fields; missing ones keep their defaults, ``device`` may be a profile name."""
        if isinstance(data, ChipConfig):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"a hardware configuration must be a JSON object of ChipConfig fields, got {data!r}")
        data = dict(data)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown hardware (ChipConfig) fields: {sorted(unknown)}")
        if "device" in data:
            data["device"] = device_from_json(data["device"])
        if "energy" in data:
            energy = data["energy"]
            if isinstance(energy, Mapping):
                unknown = set(energy) - {f.name for f in dataclasses.fields(EnergyModel)}
                if unknown:
                    raise ConfigError(f"unknown EnergyModel fields: {sorted(unknown)}")
                data["energy"] = EnergyModel(**energy)
        return cls(**data)


def hardware_from_fields(data: dict, step_field: str) -> ChipConfig:
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
        return ChipConfig.from_json(data.pop("hardware"))
    fields = {}
    if "device" in legacy:
        fields["device"] = legacy["device"]
    if legacy.get(step_field) is not None:
        fields["update_step"] = legacy[step_field]
    return ChipConfig.from_json(fields)


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


@dataclasses.dataclass(frozen=True)
class ChipSnapshot:
    now_s: float
    states: dict
    scales: dict = dataclasses.field(default_factory=dict)
    intended: dict = dataclasses.field(default_factory=dict)


@functools.partial(jax.jit, static_argnames=("device", "drift_compensation"))
def _read_statistics(device, state, now_s, drift_compensation):
    return read_statistics(device, state, now_s, drift_compensation)


@functools.partial(jax.jit, static_argnames=("device",))
def _program(device, key, weights, now_s):
    return program_layer(device, key, weights, now_s)


_calibration_gains = jax.jit(calibration_gains, static_argnames=("tiles", "per_column", "rng"))


@functools.partial(jax.jit, static_argnames=("device",))
def _reprogram(device, key, state, update, now_s, base_weights=None):
    # the weights the update is added to, found once: the new targets and the clipping count share them
    g_now = device.drift(state.g_prog_uS, state.nu, now_s - state.programmed_at_s)
    base = device.reprogram_base(state.g_target_uS, g_now, base_weights)
    new_state, touched = reprogram_layer(device, key, state, update, now_s, base)
    per_weight = jnp.any(touched.reshape(-1, *update.shape), axis=0)
    rows_touched = jnp.sum(jnp.any(per_weight, axis=1))
    pairs_touched = jnp.sum(per_weight)
    clipped = jnp.sum((update != 0) & (jnp.abs(base + update) > device.w_max * (1 + 1e-6)))  # float slack
    return new_state, touched, pairs_touched, rows_touched, clipped


_analog_mvm = jax.jit(analog_mvm, static_argnames=("spec",))


class Chip:
    """A PCM in-memory-computing chip with a clock.

    Typical use::

        chip = Chip()
        chip.place_dense("readout", (56, 5))
        chip.program("readout", w0, key)
        chip.advance(3600.0)                      # one hour of drift
        y = chip.mvm("readout", x, key)           # noisy analog MVM
        report = chip.reprogram("readout", dw, key)  # quantized, only changed devices

    Every device's programming time is stored, so drift and read noise follow the time elapsed since
    *that* device was last programmed.
    """

    def __init__(self, config: ChipConfig | None = None) -> None:
        self.config = config or ChipConfig()
        self.now_s = 0.0
        self.placements: dict[str, LayerPlacement] = {}
        self.states: dict[str, LayerState] = {}
        self.counters: dict[str, dict[str, int]] = {}
        self._space = ArraySpace(self.config.n_arrays, self.config.array_rows, self.config.array_cols)
        self._stats_cache: dict[str, WeightStatistics] = {}
        self.scales: dict[str, jax.Array] = {}
        """Per layer, the weight each output column's w_max stands for ([fan_out]; 1 = no scaling)."""
        self.biases: dict[str, jax.Array] = {}
        """Digital biases added to a layer's MVM outputs (layers programmed with a bias)."""
        self.periphery: dict[str, Periphery] = {}
        """Per layer, the DAC/ADC ranges (:meth:`set_periphery`, :meth:`calibrate`; else the config's)."""
        self.intended: dict[str, jax.Array] = {}
        """Per layer, the weights the chip's digital record says it holds (:meth:`intended_weights`)."""
        self._gains: dict[str, jax.Array] = {}
        self._patterns: dict[str, jax.Array] = {}
        self._calibrations = 0

    # --------------------------------------------------------------------------------- placement
    def place_dense(self, name: str, shape: tuple[int, int]) -> LayerPlacement:
        """Reserve room for a dense layer with a (fan_in, fan_out) weight matrix."""
        if len(shape) != 2 or any(int(s) < 1 for s in shape):
            hint = " (a conv kernel? use place_conv)" if len(shape) == 4 else ""
            raise ConfigError(f"dense layer '{name}' needs a (fan_in, fan_out) shape, got {tuple(shape)}{hint}")
        return self._place(name, "dense", tuple(int(s) for s in shape), None)

    def place_conv(self, name: str, kernel_shape: tuple[int, int, int, int]) -> LayerPlacement:
        """Reserve room for a conv layer with an HWIO kernel, stored as its im2col matrix."""
        if len(kernel_shape) != 4:
            raise ConfigError(
                f"conv layer '{name}' needs an HWIO kernel shape (kh, kw, c_in, c_out), got {kernel_shape}"
            )
        kh, kw, c_in, c_out = (int(s) for s in kernel_shape)
        return self._place(name, "conv", (kh * kw * c_in, c_out), (kh, kw, c_in, c_out))

    def _place(self, name, kind, shape, kernel_shape) -> LayerPlacement:
        if name in self.placements:
            raise ConfigError(f"a layer named '{name}' is already placed on the chip")
        placed = {layer: p.shape for layer, p in self.placements.items()}
        self._space, tiles = place_layer(self._space, placed, name, shape)
        for layer, layer_tiles in tiles.items():
            if layer != name:  # a re-pack moved it: where it sits changes, not what it holds
                self.placements[layer] = dataclasses.replace(self.placements[layer], tiles=layer_tiles)
        placement = LayerPlacement(
            name, kind, shape, kernel_shape, tiles[name], self.config.device.devices_per_polarity
        )
        self.placements[name] = placement
        self._stats_cache.clear()
        self.counters[name] = dict.fromkeys(COUNTER_NAMES, 0)
        return placement

    def _placement(self, name: str) -> LayerPlacement:
        if name not in self.placements:
            raise ConfigError(f"no layer named '{name}' on the chip (placed: {sorted(self.placements)})")
        return self.placements[name]

    def _state(self, name: str) -> LayerState:
        self._placement(name)
        if name not in self.states:
            raise ConfigError(f"layer '{name}' is placed but has not been programmed yet")
        return self.states[name]

    # ------------------------------------------------------------------------------ programming
    def _as_matrix(self, placement: LayerPlacement, weights, what: str) -> jax.Array:
        weights = jnp.asarray(weights, dtype=jnp.float32)
        if placement.kind == "conv" and weights.shape == placement.kernel_shape:
            weights = conv_kernel_to_matrix(weights)
        if weights.shape != placement.shape:
            expected = placement.kernel_shape or placement.shape
            raise ConfigError(
                f"{what} for layer '{placement.name}' has shape {tuple(weights.shape)}, expected {expected}"
            )
        if not bool(jnp.all(jnp.isfinite(weights))):
            raise ConfigError(f"{what} for layer '{placement.name}' contains NaN or inf")
        return weights

    def program(
        self,
        name: str,
        weights,
        key: jax.Array,
        scaling: str | float = "none",
        bias=None,
        reference_age_s: float = 0.0,
    ) -> ReprogramReport:
        """Program all devices of a layer to hold ``weights``, with programming noise.

        ``scaling``: "none" stores weights as they are (the range is ±w_max; beyond it they are clipped
        and counted in ``weights_clipped``); "layer" maps the layer's max |W| to w_max and "column" each
        output column's, and the outputs are multiplied back digitally, so weights of any size use the
        full conductance range; a number is the factor itself (weights are stored as W / factor: a layer
        written from zero by updates sets its range so). Reads, MVMs and updates stay in the caller's
        weight units (an update is quantized to ``update_step`` of the *devices*, i.e. ``update_step ×
        scale`` in weight units).
        ``bias`` ([fan_out]) is added digitally to every MVM output of the layer. ``reference_age_s``: what
        calibrated drift compensation restores, the weights as they read on average at this age
        (:meth:`PCMDevice.expected_conductance`; 0: right after programming): a model meta-trained with its
        weights read at age T works best held at T.
        """
        placement = self._placement(name)
        matrix = self._as_matrix(placement, weights, "weights")
        if not (isinstance(reference_age_s, (int, float)) and math.isfinite(reference_age_s) and reference_age_s >= 0):
            raise ConfigError(f"reference_age_s must be a finite number of seconds >= 0, got {reference_age_s!r}")
        w_max = self.config.device.w_max
        scale = weight_scale(matrix, scaling, w_max)
        device_weights = matrix / scale
        clipped = int(jnp.sum(jnp.abs(device_weights) > w_max))
        if bias is not None:
            bias = jnp.asarray(bias, dtype=jnp.float32)
            if bias.shape != (placement.shape[1],) or not bool(jnp.all(jnp.isfinite(bias))):
                raise ConfigError(f"bias for layer '{name}' must be {placement.shape[1]} finite numbers")
            self.biases[name] = bias
        else:
            self.biases.pop(name, None)
        self.states[name] = _program(self.config.device, key, device_weights, self.now_s)
        self.scales[name] = scale
        device = self.config.device
        targets = self.states[name].g_target_uS
        expected = device.expected_conductance(targets, reference_age_s)
        self.intended[name] = device.conductances_to_weights(expected) * scale
        self._stats_cache.pop(name, None)
        self.counters[name]["weights_clipped"] += clipped
        weights = placement.shape[0] * placement.shape[1]
        report = self._count_programming(placement, placement.devices, weights, placement.shape[0])
        return dataclasses.replace(report, weights_clipped=clipped)

    def reprogram(
        self, name: str, update, key: jax.Array, rounding: str = "stochastic", relative_to: str = "intended"
    ) -> ReprogramReport:
        """Add a weight update on chip: quantize it to ``update_step``, re-program only changed devices.

        ``rounding`` is "stochastic" (unbiased, the authors' few-shot inner loop) or "nearest" (the
        authors' robot update). Under calibrated drift compensation the update is in compensated units
        and ``relative_to`` says what it is added to: "intended" (the weights as compensated reads return
        them, so the layer reads consistently after the update) or "programmed" (the device's own rule,
        :attr:`PCMDevice.reprogram_from`, as without compensation: a model meta-trained with fresh,
        undrifted re-programmed weights expects that).
        """
        placement = self._placement(name)
        state = self._state(name)
        update = self._as_matrix(placement, update, "update")
        key_round, key_prog = jax.random.split(key)
        if rounding not in ("stochastic", "nearest"):
            raise ConfigError(f"rounding must be 'stochastic' or 'nearest', got {rounding!r}")
        if relative_to not in ("intended", "programmed"):
            raise ConfigError(f"relative_to must be 'intended' or 'programmed', got {relative_to!r}")
        device = self.config.device
        gain = base = None
        units = self.scales[name]  # weight units per device unit of the outputs
        if self.config.drift_compensation in ("array", "column"):
            # outputs are multiplied by the measured gain: write the update, and the device's new target,
            # relative to the weights as compensated now, so a fresh device reads what the record says
            self.read_statistics(name)
            gain = self._gains[name]
            units = units * gain
            if relative_to == "intended":
                base = self.intended[name] / units
        quantized = quantize(update / units, self.config.update_step, key_round if rounding == "stochastic" else None)
        new_state, touched, pairs, rows, clipped = _reprogram(device, key_prog, state, quantized, self.now_s, base)
        rewritten = jnp.any(touched.reshape(-1, *placement.shape), axis=0)
        written = device.conductances_to_weights(new_state.g_target_uS) * units
        self.intended[name] = jnp.where(rewritten, written, self.intended[name])
        self.states[name] = new_state
        self._stats_cache.pop(name, None)
        touched = np.asarray(touched)
        report = self._count_programming(placement, int(touched.sum()), int(pairs), int(rows))
        self.counters[name]["weights_clipped"] += int(clipped)
        return dataclasses.replace(report, touched=touched, weights_clipped=int(clipped))

    def _count_programming(self, placement: LayerPlacement, devices: int, pairs: int, rows: int) -> ReprogramReport:
        counters = self.counters[placement.name]
        counters["devices_programmed"] += devices
        counters["program_events"] += 1
        counters["rows_programmed"] += rows
        energy = self.config.energy
        return ReprogramReport(
            devices_touched=devices,
            pairs_touched=pairs,
            rows_touched=rows,
            devices_in_layer=placement.devices,
            energy_pJ=energy.programming_energy_pJ(devices),
            latency_ns=energy.programming_latency_ns(rows),
        )

    # ------------------------------------------------------------------------------------ clock
    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on the chip clock (drift and read noise grow with device age)."""
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
            raise ConfigError(f"time to advance must be a finite number of seconds >= 0, got {seconds!r}")
        if seconds:
            self.now_s += float(seconds)
            self._stats_cache.clear()

    # ------------------------------------------------------------------------------------ reads
    def read_statistics(self, name: str) -> WeightStatistics:
        """Per-weight mean and read-noise variance of a layer now (cached until the state changes)."""
        if name not in self._stats_cache:
            state = self._state(name)
            mode = self.config.drift_compensation
            stats = _read_statistics(self.config.device, state, jnp.float32(self.now_s), mode == "global")
            scale = self.scales[name]
            stats = WeightStatistics(stats.mean * scale, stats.variance * scale**2)
            if mode in ("array", "column"):
                gain = self._measure_drift(name, stats)
                stats = WeightStatistics(stats.mean * gain, stats.variance * gain**2)
            self._stats_cache[name] = stats
        return self._stats_cache[name]

    def _measure_drift(self, name: str, stats: WeightStatistics) -> jax.Array:
        """Compensation gains from a noisy read of the layer's calibration inputs (see ChipConfig)."""
        placement = self.placements[name]
        if name not in self._patterns:  # fixed per layer: the chip's known calibration inputs
            shape = (CALIBRATION_VECTORS, placement.shape[0])
            patterns = jax.random.bernoulli(jax.random.PRNGKey(zlib.crc32(name.encode())), 0.5, shape)
            self._patterns[name] = patterns.astype(jnp.float32)
        patterns = self._patterns[name]
        intended = self.intended_weights(name)
        key = jax.random.fold_in(jax.random.PRNGKey(0xCA1), self._calibrations)
        self._calibrations += 1
        tiles = placement.blocks
        gain = _calibration_gains(
            patterns,
            intended,
            stats,
            key,
            tiles,
            self.config.drift_compensation == "column",
            self.config.read_noise_rng,
        )
        self.counters[name]["calibration_vectors"] += 2 * CALIBRATION_VECTORS  # each pattern and its complement
        self.record_mvms(name, 2 * CALIBRATION_VECTORS)
        self._gains[name] = gain
        return gain

    def intended_weights(self, name: str) -> jax.Array:
        """The weights the chip's digital record says the layer holds, in the caller's units: as programmed
        (aged to the layer's ``reference_age_s``), re-programmed weights as written (under calibrated
        compensation: in compensated units). Calibrated drift compensation holds the reads at these."""
        self._state(name)
        return self.intended[name]

    def read_weights(self, name: str) -> jax.Array:
        """The weights a noise-free read would return now (programming noise and drift included)."""
        return self.read_statistics(name).mean

    def mvm_spec(self, name: str) -> MVMSpec:
        """How a layer's MVMs run now: its tiles, the converters with its ranges, the read-noise mode."""
        placement = self._placement(name)
        cfg = self.config
        ranges = self.layer_periphery(name)
        return MVMSpec(
            tiles=placement.blocks,
            dac=None if cfg.dac_bits is None else (cfg.dac_bits, ranges.dac_range, ranges.dac_unsigned),
            adc=None if cfg.adc_bits is None else (cfg.adc_bits, ranges.adc_range),
            read_noise_mode=cfg.read_noise_mode,
            read_noise_rng=cfg.read_noise_rng,
        )

    def layer(self, name: str) -> AnalogLayer:
        """A programmed layer as read now, for :func:`~l2l_pcm.chip.analog_dense` / :func:`~l2l_pcm.chip.analog_conv`
        inside jit, grad or vmap (MVMs run there are booked with :meth:`record_mvms`)."""
        placement = self._placement(name)
        return AnalogLayer(
            self.read_statistics(name), self.biases.get(name), self.mvm_spec(name), placement.kernel_shape
        )

    def mvm(self, name: str, inputs, key: jax.Array | None) -> jax.Array:
        """Analog matrix-vector products ``inputs [..., fan_in] @ W``; fresh read noise for every vector.

        ``key=None`` returns the expectation (no read noise). DAC and ADC quantization follow the config and
        the layer's ranges; every MVM and every clipped conversion is counted.
        """
        placement = self._placement(name)
        inputs = jnp.asarray(inputs, dtype=jnp.float32)
        if inputs.ndim < 1 or inputs.shape[-1] != placement.shape[0]:
            raise ConfigError(
                f"inputs for layer '{name}' have shape {tuple(inputs.shape)}, expected [..., {placement.shape[0]}]"
            )
        layer = self.layer(name)
        outputs, dac_clipped, adc_clipped = _analog_mvm(inputs, layer.stats, key, layer.spec)
        if layer.bias is not None:
            outputs = outputs + layer.bias
        vectors = math.prod(inputs.shape[:-1])
        self.record_mvms(name, vectors)
        counters = self.counters[name]
        if layer.spec.dac is not None:
            counters["dac_conversions"] += vectors * placement.shape[0]
            counters["dac_saturated"] += int(dac_clipped)
        if layer.spec.adc is not None:
            counters["adc_conversions"] += vectors * sum(tile.cols for tile in placement.tiles)
            counters["adc_saturated"] += int(adc_clipped)
        return outputs

    # ------------------------------------------------------------------------------ periphery
    def layer_periphery(self, name: str) -> Periphery:
        """The DAC/ADC ranges a layer's MVMs use now."""
        self._placement(name)
        return self.periphery.get(name, Periphery(self.config.dac_range, self.config.adc_range))

    def set_periphery(
        self, name: str, dac_range: float | None = None, adc_range: float | None = None, dac_unsigned=None
    ) -> Periphery:
        """Set a layer's DAC range (its inputs are clipped to ±range, or [0, range] if unsigned) and ADC
        range (each tile's output); unset values keep their current setting."""
        current = self.layer_periphery(name)
        changes = {
            k: v
            for k, v in (("dac_range", dac_range), ("adc_range", adc_range), ("dac_unsigned", dac_unsigned))
            if v is not None
        }
        for field in ("dac_range", "adc_range"):
            if field in changes and not (math.isfinite(changes[field]) and changes[field] > 0):
                raise ConfigError(f"{field} of layer '{name}' must be a finite number > 0, got {changes[field]!r}")
        self.periphery[name] = dataclasses.replace(current, **changes)
        return self.periphery[name]

    def calibrate(self, name: str, inputs, headroom: float = 1.0) -> Periphery:
        """Set a layer's converter ranges from sample inputs: the DAC to their largest magnitude (unsigned
        if none is negative), each ADC to the largest tile output they produce with the weights as read
        now (noise-free), times ``headroom``. Takes no MVM budget: a chip does this once, at deployment."""
        placement = self._placement(name)
        inputs = jnp.asarray(inputs, dtype=jnp.float32)
        if inputs.ndim < 1 or inputs.shape[-1] != placement.shape[0] or inputs.size == 0:
            raise ConfigError(
                f"calibration inputs for layer '{name}' have shape {tuple(inputs.shape)}, "
                f"expected [..., {placement.shape[0]}]"
            )
        if not (math.isfinite(headroom) and headroom >= 1.0):
            raise ConfigError(f"headroom must be a finite number >= 1, got {headroom!r}")
        unsigned = bool(jnp.all(inputs >= 0))
        dac_range = float(jnp.max(jnp.abs(inputs))) * headroom
        weights = self.read_weights(name)
        peaks = [
            float(jnp.max(jnp.abs(inputs[..., r0 : r0 + rows] @ weights[r0 : r0 + rows, c0 : c0 + cols])))
            for r0, rows, c0, cols in placement.blocks
        ]
        adc_range = max(peaks) * headroom
        return self.set_periphery(name, dac_range or 1.0, adc_range or 1.0, unsigned)

    def saturation(self, name: str) -> dict[str, float | None]:
        """Fractions of DAC and ADC conversions of a layer that were clipped (None: no converter)."""
        counters = self.counters[self._placement(name).name]
        return {
            kind: counters[f"{kind}_saturated"] / counters[f"{kind}_conversions"]
            if counters[f"{kind}_conversions"]
            else None
            for kind in ("dac", "adc")
        }

    def saturation_warnings(self, threshold: float = 0.01) -> list[str]:
        """One line per layer whose DAC or ADC clipped more than ``threshold`` of its conversions."""
        lines = []
        for name in self.placements:
            ranges = self.layer_periphery(name)
            for kind, fraction in self.saturation(name).items():
                if fraction is not None and fraction > threshold:
                    full_scale = ranges.dac_range if kind == "dac" else ranges.adc_range
                    lines.append(
                        f"layer '{name}': {100 * fraction:.1f} % of {kind.upper()} conversions saturated (range "
                        f"{full_scale:g}); calibrate the layer (Chip.calibrate) or widen {kind}_range"
                    )
        return lines

    def record_mvms(self, name: str, vectors: int) -> None:
        """Book ``vectors`` MVMs of a layer that ran outside :meth:`mvm`, through :func:`analog_dense` on its
        :meth:`layer` (e.g. inside a jitted ``lax.scan`` over time), so counters and energy stay true."""
        placement = self._placement(name)
        counters = self.counters[name]
        counters["mvm_vectors"] += vectors
        counters["array_mvms"] += vectors * len(placement.tiles)
        counters["macs"] += vectors * placement.shape[0] * placement.shape[1]

    def conv2d(self, name: str, images, key: jax.Array | None, stride: int = 2, padding: int = 1) -> jax.Array:
        """Convolution of NHWC ``images`` with a conv layer on the chip, as im2col patches through :meth:`mvm`."""
        placement = self._placement(name)
        if placement.kind != "conv":
            raise ConfigError(f"layer '{name}' is a {placement.kind} layer, not a conv layer")
        kh, kw, c_in, _ = placement.kernel_shape
        images = jnp.asarray(images, dtype=jnp.float32)
        if images.ndim != 4 or images.shape[-1] != c_in:
            raise ConfigError(f"images for conv layer '{name}' must be NHWC with C={c_in}, got {tuple(images.shape)}")
        patches = image_patches(images, (kh, kw), stride, padding)
        return self.mvm(name, patches, key)

    # ------------------------------------------------------------------------------ what-if runs
    def snapshot(self) -> ChipSnapshot:
        """The programmed state and clock, to return to with :meth:`restore` (counters are not rewound).

        For emulation studies: e.g. start every few-shot task from the same deployed chip, as a fleet of
        identically programmed chips would.
        """
        return ChipSnapshot(self.now_s, dict(self.states), dict(self.scales), dict(self.intended))

    def restore(self, snapshot: ChipSnapshot) -> None:
        """Return to a :meth:`snapshot` of this chip (same placement)."""
        if set(snapshot.states) - set(self.placements):
            raise ConfigError("snapshot holds layers that are not placed on this chip")
        self.now_s = snapshot.now_s
        self.states = dict(snapshot.states)
        self.scales = {**self.scales, **snapshot.scales}
        self.intended = {**self.intended, **snapshot.intended}
        self._stats_cache.clear()

    # ---------------------------------------------------------------------------------- reports
    def energy_report(self) -> dict:
        """Estimated energy (pJ) and latency (ns) per layer from the counters; see :mod:`.energy`."""
        energy = self.config.energy
        report = {}
        for name, counters in self.counters.items():
            report[name] = {
                "mvm_energy_pJ": energy.mvm_energy_pJ(counters["macs"]),
                "mvm_latency_ns": counters["array_mvms"]
                * energy.mvm_latency_ns
                / max(len(self.placements[name].tiles), 1),
                "programming_energy_pJ": energy.programming_energy_pJ(counters["devices_programmed"]),
                "programming_latency_ns": energy.programming_latency_ns(counters["rows_programmed"]),
            }
        return report

    def summary(self) -> dict:
        """Placement, clock and counters as plain JSON-ready data."""
        return {
            "now_s": self.now_s,
            "used_cells_per_array": self._space.used_cells(),
            "layers": {
                name: {
                    "shape": list(p.shape),
                    "devices": p.devices,
                    "tiles": [dataclasses.asdict(t) for t in p.tiles],
                    **self.counters[name],
                }
                for name, p in self.placements.items()
            },
        }

    # -------------------------------------------------------------------------------- save/load
    def save(self, path: str | os.PathLike) -> None:
        """Write the full chip state (conductances, programming times, counters) to one safetensors file.

        Only :class:`PCMDevice` itself is stored (by its fields); a subclass would come back as a plain
        PCMDevice and behave differently, so it is refused here, before anything is written.
        """
        if type(self.config.device) is not PCMDevice:
            raise ConfigError(
                f"cannot save a chip with device class {type(self.config.device).__name__}: only PCMDevice "
                "(any fields or profile) round-trips through a chip file"
            )
        tensors = {}
        for name, state in self.states.items():
            for field, value in state._asdict().items():
                tensors[f"{name}/{field}"] = np.asarray(value)
            tensors[f"{name}/scale"] = np.asarray(self.scales[name])
            tensors[f"{name}/intended"] = np.asarray(self.intended[name])
            if name in self.biases:
                tensors[f"{name}/bias"] = np.asarray(self.biases[name])
        metadata = {
            "kind": STATE_KIND,
            "version": STATE_VERSION,
            "config": self.config.to_json(),
            "now_s": self.now_s,
            "placements": [p.to_json() for p in self.placements.values()],
            "programmed": sorted(self.states),
            "counters": self.counters,
            "periphery": {name: dataclasses.asdict(p) for name, p in self.periphery.items()},
        }
        _io.save_tensors(path, tensors, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Chip:
        """Rebuild a chip saved by :meth:`save`; a damaged or foreign file raises :class:`CheckpointError`."""
        tensors, meta = _io.load_tensors(path, kind=STATE_KIND)
        try:
            if meta.get("version") != STATE_VERSION:
                raise CheckpointError(f"{path}: chip-state version {meta.get('version')} is not supported")
            chip = cls(ChipConfig.from_json(meta["config"]))
            saved = [LayerPlacement.from_json(data) for data in meta["placements"]]
            for placement in saved:
                chip._place(placement.name, placement.kind, placement.shape, placement.kernel_shape)
            for placement in saved:  # after all: a later layer may have re-packed earlier ones
                if chip.placements[placement.name].tiles != placement.tiles:
                    raise CheckpointError(f"{path}: placement of layer '{placement.name}' does not match its tiles")
            for name in meta["programmed"]:
                shape = chip.placements[name].state_shape
                fields = {}
                for field in LayerState._fields:
                    array = tensors[f"{name}/{field}"]
                    if array.shape != shape or not np.all(np.isfinite(array)):
                        raise CheckpointError(
                            f"{path}: tensor '{name}/{field}' has shape {array.shape} "
                            f"or non-finite values, expected finite {shape}"
                        )
                    fields[field] = jnp.asarray(array)
                chip.states[name] = LayerState(**fields)
                fan_out = shape[-1]
                chip.scales[name] = _optional_vector(tensors, f"{name}/scale", fan_out, path, default=1.0)
                default = chip.config.device.conductances_to_weights(chip.states[name].g_target_uS) * chip.scales[name]
                chip.intended[name] = _optional_matrix(tensors, f"{name}/intended", default, path)
                if f"{name}/bias" in tensors:
                    chip.biases[name] = _optional_vector(tensors, f"{name}/bias", fan_out, path)
            chip.now_s = float(meta["now_s"])
            for name, ranges in meta.get("periphery", {}).items():
                chip.set_periphery(name, **ranges)
            for name, counters in meta["counters"].items():
                chip.counters[name] = {key: int(counters.get(key, 0)) for key in COUNTER_NAMES}
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: inconsistent chip state ({type(exc).__name__}: {exc})") from None
        return chip


def _optional_vector(tensors, name: str, size: int, path, default: float | None = None) -> jax.Array:
    """A per-output vector of a chip file (older files have no scales: 1)."""
    if name not in tensors and default is not None:
        return jnp.full(size, default, dtype=jnp.float32)
    array = tensors[name]
    if array.shape != (size,) or not np.all(np.isfinite(array)):
        raise CheckpointError(
            f"{path}: tensor '{name}' has shape {array.shape} or non-finite values, expected ({size},)"
        )
    return jnp.asarray(array)


def _optional_matrix(tensors, name: str, default: jax.Array, path) -> jax.Array:
    """A per-weight matrix of a chip file (older files have none: ``default``)."""
    if name not in tensors:
        return default
    array = tensors[name]
    if array.shape != default.shape or not np.all(np.isfinite(array)):
        raise CheckpointError(
            f"{path}: tensor '{name}' has shape {array.shape} or non-finite values, expected {default.shape}"
        )
    return jnp.asarray(array)


def chip_for_model(chip_config: ChipConfig | None, hardware: ChipConfig) -> Chip:
    """A chip to deploy a model on: built from the model's ``hardware``, or ``chip_config`` if given (an
    experiment's other chip, e.g. noiseless), which must keep the model's update step: a chip with
    another step would write other updates than the model was meta-trained with, so it is refused.
    """
    if chip_config is None:
        return Chip(hardware)
    if chip_config.update_step != hardware.update_step:
        raise ConfigError(
            f"the chip's update step {chip_config.update_step:g} differs from the model's "
            f"{hardware.update_step:g} (hardware.update_step); set it once, in the model's hardware config"
        )
    return Chip(chip_config)
