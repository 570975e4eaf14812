r"""E-prop as functions: eligibility traces, natural e-prop with a learning-signal generator (the robot
scenario's one-shot inner loop, Ortner et al. 2025, arXiv:2405.05141; Scherr et al. 2020, bioRxiv
2020.06.17.156513), and e-prop with random or symmetric feedback of a task loss's output errors
(Bellec et al. 2020, :func:`feedback_eprop`).

A trainee SNN adapts its input and recurrent weights to a new target trajectory with a single
update, whose learning signals come from a second, meta-learned SNN (the learning-signal generator,
LSG) that sees the target:

1. trainee pass 1 with the initial weights (clock input), recording spikes :math:`z` and
   pseudo-derivatives :math:`\psi`;
2. LSG pass on (clock, spike-coded target xyz) → learning signals :math:`L_j(t)`, one per trainee neuron;
3. low-pass presynaptic traces of the inputs that entered each step's crossbar read,
   :math:`\bar e^{in}_i(t) = \alpha \bar e^{in}_i(t-1) + x_i(t)`,
   :math:`\bar e^{rec}_i(t) = \alpha \bar e^{rec}_i(t-1) + z_i(t-1)`; the eligibility trace is
   :math:`e_{ij}(t) = \psi_j(t)\,\bar e_i(t)`;
4. :math:`\Delta W_{ij} = -\eta \sum_t L_j(t)\,\psi_j(t)\,\bar e_i(t)` for ``W_stack = [W_in; W_rec]``
   (the diagonal of the recurrent part stays zero);
5. the update is written (quantized, clipped; on hardware: re-programmed) by an ``update_fn``, and
   the memory that holds ``W_stack`` (software, PCM model or chip) says what pass 2 reads;
6. trainee pass 2 with the per-task weights → the trajectory after learning.

Step 4 never materialises :math:`e_{ij}(t)` (``[B, T, 255, 250]``, 5.7 GB at B = 90): the sum over
time is one contraction ``einsum('bti,btj->bij', traces, L * psi)``.

Two small interfaces make the inner loop composable (Optax style):

* ``update_fn(w_stack, delta_w, key) -> WeightUpdate``: how an update is written, e.g.
  :func:`software_update` (round to multiples of 1/16, clip to ±w_max, straight-through gradients);
* :class:`WeightMemory`: how ``W_stack`` is stored and read, before and after the update:
  :func:`software_memory` (exact), :func:`pcm_memory` (statistical PCM model for hardware-aware
  meta-training), or a chip-backed memory built by the evaluation code from
  :class:`l2l_pcm.chip.Chip` (read statistics before, ``reprogram`` per task after).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from l2l_pcm.chip import (
    IDEAL_MVM,
    AnalogLayer,
    MVMCounts,
    MVMSpec,
    WeightStatistics,
    program_layer,
    read_statistics,
    reprogram_layer,
)
from l2l_pcm.errors import ConfigError
from l2l_pcm.pcm import PCMDevice, quantize
from l2l_pcm.snn import (
    SNNConfig,
    SNNRecord,
    leaky_integrate,
    readout,
    readout_with_reads,
    recurrent_mask,
    run_snn,
    software_statistics,
    stack_weights,
)

__all__ = [
    "WeightUpdate",
    "UpdateFn",
    "WeightMemory",
    "SNNWeights",
    "EpropResult",
    "clip_straight_through",
    "presynaptic_traces",
    "eprop_delta",
    "software_update",
    "software_memory",
    "pcm_memory",
    "learning_signals",
    "natural_eprop",
    "FEEDBACK",
    "FeedbackEpropResult",
    "feedback_matrix",
    "feedback_eprop",
]


class WeightUpdate(NamedTuple):
    """An update as written: per-task weights and what was actually added."""

    weights: jax.Array
    """``[B, n_in + n_rec, n_rec]`` target weights after the update."""
    applied: jax.Array
    """``[B, n_in + n_rec, n_rec]`` the update as written (quantized); zero = device untouched."""
    n_nonzero: jax.Array
    """``[B]`` number of non-zero entries of ``applied`` (a proxy for PCM devices touched)."""


UpdateFn = Callable[[jax.Array, jax.Array, jax.Array], WeightUpdate]
"""``update_fn(w_stack [n, m], delta_w [B, n, m], key) -> WeightUpdate``."""


class WeightMemory(NamedTuple):
    """Where the trainee's ``W_stack`` lives and what a crossbar read of it returns: layers of the chip's
    layer API (:class:`~l2l_pcm.chip.AnalogLayer`: read statistics, how the reads run, and for a chip the
    ledger they are booked on).

    ``read_initial(w_stack [n, m], key) -> (AnalogLayer, carry)``: the layer ([n, m]: one array for all
    tasks) that pass 1 reads, and whatever the memory needs to write the update later (e.g. the programmed
    device state). ``read_updated(carry, update: WeightUpdate, key) -> AnalogLayer`` ([B, n, m]) for pass 2
    (devices the update does not touch keep their state).
    """

    read_initial: Callable[[jax.Array, jax.Array], tuple[AnalogLayer, object]]
    read_updated: Callable[[object, WeightUpdate, jax.Array], AnalogLayer]
    read_readout: Callable[[jax.Array, jax.Array], AnalogLayer] | None = None
    """``read_readout(w_out [n_rec, n_out], key)``: the trainee's readout on PCM too (the authors' code,
    ``lif_step_batch_noise`` in ``online_learning_robot/functional/lif.py``); None = digital readout with exact
    weights."""


class SNNWeights(NamedTuple):
    """Weights of one network: input ``[n_in, n_rec]``, recurrent ``[n_rec, n_rec]``, readout ``[n_rec, n_out]``."""

    w_in: jax.Array
    w_rec: jax.Array
    w_out: jax.Array


class EpropResult(NamedTuple):
    """Everything the inner loop produced; ``B`` = tasks, ``b`` = 1 when pass 1 is shared by all tasks."""

    before: SNNRecord
    """Trainee pass 1, ``[b, T, n_rec]``."""
    after: SNNRecord
    """Trainee pass 2, ``[B, T, n_rec]``."""
    output_before: jax.Array
    """Trainee readout in pass 1, ``[b, T, n_out]``."""
    output_after: jax.Array
    """Trainee readout in pass 2, ``[B, T, n_out]``."""
    lsg_spikes: jax.Array
    """``[B, T, n_lsg]``."""
    learning_signals: jax.Array
    """``[B, T, n_rec]``."""
    delta_w: jax.Array
    """``[B, n_in + n_rec, n_rec]`` the e-prop update before it is written."""
    update: WeightUpdate
    readout_reads: MVMCounts | None = None
    """The :class:`~l2l_pcm.chip.MVMCounts` of both passes' readout reads when the readout is on PCM (None:
    digital); the trainee's are in ``before.reads`` and ``after.reads``."""


