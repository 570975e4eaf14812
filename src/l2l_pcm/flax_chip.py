"""Your Flax NNX model on the chip, unchanged: its ``nnx.Linear`` and ``nnx.Conv`` layers read through chip layers.

::

    onchip = to_chip(model, chip, key)              # place and program every Linear/Conv (biases digital)
    onchip.calibrate(lambda m: m(x))                # converter ranges from sample data, if the chip has any
    chip.advance(3600.0)
    model_now = onchip.read(nnx.Rngs(read=1))       # a copy whose layers read as the chip holds them now
    y = nnx.jit(lambda m, x: m(x))(model_now, x)    # fresh read noise at every call (no Rngs: noise-free)

Flax's kernels are already (in, out) and HWIO, as the chip's; what needs care is the padding: Flax's "SAME" at
stride 2 pads (0, 1), which :func:`~l2l_pcm.chip.analog_conv` reproduces exactly. Other layers (norms,
embeddings, attention's ``LinearGeneral``) stay digital and are listed in :attr:`OnChip.digital_layers`;
transposed, dilated, grouped, masked and non-2-D convolutions are refused rather than run in software.
Flax Linen models, which exist only inside ``apply``, go through :func:`linen_to_chip` (one run on a sample
input finds their Dense and Conv calls; ``onchip.read()`` returns ``apply(x, key=None)`` with those calls
read through the chip, by ``nn.intercept_methods``) and :func:`linen_hardware_aware`.
``hardware_aware(model, hardware, key)`` gives a copy for hardware-aware training (use it inside the loss:
gradients reach the model's own kernels straight through). Needs the ``flax`` extra
(``pip install l2l-pcm[frameworks]``).
"""

from __future__ import annotations

import jax
from flax import nnx

from l2l_pcm.chip import AnalogLayer, Chip, ChipConfig, analog_conv, analog_dense, deploy, hardware_aware_layers
from l2l_pcm.errors import ConfigError


class ChipRead(nnx.Variable):
    """An :class:`~l2l_pcm.chip.AnalogLayer` held by a module: what the chip returns for a layer now."""


class AnalogLinear(nnx.Module):
    """An ``nnx.Linear`` read through a chip layer: ``x [..., in] -> [..., out]``."""

    def __init__(self, layer: AnalogLayer, rngs: nnx.Rngs | None = None) -> None:
        self.layer = ChipRead(layer)
        self.rngs = rngs

    def _key(self) -> jax.Array | None:
        return None if self.rngs is None else self.rngs.read()

    def __call__(self, x: jax.Array) -> jax.Array:
        return analog_dense(self.layer.get_value(), x, self._key())


class AnalogConv(AnalogLinear):
    """An ``nnx.Conv`` (2-D) read through a chip conv layer, on ``[..., H, W, C]`` images as Flax takes them."""

    def __init__(self, layer: AnalogLayer, strides, padding, rngs: nnx.Rngs | None = None) -> None:
        super().__init__(layer, rngs)
        self.strides, self.padding = strides, padding

    def __call__(self, x: jax.Array) -> jax.Array:
        images = x.reshape((-1, *x.shape[-3:]))
        out = analog_conv(self.layer.get_value(), images, self._key(), stride=self.strides, padding=self.padding)
        return out.reshape((*x.shape[:-3], *out.shape[1:]))


def _refuse_conv_options(node, name: str) -> None:
    """Grouped, dilated and masked convolutions (an ``nnx.Conv`` or a Linen ``nn.Conv``) have no chip mapping."""
    ones = (None, 1, (1, 1))
    if node.feature_group_count != 1 or node.input_dilation not in ones or node.kernel_dilation not in ones:
        raise ConfigError(f"layer {name}: grouped or dilated convolutions are not supported on the chip")
    if node.mask is not None:
        raise ConfigError(f"layer {name}: a masked convolution is not supported on the chip")


def _padding(node, name: str):
    padding = node.padding
    if isinstance(padding, str):
        if padding.upper() in ("SAME", "VALID"):
            return padding.upper()
        raise ConfigError(f"layer {name}: padding {padding!r} is not supported on the chip ('SAME', 'VALID', numbers)")
    if isinstance(padding, int):
        return padding
    pairs = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
    return tuple(pairs)


def _chip_layers(model) -> tuple[dict[str, tuple], list[str]]:
    """Layer name -> (graph path, module) of every Linear and 2-D Conv; names of layers left digital."""
    found, digital = {}, []
    for path, node in nnx.iter_graph(model):
        name = "_".join(str(part) for part in path) or "layer"
        if isinstance(node, nnx.ConvTranspose) or (isinstance(node, nnx.Conv) and len(node.kernel_size) != 2):
            raise ConfigError(
                f"layer {name}: {type(node).__name__} is not supported on the chip (Linear and 2-D Conv are)"
            )
        if isinstance(node, nnx.Conv):
            _refuse_conv_options(node, name)
        if isinstance(node, (nnx.Conv, nnx.Linear)):
            if name in found:
                raise ConfigError(f"two layers of the model are both named {name!r} on the chip")
            found[name] = (path, node)
        elif isinstance(node, (nnx.LinearGeneral, nnx.Einsum)):
            digital.append(name)
    if not found:
        raise ConfigError("the model has no nnx.Linear or nnx.Conv layer to put on the chip")
    return found, digital


