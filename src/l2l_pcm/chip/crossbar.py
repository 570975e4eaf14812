r"""Pure functions over the programmed state of one layer's devices.

The stateful :class:`l2l_pcm.chip.Chip` is a thin shell around these; they are public so that a
scenario can vmap them (e.g. one readout per few-shot task) without touching chip internals.

Read-noise trick: every device contributes independent Gaussian read noise to every read, so one MVM
:math:`y_j = \sum_i x_i (\bar w_{ij} + \sigma_{ij}\xi_{ij})` has exactly the distribution
:math:`y_j = \sum_i x_i \bar w_{ij} + \sqrt{\sum_i x_i^2 \sigma_{ij}^2}\;\xi_j`. Two dense matmuls and one
normal per output replace one normal per device and input vector, with no approximation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from l2l_pcm.pcm import PCMDevice
from l2l_pcm.vocabulary import READ_NOISE_MODES, READ_NOISE_RNGS


class LayerState(NamedTuple):
    """Programmed state of a layer's devices; every array has shape [2, fan_in, fan_out], or
    [2, N, fan_in, fan_out] for unit cells of N devices per polarity (``PCMDevice.devices_per_polarity``)."""

    g_target_uS: jax.Array
    """Conductance each device was last programmed towards (the chip's digital record)."""
    g_prog_uS: jax.Array
    """Conductance reached by programming (target + programming noise), before drift."""
    nu: jax.Array
    """Drift exponent drawn when the device was last programmed."""
    programmed_at_s: jax.Array
    """Chip-clock time of the device's last programming."""


class WeightStatistics(NamedTuple):
    """What a read of the layer returns, per weight: mean (drifted) and variance (read noise)."""

    mean: jax.Array
    variance: jax.Array


class MVMCounts(NamedTuple):
    """What one call of :func:`analog_mvm` did, for the chip's counters (:meth:`l2l_pcm.chip.Chip.book_mvms`):
    input vectors read and the DAC inputs and ADC tile outputs that clipped. int32 arrays, so the counts
    leave jitted, vmapped and scanned code like any other output; conversions, array MVMs and MACs follow
    from ``vectors`` and the layer's placement and converters, and the chip derives them when booking."""

    vectors: jax.Array
    dac_saturated: jax.Array
    adc_saturated: jax.Array
    nonfinite_reads: jax.Array | int = 0
    """Input vectors holding a NaN or inf (their outputs are NaN or inf: the chip counts and warns)."""

    @classmethod
    def zero(cls) -> MVMCounts:
        return cls(jnp.int32(0), jnp.int32(0), jnp.int32(0), jnp.int32(0))

    def plus(self, other: MVMCounts) -> MVMCounts:
        return MVMCounts(*(a + b for a, b in zip(self, other, strict=True)))


def program_layer(device: PCMDevice, key: jax.Array, weights: jax.Array, now_s: float) -> LayerState:
    """Program every device of a layer to hold ``weights`` [fan_in, fan_out]."""
    g_target, g_prog, nu = device.program_weights(key, weights)
    programmed_at = jnp.full(g_target.shape, now_s, dtype=g_prog.dtype)
    return LayerState(g_target, g_prog, nu, programmed_at)


def reprogram_layer(
    device: PCMDevice,
    key: jax.Array,
    state: LayerState,
    update: jax.Array,
    now_s: float,
    base_weights: jax.Array | None = None,
) -> tuple[LayerState, jax.Array]:
    """Apply an already-quantized weight update, re-programming only the devices it changes.

    The new target of a pair is its previous target (or, with ``device.reprogram_from="read"``, its current
    drifted weight) plus ``update``, clipped to ±w_max. A device is
    re-programmed — fresh programming noise, fresh drift exponent, programming time = ``now_s`` — iff the
    update of its pair is non-zero and its own target conductance changes (adding 1/16 to a positive
    weight moves G⁺ only; all N devices of a unit cell's polarity are re-programmed together). All other
    devices keep their state bit for bit. Returns the new state and the boolean mask of devices touched
    (the state's shape). ``base_weights`` ([fan_in, fan_out], device units) replaces the base the new target
    is computed from (see :meth:`PCMDevice.reprogram_target`).
    """
    g_now = device.drift(state.g_prog_uS, state.nu, now_s - state.programmed_at_s)
    new_target = device.reprogram_target(state.g_target_uS, g_now, update, base_weights)
    touched = jnp.broadcast_to(update != 0, new_target.shape) & (new_target != state.g_target_uS)
    g_prog, nu = device.program(key, new_target)
    new_state = LayerState(
        g_target_uS=jnp.where(touched, new_target, state.g_target_uS),
        g_prog_uS=jnp.where(touched, g_prog, state.g_prog_uS),
        nu=jnp.where(touched, nu, state.nu),
        programmed_at_s=jnp.where(touched, jnp.asarray(now_s, state.programmed_at_s.dtype), state.programmed_at_s),
    )
    return new_state, touched


def read_statistics(device: PCMDevice, state: LayerState, now_s: float, drift_compensation: bool) -> WeightStatistics:
    """Mean and read-noise variance of each weight at chip time ``now_s``.

    ``drift_compensation`` here is the *oracle* global compensation (``ChipConfig(drift_compensation=
    "global")``): one factor per layer, the total conductance right after programming over the total now,
    computed from the noise-free device state no chip can see. The chip's calibrated compensation
    (:func:`calibration_gains`) measures instead.
    """
    age = now_s - state.programmed_at_s
    g_now = device.drift(state.g_prog_uS, state.nu, age)
    sigma = device.read_noise_std_uS(state.g_target_uS, g_now, age, state.g_prog_uS)
    mean, variance = device.weight_moments(*device.read_moments(g_now, sigma))
    if drift_compensation:
        gain = jnp.sum(state.g_prog_uS) / jnp.maximum(jnp.sum(g_now), 1e-12)
        mean, variance = mean * gain, variance * gain**2
    return WeightStatistics(mean, variance)


def _mix32(h: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: a bijection whose every output bit depends on every input bit."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


_LOG_POLY = (
    7.0376836292e-2,
    -1.1514610310e-1,
    1.1676998740e-1,
    -1.2420140846e-1,
    1.4249322787e-1,
    -1.6668057665e-1,
    2.0000714765e-1,
    -2.4999993993e-1,
    3.3333331174e-1,
)  # Cephes ``logf`` (S. L. Moshier, Cephes Math Library): log(1+x) = x − x²/2 + x³·P(x) on [√½−1, √2−1]
_ERFINV_CENTRAL = (
    2.81022636e-08,
    3.43273939e-07,
    -3.5233877e-06,
    -4.39150654e-06,
    0.00021858087,
    -0.00125372503,
    -0.00417768164,
    0.246640727,
    1.50140941,
)  # M. Giles, "Approximating the erfinv function", GPU Computing Gems Jade (2011), single precision, w < 5
_ERFINV_TAIL = (
    -0.000200214257,
    0.000100950558,
    0.00134934322,
    -0.00367342844,
    0.00573950773,
    -0.0076224613,
    0.00943887047,
    1.00167406,
    2.83297682,
)  # the same, w >= 5 (|z| beyond about 2.8)


def _log_positive(y: jax.Array) -> jax.Array:
    """Natural log of positive normal float32 ``y`` (absolute error < 2e-6): exponent from the bits, a
    polynomial for the mantissa. About 4× cheaper than XLA's ``log`` on CPU, where it was the largest
    cost of a normal draw, and exact enough for an inverse CDF whose own error is 1e-6."""
    bits = jax.lax.bitcast_convert_type(y, jnp.int32)
    mantissa = jax.lax.bitcast_convert_type((bits & 0x7FFFFF) | 0x3F800000, jnp.float32)  # in [1, 2)
    high = mantissa > math.sqrt(2.0)
    x = jnp.where(high, 0.5 * mantissa, mantissa) - 1.0
    exponent = ((bits >> 23) - 127 + high.astype(jnp.int32)).astype(jnp.float32)
    poly = _LOG_POLY[0]
    for coefficient in _LOG_POLY[1:]:
        poly = poly * x + coefficient
    return x + x * x * (x * poly - 0.5) + exponent * math.log(2.0)


def counter_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Standard normals from a counter-based hash: the element index, mixed twice with two seed words drawn
    from ``key`` (threefry), gives 24 uniform bits u, mapped through the inverse normal CDF
    z = √2 erf⁻¹(2u − 1) (Giles' single-precision erf⁻¹, the one XLA uses, with a cheaper log).

    About 3× faster than ``jax.random.normal`` on CPU, where threefry's 20 rounds per word cost more
    than the matmul they add noise to; the values within one call are distinct hashes of distinct
    counters, and calls with different keys get independent seeds. For emulating device noise, not for
    cryptography. (Tails reach 5.3 σ, as float32 uniforms allow.)
    """
    seed = jax.random.bits(key, (2,), jnp.uint32)
    counter = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    bits = _mix32(_mix32(counter ^ seed[0]) + seed[1])
    uniform = ((bits >> 8).astype(jnp.float32) + 0.5) * (1.0 / (1 << 24))
    w = -_log_positive(4.0 * uniform * (1.0 - uniform))  # −log(1 − x²) for x = 2u − 1
    central = w < 5.0
    t = jnp.where(central, w - 2.5, jnp.sqrt(w) - 3.0)
    poly = jnp.where(central, _ERFINV_CENTRAL[0], _ERFINV_TAIL[0])
    for low, high in zip(_ERFINV_CENTRAL[1:], _ERFINV_TAIL[1:], strict=True):
        poly = poly * t + jnp.where(central, low, high)
    return (math.sqrt(2.0) * poly * (2.0 * uniform - 1.0)).astype(dtype)


def straight_through(weights: jax.Array, stats: WeightStatistics, limit: jax.Array | float) -> WeightStatistics:
    """Read statistics (weight units) whose mean carries the gradient of ``weights`` clipped to ±``limit``:
    the forward value is what the devices return, the backward pass treats them as exact inside their
    range; the read-noise variance is hardware data and gets none. Hardware-aware training of any model on
    the chip's physics reads through this."""
    clipped = jnp.clip(weights, -limit, limit)
    mean = clipped + jax.lax.stop_gradient(stats.mean - clipped)
    return WeightStatistics(mean, jax.lax.stop_gradient(stats.variance))


def weight_sample(stats: WeightStatistics, key: jax.Array, rng: str = "threefry") -> jax.Array:
    """One read of every weight: ``mean + std · ξ`` with normals from generator ``rng`` ("threefry" or
    "counter"). A ``per_batch`` MVM reads through one such sample; hardware-aware training trains on one."""
    normal = jax.random.normal if rng == "threefry" else counter_normal
    return stats.mean + jnp.sqrt(stats.variance) * normal(key, stats.mean.shape, dtype=stats.mean.dtype)


def analog_matmul(
    inputs: jax.Array,
    stats: WeightStatistics,
    key: jax.Array | None,
    mode: str = "per_read",
    rng: str = "threefry",
    product: Callable[[jax.Array, jax.Array], jax.Array] = jnp.matmul,
) -> jax.Array:
    """``inputs`` [..., fan_in] times the layer, with read noise.

    ``mode="per_read"`` (default, exact): independent device noise for every input vector, via the
    output-variance identity above (two matmuls). ``mode="per_batch"``: one draw of device noise shared
    by all vectors of this call, as aihwkit's ``PCM_READ`` weight noise does per mini-batch (one matmul;
    reads within a call are correlated). ``key=None`` gives the noise-free expectation. ``rng``: which
    generator draws the normals, "threefry" (``jax.random.normal``) or "counter" (:func:`counter_normal`).
    ``product``: how inputs meet weights (default ``inputs @ W``; the tiled path passes a batched product).
    """
    if key is None:
        return product(inputs, stats.mean)
    if mode == "per_batch":
        return product(inputs, weight_sample(stats, key, rng))
    normal = jax.random.normal if rng == "threefry" else counter_normal
    outputs = product(inputs, stats.mean)
    xi = normal(key, outputs.shape, dtype=outputs.dtype)
    # σ·ξ as copysign(√(σ²ξ²), ξ): the square root last, so XLA, which copies cheap element-wise work into
    # every consumer but not a square root, draws the normals once where the outputs have several consumers
    # (an ADC's quantizer and its clip count). The floor keeps the gradient finite where no input is active.
    noise = jnp.sqrt(jnp.maximum(product(inputs * inputs, stats.variance) * (xi * xi), 1e-30))
    return outputs + jnp.copysign(noise, xi)


def uniform_quantize(values: jax.Array, bits: int, full_scale: float, unsigned: bool = False) -> jax.Array:
    """Clip and round to a DAC/ADC grid: symmetric, 2^(bits−1)−1 levels per sign in ±``full_scale``; or,
    ``unsigned``, 2^bits − 1 levels in [0, full_scale] (a DAC for non-negative inputs, e.g. after a ReLU,
    gains the sign bit: twice the resolution). The rounding is straight-through (gradient 1 inside the
    range, 0 where clipped), so converters can sit inside hardware-aware training."""
    low = 0.0 if unsigned else -full_scale
    step = full_scale / (2**bits - 1 if unsigned else 2 ** (bits - 1) - 1)
    clipped = jnp.clip(values, low, full_scale)
    return clipped + jax.lax.stop_gradient(jnp.round(clipped / step) * step - clipped)


def saturated(values: jax.Array, full_scale: float, unsigned: bool = False) -> jax.Array:
    """How many ``values`` a converter of range ``full_scale`` clips."""
    low = 0.0 if unsigned else -full_scale
    return jnp.sum((values > full_scale) | (values < low))


@dataclasses.dataclass(frozen=True)
class MVMSpec:
    """How a layer's MVMs run on the chip: its tiles, converters and read-noise mode.

    Hashable (a static argument of jitted code); :meth:`l2l_pcm.chip.Chip.layer` gives a placed layer's.
    The default is one ideal tile with exact per-read noise.
    """

    tiles: tuple[tuple[int, int, int, int], ...] = ()
    """(row_start, rows, out_start, cols) of every tile; each tile has its own ADC, and the row blocks of a
    column block are summed digitally. () = the whole matrix is one tile."""
    dac: tuple[int, float, bool] | None = None
    """(bits, range, unsigned) of the input DAC; None = ideal analog inputs."""
    adc: tuple[int, float] | None = None
    """(bits, range) of every tile's ADC; None = ideal."""
    read_noise_mode: str = "per_read"
    read_noise_rng: str = "threefry"

    def __post_init__(self) -> None:
        if self.read_noise_mode not in READ_NOISE_MODES:
            raise ValueError(f"read_noise_mode must be one of {READ_NOISE_MODES}, got {self.read_noise_mode!r}")
        if self.read_noise_rng not in READ_NOISE_RNGS:
            raise ValueError(f"read_noise_rng must be one of {READ_NOISE_RNGS}, got {self.read_noise_rng!r}")


IDEAL_MVM = MVMSpec()
"""One ideal tile with exact per-read noise: the software models' crossbar."""


def _tile(stats: WeightStatistics, block: tuple[int, int, int, int]) -> WeightStatistics:
    """The statistics of one tile's block (row_start, rows, out_start, cols) of a layer."""
    start, rows, out, cols = block
    return WeightStatistics(
        stats.mean[..., start : start + rows, out : out + cols],
        stats.variance[..., start : start + rows, out : out + cols],
    )


def analog_mvm(
    inputs: jax.Array, stats: WeightStatistics, key: jax.Array | None, spec: MVMSpec = IDEAL_MVM
) -> tuple[jax.Array, MVMCounts]:
    """``inputs [..., fan_in]`` through a layer as ``spec`` runs it: DAC, per-tile analog MVM with read noise
    (:func:`analog_matmul`), per-tile ADC, digital sum of the row tiles. Pure: jit, vmap and grad go through
    it. Returns the outputs and the :class:`MVMCounts` of the call; every analog read of the library (the
    chip's, the layer API's, the scenarios') is this function, so what it counts is what the chip books."""
    vectors = jnp.int32(math.prod(inputs.shape[:-1]))

    def vectors_with_nonfinite(values: jax.Array) -> jax.Array:
        return jnp.sum(~jnp.all(jnp.isfinite(values), axis=-1)).astype(jnp.int32)

    nonfinite = None if spec.dac is None and spec.adc is None else vectors_with_nonfinite(inputs)
    dac_clipped = adc_clipped = jnp.int32(0)
    if spec.dac is not None:
        dac_clipped = saturated(inputs, *spec.dac[1:]).astype(jnp.int32)
        inputs = uniform_quantize(inputs, *spec.dac)

    def counts(adc_clipped, nonfinite):
        return MVMCounts(vectors, dac_clipped, jnp.asarray(adc_clipped, jnp.int32), nonfinite)

    if spec.adc is None or not spec.tiles:  # partial sums of ideal tiles add up exactly: one matmul
        outputs = analog_matmul(inputs, stats, key, spec.read_noise_mode, spec.read_noise_rng)
        if nonfinite is None:
            # Without converters, a NaN or inf input makes every output of its vector NaN or inf (IEEE:
            # inf·0 and inf − inf are NaN), so each vector's first output tells, and the pass over the
            # inputs (it cost half a matmul) is saved. Beyond what inputs do, it also counts a read whose
            # first output overflowed float32. A DAC clips inf, and an ADC the outputs: count the inputs.
            nonfinite = (
                vectors_with_nonfinite(inputs) if outputs.shape[-1] == 0 else jnp.sum(~jnp.isfinite(outputs[..., 0]))
            ).astype(jnp.int32)
        if spec.adc is not None:
            adc_clipped = saturated(outputs, spec.adc[1])
            outputs = uniform_quantize(outputs, *spec.adc)
        return outputs, counts(adc_clipped, nonfinite)
    if stats.mean.ndim != 2:  # per-task statistics [..., fan_in, fan_out]: one tile after the other
        return _tiles_one_by_one(inputs, stats, key, spec, counts, nonfinite)
    # Tiles of one size run as one batched product (tile t: its rows of the inputs times its block), each
    # tile's outputs through its own ADC, then the row tiles of every column block summed digitally. One
    # product per size instead of one per tile: XLA runs the loop of small products and in-place adds
    # 2-3x slower on CPU.
    by_size: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
    for block in spec.tiles:
        by_size.setdefault((block[1], block[3]), []).append(block)
    keys = [None] * len(by_size) if key is None else list(jax.random.split(key, len(by_size)))
    columns: dict[int, jax.Array] = {}
    for ((rows, _), blocks), size_key in zip(by_size.items(), keys, strict=True):
        x = jnp.stack([inputs[..., start : start + rows] for start, _, _, _ in blocks])  # [tiles, ..., rows]
        part = WeightStatistics(*(jnp.stack([_tile(stats, b)[i] for b in blocks]) for i in range(2)))
        analog = analog_matmul(x, part, size_key, spec.read_noise_mode, spec.read_noise_rng, _per_tile_product)
        adc_clipped = adc_clipped + saturated(analog, spec.adc[1])
        digital = uniform_quantize(analog, *spec.adc)  # [tiles, ..., cols]
        for index, (_, _, out, _) in enumerate(blocks):
            columns[out] = digital[index] + columns.get(out, 0.0)
    starts = sorted(columns)
    if [start + columns[start].shape[-1] for start in starts[:-1]] == starts[1:]:
        outputs = jnp.concatenate([columns[start] for start in starts], axis=-1)
    else:  # column blocks that do not abut (not made by the chip's layout): add them in place
        outputs = jnp.zeros((*inputs.shape[:-1], stats.mean.shape[-1]), inputs.dtype)
        for start in starts:
            outputs = outputs.at[..., start : start + columns[start].shape[-1]].add(columns[start])
    return outputs, counts(adc_clipped, nonfinite)


def _per_tile_product(inputs: jax.Array, weights: jax.Array) -> jax.Array:
    """``inputs [tiles, ..., rows]`` times ``weights [tiles, rows, cols]``, tile by tile: ``[tiles, ..., cols]``
    (the tile axis leading in all three, as a batched matmul wants it: no transposes)."""
    return jnp.einsum("t...r,trc->t...c", inputs, weights)


def _tiles_one_by_one(inputs, stats, key, spec, counts, nonfinite):
    """The tiled MVM for statistics with leading axes (e.g. one layer per task), tile after tile."""
    keys = [None] * len(spec.tiles) if key is None else list(jax.random.split(key, len(spec.tiles)))
    outputs = jnp.zeros((*inputs.shape[:-1], stats.mean.shape[-1]), inputs.dtype)
    adc_clipped = jnp.int32(0)
    for block, tile_key in zip(spec.tiles, keys, strict=True):
        start, rows, out, cols = block
        analog = analog_matmul(
            inputs[..., start : start + rows], _tile(stats, block), tile_key, spec.read_noise_mode, spec.read_noise_rng
        )
        adc_clipped = adc_clipped + saturated(analog, spec.adc[1])
        outputs = outputs.at[..., out : out + cols].add(uniform_quantize(analog, *spec.adc))
    return outputs, counts(adc_clipped, nonfinite)


def calibration_gains(
    patterns: jax.Array,
    intended: jax.Array,
    stats: WeightStatistics,
    key: jax.Array,
    tiles: tuple[tuple[int, int, int, int], ...],
    per_column: bool,
    rng: str = "threefry",
) -> jax.Array:
    """Drift-compensation gains [fan_in, fan_out] from noisy reads of known binary ``patterns`` [C, fan_in].

    Each pattern b and its complement 1 − b are read (non-negative inputs, so an unsigned DAC can apply
    them) and subtracted: the difference is the read of the zero-mean input 2b − 1, which measures the
    weights' scale without the column sums (there the programming noise of one chip instance, not drift,
    dominates). For every tile (one array's block of the layer) the chip compares what the inputs should
    give, ``(2b − 1) @ intended`` (its digital record), with what the tile returns now
    (:func:`analog_matmul`, read noise included), and takes α = Σ y_ref² / Σ y_ref·y_read over the tile,
    or over each column (``per_column``): the least-squares fit of y_read = y_ref / α, which read noise
    does not bias. Multiplying the tile's outputs by α (here: its weights' statistics) undoes the drift.
    """
    gains = jnp.ones_like(stats.mean)
    keys = jax.random.split(key, 2 * len(tiles)).reshape(len(tiles), 2, -1)
    axis = 0 if per_column else None
    for tile, (key_on, key_off) in zip(tiles, keys, strict=True):
        start, rows, out, cols = tile
        block = (slice(start, start + rows), slice(out, out + cols))
        on = patterns[:, start : start + rows]
        weights = _tile(stats, tile)
        read = analog_matmul(on, weights, key_on, rng=rng) - analog_matmul(1.0 - on, weights, key_off, rng=rng)
        reference = (2.0 * on - 1.0) @ intended[block]
        overlap = jnp.sum(reference * read, axis=axis)
        gain = jnp.where(overlap > 0, jnp.sum(reference * reference, axis=axis) / jnp.maximum(overlap, 1e-30), 1.0)
        gains = gains.at[block].set(jnp.broadcast_to(gain, (rows, cols)))
    return gains