# ------------------------------------------------------------------------------------------ pieces
def clip_straight_through(weights: jax.Array, w_max: float) -> jax.Array:
    """Clip to ±w_max in the forward pass, identity in the backward pass (as the PCM model does)."""
    return weights + jax.lax.stop_gradient(jnp.clip(weights, -w_max, w_max) - weights)


def presynaptic_traces(inputs: jax.Array, z: jax.Array, alpha: float) -> jax.Array:
    """``[b, T, n_in + n_rec]``: leaky traces of ``concat([x(t), z(t-1)])``, the vector each step reads
    through ``W_stack`` (``z(-1) = 0``)."""
    z_previous = jnp.pad(z[:, :-1], ((0, 0), (1, 0), (0, 0)))
    batch = z.shape[0]
    x = jnp.broadcast_to(inputs, (batch,) + inputs.shape[1:]).astype(z.dtype)
    return leaky_integrate(jnp.concatenate([x, z_previous], axis=-1), alpha)


def eprop_delta(
    traces: jax.Array, psi: jax.Array, learning_signal: jax.Array, eta: float, mask: jax.Array
) -> jax.Array:
    """``ΔW_ij = -eta · sum_t L_j(t) psi_j(t) ē_i(t)`` per task, times ``mask`` (no self-connections).

    ``traces [b, T, n_pre]`` and ``psi [b, T, n_post]`` may have ``b = 1`` (pass 1 shared by all tasks),
    ``learning_signal`` is ``[B, T, n_post]``. Returns ``[B, n_pre, n_post]``.
    """
    modulated = learning_signal * psi
    if traces.shape[0] == 1:
        delta = jnp.einsum("ti,btj->bij", traces[0], modulated)
    else:
        delta = jnp.einsum("bti,btj->bij", traces, modulated)
    return -eta * delta * mask