def _chip_weights(node) -> tuple[jax.Array, jax.Array | None]:
    bias = None if node.bias is None else node.bias.get_value()
    return node.kernel.get_value(), bias


def _weights_and_biases(found: dict[str, tuple]) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """The chip's weights and digital biases of every found layer, by layer name."""
    pairs = {name: _chip_weights(node) for name, (_, node) in found.items()}
    return {name: w for name, (w, _) in pairs.items()}, {name: b for name, (_, b) in pairs.items() if b is not None}


def _replaced(model, found: dict[str, tuple], layers: dict[str, AnalogLayer], rngs: nnx.Rngs | None):
    copy = nnx.clone(model)
    for name, (path, node) in found.items():
        if isinstance(node, nnx.Conv):
            strides = 1 if node.strides is None else node.strides
            analog = AnalogConv(layers[name], strides, _padding(node, name), rngs)
        else:
            analog = AnalogLinear(layers[name], rngs)
        parent = copy
        for part in path[:-1]:
            parent = parent[part] if isinstance(part, int) else getattr(parent, part)
        if isinstance(path[-1], int):
            parent[path[-1]] = analog
        else:
            setattr(parent, path[-1], analog)
    return copy


class OnChip:
    """A Flax NNX model programmed on a chip (:func:`to_chip`); :meth:`read` gives it back as read now."""

    def __init__(self, model, chip: Chip, found: dict[str, tuple], digital: list[str]) -> None:
        self.model, self.chip, self._found = model, chip, found
        self.digital_layers = digital
        """Dense layers of the model that are not ``nnx.Linear`` and run digitally (e.g. attention's)."""

    @property
    def layer_names(self) -> list[str]:
        """The chip layer of every Linear/Conv, in the model's order."""
        return list(self._found)

    def read(self, rngs: nnx.Rngs | None = None):
        """A copy of the model whose layers read as the chip holds them now (call again after
        ``chip.advance``); reads are booked on the chip. ``rngs``: the stream ``read`` draws a fresh
        read-noise key per call (None: the noise-free expectation)."""
        return _replaced(self.model, self._found, {name: self.chip.layer(name) for name in self._found}, rngs)

    def calibrate(self, forward, headroom: float = 1.0) -> None:
        """Converter ranges from sample data: ``forward(model)`` runs the model read now, eagerly, once
        (e.g. ``lambda m: m(x)``); see :meth:`~l2l_pcm.chip.Chip.calibrate_from`."""
        model = self.read()
        self.chip.calibrate_from(lambda: forward(model), headroom)


def to_chip(
    model, chip: Chip, key: jax.Array, *, scaling="layer", reference_age_s: float = 0.0, prefix: str = ""
) -> OnChip:
    """Place and program every ``nnx.Linear`` and 2-D ``nnx.Conv`` of ``model`` on ``chip`` (biases digital);
    ``scaling`` and ``reference_age_s`` as :func:`~l2l_pcm.chip.deploy`. The model itself is not changed. Layers
    are named after their place in the model, after ``prefix`` (two models on one chip need different
    prefixes; a name already on the chip is refused)."""
    found, digital = _chip_layers(model)
    found = {prefix + name: entry for name, entry in found.items()}
    weights, biases = _weights_and_biases(found)
    deploy(weights, chip, key, scaling, biases, reference_age_s, new_layers_only=True)
    return OnChip(model, chip, found, digital)


def hardware_aware(
    model, hardware: ChipConfig, key: jax.Array, *, rngs: nnx.Rngs | None = None, scaling="layer", reference_age_s=0.0
):
    """A copy of ``model`` whose Linear/Conv layers are as a chip with ``hardware`` returns them at the tree's
    training age (:func:`~l2l_pcm.chip.hardware_aware_layers`: programming noise, drift, compensation,
    converters; per-read noise from ``rngs``). Call it inside the loss: gradients reach the model's own
    kernels straight through. Biases stay digital and exact."""
    found, _ = _chip_layers(model)
    weights, biases = _weights_and_biases(found)
    layers = hardware_aware_layers(
        weights, hardware, key, scaling=scaling, reference_age_s=reference_age_s, biases=biases
    )
    return _replaced(model, found, layers, rngs)


