"""Your Equinox model on the chip, unchanged: its ``Linear`` and ``Conv2d`` layers read through chip layers.

::

    onchip = to_chip(model, chip, key)           # place and program every Linear/Conv2d (biases digital)
    onchip.calibrate(lambda m: jax.vmap(m)(x))   # converter ranges from sample data, if the chip has any
    chip.advance(3600.0)
    model_now = onchip.read()                    # the same model, its layers read as the chip holds them now
    y = jax.vmap(model_now)(x)                   # noise-free expectation; with_read_key(model_now, k) adds noise

Equinox stores a ``Linear`` weight as (out, in) and a ``Conv2d`` kernel as OIHW with a bias of shape
(C, 1, 1); the chip's layers are (in, out) and HWIO with a bias of shape (C,). The conversion happens here,
once, so neither is read in the other's layout. Every other layer of the model (norms, embeddings,
activations) stays digital. Convolutions other than 2-D, grouped or dilated ones are refused rather than
run in software behind the user's back. ``hardware_aware(model, hardware, key)`` gives the same model for
hardware-aware training: the layers as a chip with ``hardware`` would return them, gradients straight
through to the model's own weights. Needs the ``equinox`` extra (``pip install l2l-pcm[frameworks]``).
"""

from __future__ import annotations

import functools
import re

import equinox as eqx
import jax
import jax.numpy as jnp

from l2l_pcm.chip import AnalogLayer, Chip, ChipConfig, analog_conv, analog_dense, deploy, hardware_aware_layers
from l2l_pcm.errors import ConfigError


class AnalogLinear(eqx.Module):
    """An ``eqx.nn.Linear`` read through a chip layer: ``x [..., in] -> [..., out]``."""

    layer: AnalogLayer
    key: jax.Array | None = None
    """Read-noise key used when the call gives none (None: the noise-free expectation)."""

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return analog_dense(self.layer, x, self.key if key is None else key)


class AnalogConv2d(eqx.Module):
    """An ``eqx.nn.Conv2d`` read through a chip conv layer: one CHW image -> (C_out, H', W'), as Equinox."""

    layer: AnalogLayer
    stride: tuple[int, int] = eqx.field(static=True)
    padding: tuple[tuple[int, int], tuple[int, int]] | str = eqx.field(static=True)
    key: jax.Array | None = None

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        images = jnp.transpose(x, (1, 2, 0))[None]  # CHW -> NHWC
        out = analog_conv(
            self.layer, images, self.key if key is None else key, stride=self.stride, padding=self.padding
        )
        return jnp.transpose(out[0], (2, 0, 1))


def _is_layer(node) -> bool:
    return isinstance(node, (eqx.nn.Linear, eqx.nn.Conv, eqx.nn.ConvTranspose))


def _chip_layers(model) -> dict[str, tuple]:
    """Layer name -> (key path, module) of every Linear and Conv2d, refusing what the chip cannot run."""
    found = {}
    for path, node in jax.tree_util.tree_flatten_with_path(model, is_leaf=_is_layer)[0]:
        if not _is_layer(node):
            continue
        name = re.sub(r"[^0-9A-Za-z]+", "_", jax.tree_util.keystr(path)).strip("_") or "layer"
        if isinstance(node, eqx.nn.ConvTranspose) or (isinstance(node, eqx.nn.Conv) and node.num_spatial_dims != 2):
            raise ConfigError(
                f"layer {name}: {type(node).__name__} is not supported on the chip (Linear and Conv2d are)"
            )
        if isinstance(node, eqx.nn.Conv):
            if node.groups != 1 or tuple(node.dilation) != (1, 1) or node.padding_mode != "ZEROS":
                raise ConfigError(f"layer {name}: grouped, dilated or non-zero-padded convolutions are not supported")
        elif node.in_features == "scalar" or node.out_features == "scalar":
            raise ConfigError(f"layer {name}: a Linear with 'scalar' features is not supported; use 1")
        if name in found:
            raise ConfigError(f"two layers of the model are both named {name!r} on the chip")
        found[name] = (path, node)
    if not found:
        raise ConfigError("the model has no eqx.nn.Linear or eqx.nn.Conv2d layer to put on the chip")
    return found


def _chip_weights(node) -> tuple[jax.Array, jax.Array | None]:
    """(weights in the chip's layout, bias of shape (C,) or None)."""
    if isinstance(node, eqx.nn.Linear):
        return node.weight.T, node.bias
    bias = None if node.bias is None else node.bias.reshape(-1)
    return jnp.transpose(node.weight, (2, 3, 1, 0)), bias  # OIHW -> HWIO