def software_update(quantize_step: float | None = 1.0 / 16, w_max: float = 1.0, rounding: str = "nearest") -> UpdateFn:
    """Write an update the way the chip does, in software.

    ``ΔW_q = round(ΔW / step)·step`` (``rounding`` "nearest", the authors' robot update, or "stochastic"
    with the update's key; skipped if ``quantize_step`` is None), ``W' = clip(W + ΔW_q, ±w_max)``;
    rounding and clipping are straight-through so the meta-gradient reaches the LSG even when most
    ``ΔW_q`` are zero.
    """
    if quantize_step is not None and not quantize_step > 0:
        raise ConfigError(f"quantize_step must be > 0 or None, got {quantize_step!r}")
    if not w_max > 0:
        raise ConfigError(f"w_max must be > 0, got {w_max!r}")
    if rounding not in ("nearest", "stochastic"):
        raise ConfigError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")

    def update(w_stack: jax.Array, delta_w: jax.Array, key: jax.Array | None = None) -> WeightUpdate:
        if rounding == "stochastic" and quantize_step is not None and key is None:
            raise ConfigError("stochastic rounding of the update needs a key")
        rounding_key = key if rounding == "stochastic" else None
        applied = delta_w if quantize_step is None else quantize(delta_w, quantize_step, rounding_key)
        weights = clip_straight_through(w_stack + applied, w_max)
        n_nonzero = jnp.sum(jax.lax.stop_gradient(applied) != 0, axis=(-2, -1))
        return WeightUpdate(weights, applied, n_nonzero)

    return update


def software_memory(w_max: float = 1.0) -> WeightMemory:
    """Exact weights clipped to ±w_max, no read noise: the software model meta-training runs on by default."""
    return WeightMemory(
        read_initial=lambda w_stack, key: (AnalogLayer.exact(clip_straight_through(w_stack, w_max)), None),
        read_updated=lambda carry, update, key: AnalogLayer.exact(update.weights),
    )


def pcm_memory(
    device: PCMDevice,
    time_since_programming_s: float,
    mask: jax.Array | None = None,
    seconds_after_update: float = 1.0,
    readout_on_pcm: bool = False,
    spec: MVMSpec = IDEAL_MVM,
    drift_compensation: bool = False,
) -> WeightMemory:
    """Statistical PCM model of the crossbar, for hardware-aware meta-training (straight-through).

    The same pure functions as the chip (:func:`l2l_pcm.chip.program_layer`,
    :func:`l2l_pcm.chip.reprogram_layer`, :func:`l2l_pcm.chip.read_statistics`), so every convention of
    ``device`` applies: pass 1 reads the initial weights programmed once (one draw of programming noise
    and drift exponents for all tasks) and aged ``time_since_programming_s``; the returned statistics
    carry the per-read noise variance, so with a ``read_key`` every MVM gets fresh read noise exactly as
    on the chip. The update re-programs, per task, only the devices its quantized entries change, which
    are read ``seconds_after_update`` later; all others keep their state. Means are straight-through
    (gradient of the exact weights), variances carry no gradient. ``mask`` (e.g. :func:`recurrent_mask`)
    keeps absent synapses at zero. ``readout_on_pcm`` puts ``W_out`` on PCM too (programmed once, read
    with noise at every step). ``spec``: how the crossbar reads run
    (:meth:`l2l_pcm.chip.ChipConfig.software_mvm_spec`). ``drift_compensation``: the oracle ("global")
    compensation of :func:`~l2l_pcm.chip.read_statistics` on every read (the calibrated ones are 1 at the
    training age, :func:`l2l_pcm.robot.model.default_memory`).
    """

    def masked(stats: WeightStatistics) -> WeightStatistics:
        return stats if mask is None else WeightStatistics(stats.mean * mask, stats.variance * mask)

    def straight_through(weights: jax.Array, stats: WeightStatistics) -> WeightStatistics:
        mean = weights + jax.lax.stop_gradient(stats.mean - weights)
        return WeightStatistics(mean, jax.lax.stop_gradient(stats.variance))

    def deployed(weights: jax.Array, key: jax.Array) -> tuple[WeightStatistics, tuple]:
        state = program_layer(device, key, jax.lax.stop_gradient(weights), 0.0)
        stats = read_statistics(device, state, time_since_programming_s, drift_compensation)
        return straight_through(weights, stats), state

    def read_initial(w_stack: jax.Array, key: jax.Array) -> tuple[AnalogLayer, tuple]:
        stats, state = deployed(w_stack, key)
        return AnalogLayer(masked(stats), None, spec), state

    def read_updated(state, update: WeightUpdate, key: jax.Array) -> AnalogLayer:
        def one_task(applied: jax.Array, task_key: jax.Array) -> WeightStatistics:
            applied = jax.lax.stop_gradient(applied)
            new_state, _ = reprogram_layer(device, task_key, state, applied, time_since_programming_s)
            now = time_since_programming_s + seconds_after_update
            return read_statistics(device, new_state, now, drift_compensation)

        stats = jax.vmap(one_task)(update.applied, jax.random.split(key, update.applied.shape[0]))
        return AnalogLayer(masked(straight_through(update.weights, stats)), None, spec)

    def read_readout(w_out: jax.Array, key: jax.Array) -> AnalogLayer:
        return AnalogLayer(deployed(w_out, key)[0], None, spec)

    return WeightMemory(read_initial, read_updated, read_readout if readout_on_pcm else None)


