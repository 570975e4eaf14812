r"""The few-shot CNN: four 3×3 stride-2 conv layers without bias, ReLU, normalisation, max-pool, readout.

28×28 → 14 → 7 → 4 → 2, then a global max-pool to a ``channels``-vector and a dense readout without bias
(56 channels by default, as in the authors' checkpoint: the 504-row conv matrices then fill two
256-row arrays, and 4·56 + 5 columns fit one array's 256 columns).

**Normalisation.** After each conv + ReLU, activations are standardised per channel with the mean and
variance of the *support set* of the task (no learnable parameters), and the same statistics are applied
to the query images (``CNNConfig.normalisation="support"``, the default; ``"per_set"`` is the authors'
rule, needed by their imported model). The authors used batch statistics of whichever set was being processed
(transductive batch norm), which lets query images influence each other's predictions; here each query
image's output depends only on itself and the labelled support set, so evaluation has no leak between
query images, and the same rule runs unchanged on the chip (statistics are computed digitally from the
chip's conv outputs).

The conv function is a parameter, so the same code runs a software conv (optionally with PCM noise on
the kernels) and the chip's im2col MVMs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from l2l_pcm.chip import conv_kernel_to_matrix, image_patches
from l2l_pcm.errors import ConfigError

CONV_NAMES = ("conv1", "conv2", "conv3", "conv4")


NORMALISATIONS = ("support", "per_set")
INK_VALUES = ("one", "zero")


@dataclasses.dataclass(frozen=True)
class CNNConfig:
    channels: int = 56
    ways: int = 5
    init_std: float = 0.35
    """Std of the initial conv kernels: normalisation makes their scale irrelevant to the function, so
    they are initialised to use a good part of the PCM weight range [−1, 1] rather than He scaling."""
    normalisation: str = "support"
    """"support": every layer is standardised with the support set's statistics, for support and query
    images alike (no leak between query images). "per_set": the authors' transductive rule (batch norm in
    training mode at test time, ``MAMLTraineeOmniglotConv.call`` in
    github.com/IGITUGraz/RapidLearningInMemoryComputing, ``few_shot_image_classification/maml_trainee_omniglot.py``):
    support and query sets each with their own statistics,
    so query images influence each other's predictions."""
    norm_epsilon: float = 1e-5
    """ε of the normalisation, 1/sqrt(var + ε); the authors' Keras BatchNorm uses 1e-3."""
    ink: str = "one"
    """Pixel polarity the model expects: "one" (this project's data: ink = 1, background = 0) or "zero"
    (the authors' tfds pipeline: background = 1, ink = 0; images are fed as 1 − x)."""

    def __post_init__(self) -> None:
        for name in ("channels", "ways"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"CNNConfig.{name} must be an integer >= 1, got {value!r}")
        if not self.init_std > 0:
            raise ConfigError(f"CNNConfig.init_std must be > 0, got {self.init_std!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ConfigError(f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        if self.ink not in INK_VALUES:
            raise ConfigError(f"ink must be one of {INK_VALUES}, got {self.ink!r}")
        if not (isinstance(self.norm_epsilon, (int, float)) and 0 < self.norm_epsilon < 1):
            raise ConfigError(f"norm_epsilon must be a number in (0, 1), got {self.norm_epsilon!r}")

    def kernel_shapes(self) -> dict[str, tuple[int, int, int, int]]:
        shapes = {}
        c_in = 1
        for name in CONV_NAMES:
            shapes[name] = (3, 3, c_in, self.channels)
            c_in = self.channels
        return shapes


def init_params(key: jax.Array, config: CNNConfig) -> dict[str, jax.Array]:
    """Conv kernels (HWIO) ~ N(0, init_std²) clipped to [−1, 1]; the readout starts at zero (chance level)."""
    params = {}
    for name, k in zip(CONV_NAMES, jax.random.split(key, len(CONV_NAMES)), strict=True):
        shape = config.kernel_shapes()[name]
        params[name] = jnp.clip(config.init_std * jax.random.normal(k, shape), -1.0, 1.0)
    params["readout"] = jnp.zeros((config.channels, config.ways))
    return params


def software_conv(kernel: jax.Array, images: jax.Array) -> jax.Array:
    """3×3 stride-2 conv with torch-style padding 1 (explicit ((1,1),(1,1)); 'SAME' would pad (0,1)).

    XLA's own conv: the reference that :func:`conv3x3_stride2` is tested against, and the forward of
    evaluation, where it is as fast.
    """
    return jax.lax.conv_general_dilated(
        images, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _col2im(patch_grads: jax.Array, height: int, width: int) -> jax.Array:
    """The adjoint of the chip's 3×3 stride-2 :func:`~l2l_pcm.chip.image_patches`: [N, Ho, Wo, 9·C] → [N, H, W, C].

    With stride 2, tap i of a row lands on padded row 2·o + i: taps 0 and 2 on even rows (2 shifted by
    one output), tap 1 on odd rows. So the 9 taps are summed into 4 parity blocks of output size
    (4 + 2 + 2 + 1 taps), which are interleaved once. Adding each tap into a full-size padded array
    instead writes nine image-sized arrays per layer and was the slowest part of the backward pass.
    """
    n, rows, cols, _ = patch_grads.shape
    taps = patch_grads.reshape(n, rows, cols, 9, -1)
    blocks = [[None, None], [None, None]]
    for i in range(3):
        for j in range(3):
            shift_i, shift_j = int(i == 2), int(j == 2)
            tap = jnp.pad(taps[:, :, :, 3 * i + j], ((0, 0), (shift_i, 1 - shift_i), (shift_j, 1 - shift_j), (0, 0)))
            parity_i, parity_j = i % 2, j % 2
            block = blocks[parity_i][parity_j]
            blocks[parity_i][parity_j] = tap if block is None else block + tap
    # [N, rows+1, 2 (row parity), cols+1, 2 (col parity), C] → padded image rows 2m + parity
    interleaved = jnp.stack([jnp.stack(blocks[0], axis=3), jnp.stack(blocks[1], axis=3)], axis=2)
    padded = interleaved.reshape(n, 2 * rows + 2, 2 * cols + 2, -1)
    return padded[:, 1 : height + 1, 1 : width + 1, :]


@jax.custom_vjp
def conv3x3_stride2(kernel: jax.Array, images: jax.Array) -> jax.Array:
    """:func:`software_conv` as one im2col GEMM, with a hand-written backward pass for meta-training.

    Meta-training differentiates the conv body once per task inside a scan over tasks; there XLA:CPU's
    conv gradients (and autodiff of an im2col written with slices) were the bulk of the step. Here the
    forward is one GEMM ``patches @ K``, the kernel gradient one GEMM ``patchesᵀ @ dy`` and the image
    gradient one GEMM ``dy @ Kᵀ`` followed by :func:`_col2im`. First-order only (nothing differentiates
    the conv body twice: the inner loop's readout gradient is written out).
    """
    return _conv_forward(kernel, images)[0]


def _conv_forward(kernel, images):
    patches = image_patches(images, (3, 3), stride=2, padding=1)
    n, rows, cols, taps_channels = patches.shape
    kernel_matrix = conv_kernel_to_matrix(kernel)
    out = patches.reshape(-1, taps_channels) @ kernel_matrix
    return out.reshape(n, rows, cols, -1), (patches, kernel_matrix, images.shape)


def _conv_backward(residuals, out_grad):
    patches, kernel_matrix, image_shape = residuals
    taps_channels = patches.shape[-1]
    out_grad_matrix = out_grad.reshape(-1, out_grad.shape[-1])
    kernel_grad = patches.reshape(-1, taps_channels).T @ out_grad_matrix
    patch_grads = (out_grad_matrix @ kernel_matrix.T).reshape(patches.shape)
    image_grad = _col2im(patch_grads, image_shape[1], image_shape[2])
    c_in = taps_channels // 9
    return kernel_grad.reshape(3, 3, c_in, -1), image_grad


conv3x3_stride2.defvjp(_conv_forward, _conv_backward)


def _standardise(h: jax.Array, statistics_of: jax.Array, epsilon: float) -> jax.Array:
    mean = jnp.mean(statistics_of, axis=(0, 1, 2))
    var = jnp.var(statistics_of, axis=(0, 1, 2))
    return (h - mean) * jax.lax.rsqrt(var + epsilon)


def embed(
    conv: Callable[[int, jax.Array], jax.Array],
    support: jax.Array,
    query: jax.Array,
    cnn: CNNConfig | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Features [N, channels] of support and query images of one task.

    ``conv(layer_index, images)`` returns the pre-activation of conv layer ``layer_index``; ``cnn`` says
    the normalisation rule, its ε and the pixel polarity (default :class:`CNNConfig`).
    """
    cnn = cnn or CNNConfig()
    n_support = support.shape[0]
    x = jnp.concatenate([support, query], axis=0)
    if cnn.ink == "zero":
        x = 1.0 - x
    for layer in range(len(CONV_NAMES)):
        h = jax.nn.relu(conv(layer, x))
        if cnn.normalisation == "support":
            x = _standardise(h, h[:n_support], cnn.norm_epsilon)
        else:
            support_h, query_h = h[:n_support], h[n_support:]
            x = jnp.concatenate(
                [_standardise(support_h, support_h, cnn.norm_epsilon), _standardise(query_h, query_h, cnn.norm_epsilon)]
            )
    features = global_max_pool(x)
    return features[:n_support], features[n_support:]


def global_max_pool(x: jax.Array) -> jax.Array:
    """Max over the spatial axes of ``[N, H, W, C]``, differentiated through the arg-max's position.

    ``jnp.max``'s gradient masks ``x == max(x)``; under jit, XLA on CPU recomputes the normalised ``x`` in
    several fusions whose last bits can differ, so the mask can miss the maximum and its gradient is
    dropped (measured: conv4's meta-gradient 40-100 % off under jit, and different for every meta-batch
    size, while eager mode agreed with finite differences). Gathering at the arg-max needs no equality
    test. Ties (ReLU zeros) get the same total gradient either way: tied entries share one value.
    """
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    where = jax.lax.stop_gradient(jnp.argmax(flat, axis=1))
    return jnp.take_along_axis(flat, where[:, None, :], axis=1)[:, 0]


def readout_gradient(features: jax.Array, logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""∂/∂W of the mean cross-entropy of ``logits = features @ W``: :math:`F^T(\mathrm{softmax} - Y)/N`.

    Written out because the chip computes exactly this outer product of penultimate activations and
    output errors from its own outputs, without backpropagating through the chip.
    """
    errors = jax.nn.softmax(logits) - jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return features.T @ errors / features.shape[0]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)
