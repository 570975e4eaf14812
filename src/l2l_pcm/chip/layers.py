"""The layer API: your own network on the chip.

Three steps, each usable on its own::

    chip = Chip(ChipConfig(n_arrays=8))
    deploy(params, chip, key)                      # place, scale and program a dict of weights
    layer = chip.layer("fc1")                      # the layer as read now (a pytree)
    y = analog_dense(layer, x, key)                # pure: works inside jit, grad and vmap

and, for hardware-aware training of any params pytree with the same device model as the chip,
``hardware_aware(params, device, key, time_since_programming_s)``.

:meth:`Chip.mvm` and :meth:`Chip.conv2d` run the same :func:`~l2l_pcm.chip.crossbar.analog_mvm` and
also book the MVMs and converter saturation in the chip's counters; inside jitted code book them with
:meth:`Chip.record_mvms`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from l2l_pcm.chip.crossbar import IDEAL_MVM, MVMSpec, WeightStatistics, analog_mvm
from l2l_pcm.errors import ConfigError
from l2l_pcm.pcm import PCMDevice

if TYPE_CHECKING:
    from l2l_pcm.chip.chip import Chip, ChipConfig, ReprogramReport


@dataclasses.dataclass(frozen=True)
class AnalogLayer:
    """One layer as a chip reads it now: per-weight read statistics (weight units, scaling applied), the
    digital bias, and the static :class:`MVMSpec` (tiles, converters, read-noise mode). A pytree whose
    arrays are leaves, so it can be an argument of jitted, differentiated or vmapped functions."""

    stats: WeightStatistics
    bias: jax.Array | None
    spec: MVMSpec = dataclasses.field(default=IDEAL_MVM, metadata={"static": True})
    kernel_shape: tuple[int, int, int, int] | None = dataclasses.field(default=None, metadata={"static": True})

    @classmethod
    def exact(cls, weights: jax.Array, bias: jax.Array | None = None) -> AnalogLayer:
        """Exact weights, no read noise, ideal converters: a software layer behind the same interface."""
        weights = jnp.asarray(weights)
        return cls(WeightStatistics(weights, jnp.zeros_like(weights)), bias)


jax.tree_util.register_dataclass(AnalogLayer, data_fields=["stats", "bias"], meta_fields=["spec", "kernel_shape"])


def analog_dense(layer: AnalogLayer, inputs: jax.Array, key: jax.Array | None) -> jax.Array:
    """``inputs [..., fan_in]`` through the layer: DAC, analog MVM with per-read noise (``key=None``: its
    expectation), ADC per tile, digital sum of the tiles and bias. Gradients flow to ``inputs`` and to
    ``layer.stats.mean`` (converters straight-through)."""
    outputs = analog_mvm(inputs, layer.stats, key, layer.spec)[0]
    return outputs if layer.bias is None else outputs + layer.bias


def analog_conv(
    layer: AnalogLayer, images: jax.Array, key: jax.Array | None, *, stride: int, padding: int
) -> jax.Array:
    """Convolution of NHWC ``images`` with a conv layer (placed with ``place_conv``): im2col patches
    through :func:`analog_dense`."""
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


def deploy(
    params: Mapping[str, jax.Array],
    chip: Chip,
    key: jax.Array,
    scaling: str | float | Mapping[str, str | float] = "layer",
    biases: Mapping[str, jax.Array] | None = None,
    reference_age_s: float = 0.0,
) -> dict[str, ReprogramReport]:
    """Place (if not yet placed), scale and program every weight array of ``params`` on ``chip``.

    2-D arrays are dense layers (fan_in, fan_out), 4-D arrays conv kernels (HWIO); ``scaling`` is
    :meth:`Chip.program`'s ("layer": each layer's max |W| maps to g_max, so no weight is clipped), for
    every layer, or a mapping of layer names to it (a layer not named gets "none");
    ``biases`` maps layer names to digital biases; ``reference_age_s`` is :meth:`Chip.program`'s (the age
    calibrated drift compensation holds the weights at). When the network does not fit, the
    :class:`~l2l_pcm.errors.ChipCapacityError` says how many arrays it needs. Returns each layer's report.
    """
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


def hardware_aware(
    params,
    hardware: PCMDevice | ChipConfig,
    key: jax.Array,
    time_since_programming_s: float,
    scaling: str = "layer",
):
    """Every weight array (ndim ≥ 2) of a params pytree as the chip would return it after programming,
    ``time_since_programming_s`` of drift and one read (:meth:`PCMDevice.noisy_weights`: straight-through
    gradient); 1-D arrays (biases, digital on the chip) pass unchanged. ``scaling`` is :func:`deploy`'s, so
    training sees the noise the deployed network will see. One key per array."""
    device = hardware if isinstance(hardware, PCMDevice) else hardware.device
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))

    def noisy(weights: jax.Array, leaf_key: jax.Array) -> jax.Array:
        if jnp.ndim(weights) < 2:
            return weights
        matrix = weights.reshape(-1, weights.shape[-1])  # a conv kernel's im2col rows
        scale = jax.lax.stop_gradient(weight_scale(matrix, scaling, device.w_max))
        return scale * device.noisy_weights(leaf_key, weights / scale, time_since_programming_s)

    return jax.tree_util.tree_unflatten(treedef, [noisy(w, k) for w, k in zip(leaves, keys, strict=True)])


def conv_kernel_to_matrix(kernel: jax.Array) -> jax.Array:
    """HWIO kernel → im2col matrix [kh·kw·c_in, c_out], rows in the order of :func:`image_patches`."""
    kh, kw, c_in, c_out = kernel.shape
    return kernel.reshape(kh * kw * c_in, c_out)


def image_patches(images: jax.Array, window: tuple[int, int], stride: int, padding: int) -> jax.Array:
    """im2col: NHWC images → [N, H_out, W_out, kh·kw·C] patches (window position-major, then channel).

    Built from ``kh·kw`` strided slices of the padded images: on XLA:CPU this and one matmul run a
    stride-2 conv forward and backward 1.4× faster than ``lax.conv_general_dilated`` and 3× faster than
    ``lax.conv_general_dilated_patches`` (measured at 1,600 28×28 images, 56 channels).
    """
    kh, kw = window
    _, height, width, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    h_out = (height + 2 * padding - kh) // stride + 1
    w_out = (width + 2 * padding - kw) // stride + 1
    slices = [
        padded[:, dy : dy + stride * (h_out - 1) + 1 : stride, dx : dx + stride * (w_out - 1) + 1 : stride, :]
        for dy in range(kh)
        for dx in range(kw)
    ]
    return jnp.concatenate(slices, axis=-1)
