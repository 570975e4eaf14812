"""The emulated in-memory-computing chip: arrays, placement, programmed state, clock and counters."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import warnings
import weakref
import zlib
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from l2l_pcm import _io
from l2l_pcm.chip.config import (
    CALIBRATION_VECTORS,
    MAX_AGE_S,
    ChipConfig,
    Periphery,
    ReprogramReport,
    sectioned_hardware,
)
from l2l_pcm.chip.crossbar import (
    LayerState,
    MVMCounts,
    MVMSpec,
    WeightStatistics,
    analog_mvm,
    calibration_gains,
    program_layer,
    read_statistics,
    reprogram_layer,
)
from l2l_pcm.chip.layers import (
    AnalogLayer,
    Padding,
    conv_kernel_to_matrix,
    image_patches,
    recording_inputs,
    weight_scale,
)
from l2l_pcm.chip.layout import ArraySpace, LayerPlacement, place_layer
from l2l_pcm.errors import CheckpointError, ConfigError, FixedAgeWarning
from l2l_pcm.pcm import PCMDevice, quantize

STATE_KIND = "chip-state"
STATE_VERSION = 2
"""Version of a saved chip: 1 held the flat hardware config, 2 the sectioned tree (version 1 is migrated)."""
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
    "nonfinite_reads",
)


@dataclasses.dataclass(frozen=True)
class ChipLayer:
    """Everything the chip holds for one layer, in one immutable record: where it sits, its devices' state,
    the scale its weights are stored at, its digital bias, its converter ranges, the weights its digital
    record says it holds, and the last measured drift-compensation gains. :meth:`Chip.snapshot`,
    :meth:`Chip.restore` and :meth:`Chip.save` work on these records, so they keep everything by
    construction."""

    placement: LayerPlacement
    state: LayerState | None = None
    """None until programmed."""
    scale: jax.Array | None = None
    """The weight each output column's w_max stands for ([fan_out]; 1 = no scaling)."""
    bias: jax.Array | None = None
    """Digital bias added to every MVM output."""
    periphery: Periphery | None = None
    """DAC/ADC ranges set or calibrated for this layer; None: the config's."""
    intended: jax.Array | None = None
    """The weights the chip's digital record says the layer holds (:meth:`Chip.intended_weights`)."""
    gains: jax.Array | None = None
    """Drift-compensation gains [fan_in, fan_out] measured by calibrated compensation, at ``gains_at_s``."""
    gains_at_s: float | None = None
    spec: MVMSpec | None = None
    """How its MVMs run (:meth:`Chip.mvm_spec`), derived from the placement, the config and ``periphery``."""


@dataclasses.dataclass(frozen=True)
class ChipSnapshot:
    """A chip's clock and layer records (:meth:`Chip.snapshot`)."""

    now_s: float
    layers: Mapping[str, ChipLayer]
    calibrations: int


@functools.partial(jax.jit, static_argnames=("device", "drift_compensation"))
def _read_statistics(device, state, now_s, drift_compensation, scale):
    """A layer's read statistics in its weight units (its devices' times ``scale``), one compiled call."""
    stats = read_statistics(device, state, now_s, drift_compensation)
    return WeightStatistics(stats.mean * scale, stats.variance * scale**2)


@functools.partial(jax.jit, static_argnames=("device", "scaling"))
def _program(device, key, matrix, scaling, now_s, reference_age_s):
    """:meth:`Chip.program`'s work as one compiled call per layer shape (eager, its checks and scaling were a
    dozen small compilations per shape, and the expected-read prediction a few dozen operations): the
    weights' scale, the programmed state, the intended weights (what the devices read on average at
    ``reference_age_s``), how many weights clip, and whether all were finite."""
    scale = weight_scale(matrix, scaling, device.w_max)
    device_weights = matrix / scale
    state = program_layer(device, key, device_weights, now_s)
    expected = device.expected_conductance(state.g_target_uS, reference_age_s)
    intended = device.conductances_to_weights(expected) * scale
    clipped = jnp.sum(jnp.abs(device_weights) > device.w_max)
    return state, scale, intended, clipped, jnp.all(jnp.isfinite(matrix))


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

_CHIPS: weakref.WeakValueDictionary[int, Chip] = weakref.WeakValueDictionary()
"""Live chips by a number of their own, so that reads inside compiled code can book on them (see
:class:`MVMLedger`) without the compiled code holding the chip."""
_CHIP_IDS = itertools.count()


