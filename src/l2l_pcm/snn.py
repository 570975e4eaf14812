r"""Recurrent spiking networks as parts: LIF / ALIF neurons as pure step functions and a thin scan.

Any recurrent spiking task builds on these (the robot scenario is one; ``examples/snn_pattern_on_chip.py``
another). Both networks of the robot scenario (Ortner et al. 2025, arXiv:2405.05141; sizes as in the authors'
code, github.com/IGITUGraz/RapidLearningInMemoryComputing, ``online_learning_robot/main.py`` defaults) -- the
trainee (250 LIF, on the chip) and the learning-signal generator (LSG, 800 neurons of which 30 % adapt their
threshold) -- are the same recurrent network with different constants (:class:`SNNConfig`). One time step
``t`` (dt = 1 ms) maps the input spikes :math:`x(t)` and the previous step's state to the new state:

.. math::

    b_j(t) &= \rho\, b_j(t-1) + z_j(t-1), \qquad A_j(t) = v_{th} + \beta_j b_j(t)

    v_j(t) &= \alpha\, v_j(t-1) + \sum_i W^{in}_{ij} x_i(t) + \sum_{i \ne j} W^{rec}_{ij} z_i(t-1)
              - A_j(t)\, z_j(t-1)

    z_j(t) &= H\!\left(\frac{v_j(t) - A_j(t)}{v_{th}}\right) \text{ unless refractory}

    y_k(t) &= \kappa\, y_k(t-1) + \sum_j W^{out}_{jk} z_j(t)

with :math:`\alpha = e^{-dt/\tau_m}`, :math:`\kappa = e^{-dt/\tau_{out}}`,
:math:`\rho = e^{-dt/\tau_a}`; :math:`\beta_j = 0` for LIF neurons (then :math:`A_j = v_{th}`, the
paper's LIF equation) and :math:`\beta` (1.6) for the ALIF neurons, which are the last
``n_alif`` neurons. The recurrence and the reset use the spikes of the *previous* step, the readout
those of the current step (the authors' ``lif_step``, ``online_learning_robot/functional/lif.py`` in
github.com/IGITUGraz/RapidLearningInMemoryComputing). For ALIF neurons the reset subtracts
the threshold in force at the step, :math:`A_j(t)`, as the authors' code does.

Refractoriness: a counter :math:`r_j(t) = \mathrm{clip}(r_j(t-1) + n_{ref} z_j(t) - 1, 0, n_{ref})`
(no gradient) blocks spikes while :math:`r_j(t-1) > 0`, so a spike at step ``t`` is followed by
``n_ref - 1`` silent steps and the shortest inter-spike interval is ``n_ref`` steps.

Pseudo-derivative (Bellec et al. 2020): :math:`H` is a Heaviside in the forward pass; its derivative
with respect to :math:`x = (v - A)/v_{th}` is :math:`\gamma \max(0, 1 - |x|)`, so with respect to the
membrane potential

.. math:: \psi_j(t) = \frac{\gamma}{v_{th}} \max\left(0, 1 - \left|\frac{v_j(t) - A_j(t)}{v_{th}}\right|\right),

zero during refractoriness (:func:`pseudo_derivative`, recorded for e-prop). The gradient also flows
into the adaptive threshold through :math:`x`.

Synaptic input on the chip: the input and recurrent weights are one stacked matrix
:math:`W_{stack} = [W^{in}; W^{rec} \odot (1 - I)]` of shape ``[n_in + n_rec, n_rec]``
(5 + 250 = 255 rows fit one 256×256 crossbar), and every step is *one* crossbar read
``analog_mvm(concat([x(t), z(t-1)]), stats, key_t, spec)``. In software ``stats`` is the weights with
zero variance and no key; on the chip the caller passes the chip's read statistics and a key. Weights
may carry a leading batch axis (one weight set per task after the inner update).

The time loop is one :func:`jax.lax.scan` over :func:`neuron_step`. The readout is linear, so it is
computed after the loop for all steps at once: ``y = leaky_integrate(z @ W_out, kappa)``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from l2l_pcm.chip import IDEAL_MVM, MVMCounts, MVMSpec, WeightStatistics, analog_mvm
from l2l_pcm.errors import ConfigError, check_int, check_number

__all__ = [
    "SNNConfig",
    "TraineeConfig",
    "LSGConfig",
    "SNNState",
    "SNNRecord",
    "READOUT_INITS",
    "spike",
    "pseudo_derivative",
    "neuron_step",
    "initial_state",
    "leaky_integrate",
    "clock_input",
    "recurrent_mask",
    "stack_weights",
    "software_statistics",
    "synaptic_currents",
    "run_snn",
    "readout",
    "init_weights",
]

READOUT_INITS = ("scaled_normal", "glorot_uniform")


@dataclasses.dataclass(frozen=True)
class SNNConfig:
    """Sizes and constants of one recurrent spiking network (frozen, hashable: a static jit argument)."""

    n_in: int
    """Input neurons (rows of ``W_in``)."""
    n_rec: int
    """Recurrent neurons."""
    n_out: int
    """Leaky readout units."""
    threshold: float
    """Base firing threshold v_th."""
    tau_m_ms: float = 20.0
    """Membrane time constant; alpha = exp(-dt / tau_m)."""
    tau_out_ms: float = 20.0
    """Readout time constant; kappa = exp(-dt / tau_out)."""
    dt_ms: float = 1.0
    """Simulation step."""
    n_refractory: int = 5
    """Shortest inter-spike interval in steps (0 = no refractoriness)."""
    damping: float = 0.3
    """Height gamma of the triangular pseudo-derivative."""
    alif_fraction: float = 0.0
    """Fraction of adaptive (ALIF) neurons; they are the last ``n_alif`` neurons."""
    beta: float = 1.6
    """Threshold increase per unit of adaptation b (ALIF only)."""
    tau_adapt_ms: float = 600.0
    """Adaptation time constant; rho = exp(-dt / tau_adapt) (ALIF only)."""
    readout_init: str = "scaled_normal"
    """``scaled_normal``: N(0,1)/sqrt(n_rec)·(1-kappa); ``glorot_uniform``: U(±sqrt(6/(n_rec+n_out)))."""

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("n_in", "n_rec", "n_out"):
            check_int(f"{name}.{field}", getattr(self, field), 1)
        check_int(f"{name}.n_refractory", self.n_refractory, 0)
        for field in ("threshold", "tau_m_ms", "tau_out_ms", "dt_ms", "tau_adapt_ms"):
            check_number(f"{name}.{field}", getattr(self, field))
        for field in ("damping", "beta"):
            check_number(f"{name}.{field}", getattr(self, field), strict=False)
        check_number(f"{name}.alif_fraction", self.alif_fraction, strict=False)
        if self.alif_fraction > 1:
            raise ConfigError(f"{name}.alif_fraction must be in [0, 1], got {self.alif_fraction!r}")
        if self.readout_init not in READOUT_INITS:
            raise ConfigError(f"{name}.readout_init must be one of {READOUT_INITS}, got {self.readout_init!r}")

    @property
    def alpha(self) -> float:
        """Membrane decay per step."""
        return math.exp(-self.dt_ms / self.tau_m_ms)

    @property
    def kappa(self) -> float:
        """Readout decay per step."""
        return math.exp(-self.dt_ms / self.tau_out_ms)

    @property
    def rho(self) -> float:
        """Adaptation decay per step."""
        return math.exp(-self.dt_ms / self.tau_adapt_ms)

    @property
    def n_alif(self) -> int:
        """Number of ALIF neurons, ``floor(alif_fraction * n_rec)`` as in the authors' code."""
        return math.floor(self.alif_fraction * self.n_rec + 1e-9)

    @property
    def n_stack(self) -> int:
        """Rows of the stacked matrix ``[W_in; W_rec]``."""
        return self.n_in + self.n_rec

    def rate_hz(self, spikes_per_step: jax.Array) -> jax.Array:
        """Convert a spike probability per step into a firing rate in Hz."""
        return spikes_per_step * (1000.0 / self.dt_ms)