# ------------------------------------------------------------------------------------------- Linen
def _linen_layers(module, variables, sample_input) -> dict[str, tuple]:
    """Chip layer name -> module path of every ``nn.Dense`` / 2-D ``nn.Conv`` call in one run of
    ``module.apply(variables, sample_input)`` (Linen modules exist only inside ``apply``: the run finds them)."""
    from flax import linen as nn

    found: dict[str, object] = {}

    def record(next_fun, args, kwargs, context):
        layer = context.module
        if context.method_name == "__call__" and isinstance(layer, (nn.ConvTranspose, nn.ConvLocal)):
            raise ConfigError(f"layer {'/'.join(layer.path)}: {type(layer).__name__} is not supported on the chip")
        if context.method_name == "__call__" and isinstance(layer, (nn.Dense, nn.Conv)):
            name = "_".join(layer.path) or "layer"
            if isinstance(layer, nn.Conv):
                if isinstance(layer.kernel_size, int) or len(layer.kernel_size) != 2:  # an int is Linen's 1-D
                    raise ConfigError(f"layer {name}: only 2-D convolutions are supported on the chip")
                _refuse_conv_options(layer, name)
                _padding(layer, name)  # refuses paddings the chip has not
            found[name] = tuple(layer.path)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        module.apply(variables, sample_input)
    if not found:
        raise ConfigError("the model has no nn.Dense or nn.Conv layer to put on the chip")
    return found


def _linen_parameters(variables, paths: dict[str, tuple]) -> tuple[dict, dict]:
    """(kernels, biases) by chip layer name, from the ``params`` collection at each layer's path."""
    weights, biases = {}, {}
    for name, path in paths.items():
        node = variables["params"]
        for part in path:
            node = node[part]
        weights[name] = node["kernel"]
        if "bias" in node:
            biases[name] = node["bias"]
    return weights, biases


def _run_analog(module, variables, x, layers: dict[str, AnalogLayer], key, prefix: str):
    """``module.apply(variables, x)`` with every Dense/Conv call read through its layer in ``layers``."""
    from flax import linen as nn

    calls = iter(range(1 << 30))

    def analog(next_fun, args, kwargs, context):
        layer = context.module
        if context.method_name != "__call__" or not isinstance(layer, (nn.Dense, nn.Conv)):
            return next_fun(*args, **kwargs)
        chip_layer = layers[prefix + ("_".join(layer.path) or "layer")]
        read_key = None if key is None else jax.random.fold_in(key, next(calls))
        if isinstance(layer, nn.Dense):
            return analog_dense(chip_layer, args[0], read_key)
        images = args[0]
        flat = images.reshape((-1, *images.shape[-3:]))
        strides = 1 if layer.strides is None else layer.strides
        out = analog_conv(chip_layer, flat, read_key, stride=strides, padding=_padding(layer, layer.name))
        return out.reshape((*images.shape[:-3], *out.shape[1:]))

    with nn.intercept_methods(analog):
        return module.apply(variables, x)


class LinenOnChip:
    """A Flax Linen model programmed on a chip (:func:`linen_to_chip`): :meth:`apply` runs it with every Dense
    and Conv read through its chip layer (as the chip holds it when :meth:`read` was called)."""

    def __init__(self, module, variables, chip: Chip, names: list[str], prefix: str) -> None:
        self.module, self.variables, self.chip, self.layer_names, self._prefix = module, variables, chip, names, prefix

    def read(self):
        """``apply(x, key=None)``: the model on the chip as it reads now (call again after ``chip.advance``);
        ``key`` draws fresh read noise for every layer (None: the noise-free expectation). Jit-able; reads
        are booked on the chip."""

        layers = {name: self.chip.layer(name) for name in self.layer_names}

        def apply(x, key=None):
            return _run_analog(self.module, self.variables, x, layers, key, self._prefix)

        return apply


def linen_to_chip(
    module, variables, sample_input, chip: Chip, key: jax.Array, *, scaling="layer", reference_age_s=0.0, prefix=""
) -> LinenOnChip:
    """Place and program every ``nn.Dense`` and 2-D ``nn.Conv`` a Flax Linen ``module`` calls on ``sample_input``
    (one ``module.apply(variables, sample_input)`` finds them; biases digital); ``scaling`` and
    ``reference_age_s`` as :func:`~l2l_pcm.chip.deploy`. Layers are named by their module path after ``prefix``."""
    paths = {prefix + name: path for name, path in _linen_layers(module, variables, sample_input).items()}
    weights, biases = _linen_parameters(variables, paths)
    deploy(weights, chip, key, scaling, biases, reference_age_s, new_layers_only=True)
    return LinenOnChip(module, variables, chip, list(paths), prefix)


def linen_hardware_aware(
    module, variables, sample_input, hardware: ChipConfig, key: jax.Array, *, scaling="layer", reference_age_s=0.0
):
    """``apply(variables, x, read_key=None)`` for hardware-aware training of a Linen model: every Dense and Conv
    read as a chip with ``hardware`` returns it at the tree's training age
    (:func:`~l2l_pcm.chip.hardware_aware_layers`), built from the ``variables`` passed in, so gradients reach
    them straight through; biases digital and exact. ``key`` draws the programming noise."""
    paths = _linen_layers(module, variables, sample_input)

    def apply(variables, x, read_key=None):
        weights, biases = _linen_parameters(variables, paths)
        layers = hardware_aware_layers(
            weights, hardware, key, scaling=scaling, reference_age_s=reference_age_s, biases=biases
        )
        return _run_analog(module, variables, x, layers, read_key, "")

    return apply