@dataclasses.dataclass(frozen=True)
class MVMLedger:
    """Where reads of a layer through the layer API are booked: a chip (by its number) and a layer name.

    A static field of :class:`~l2l_pcm.chip.AnalogLayer`: :func:`~l2l_pcm.chip.analog_dense` hands its
    :class:`MVMCounts` to it through ``jax.debug.callback``, so reads inside ``jit``, ``vmap`` and ``lax.scan``
    are booked when they run, once per execution (under ``vmap`` once per element). Hashable and small,
    so a jitted function compiles once per layer, not once per read. (Under ``jax.checkpoint`` a
    re-computed forward pass books its reads again.)"""

    chip_id: int
    name: str

    def __call__(self, counts: MVMCounts, spec: MVMSpec) -> None:
        chip = _CHIPS.get(self.chip_id)
        if chip is not None and self.name in chip.layers:
            chip.book_mvms(self.name, counts, spec)


class Chip:
    """A PCM in-memory-computing chip with a clock.

    Typical use::

        chip = Chip()
        chip.place_dense("readout", (56, 5))
        chip.program("readout", w0, key)
        chip.advance(3600.0)                      # one hour of drift
        y = chip.mvm("readout", x, key)           # noisy analog MVM
        report = chip.reprogram("readout", dw, key, rounding="stochastic")  # quantized, only changed devices

    Every device's programming time is stored, so drift and read noise follow the time elapsed since
    *that* device was last programmed. The chip is a thin stateful shell over the pure functions of
    :mod:`l2l_pcm.chip.crossbar`: a clock, one :class:`ChipLayer` record per layer and the counters.
    """

    def __init__(self, config: ChipConfig | None = None) -> None:
        self.config = config or ChipConfig()
        if not isinstance(self.config, ChipConfig):
            raise ConfigError(f"Chip needs a ChipConfig, got {type(self.config).__name__}")
        self.now_s = 0.0
        self.layers: dict[str, ChipLayer] = {}
        """One record per placed layer (:class:`ChipLayer`)."""
        self._counters: dict[str, dict[str, int]] = {}
        self._pending: list[tuple[str, MVMCounts, MVMSpec]] = []
        self._space = ArraySpace(self.config.arrays.count, self.config.arrays.rows, self.config.arrays.cols)
        self._stats_cache: dict[str, WeightStatistics] = {}
        self._patterns: dict[str, jax.Array] = {}
        self._calibrations = 0
        self._id = next(_CHIP_IDS)
        _CHIPS[self._id] = self
        self._fixed_age_warned = False

    # ------------------------------------------------------------------ per-layer views of the records
    @property
    def placements(self) -> dict[str, LayerPlacement]:
        """Where each layer sits (a fresh dict: change the chip through its methods)."""
        return {name: layer.placement for name, layer in self.layers.items()}

    @property
    def states(self) -> dict[str, LayerState]:
        """Programmed layers' device states."""
        return {name: layer.state for name, layer in self.layers.items() if layer.state is not None}

    @property
    def scales(self) -> dict[str, jax.Array]:
        """Per programmed layer, the weight each output column's w_max stands for ([fan_out])."""
        return {name: layer.scale for name, layer in self.layers.items() if layer.state is not None}

    @property
    def biases(self) -> dict[str, jax.Array]:
        """Digital biases of the layers programmed with one."""
        return {name: layer.bias for name, layer in self.layers.items() if layer.bias is not None}

    @property
    def periphery(self) -> dict[str, Periphery]:
        """Converter ranges set or calibrated per layer (others use the config's)."""
        return {name: layer.periphery for name, layer in self.layers.items() if layer.periphery is not None}

    def _set(self, name: str, **changes) -> ChipLayer:
        if "periphery" in changes or "placement" in changes:
            changes["spec"] = None
        self.layers[name] = dataclasses.replace(self.layers[name], **changes)
        self._stats_cache.pop(name, None)
        return self.layers[name]

    # --------------------------------------------------------------------------------- placement
    def place_dense(self, name: str, shape: tuple[int, int]) -> LayerPlacement:
        """Reserve room for a dense layer with a (fan_in, fan_out) weight matrix."""
        shape = _shape(name, shape, 2, "dense layer '{name}' needs a (fan_in, fan_out) shape")
        return self._place(name, "dense", shape, None)

    def place_conv(self, name: str, kernel_shape: tuple[int, int, int, int]) -> LayerPlacement:
        """Reserve room for a conv layer with an HWIO kernel, stored as its im2col matrix."""
        kh, kw, c_in, c_out = _shape(
            name, kernel_shape, 4, "conv layer '{name}' needs an HWIO kernel shape (kh, kw, c_in, c_out)"
        )
        return self._place(name, "conv", (kh * kw * c_in, c_out), (kh, kw, c_in, c_out))

    def _place(self, name, kind, shape, kernel_shape) -> LayerPlacement:
        if not isinstance(name, str) or not name or "/" in name:
            raise ConfigError(f"a layer name must be a non-empty string without '/', got {name!r}")
        if name in self.layers:
            raise ConfigError(f"a layer named '{name}' is already placed on the chip")
        placed = {layer: record.placement.shape for layer, record in self.layers.items()}
        self._space, tiles = place_layer(self._space, placed, name, shape)
        for layer, layer_tiles in tiles.items():
            if layer != name:  # a re-pack moved it: where it sits changes, not what it holds
                moved = dataclasses.replace(self.layers[layer].placement, tiles=layer_tiles)
                self.layers[layer] = dataclasses.replace(self.layers[layer], placement=moved, spec=None)
        placement = LayerPlacement(
            name, kind, shape, kernel_shape, tiles[name], self.config.device.devices_per_polarity
        )
        self.layers[name] = ChipLayer(placement)
        self._stats_cache.clear()
        self._counters[name] = dict.fromkeys(COUNTER_NAMES, 0)
        return placement

    def _placement(self, name: str) -> LayerPlacement:
        if name not in self.layers:
            raise ConfigError(f"no layer named {name!r} on the chip (placed: {sorted(self.layers)})")
        return self.layers[name].placement

    def _state(self, name: str) -> LayerState:
        self._placement(name)
        state = self.layers[name].state
        if state is None:
            raise ConfigError(f"layer '{name}' is placed but has not been programmed yet")
        return state

    # ------------------------------------------------------------------------------ programming
    def _as_matrix(self, placement: LayerPlacement, weights, what: str, check_finite: bool = True) -> jax.Array:
        weights = jnp.asarray(weights, dtype=jnp.float32)
        if placement.kind == "conv" and weights.shape == placement.kernel_shape:
            weights = conv_kernel_to_matrix(weights)
        if weights.shape != placement.shape:
            expected = placement.kernel_shape or placement.shape
            raise ConfigError(
                f"{what} for layer '{placement.name}' has shape {tuple(weights.shape)}, expected {expected}"
            )
        if check_finite and not bool(jnp.all(jnp.isfinite(weights))):
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
        matrix = self._as_matrix(placement, weights, "weights", check_finite=False)
        if not (isinstance(reference_age_s, (int, float)) and math.isfinite(reference_age_s) and reference_age_s >= 0):
            raise ConfigError(f"reference_age_s must be a finite number of seconds >= 0, got {reference_age_s!r}")
        if bias is not None:
            bias = np.asarray(bias, dtype=np.float32)
            if bias.shape != (placement.shape[1],) or not np.all(np.isfinite(bias)):
                raise ConfigError(f"bias for layer '{name}' must be {placement.shape[1]} finite numbers")
            bias = jnp.asarray(bias)
        state, scale, intended, clipped, finite = _program(
            self.config.device, key, matrix, scaling, self.now_s, jnp.float32(reference_age_s)
        )
        if not bool(finite):
            raise ConfigError(f"weights for layer '{placement.name}' contains NaN or inf")
        clipped = int(clipped)
        self._set(name, state=state, scale=scale, bias=bias, intended=intended, gains=None, gains_at_s=None)
        self._counters[name]["weights_clipped"] += clipped
        weights = placement.shape[0] * placement.shape[1]
        report = self._count_programming(placement, placement.devices, weights, placement.shape[0])
        return dataclasses.replace(report, weights_clipped=clipped)

    def reprogram(
        self, name: str, update, key: jax.Array, *, rounding: str, relative_to: str = "intended"
    ) -> ReprogramReport:
        """Add a weight update on chip: quantize it to ``update_step``, re-program only changed devices.

        ``rounding`` is "stochastic" (unbiased, the authors' few-shot inner loop) or "nearest" (the
        authors' robot update); it has no default here: it belongs to the learning rule that calls
        (``hardware.update.rounding``; the robot's update is on the grid already). Under calibrated drift
        compensation the update is in compensated units and ``relative_to`` says what it is added to:
        "intended" (the weights as compensated reads return them, so the layer reads consistently after
        the update) or "programmed" (the device's own rule,
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
        record = self.layers[name]
        base = None
        units = record.scale  # weight units per device unit of the outputs
        if self.config.drift_compensation in ("array", "column"):
            # outputs are multiplied by the measured gain: write the update, and the device's new target,
            # relative to the weights as compensated now, so a fresh device reads what the record says
            self.read_statistics(name)
            units = units * self.layers[name].gains
            if relative_to == "intended":
                base = record.intended / units
        quantized = quantize(update / units, self.config.update.step, key_round if rounding == "stochastic" else None)
        new_state, touched, pairs, rows, clipped = _reprogram(device, key_prog, state, quantized, self.now_s, base)
        rewritten = jnp.any(touched.reshape(-1, *placement.shape), axis=0)
        written = device.conductances_to_weights(new_state.g_target_uS) * units
        self._set(
            name, state=new_state, intended=jnp.where(rewritten, written, record.intended), gains=None, gains_at_s=None
        )
        touched = np.asarray(touched)
        report = self._count_programming(placement, int(touched.sum()), int(pairs), int(rows))
        self._counters[name]["weights_clipped"] += int(clipped)
        return dataclasses.replace(report, touched=touched, weights_clipped=int(clipped))

    def _count_programming(self, placement: LayerPlacement, devices: int, pairs: int, rows: int) -> ReprogramReport:
        counters = self._counters[placement.name]
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
    def advance(self, seconds: float, warn_fixed_age: bool = True) -> None:
        """Let ``seconds`` pass on the chip clock (drift and read noise grow with device age).

        A device model with a fixed age (``PCMDevice.fixed_age_s``, the authors' convention) reads every
        device at that age whatever the clock says: the first advance on such a chip warns once
        (:class:`~l2l_pcm.errors.FixedAgeWarning`), unless the caller says it knows (``warn_fixed_age=False``,
        e.g. a scenario's fixed seconds between updates)."""
        if isinstance(seconds, bool) or not (
            isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0
        ):
            raise ConfigError(f"time to advance must be a finite number of seconds >= 0, got {seconds!r}")
        if self.now_s + seconds > MAX_AGE_S:
            raise ConfigError(
                f"advancing {seconds:g} s would take the chip's clock past {MAX_AGE_S:g} s (1000 years): the drift "
                "law is measured up to days and its float32 reads overflow far beyond"
            )
        if seconds:
            fixed = self.config.device.fixed_age_s
            if fixed is not None and warn_fixed_age and not self._fixed_age_warned:
                self._fixed_age_warned = True
                warnings.warn(
                    f"this chip's device model reads every device at a fixed age of {fixed:g} s; advancing the "
                    "clock changes no read (drift and read noise do not grow)",
                    FixedAgeWarning,
                    stacklevel=2,
                )
            self.now_s += float(seconds)
            self._stats_cache.clear()

    # ------------------------------------------------------------------------------------ reads
    def read_statistics(self, name: str) -> WeightStatistics:
        """Per-weight mean and read-noise variance of a layer now (cached until the state or clock changes)."""
        if name not in self._stats_cache:
            state = self._state(name)
            mode = self.config.drift_compensation
            scale = self.layers[name].scale
            stats = _read_statistics(self.config.device, state, jnp.float32(self.now_s), mode == "global", scale)
            if mode in ("array", "column"):
                record = self.layers[name]
                if record.gains is None or record.gains_at_s != self.now_s:
                    record = self._set(name, gains=self._measure_drift(name, stats), gains_at_s=self.now_s)
                gain = record.gains
                stats = WeightStatistics(stats.mean * gain, stats.variance * gain**2)
            self._stats_cache[name] = stats
        return self._stats_cache[name]

    def _measure_drift(self, name: str, stats: WeightStatistics) -> jax.Array:
        """Compensation gains from a noisy read of the layer's calibration inputs (see ChipConfig)."""
        placement = self.layers[name].placement
        if name not in self._patterns:  # fixed per layer: the chip's known calibration inputs
            shape = (CALIBRATION_VECTORS, placement.shape[0])
            patterns = jax.random.bernoulli(jax.random.PRNGKey(zlib.crc32(name.encode())), 0.5, shape)
            self._patterns[name] = patterns.astype(jnp.float32)
        key = jax.random.fold_in(jax.random.PRNGKey(0xCA1), self._calibrations)
        self._calibrations += 1
        gain = _calibration_gains(
            self._patterns[name],
            self.layers[name].intended,
            stats,
            key,
            placement.blocks,
            self.config.drift_compensation == "column",
            self.config.forward.read_noise_rng,
        )
        vectors = 2 * CALIBRATION_VECTORS  # each pattern and its complement, read without converters
        self._counters[name]["calibration_vectors"] += vectors
        self.book_mvms(name, MVMCounts(vectors, 0, 0, 0), MVMSpec(tiles=placement.blocks))
        return gain

    def intended_weights(self, name: str) -> jax.Array:
        """The weights the chip's digital record says the layer holds, in the caller's units: as programmed
        (aged to the layer's ``reference_age_s``), re-programmed weights as written (under calibrated
        compensation: in compensated units). Calibrated drift compensation holds the reads at these."""
        self._state(name)
        return self.layers[name].intended

    def read_weights(self, name: str) -> jax.Array:
        """The weights a noise-free read would return now (programming noise and drift included)."""
        return self.read_statistics(name).mean

    def mvm_spec(self, name: str) -> MVMSpec:
        """How a layer's MVMs run now: its tiles, the converters with its ranges, the read-noise mode."""
        record = self.layers.get(name)
        if record is not None and record.spec is not None:
            return record.spec
        placement = self._placement(name)
        cfg = self.config.forward
        ranges = self.layer_periphery(name)
        spec = MVMSpec(
            tiles=placement.blocks,
            dac=None if cfg.dac_bits is None else (cfg.dac_bits, ranges.dac_range, ranges.dac_unsigned),
            adc=None if cfg.adc_bits is None else (cfg.adc_bits, ranges.adc_range),
            read_noise_mode=cfg.read_noise_mode,
            read_noise_rng=cfg.read_noise_rng,
        )
        self.layers[name] = dataclasses.replace(record, spec=spec)  # derived: dropped when placement or ranges change
        return spec

    def layer(self, name: str) -> AnalogLayer:
        """A programmed layer as read now, for :func:`~l2l_pcm.chip.analog_dense` / :func:`~l2l_pcm.chip.analog_conv`
        inside jit, grad or vmap. The layer carries this chip's :class:`MVMLedger`, so every read through it
        is booked here (MVMs, conversions, saturation, energy) when it runs."""
        record = self.layers.get(name)
        stats = self.read_statistics(name)
        return AnalogLayer(
            stats, record.bias, self.mvm_spec(name), record.placement.kernel_shape, MVMLedger(self._id, name)
        )

    def mvm(self, name: str, inputs, key: jax.Array | None) -> jax.Array:
        """Analog matrix-vector products ``inputs [..., fan_in] @ W``; fresh read noise for every vector.

        ``key=None`` returns the expectation (no read noise). DAC and ADC quantization follow the config and
        the layer's ranges; every MVM, every clipped conversion and every NaN or inf input is counted
        (:meth:`saturation_warnings` names the layers read with NaN). Nothing here waits for the result.
        """
        placement = self._placement(name)
        inputs = jnp.asarray(inputs, dtype=jnp.float32)
        if inputs.ndim < 1 or inputs.shape[-1] != placement.shape[0]:
            raise ConfigError(
                f"inputs for layer '{name}' have shape {tuple(inputs.shape)}, expected [..., {placement.shape[0]}]"
            )
        spec, bias = self.mvm_spec(name), self.layers[name].bias
        outputs, counts = _analog_mvm(inputs, self.read_statistics(name), key, spec)
        self.book_mvms(name, counts._replace(vectors=math.prod(inputs.shape[:-1])), spec)
        return outputs if bias is None else outputs + bias

    def book_mvms(self, name: str, counts: MVMCounts, spec: MVMSpec | None = None) -> None:
        """Book what analog reads of a layer did (:class:`MVMCounts`, from :func:`analog_mvm`): vectors, array
        MVMs, MACs, non-finite inputs and, for each converter ``spec`` has (default: the layer's now), its
        conversions and clips. Every read path books here: :meth:`mvm`, calibration reads and the layer API
        (by its ledger). Counts still on the device are added when :attr:`counters` is next read, so a
        read does not wait for its own result."""
        self._placement(name)
        self._pending.append((name, counts, self.mvm_spec(name) if spec is None else spec))

    @property
    def counters(self) -> dict[str, dict[str, int]]:
        """Per layer: devices programmed, programming events and rows, MVM vectors, array MVMs, MACs, weights
        clipped, converter conversions and clips, calibration vectors, non-finite inputs."""
        pending, self._pending = self._pending, []
        for name, counts, spec in pending:
            placement = self.layers[name].placement
            vectors = int(counts.vectors)
            counters = self._counters[name]
            counters["mvm_vectors"] += vectors
            counters["array_mvms"] += vectors * len(placement.tiles)
            counters["macs"] += vectors * placement.shape[0] * placement.shape[1]
            counters["nonfinite_reads"] += int(counts.nonfinite_reads)
            if spec.dac is not None:
                counters["dac_conversions"] += vectors * placement.shape[0]
                counters["dac_saturated"] += int(counts.dac_saturated)
            if spec.adc is not None:
                counters["adc_conversions"] += vectors * sum(tile.cols for tile in placement.tiles)
                counters["adc_saturated"] += int(counts.adc_saturated)
        return self._counters

    # ------------------------------------------------------------------------------ periphery
    def layer_periphery(self, name: str) -> Periphery:
        """The DAC/ADC ranges a layer's MVMs use now."""
        self._placement(name)
        return self.layers[name].periphery or Periphery(self.config.forward.dac_range, self.config.forward.adc_range)

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
            if field in changes and not (
                isinstance(changes[field], (int, float)) and math.isfinite(changes[field]) and changes[field] > 0
            ):
                raise ConfigError(f"{field} of layer '{name}' must be a finite number > 0, got {changes[field]!r}")
        if "dac_unsigned" in changes and not isinstance(changes["dac_unsigned"], bool):
            raise ConfigError(f"dac_unsigned of layer '{name}' must be true or false, got {changes['dac_unsigned']!r}")
        return self._set(name, periphery=dataclasses.replace(current, **changes)).periphery

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
        if not bool(jnp.all(jnp.isfinite(inputs))):
            raise ConfigError(f"calibration inputs for layer '{name}' contain NaN or inf")
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

    def calibrate_from(self, forward: Callable[[], object], headroom: float = 1.0) -> dict[str, Periphery]:
        """Set the converter ranges of every layer that ``forward()`` reads through the layer API, from the
        inputs it gives them (:meth:`calibrate`, conv layers with their patches): one call for a whole
        network, e.g. ``chip.calibrate_from(lambda: model(sample_images))``. ``forward`` runs once on sample
        data, compiled here (``vmap`` inside is fine; a function it calls that was jitted before records
        nothing); its reads are not booked (a chip calibrates at deployment)."""
        with recording_inputs() as recorded:
            jax.block_until_ready(jax.jit(lambda: forward())())  # traced afresh: compiled, not op by op
        if not recorded:
            raise ConfigError(
                "calibrate_from: forward() read no layer of this chip through analog_dense/analog_conv "
                "(a function jitted before the call is not traced again: call the model itself, not a jitted copy)"
            )
        return {
            name: self.calibrate(name, np.concatenate([x.reshape(-1, x.shape[-1]) for x in inputs]), headroom)
            for name, inputs in recorded.items()
            if name in self.layers
        }

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
        """One line per layer whose DAC or ADC clipped more than ``threshold`` of its conversions, and one per
        layer that was read with NaN or inf inputs (its outputs are NaN)."""
        lines = []
        for name in self.layers:
            nonfinite = self.counters[name]["nonfinite_reads"]
            if nonfinite:
                lines.append(f"layer '{name}': {nonfinite} input vectors held NaN or inf; their reads are NaN or inf")
            ranges = self.layer_periphery(name)
            for kind, fraction in self.saturation(name).items():
                if fraction is not None and fraction > threshold:
                    full_scale = ranges.dac_range if kind == "dac" else ranges.adc_range
                    lines.append(
                        f"layer '{name}': {100 * fraction:.1f} % of {kind.upper()} conversions saturated (range "
                        f"{full_scale:g}); calibrate the layer (Chip.calibrate) or widen {kind}_range"
                    )
        return lines

    def conv2d(
        self, name: str, images, key: jax.Array | None, stride: int | tuple[int, int] = 2, padding: Padding = 1
    ) -> jax.Array:
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
        """The clock and every layer's record, to return to with :meth:`restore` (counters are not rewound).

        For emulation studies: e.g. start every few-shot task from the same deployed chip, as a fleet of
        identically programmed chips would.
        """
        return ChipSnapshot(self.now_s, dict(self.layers), self._calibrations)

    def restore(self, snapshot: ChipSnapshot) -> None:
        """Return to a :meth:`snapshot` of this chip (same placement)."""
        if {name: layer.placement for name, layer in snapshot.layers.items()} != self.placements:
            raise ConfigError("the snapshot's layers are not placed as on this chip")
        self.now_s = snapshot.now_s
        self.layers = dict(snapshot.layers)
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
                / max(len(self.layers[name].placement.tiles), 1),
                "programming_energy_pJ": energy.programming_energy_pJ(counters["devices_programmed"]),
                "programming_latency_ns": energy.programming_latency_ns(counters["rows_programmed"]),
            }
        return report

    def energy_pJ(self, *names: str) -> float:
        """Total estimated energy (MVMs and programming) of the named layers, or of all, so far."""
        report = self.energy_report()
        for name in names:
            self._placement(name)
        return sum(
            layer["mvm_energy_pJ"] + layer["programming_energy_pJ"]
            for name, layer in report.items()
            if not names or name in names
        )

    def summary(self) -> dict:
        """Placement, clock and counters as plain JSON-ready data."""
        return {
            "now_s": self.now_s,
            "used_cells_per_array": self._space.used_cells(),
            "layers": {
                name: {
                    "shape": list(layer.placement.shape),
                    "devices": layer.placement.devices,
                    "tiles": [dataclasses.asdict(t) for t in layer.placement.tiles],
                    **self.counters[name],
                }
                for name, layer in self.layers.items()
            },
        }

    # -------------------------------------------------------------------------------- save/load
    def save(self, path: str | os.PathLike) -> None:
        """Write the full chip state (every layer's record, clock, counters) to one safetensors file.

        Only :class:`PCMDevice` itself is stored (by its fields); a subclass would come back as a plain
        PCMDevice and behave differently, so it is refused here, before anything is written.
        """
        if type(self.config.device) is not PCMDevice:
            raise ConfigError(
                f"cannot save a chip with device class {type(self.config.device).__name__}: only PCMDevice "
                "(any fields or profile) round-trips through a chip file"
            )
        tensors, gains_at = {}, {}
        for name, layer in self.layers.items():
            if layer.state is None:
                continue
            for field, value in layer.state._asdict().items():
                tensors[f"{name}/{field}"] = np.asarray(value)
            tensors[f"{name}/scale"] = np.asarray(layer.scale)
            tensors[f"{name}/intended"] = np.asarray(layer.intended)
            if layer.bias is not None:
                tensors[f"{name}/bias"] = np.asarray(layer.bias)
            if layer.gains is not None:
                tensors[f"{name}/gains"] = np.asarray(layer.gains)
                gains_at[name] = layer.gains_at_s
        metadata = {
            "kind": STATE_KIND,
            "version": STATE_VERSION,
            "config": self.config.to_json(),
            "now_s": self.now_s,
            "placements": [layer.placement.to_json() for layer in self.layers.values()],
            "programmed": sorted(self.states),
            "counters": self.counters,
            "periphery": {name: dataclasses.asdict(p) for name, p in self.periphery.items()},
            "gains_at_s": gains_at,
            "calibrations": self._calibrations,
        }
        _io.save_tensors(path, tensors, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Chip:
        """Rebuild a chip saved by :meth:`save`; a damaged or foreign file raises :class:`CheckpointError`."""
        tensors, meta = _io.load_tensors(path, kind=STATE_KIND)
        try:
            version = meta.get("version")
            if version not in (1, STATE_VERSION):
                raise CheckpointError(f"{path}: chip-state version {version} is not supported")
            config = meta["config"]
            if version == 1 and isinstance(config, dict):
                config = sectioned_hardware(config)
            chip = cls(ChipConfig.from_json(config))
            saved = [LayerPlacement.from_json(data) for data in meta["placements"]]
            for placement in saved:
                chip._place(placement.name, placement.kind, placement.shape, placement.kernel_shape)
            for placement in saved:  # after all: a later layer may have re-packed earlier ones
                if chip.layers[placement.name].placement.tiles != placement.tiles:
                    raise CheckpointError(f"{path}: placement of layer '{placement.name}' does not match its tiles")
            device = chip.config.device
            for name in meta["programmed"]:
                shape = chip.layers[name].placement.state_shape
                fields = {}
                for field in LayerState._fields:
                    array = tensors[f"{name}/{field}"]
                    if array.shape != shape or not np.all(np.isfinite(array)):
                        raise CheckpointError(
                            f"{path}: tensor '{name}/{field}' has shape {array.shape} "
                            f"or non-finite values, expected finite {shape}"
                        )
                    fields[field] = jnp.asarray(array)
                state = LayerState(**fields)
                _check_conductances(path, name, state, device)
                fan_out = shape[-1]
                scale = _optional_vector(tensors, f"{name}/scale", fan_out, path, default=1.0)
                default = device.conductances_to_weights(state.g_target_uS) * scale
                gains_at = meta.get("gains_at_s", {}).get(name)
                chip.layers[name] = dataclasses.replace(
                    chip.layers[name],
                    state=state,
                    scale=scale,
                    intended=_optional_matrix(tensors, f"{name}/intended", default, path),
                    bias=_optional_vector(tensors, f"{name}/bias", fan_out, path)
                    if f"{name}/bias" in tensors
                    else None,
                    gains=None if gains_at is None else _optional_matrix(tensors, f"{name}/gains", default, path),
                    gains_at_s=None if gains_at is None else float(gains_at),
                )
            now_s = meta["now_s"]
            if isinstance(now_s, bool) or not isinstance(now_s, (int, float)) or not math.isfinite(now_s) or now_s < 0:
                raise CheckpointError(f"{path}: the chip clock must be a finite number of seconds >= 0, got {now_s!r}")
            chip.now_s = float(now_s)
            for name, ranges in meta.get("periphery", {}).items():
                chip.set_periphery(name, **ranges)
            for name, counters in meta["counters"].items():
                chip._counters[name] = {key: int(counters.get(key, 0)) for key in COUNTER_NAMES}
            chip._calibrations = int(meta.get("calibrations", 0))
        except (CheckpointError, ConfigError):
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path}: inconsistent chip state ({type(exc).__name__}: {exc})") from None
        return chip


def deploy(
    params: Mapping[str, jax.Array],
    chip: Chip,
    key: jax.Array,
    scaling: str | float | Mapping[str, str | float] = "layer",
    biases: Mapping[str, jax.Array] | None = None,
    reference_age_s: float = 0.0,
    new_layers_only: bool = False,
) -> dict[str, ReprogramReport]:
    """Place (if not yet placed), scale and program every weight array of ``params`` on ``chip``.
    ``new_layers_only``: refuse a name already placed (e.g. a second model's layer of the same name, which
    would otherwise be programmed over the first's).

    2-D arrays are dense layers (fan_in, fan_out), 4-D arrays conv kernels (HWIO); ``scaling`` is
    :meth:`Chip.program`'s ("layer": each layer's max |W| maps to g_max, so no weight is clipped), for
    every layer, or a mapping of layer names to it (a layer not named gets "none");
    ``biases`` maps layer names to digital biases; ``reference_age_s`` is :meth:`Chip.program`'s (the age
    calibrated drift compensation holds the weights at). When the network does not fit, the
    :class:`~l2l_pcm.errors.ChipCapacityError` says how many arrays it needs. Returns each layer's report.
    """
    taken = sorted(name for name in params if name in chip.placements) if new_layers_only else []
    if taken:
        raise ConfigError(f"layers {taken} are already on this chip (another model?): give this one other names")
    biases = dict(biases or {})
    unknown = set(biases) - set(params)
    if unknown:
        raise ConfigError(f"biases given for layers that are not in params: {sorted(unknown)}")
    for name, weights in params.items():
        if name in chip.placements:
            continue
        shape = tuple(jnp.shape(weights))
        if len(shape) == 2:
            chip.place_dense(name, shape)
        elif len(shape) == 4:
            chip.place_conv(name, shape)
        else:
            raise ConfigError(f"layer '{name}': weights must be 2-D (dense) or 4-D HWIO (conv), got shape {shape}")
    if isinstance(scaling, Mapping):
        unknown = set(scaling) - set(params)
        if unknown:
            raise ConfigError(f"scaling given for layers that are not in params: {sorted(unknown)}")
        per_layer = {name: scaling.get(name, "none") for name in params}
    else:
        per_layer = dict.fromkeys(params, scaling)
    keys = jax.random.split(key, len(params))
    return {
        name: chip.program(name, weights, layer_key, per_layer[name], biases.get(name), reference_age_s)
        for (name, weights), layer_key in zip(params.items(), keys, strict=True)
    }


def _shape(name: str, shape, ndim: int, message: str) -> tuple[int, ...]:
    """A layer shape of ``ndim`` positive integers (a float such as 2.7 is refused, not truncated)."""
    try:
        values = tuple(shape)
    except TypeError:
        values = ()
    valid = len(values) == ndim and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and int(s) >= 1 for s in values
    )
    if not valid:
        hint = " (a conv kernel? use place_conv)" if ndim == 2 and len(values) == 4 else ""
        raise ConfigError(f"{message.format(name=name)} of positive integers, got {shape!r}{hint}")
    return tuple(int(s) for s in values)