@dataclasses.dataclass(frozen=True)
class TraineeConfig(SNNConfig):
    """The trainee: 250 LIF neurons driven by 5 clock inputs, 2 readouts = joint angular velocities."""

    n_in: int = 5
    n_rec: int = 250
    n_out: int = 2
    threshold: float = 0.6


@dataclasses.dataclass(frozen=True)
class LSGConfig(SNNConfig):
    """The learning-signal generator: 800 neurons (30 % ALIF), inputs = clock 5 + 3×16 target bits.

    Its 250 readouts are the learning signals, one per trainee neuron.
    """

    n_in: int = 53
    n_rec: int = 800
    n_out: int = 250
    threshold: float = 1.3
    alif_fraction: float = 0.3
    readout_init: str = "glorot_uniform"


class SNNState(NamedTuple):
    """State after a time step; every array is ``[B, n_rec]``."""

    v: jax.Array
    """Membrane potential v(t)."""
    z: jax.Array
    """Spikes z(t) (0/1)."""
    refractory: jax.Array
    """Refractory counter r(t) (float, no gradient)."""
    b: jax.Array
    """Threshold adaptation b(t) (only ALIF neurons use it; stays zero in networks without ALIF)."""


class SNNRecord(NamedTuple):
    """What a run records, ``[B, T, n_rec]`` each, and what its crossbar reads did."""

    z: jax.Array
    """Spikes."""
    psi: jax.Array
    """Pseudo-derivatives dz/dv (zero during refractoriness)."""
    reads: MVMCounts | None = None
    """The :class:`~l2l_pcm.chip.MVMCounts` of every step's crossbar read, summed over steps and tasks: what a
    chip books for the run (:meth:`l2l_pcm.chip.Chip.book_mvms`)."""