def _weights_and_biases(found: dict[str, tuple]) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """The chip's weights and digital biases of every found layer, by layer name."""
    pairs = {name: _chip_weights(node) for name, (_, node) in found.items()}
    return {name: w for name, (w, _) in pairs.items()}, {name: b for name, (_, b) in pairs.items() if b is not None}


def _analog(node, layer: AnalogLayer):
    if isinstance(node, eqx.nn.Linear):
        return AnalogLinear(layer)
    return AnalogConv2d(layer, tuple(node.stride), node.padding)


def _get(tree, path):
    def step(node, key):
        if isinstance(key, jax.tree_util.GetAttrKey):
            return getattr(node, key.name)
        if isinstance(key, jax.tree_util.SequenceKey):
            return node[key.idx]
        return node[key.key]

    return functools.reduce(step, path, tree)


def _replaced(model, found: dict[str, tuple], layers: dict[str, AnalogLayer]):
    names = list(found)
    return eqx.tree_at(
        lambda m: [_get(m, found[name][0]) for name in names],
        model,
        [_analog(found[name][1], layers[name]) for name in names],
    )


class OnChip:
    """An Equinox model programmed on a chip (:func:`to_chip`); :meth:`read` gives it back as read now."""

    def __init__(self, model, chip: Chip, found: dict[str, tuple]) -> None:
        self.model, self.chip, self._found = model, chip, found

    @property
    def layer_names(self) -> list[str]:
        """The chip layer of every Linear/Conv2d, in the model's order."""
        return list(self._found)

    def read(self, key: jax.Array | None = None):
        """The model with its layers as the chip holds them now (call again after ``chip.advance``): reads
        are booked on the chip. ``key``: read noise (one key per layer, fixed in the returned model)."""
        model = _replaced(self.model, self._found, {name: self.chip.layer(name) for name in self._found})
        return model if key is None else with_read_key(model, key)

    def calibrate(self, forward, headroom: float = 1.0) -> None:
        """Converter ranges from sample data: ``forward(model)`` runs the model read now, eagerly, once
        (e.g. ``lambda m: jax.vmap(m)(x)``); see :meth:`~l2l_pcm.chip.Chip.calibrate_from`."""
        model = self.read()
        self.chip.calibrate_from(lambda: forward(model), headroom)


def to_chip(
    model, chip: Chip, key: jax.Array, *, scaling="layer", reference_age_s: float = 0.0, prefix: str = ""
) -> OnChip:
    """Place and program every ``eqx.nn.Linear`` and ``eqx.nn.Conv2d`` of ``model`` on ``chip`` (weights
    converted to the chip's layouts, biases digital); ``scaling`` and ``reference_age_s`` as
    :func:`~l2l_pcm.chip.deploy`. Layers are named after their place in the model, after ``prefix`` (two models
    on one chip need different prefixes; a name already on the chip is refused)."""
    found = {prefix + name: entry for name, entry in _chip_layers(model).items()}
    weights, biases = _weights_and_biases(found)
    deploy(weights, chip, key, scaling, biases, reference_age_s, new_layers_only=True)
    return OnChip(model, chip, found)


def hardware_aware(model, hardware: ChipConfig, key: jax.Array, *, scaling="layer", reference_age_s: float = 0.0):
    """``model`` with its Linear/Conv2d layers as a chip with ``hardware`` returns them at the tree's training
    age (:func:`~l2l_pcm.chip.hardware_aware_layers`: programming noise, drift, compensation, converters,
    per-read noise when called with a key); differentiable: gradients reach the model's own weights
    straight through. Biases stay digital and exact."""
    found = _chip_layers(model)
    weights, biases = _weights_and_biases(found)
    layers = hardware_aware_layers(
        weights, hardware, key, scaling=scaling, reference_age_s=reference_age_s, biases=biases
    )
    return _replaced(model, found, layers)


def with_read_key(model, key: jax.Array):
    """``model`` whose analog layers draw read noise from ``key`` (one key per layer) when called without
    one. Pure, so it works inside ``vmap``: ``jax.vmap(lambda x, k: with_read_key(m, k)(x))(xs, keys)``
    gives every example its own noise."""
    is_analog = lambda node: isinstance(node, (AnalogLinear, AnalogConv2d))  # noqa: E731
    nodes = [node for node in jax.tree_util.tree_leaves(model, is_leaf=is_analog) if is_analog(node)]
    keys = jax.random.split(key, max(len(nodes), 1))
    return eqx.tree_at(
        lambda m: [n.key for n in jax.tree_util.tree_leaves(m, is_leaf=is_analog) if is_analog(n)],
        model,
        list(keys[: len(nodes)]),
        is_leaf=lambda x: x is None,
    )