def _check_conductances(path, name: str, state: LayerState, device: PCMDevice) -> None:
    """Refuse a chip file whose programmed targets do not fit its own device's conductance range (e.g. a
    config edited to another g_max: every read would be silently rescaled)."""
    largest = float(jnp.max(state.g_target_uS))
    if float(jnp.min(state.g_target_uS)) < 0 or largest > device.g_max_uS * (1 + 1e-5):
        raise CheckpointError(
            f"{path}: layer '{name}' has target conductances up to {largest:g} µS, outside the device's "
            f"[0, {device.g_max_uS:g}] µS (g_max_uS): the file's config and conductances disagree"
        )


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
    """A chip to deploy a model on, at its age in use (``clock.deployment_age_s``, or the training age).

    Built from the model's ``hardware``, or ``chip_config`` if given (an experiment's other chip, e.g.
    noiseless), which must keep the model's ``update`` section and training age: a chip with another
    update step or rounding would write other updates than the model was meta-trained with, and the
    training age is the age calibrated compensation holds the weights at, so a difference is refused.
    """
    chip = Chip(hardware if chip_config is None else chip_config)
    config = chip.config
    for label, mine, model in (
        ("update", config.update, hardware.update),
        ("clock.training_age_s", config.clock.training_age_s, hardware.clock.training_age_s),
    ):
        if mine != model:
            raise ConfigError(
                f"the chip's hardware.{label} {mine!r} differs from the model's {model!r}; set it once, in the "
                "model's hardware config"
            )
    return chip