# ----------------------------------------------------------------------------------------- inner loop
def learning_signals(p: SNNConfig, weights: SNNWeights, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Run the LSG (software, exact weights) on ``inputs [B, T, n_in]``; returns (spikes, L ``[B, T, n_out]``)."""
    stats = software_statistics(stack_weights(weights.w_in, weights.w_rec))
    record = run_snn(p, inputs, stats)
    return record.z, readout(p, record.z, weights.w_out)


def natural_eprop(
    trainee: SNNConfig,
    lsg: SNNConfig,
    trainee_weights: SNNWeights,
    lsg_weights: SNNWeights,
    clock: jax.Array,
    lsg_inputs: jax.Array,
    key: jax.Array,
    *,
    eta: float = 1e-4,
    w_max: float = 1.0,
    update_fn: UpdateFn | None = None,
    memory: WeightMemory | None = None,
    read_key: jax.Array | None = None,
) -> EpropResult:
    """The inner loop (steps 1-6 of the module docstring) for a batch of ``B`` tasks.

    ``clock [T, n_in]`` is the trainee input (the same for every task), ``lsg_inputs [B, T, n_in_lsg]``
    the LSG input. The update is computed for ``W_stack`` clipped to ±w_max (straight-through); the
    memory receives the unclipped weights, and each memory writes |w| > w_max its own way (clipped, or
    the authors' reflection of :attr:`l2l_pcm.pcm.PCMDevice.initial_programming`).
    ``update_fn`` defaults to ``software_update(1/16, w_max)``, ``memory`` to :func:`software_memory`.
    ``key`` drives the update and the memory (programming noise); ``read_key`` (None = no read noise)
    the per-read noise in both trainee passes, which run as the memory's layers say; reads of a chip's
    layers are booked on it. Pass 1 runs once
    for all tasks when it is deterministic (shared weights, no read noise).
    """
    if lsg.n_out != trainee.n_rec:
        raise ConfigError(f"LSG n_out ({lsg.n_out}) must equal the trainee's n_rec ({trainee.n_rec})")
    update_fn = software_update(w_max=w_max) if update_fn is None else update_fn
    memory = software_memory(w_max) if memory is None else memory
    batch, n_steps = lsg_inputs.shape[:2]
    key_before, key_update, key_after, key_readout = jax.random.split(key, 4)
    read_before, read_after, read_out_before, read_out_after = (
        (None,) * 4 if read_key is None else tuple(jax.random.split(read_key, 4))
    )

    raw_stack = stack_weights(trainee_weights.w_in, trainee_weights.w_rec)
    w_stack = clip_straight_through(raw_stack, w_max)
    # the memory sees the weights as meta-trained: how |w| > w_max is written is the device's business
    layer_before, carry = memory.read_initial(raw_stack, key_before)
    shared = layer_before.stats.mean.ndim == 2 and read_before is None
    clock_batch = jnp.broadcast_to(clock, (1 if shared else batch,) + clock.shape)
    before = run_snn(trainee, clock_batch, layer_before.stats, read_before, layer_before.spec)

    lsg_spikes, signal = learning_signals(lsg, lsg_weights, lsg_inputs)
    traces = presynaptic_traces(clock_batch, before.z, trainee.alpha)
    mask = recurrent_mask(trainee, w_stack.dtype)
    delta_w = eprop_delta(traces, before.psi, signal, eta, mask)

    update = update_fn(w_stack, delta_w, key_update)
    layer_after = memory.read_updated(carry, update, key_after)
    clock_all = jnp.broadcast_to(clock, (batch,) + clock.shape)
    after = run_snn(trainee, clock_all, layer_after.stats, read_after, layer_after.spec)
    layer_before.book(before.reads)  # on a chip's layers: its counters, converters and energy
    layer_after.book(after.reads)
    w_out, readout_spec = trainee_weights.w_out, IDEAL_MVM
    if memory.read_readout is not None:
        readout_layer = memory.read_readout(w_out, key_readout)
        w_out, readout_spec = readout_layer.stats, readout_layer.spec

    output_before, reads_before = readout_with_reads(trainee, before.z, w_out, read_out_before, readout_spec)
    output_after, reads_after = readout_with_reads(trainee, after.z, w_out, read_out_after, readout_spec)
    if memory.read_readout is not None:
        readout_layer.book(reads_before.plus(reads_after))
    return EpropResult(
        before=before,
        after=after,
        output_before=output_before,
        output_after=output_after,
        lsg_spikes=lsg_spikes,
        learning_signals=signal,
        delta_w=delta_w,
        update=update,
        readout_reads=None if reads_before is None else reads_before.plus(reads_after),
    )


# ------------------------------------------------------------------------------ e-prop with feedback
FEEDBACK = ("symmetric", "random")


class FeedbackEpropResult(NamedTuple):
    loss: jax.Array
    """The task loss of this pass."""
    outputs: jax.Array
    """Readout ``[B, T, n_out]``."""
    record: SNNRecord
    """Spikes, pseudo-derivatives and crossbar reads of the pass."""
    delta_stack: jax.Array
    """``ΔW_stack [n_in + n_rec, n_rec]``, summed over the batch (no self-connections)."""
    delta_out: jax.Array
    """``ΔW_out [n_rec, n_out]``: −eta times the loss's exact gradient."""


def feedback_matrix(p: SNNConfig, feedback: str, w_out: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """``B [n_rec, n_out]`` that sends output errors to the neurons: ``W_out`` itself ("symmetric", Bellec et
    al. 2020's symmetric e-prop) or a fixed N(0, 1/n_rec) matrix drawn from ``key`` ("random" e-prop, as in
    random feedback alignment, Lillicrap et al. 2016)."""
    if feedback == "symmetric":
        return w_out
    if feedback == "random":
        if key is None:
            raise ConfigError("random feedback needs a key (draw it once and keep it for the whole training)")
        return jax.random.normal(key, (p.n_rec, p.n_out), w_out.dtype) / jnp.sqrt(p.n_rec)
    raise ConfigError(f"feedback must be one of {FEEDBACK}, got {feedback!r}")


def feedback_eprop(
    p: SNNConfig,
    recurrent: AnalogLayer,
    w_out: jax.Array,
    inputs: jax.Array,
    loss_fn: Callable[[jax.Array], jax.Array],
    feedback: jax.Array,
    *,
    eta: float,
    read_key: jax.Array | None = None,
) -> FeedbackEpropResult:
    r"""E-prop for any task loss of the readout (Bellec et al. 2020, Nat. Commun. 11:3625, eqs. 1-3):
    one forward pass of ``inputs [B, T, n_in]`` through the recurrent layer ``W_stack`` (an
    :class:`~l2l_pcm.chip.AnalogLayer`: exact, or a chip's, read as its spec says; its reads are returned
    in ``record.reads`` for :meth:`AnalogLayer.book`), then

    * output errors :math:`E_k(t) = \partial\,\mathrm{loss} / \partial y_k(t)` of ``loss_fn(y)``;
    * learning signals :math:`L_j(t) = \sum_k B_{jk} E_k(t)` with ``feedback`` = B (:func:`feedback_matrix`),
      filtered backwards by the readout's leak, :math:`\bar L_j(t) = \sum_{t' \ge t} \kappa^{t'-t} L_j(t')`
      (the exact weighting of the leaky readout, applied to the signal instead of to every trace);
    * :math:`\Delta W_{ij} = -\eta \sum_t \bar L_j(t)\,\psi_j(t)\,\bar e_i(t)` (:func:`eprop_delta`),
      and the readout's exact gradient step.

    Online in the forward direction but for the backward filter of :math:`L`, which makes the sum equal to
    filtering every eligibility trace forwards, as the paper does."""
    record = run_snn(p, inputs, recurrent.stats, read_key, recurrent.spec)
    outputs, readout_vjp = jax.vjp(lambda w: readout(p, record.z, w), w_out)
    loss, errors = jax.value_and_grad(loss_fn)(outputs)
    (grad_out,) = readout_vjp(errors)  # the readout's exact gradient, from the same errors
    filtered = leaky_integrate((errors @ feedback.T)[:, ::-1], p.kappa)[:, ::-1]
    traces = presynaptic_traces(inputs, record.z, p.alpha)
    delta = eprop_delta(traces, record.psi, filtered, eta, recurrent_mask(p, traces.dtype)).sum(axis=0)
    return FeedbackEpropResult(loss, outputs, record, delta, -eta * grad_out)
