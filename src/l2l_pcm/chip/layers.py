"""The layer API: your own network on the chip.

Three steps, each usable on its own::

    chip = Chip(ChipConfig(arrays=ArraysConfig(count=8)))
    deploy(params, chip, key)                      # place, scale and program a dict of weights
    layer = chip.layer("fc1")                      # the layer as read now (a pytree)
    y = analog_dense(layer, x, key)                # pure: works inside jit, grad, vmap and scan

A layer read from a chip carries the chip's ledger: every read through it is booked on the chip
(MVMs, converter conversions and clips, energy) when it runs, as :meth:`Chip.mvm` books its own; both
run the same :func:`~l2l_pcm.chip.crossbar.analog_mvm`. For hardware-aware training of any params pytree
against the same physics, :func:`hardware_aware` (weights, one read per call) and
:func:`hardware_aware_layers` (layers for :func:`analog_dense`: converters and per-read noise too).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from l2l_pcm.chip.config import CALIBRATION_VECTORS, ChipConfig, ClockConfig, ForwardConfig
from l2l_pcm.chip.crossbar import (
    IDEAL_MVM,
    MVMCounts,
    MVMSpec,
    WeightStatistics,
    analog_mvm,
    calibration_gains,
    program_layer,
    read_statistics,
    straight_through,
    weight_sample,
)
from l2l_pcm.chip.layout import ArraySpace, place_layer
from l2l_pcm.errors import ConfigError
from l2l_pcm.pcm import PCMDevice


@dataclasses.dataclass(frozen=True)
class AnalogLayer:
    """One layer as a chip reads it now: per-weight read statistics (weight units, scaling applied), the
    digital bias, the static :class:`MVMSpec` (tiles, converters, read-noise mode) and, for a layer read
    from a chip, the ``ledger`` its reads are booked on (:class:`~l2l_pcm.chip.chip.MVMLedger`). A pytree
    whose arrays are leaves, so it can be an argument of jitted, differentiated or vmapped functions."""

    stats: WeightStatistics
    bias: jax.Array | None
    spec: MVMSpec = dataclasses.field(default=IDEAL_MVM, metadata={"static": True})
    kernel_shape: tuple[int, int, int, int] | None = dataclasses.field(default=None, metadata={"static": True})
    ledger: Callable[[MVMCounts, MVMSpec], None] | None = dataclasses.field(default=None, metadata={"static": True})

    @classmethod
    def exact(cls, weights: jax.Array, bias: jax.Array | None = None) -> AnalogLayer:
        """Exact weights, no read noise, ideal converters: a software layer behind the same interface."""
        weights = jnp.asarray(weights)
        return cls(WeightStatistics(weights, jnp.zeros_like(weights)), bias)

    def book(self, counts: MVMCounts) -> None:
        """Book reads of this layer that ran outside :func:`analog_dense` on its chip (nothing for a layer
        with no chip): code that reads through :func:`~l2l_pcm.chip.analog_mvm` many times inside one
        compiled loop (a spiking network's time steps) sums the counts and books them once, where a
        callback per step would cost more than the step. Call it outside ``jit``."""
        if self.ledger is not None:
            self.ledger(counts, spec=self.spec)


jax.tree_util.register_dataclass(
    AnalogLayer, data_fields=["stats", "bias"], meta_fields=["spec", "kernel_shape", "ledger"]
)


def analog_dense(layer: AnalogLayer, inputs: jax.Array, key: jax.Array | None) -> jax.Array:
    """``inputs [..., fan_in]`` through the layer: DAC, analog MVM with per-read noise (``key=None``: its
    expectation), ADC per tile, digital sum of the tiles and bias. Gradients flow to ``inputs`` and to
    ``layer.stats.mean`` (converters straight-through). A layer from :meth:`Chip.layer` books the read on
    its chip when it runs (``jax.debug.callback``; inside ``vmap`` once per element)."""
    recorder = _RECORDER.get()
    if recorder is not None and layer.ledger is not None:  # Chip.calibrate_from: record, inside vmap too
        jax.debug.callback(functools.partial(_record, recorder, layer.ledger.name), inputs)
    outputs, counts = analog_mvm(inputs, layer.stats, key, layer.spec)
    if layer.ledger is not None and recorder is None:
        jax.debug.callback(functools.partial(layer.ledger, spec=layer.spec), counts)
    return outputs if layer.bias is None else outputs + layer.bias


_RECORDER: contextvars.ContextVar[dict[str, list[np.ndarray]] | None] = contextvars.ContextVar(
    "l2l_pcm_layer_inputs", default=None
)


def _record(recorder: dict[str, list[np.ndarray]], name: str, inputs) -> None:
    recorder.setdefault(name, []).append(np.asarray(inputs))


@contextlib.contextmanager
def recording_inputs():
    """Within it, reads through :func:`analog_dense` of chip layers traced here (eager, ``vmap``, or a ``jit``
    first traced here) record their inputs by layer name and are not booked: what
    :meth:`~l2l_pcm.chip.Chip.calibrate_from` sets converter ranges from."""
    recorded: dict[str, list[np.ndarray]] = {}
    token = _RECORDER.set(recorded)
    try:
        yield recorded
    finally:
        _RECORDER.reset(token)


def analog_conv(
    layer: AnalogLayer,
    images: jax.Array,
    key: jax.Array | None,
    *,
    stride: int | tuple[int, int],
    padding: Padding,
) -> jax.Array:
    """Convolution of NHWC ``images`` with a conv layer (placed with ``place_conv``): im2col patches
    through :func:`analog_dense`. ``padding``: an int, ``((top, bottom), (left, right))``, "SAME" or "VALID"
    (:data:`Padding`, as ``jax.lax.conv_general_dilated``)."""
    if layer.kernel_shape is None:
        raise ConfigError("analog_conv needs a conv layer (placed with place_conv); this one is dense")
    kh, kw, c_in, _ = layer.kernel_shape
    if images.ndim != 4 or images.shape[-1] != c_in:
        raise ConfigError(f"images for a conv layer must be NHWC with C={c_in}, got {tuple(images.shape)}")
    return analog_dense(layer, image_patches(images, (kh, kw), stride, padding), key)


WEIGHT_SCALINGS = ("none", "layer", "column")


def weight_scale(matrix: jax.Array, scaling: str | float, w_max: float) -> jax.Array:
    """The weight each output column's w_max stands for ([fan_out]): 1 ("none"), the layer's max |W| / w_max
    ("layer") or each column's ("column"), an all-zero layer or column keeping 1; or a positive number, the
    factor itself for every column (weights are stored as W / factor): a layer that starts at zero and is
    written by updates has no max |W| to go by, so its range is a choice (``MAMLConfig.readout_scale``)."""
    if isinstance(scaling, (int, float)) and not isinstance(scaling, bool):
        if not (math.isfinite(scaling) and scaling > 0):
            raise ConfigError(f"a numeric scaling must be a finite number > 0, got {scaling!r}")
        return jnp.full(matrix.shape[-1], scaling, matrix.dtype)
    if scaling not in WEIGHT_SCALINGS:
        raise ConfigError(f"scaling must be one of {WEIGHT_SCALINGS} or a number > 0, got {scaling!r}")
    if scaling == "none":
        return jnp.ones(matrix.shape[-1], matrix.dtype)
    largest = jnp.max(jnp.abs(matrix), axis=0 if scaling == "column" else None)
    scale = jnp.broadcast_to(largest / w_max, (matrix.shape[-1],))
    return jnp.where(scale > 0, scale, 1.0)


def _tiles_alone(hardware: ChipConfig, shape: tuple[int, int]) -> tuple[tuple[int, int, int, int], ...]:
    """The blocks a (fan_in, fan_out) matrix is tiled into on this hardware's arrays when placed alone."""
    space = ArraySpace(hardware.arrays.count, hardware.arrays.rows, hardware.arrays.cols)
    _, tiles = place_layer(space, {}, "layer", shape)
    return tuple((t.row_start, t.rows, t.out_start, t.cols) for t in tiles["layer"])


def _programmed_and_read(
    matrix: jax.Array, hardware: ChipConfig, key: jax.Array, age_s: float, scaling, reference_age_s: float
) -> tuple[WeightStatistics, MVMSpec]:
    """One matrix as a chip with ``hardware`` holds it ``age_s`` after programming: the same pure functions
    as :class:`~l2l_pcm.chip.Chip` (programming noise, drift, the oracle or calibrated compensation), read
    statistics with a straight-through mean (gradient 1 w.r.t. ``matrix`` inside the devices' range), and
    the MVM spec its reads run with (tiles of the layer placed alone, converters at the config's ranges)."""
    device = hardware.device
    key_program, key_calibrate, key_patterns = jax.random.split(key, 3)
    scale = jax.lax.stop_gradient(weight_scale(matrix, scaling, device.w_max))
    device_weights = jax.lax.stop_gradient(matrix) / scale
    state = program_layer(device, key_program, device_weights, 0.0)
    mode = hardware.drift_compensation
    stats = read_statistics(device, state, jnp.float32(age_s), mode == "global")
    mean, variance = stats.mean * scale, stats.variance * scale**2
    # tiles matter to per-tile converters and calibrated compensation only (ideal tiles sum exactly)
    forward = hardware.forward
    tiled = forward.adc_bits is not None or mode in ("array", "column")
    tiles = _tiles_alone(hardware, matrix.shape) if tiled else ()
    if mode in ("array", "column"):
        expected = device.expected_conductance(state.g_target_uS, reference_age_s)
        intended = device.conductances_to_weights(expected) * scale
        patterns = jax.random.bernoulli(key_patterns, 0.5, (CALIBRATION_VECTORS, matrix.shape[0]))
        gain = calibration_gains(
            patterns.astype(mean.dtype),
            intended,
            WeightStatistics(mean, variance),
            key_calibrate,
            tiles,
            mode == "column",
            forward.read_noise_rng,
        )
        mean, variance = mean * gain, variance * gain**2
    spec = MVMSpec(
        tiles=tiles,
        dac=None if forward.dac_bits is None else (forward.dac_bits, forward.dac_range, False),
        adc=None if forward.adc_bits is None else (forward.adc_bits, forward.adc_range),
        read_noise_mode=forward.read_noise_mode,
        read_noise_rng=forward.read_noise_rng,
    )
    return straight_through(matrix, WeightStatistics(mean, variance), device.w_max * scale), spec


def _weight_leaves(params, key: jax.Array):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    return leaves, treedef, keys


def _training_age(hardware: ChipConfig, time_since_programming_s, reference_age_s) -> float:
    """The age hardware-aware training reads at: the tree's ``clock.training_age_s``; an explicit
    ``time_since_programming_s`` must agree with it (one home), except for a bare device, which has no clock."""
    if time_since_programming_s is None:
        time_since_programming_s = hardware.clock.training_age_s
    for label, value in (("time_since_programming_s", time_since_programming_s), ("reference_age_s", reference_age_s)):
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ConfigError(
                f"hardware-aware training: {label} must be a finite number of seconds >= 0, got {value!r}"
            )
    if time_since_programming_s != hardware.clock.training_age_s:
        raise ConfigError(
            f"hardware-aware training at {time_since_programming_s!r} s, but the hardware's "
            f"clock.training_age_s is {hardware.clock.training_age_s!r} s: set the age once, in the hardware "
            "tree (hardware.with_settings({'clock.training_age_s': ...})), and leave the argument out"
        )
    return time_since_programming_s


def hardware_aware(
    params,
    hardware: PCMDevice | ChipConfig,
    key: jax.Array,
    time_since_programming_s: float | None = None,
    scaling: str | float = "layer",
    reference_age_s: float = 0.0,
):
    """Every weight array (ndim ≥ 2) of a params pytree as a chip would return it after programming,
    ``time_since_programming_s`` of drift (None: the tree's ``clock.training_age_s``) and one read; 1-D
    arrays (biases, digital on the chip) pass
    unchanged. Straight-through gradient. ``scaling`` and ``reference_age_s`` are :func:`deploy`'s, so
    training sees the noise the deployed network will see. One key per array.

    With a :class:`ChipConfig`, the whole hardware tree takes effect: the device, drift compensation
    (oracle "global", or "array"/"column" measured by the chip's calibration reads on tiles of the layer
    placed alone), and the read-noise generator. One weight sample serves every input of the call, which
    is ``read_noise_mode="per_batch"``; converters act on a layer's inputs and outputs, not its weights.
    So a config with ``read_noise_mode="per_read"`` (the default) or converters is refused here: use
    :func:`hardware_aware_layers` with :func:`analog_dense`, which runs both exactly, or set
    ``read_noise_mode="per_batch"``. (Update settings apply to writes; no write happens here.) A bare
    :class:`PCMDevice` is the device alone: ideal converters, no compensation, one read per call, at the
    age given (required).
    """
    if isinstance(hardware, PCMDevice):
        if time_since_programming_s is None:
            raise ConfigError("hardware_aware with a bare PCMDevice needs time_since_programming_s (it has no clock)")
        hardware = ChipConfig(
            device=hardware,
            forward=ForwardConfig(read_noise_mode="per_batch"),
            clock=ClockConfig(training_age_s=time_since_programming_s),
        )
    elif not isinstance(hardware, ChipConfig):
        raise ConfigError(f"hardware must be a PCMDevice or a ChipConfig, got {type(hardware).__name__}")
    forward = hardware.forward
    refused = [
        f"forward.{name}={getattr(forward, name)!r}"
        for name, value in (
            ("dac_bits", forward.dac_bits is not None),
            ("adc_bits", forward.adc_bits is not None),
            ("read_noise_mode", forward.read_noise_mode != "per_batch"),
        )
        if value
    ]
    if refused:
        raise ConfigError(
            f"hardware_aware returns one weight sample per call and cannot apply {', '.join(refused)}: "
            "read the layers through analog_dense on hardware_aware_layers(...) (converters and per-read noise "
            "exactly), or set forward.read_noise_mode='per_batch' and no converters in the hardware config"
        )
    time_since_programming_s = _training_age(hardware, time_since_programming_s, reference_age_s)
    leaves, treedef, keys = _weight_leaves(params, key)

    def noisy(weights: jax.Array, leaf_key: jax.Array) -> jax.Array:
        if jnp.ndim(weights) < 2:
            return weights
        matrix = weights.reshape(-1, weights.shape[-1])  # a conv kernel's im2col rows
        key_chip, key_read = jax.random.split(leaf_key)
        stats, _ = _programmed_and_read(matrix, hardware, key_chip, time_since_programming_s, scaling, reference_age_s)
        return weight_sample(stats, key_read, forward.read_noise_rng).reshape(weights.shape)

    return jax.tree_util.tree_unflatten(treedef, [noisy(w, k) for w, k in zip(leaves, keys, strict=True)])


def hardware_aware_layers(
    params,
    hardware: ChipConfig,
    key: jax.Array,
    time_since_programming_s: float | None = None,
    scaling: str | float = "layer",
    reference_age_s: float = 0.0,
    biases: Mapping[str, jax.Array] | None = None,
):
    """Every weight array (ndim ≥ 2) of a params pytree as an :class:`AnalogLayer` of a chip with ``hardware``
    at its ``clock.training_age_s`` after programming (an explicit ``time_since_programming_s`` must agree;
    4-D arrays as HWIO conv layers for :func:`analog_conv`);
    1-D arrays pass unchanged. Read them with :func:`analog_dense`: the whole hardware tree takes effect,
    converters (at the config's ranges) and the read-noise mode included, through the same MVM as the chip.
    Gradients reach the weights straight-through via ``layer.stats.mean``. No ledger: nothing is booked.
    ``biases`` (with a dict of layers, as :func:`deploy`'s) maps layer names to digital biases, exact."""
    if not isinstance(hardware, ChipConfig):
        raise ConfigError(f"hardware must be a ChipConfig, got {type(hardware).__name__}")
    time_since_programming_s = _training_age(hardware, time_since_programming_s, reference_age_s)
    leaves, treedef, keys = _weight_leaves(params, key)

    def layer(weights: jax.Array, leaf_key: jax.Array):
        if jnp.ndim(weights) < 2:
            return weights
        if jnp.ndim(weights) not in (2, 4):
            raise ConfigError(f"weights must be 2-D (dense) or 4-D HWIO (conv), got shape {jnp.shape(weights)}")
        matrix = weights.reshape(-1, weights.shape[-1])
        stats, spec = _programmed_and_read(
            matrix, hardware, leaf_key, time_since_programming_s, scaling, reference_age_s
        )
        kernel = tuple(weights.shape) if jnp.ndim(weights) == 4 else None
        return AnalogLayer(stats, None, spec, kernel)

    layers = jax.tree_util.tree_unflatten(treedef, [layer(w, k) for w, k in zip(leaves, keys, strict=True)])
    if biases:
        unknown = set(biases) - set(layers) if isinstance(layers, Mapping) else set(biases)
        if unknown:
            raise ConfigError(f"biases given for layers that are not in params: {sorted(unknown)}")
        layers = {
            name: dataclasses.replace(layers[name], bias=biases.get(name)) if name in biases else layers[name]
            for name in layers
        }
    return layers


def conv_kernel_to_matrix(kernel: jax.Array) -> jax.Array:
    """HWIO kernel → im2col matrix [kh·kw·c_in, c_out], rows in the order of :func:`image_patches`."""
    kh, kw, c_in, c_out = kernel.shape
    return kernel.reshape(kh * kw * c_in, c_out)


Padding = int | str | tuple[tuple[int, int], tuple[int, int]]
"""A conv's padding: an int (that many zeros on every side), ``((top, bottom), (left, right))``, or
"SAME" / "VALID" as in ``jax.lax.conv_general_dilated`` (and Flax): "SAME" pads ``k − 1`` in total at
stride 1 and, at stride s, so that the output has ``ceil(H / s)`` rows, the odd zero at the bottom/right."""


def conv_padding(
    padding: Padding, size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``padding`` as explicit ``((top, bottom), (left, right))`` for images of ``size`` (H, W)."""
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return ((0, 0), (0, 0))
        if padding.upper() != "SAME":
            raise ConfigError(
                f"padding must be an int, ((top, bottom), (left, right)), 'SAME' or 'VALID', got {padding!r}"
            )
        pads = []
        for length, k, s in zip(size, window, stride, strict=True):
            total = max((-(-length // s) - 1) * s + k - length, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, int) and not isinstance(padding, bool):
        pairs = ((padding, padding), (padding, padding))
    else:
        try:
            pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
        except (TypeError, ValueError):
            pairs = ()
        if len(pairs) != 2:
            raise ConfigError(
                f"padding must be an int, ((top, bottom), (left, right)), 'SAME' or 'VALID', got {padding!r}"
            )
    if any(side < 0 for pair in pairs for side in pair):
        raise ConfigError(f"padding must not be negative, got {padding!r}")
    return pairs


def _pair(value: int | tuple[int, int], what: str) -> tuple[int, int]:
    values = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ConfigError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return values


def image_patches(
    images: jax.Array, window: tuple[int, int], stride: int | tuple[int, int], padding: Padding
) -> jax.Array:
    """im2col: NHWC images → [N, H_out, W_out, kh·kw·C] patches (window position-major, then channel).
    ``stride`` an int or (sh, sw); ``padding`` see :data:`Padding`.

    Built from ``kh·kw`` strided slices of the padded images: on XLA:CPU this and one matmul run a
    stride-2 conv forward and backward 1.4× faster than ``lax.conv_general_dilated`` and 3× faster than
    ``lax.conv_general_dilated_patches`` (measured at 1,600 28×28 images, 56 channels).
    """
    kh, kw = window
    sh, sw = _pair(stride, "stride")
    _, height, width, _ = images.shape
    (top, bottom), (left, right) = conv_padding(padding, (height, width), window, (sh, sw))
    padded = jnp.pad(images, ((0, 0), (top, bottom), (left, right), (0, 0)))
    h_out = (height + top + bottom - kh) // sh + 1
    w_out = (width + left + right - kw) // sw + 1
    if h_out < 1 or w_out < 1:
        raise ConfigError(f"a {kh}x{kw} window does not fit {height}x{width} images with padding {padding!r}")
    slices = [
        padded[:, dy : dy + sh * (h_out - 1) + 1 : sh, dx : dx + sw * (w_out - 1) + 1 : sw, :]
        for dy in range(kh)
        for dx in range(kw)
    ]
    return jnp.concatenate(slices, axis=-1)