# --------------------------------------------------------------------------------------- spike function
def _triangle(x: jax.Array, damping: float) -> jax.Array:
    return damping * jnp.maximum(0.0, 1.0 - jnp.abs(x))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def spike(x: jax.Array, damping: float) -> jax.Array:
    """Heaviside ``H(x)`` (1 for x > 0) of ``x = (v - A)/v_th``, with derivative ``gamma max(0, 1 - |x|)``."""
    return (x > 0).astype(x.dtype)


@spike.defjvp
def _spike_jvp(damping: float, primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
    (x,), (dx,) = primals, tangents
    return spike(x, damping), _triangle(x, damping) * dx


def pseudo_derivative(v: jax.Array, threshold: jax.Array | float, p: SNNConfig) -> jax.Array:
    """``psi = gamma/v_th · max(0, 1 - |(v - A)/v_th|)``: the derivative of :func:`spike` w.r.t. ``v``."""
    return _triangle((v - threshold) / p.threshold, p.damping) / p.threshold


# ------------------------------------------------------------------------------------------- dynamics
def _adaptation_strength(p: SNNConfig) -> np.ndarray:
    """beta_j: 0 for the first ``n_rec - n_alif`` (LIF) neurons, ``beta`` for the ALIF ones."""
    return np.concatenate([np.zeros(p.n_rec - p.n_alif), np.full(p.n_alif, p.beta)])


def initial_state(p: SNNConfig, batch: int, dtype: jnp.dtype = jnp.float32) -> SNNState:
    """All-zero state (at rest, no spikes, not refractory, no adaptation)."""
    zeros = jnp.zeros((batch, p.n_rec), dtype)
    return SNNState(zeros, zeros, zeros, zeros)


def neuron_step(state: SNNState, current: jax.Array, p: SNNConfig) -> tuple[SNNState, jax.Array]:
    """One step of the equations in the module docstring; returns (new state, psi(t)).

    ``current`` ``[B, n_rec]`` is the synaptic input of this step,
    ``sum_i W_in x_i(t) + sum_{i!=j} W_rec z_i(t-1)``. LIF is the special case without ALIF neurons.
    """
    if p.n_alif:
        b = p.rho * state.b + state.z
        threshold = p.threshold + jnp.asarray(_adaptation_strength(p), b.dtype) * b
    else:
        b, threshold = state.b, p.threshold
    v = p.alpha * state.v + current - threshold * state.z
    refractory = state.refractory > 0
    x = (v - threshold) / p.threshold
    z = jnp.where(refractory, 0.0, spike(x, p.damping))
    psi = jnp.where(refractory, 0.0, pseudo_derivative(v, threshold, p))
    counter = jnp.clip(state.refractory + p.n_refractory * jax.lax.stop_gradient(z) - 1.0, 0.0, p.n_refractory)
    return SNNState(v, z, jax.lax.stop_gradient(counter), b), psi


@functools.partial(jax.jit, static_argnames="decay")
def leaky_integrate(inputs: jax.Array, decay: float) -> jax.Array:
    """``out(t) = decay · out(t-1) + inputs(t)`` along axis 1 of ``[B, T, n]``, ``out(-1) = 0``.

    The leaky readout (``decay = kappa``) and the e-prop presynaptic traces (``decay = alpha``) are
    both this filter.
    """

    def step(carry: jax.Array, u: jax.Array) -> tuple[jax.Array, jax.Array]:
        carry = decay * carry + u
        return carry, carry

    _, out = jax.lax.scan(step, jnp.zeros_like(inputs[:, 0]), jnp.swapaxes(inputs, 0, 1))
    return jnp.swapaxes(out, 0, 1)


def clock_input(n_steps: int = 249, n_neurons: int = 5, interval_steps: int = 50, period_steps: int = 10) -> np.ndarray:
    """Clock spikes ``[n_steps, n_neurons]`` (float32): neuron k spikes every ``period_steps`` steps
    during steps ``interval_steps·k … interval_steps·(k+1) - 1`` (50k, 50k+10, …, 50k+40 by default),
    cycling back to neuron 0 after the last one (the authors' ``clock_signal``,
    ``online_learning_robot/datasets/utils/clock_signal.py`` in github.com/IGITUGraz/RapidLearningInMemoryComputing).
    """
    for name, value in (
        ("n_steps", n_steps),
        ("n_neurons", n_neurons),
        ("interval_steps", interval_steps),
        ("period_steps", period_steps),
    ):
        check_int(f"clock_input {name}", value, 1)
    t = np.arange(n_steps)
    active = (t // interval_steps) % n_neurons
    fires = (t % interval_steps) % period_steps == 0
    clock = np.zeros((n_steps, n_neurons), np.float32)
    clock[t[fires], active[fires]] = 1.0
    return clock


# ------------------------------------------------------------------------------------ synaptic input
def recurrent_mask(p: SNNConfig, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """``[n_in + n_rec, n_rec]`` mask of the stacked matrix: ones, except zeros on the W_rec diagonal."""
    return jnp.concatenate([jnp.ones((p.n_in, p.n_rec), dtype), 1.0 - jnp.eye(p.n_rec, dtype=dtype)])


def stack_weights(w_in: jax.Array, w_rec: jax.Array) -> jax.Array:
    """``W_stack = [W_in; W_rec ⊙ (1 - I)]`` (no self-connections), the matrix one crossbar holds."""
    n_rec = w_rec.shape[-1]
    return jnp.concatenate([w_in, w_rec * (1.0 - jnp.eye(n_rec, dtype=w_rec.dtype))], axis=-2)


def software_statistics(weights: jax.Array) -> WeightStatistics:
    """Exact weights: the mean is the weights, the read-noise variance is zero."""
    return WeightStatistics(weights, jnp.zeros_like(weights))


def synaptic_currents(
    inputs: jax.Array, stats: WeightStatistics, key: jax.Array | None, spec: MVMSpec = IDEAL_MVM
) -> jax.Array:
    """``inputs [B, fan_in]`` through one crossbar read as ``spec`` runs it (:func:`l2l_pcm.chip.analog_mvm`:
    tiles, converters, read noise) on shared weights ``[fan_in, fan_out]``, or per task (``vmap``) on
    weights ``[B, fan_in, fan_out]``, each task with its own read-noise key.
    """

    return _synaptic_read(inputs, stats, key, spec)[0]


def _synaptic_read(
    inputs: jax.Array, stats: WeightStatistics, key: jax.Array | None, spec: MVMSpec
) -> tuple[jax.Array, MVMCounts]:
    """:func:`synaptic_currents` and the :class:`MVMCounts` of the read, summed over the tasks."""

    def read(x, s, k):
        return analog_mvm(x, s, k, spec)

    if stats.mean.ndim == 2:
        return read(inputs, stats, key)
    if key is None:
        current, counts = jax.vmap(lambda x, s: read(x, s, None))(inputs, stats)
    else:
        current, counts = jax.vmap(read)(inputs, stats, jax.random.split(key, inputs.shape[0]))
    return current, MVMCounts(*(jnp.sum(field) for field in counts))


def _scan(
    p: SNNConfig,
    spec: MVMSpec,
    stats: WeightStatistics,
    xs: jax.Array,
    keys: jax.Array | None,
    offsets: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The time loop, time-major: ``xs [T, B, n_in]`` -> ``(z, psi)`` ``[T, B, n_rec]``.

    ``offsets [T, B, n_rec]`` (optional) are added to the synaptic currents; they are zero in value
    and only exist so that the backward pass can hand out ``dL/d current(t)`` (see :func:`_simulate`).
    """

    def step(state: SNNState, inputs: tuple) -> tuple[SNNState, tuple[jax.Array, jax.Array, MVMCounts]]:
        x, step_key, offset = inputs
        current, counts = _synaptic_read(jnp.concatenate([x, state.z], axis=-1), stats, step_key, spec)
        if offset is not None:
            current = current + offset
        state, psi = neuron_step(state, current, p)
        return state, (state.z, psi, counts)

    _, (z, psi, counts) = jax.lax.scan(step, initial_state(p, xs.shape[1], xs.dtype), (xs, keys, offsets))
    return z, psi, MVMCounts(*(jnp.sum(field) for field in counts))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _simulate(
    p: SNNConfig, spec: MVMSpec, mean: jax.Array, variance: jax.Array, xs: jax.Array, keys: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    r""":func:`_scan` on per-task weights ``mean [B, n_in + n_rec, n_rec]``, with a cheaper weight gradient.

    Autodiff of the scan would accumulate :math:`\partial L/\partial W` in a carry at every step,
    a ``[B, 255, 250]`` read-modify-write per step (about 1.4x the cost of the pass at B = 90). Because
    ``current(t) = pre(t) @ W``, the gradient is :math:`\sum_t pre(t)^T \, \partial L/\partial current(t)`,
    one contraction over all steps once the backward scan has produced the current cotangents. (For
    shared ``[n, m]`` weights the per-step accumulation is a cheap small matmul and plain autodiff
    measured faster.) The read-noise variance is hardware data and gets no gradient.
    """
    return _scan(p, spec, WeightStatistics(mean, variance), xs, keys)


def _simulate_fwd(p, spec, mean, variance, xs, keys):
    stats = WeightStatistics(mean, variance)
    offsets = jnp.zeros(xs.shape[:2] + (p.n_rec,), xs.dtype)

    def run(x, c):  # the read counts ride along as aux: integers carry no gradient
        z, psi, counts = _scan(p, spec, stats, x, keys, c)
        return (z, psi), counts

    out, backward, counts = jax.vjp(run, xs, offsets, has_aux=True)
    return (*out, counts), (backward, xs, out[0])


def _simulate_bwd(p, spec, residuals, cotangents):
    backward, xs, z = residuals
    d_xs, d_current = backward(cotangents[:2])
    presynaptic = jnp.concatenate([xs, jnp.pad(z[:-1], ((1, 0), (0, 0), (0, 0)))], axis=-1)
    return jnp.einsum("tbi,tbj->bij", presynaptic, d_current), None, d_xs, None


_simulate.defvjp(_simulate_fwd, _simulate_bwd)


@functools.partial(jax.jit, static_argnames=("p", "spec"))
def run_snn(
    p: SNNConfig,
    inputs: jax.Array,
    stats: WeightStatistics,
    key: jax.Array | None = None,
    spec: MVMSpec = IDEAL_MVM,
) -> SNNRecord:
    """Simulate ``inputs [B, T, n_in]`` from rest; one :func:`jax.lax.scan` over :func:`neuron_step`.

    ``stats`` describes ``W_stack`` (``[n_in + n_rec, n_rec]`` or per task ``[B, ...]``); every step
    reads it once with ``concat([x(t), z(t-1)])``. ``key`` (or None: no read noise) is split into
    one key per step; ``spec`` says how the crossbar runs the reads (:meth:`l2l_pcm.chip.Chip.mvm_spec`).
    Differentiable w.r.t. ``stats.mean`` and ``inputs``. Jitted (``p`` and ``spec`` static), so eager
    callers such as a chip-backed evaluation compile it once per shape.
    """
    batch, n_steps, n_in = inputs.shape
    if n_in != p.n_in or stats.mean.shape[-2:] != (p.n_stack, p.n_rec):
        raise ConfigError(
            f"run_snn: inputs {tuple(inputs.shape)} / weights {tuple(stats.mean.shape)} do not match "
            f"n_in={p.n_in}, W_stack [{p.n_stack}, {p.n_rec}]"
        )
    if stats.mean.ndim == 3 and stats.mean.shape[0] != batch:
        raise ConfigError(f"run_snn: {stats.mean.shape[0]} weight sets for a batch of {batch}")
    xs = jnp.swapaxes(inputs.astype(stats.mean.dtype), 0, 1)
    keys = None if key is None else jax.random.split(key, n_steps)
    if stats.mean.ndim == 3:
        z, psi, reads = _simulate(p, spec, stats.mean, stats.variance, xs, keys)
    else:
        z, psi, reads = _scan(p, spec, stats, xs, keys)
    return SNNRecord(jnp.swapaxes(z, 0, 1), jnp.swapaxes(psi, 0, 1), reads)


def readout(
    p: SNNConfig,
    z: jax.Array,
    w_out: jax.Array | WeightStatistics,
    read_key: jax.Array | None = None,
    spec: MVMSpec = IDEAL_MVM,
) -> jax.Array:
    """Leaky readout ``y(t) = kappa y(t-1) + z(t) @ W_out`` for ``z [B, T, n_rec]`` -> ``[B, T, n_out]``.

    ``w_out`` as read statistics (a readout on PCM): every step's product is an analog MVM with read
    noise from ``read_key``, run as ``spec`` says (:func:`l2l_pcm.chip.analog_mvm`).
    """
    return readout_with_reads(p, z, w_out, read_key, spec)[0]


def readout_with_reads(
    p: SNNConfig,
    z: jax.Array,
    w_out: jax.Array | WeightStatistics,
    read_key: jax.Array | None = None,
    spec: MVMSpec = IDEAL_MVM,
) -> tuple[jax.Array, MVMCounts | None]:
    """:func:`readout` and, for a readout on PCM, the :class:`MVMCounts` of its reads (None: digital)."""
    if isinstance(w_out, WeightStatistics):
        outputs, counts = analog_mvm(z, w_out, read_key, spec)
        return leaky_integrate(outputs, p.kappa), counts
    return leaky_integrate(z @ w_out, p.kappa), None


def init_weights(key: jax.Array, p: SNNConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(W_in, W_rec, W_out)`` as in the authors' ``L2LTraineeLSG.init_weights``
    (github.com/IGITUGraz/RapidLearningInMemoryComputing, ``online_learning_robot/model/l2l_trainee_lsg.py``):
    N(0,1)/sqrt(fan_in) for W_in and W_rec (zero diagonal), W_out per ``p.readout_init``. Shapes
    ``[n_in, n_rec]``, ``[n_rec, n_rec]``, ``[n_rec, n_out]``.
    """
    k_in, k_rec, k_out = jax.random.split(key, 3)
    w_in = jax.random.normal(k_in, (p.n_in, p.n_rec)) / math.sqrt(p.n_in)
    w_rec = jax.random.normal(k_rec, (p.n_rec, p.n_rec)) / math.sqrt(p.n_rec) * (1.0 - jnp.eye(p.n_rec))
    if p.readout_init == "glorot_uniform":
        limit = math.sqrt(6.0 / (p.n_rec + p.n_out))
        w_out = jax.random.uniform(k_out, (p.n_rec, p.n_out), minval=-limit, maxval=limit)
    else:
        w_out = jax.random.normal(k_out, (p.n_rec, p.n_out)) / math.sqrt(p.n_rec) * (1.0 - p.kappa)
    return w_in, w_rec, w_out
