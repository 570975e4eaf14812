"""Tests of the robot scenario's SNNs, natural e-prop and meta-loss (l2l_pcm.snn / .eprop / .model).

Spiking dynamics are compared in float64 (``x64`` fixture): a single flipped spike would otherwise
cascade. All networks are tiny and the sequences short.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2l_pcm import snn
from l2l_pcm.chip import IDEAL_MVM, Chip, ChipConfig, UpdateConfig
from l2l_pcm.chip.crossbar import WeightStatistics
from l2l_pcm.eprop import (
    SNNWeights,
    WeightMemory,
    WeightUpdate,
    eprop_delta,
    natural_eprop,
    pcm_memory,
    presynaptic_traces,
    software_update,
)
from l2l_pcm.errors import ConfigError
from l2l_pcm.pcm import PCMDevice
from l2l_pcm.robot.model import RobotConfig, init_params, inner_loop, make_optimizer, meta_loss, train_step
from l2l_pcm.robot.tasks import sample_trajectories
from l2l_pcm.snn import (
    LSGConfig,
    SNNConfig,
    SNNState,
    TraineeConfig,
    clock_input,
    init_weights,
    neuron_step,
    pseudo_derivative,
    recurrent_mask,
    run_snn,
    software_statistics,
    spike,
    stack_weights,
    synaptic_currents,
)

TINY = SNNConfig(n_in=3, n_rec=4, n_out=2, threshold=0.6)


def tiny_robot(**changes) -> RobotConfig:
    """Trainee 6 LIF, LSG 8 neurons (2 ALIF), 2-bit target code, 40 steps, batch 3."""
    fields = dict(
        trainee=TraineeConfig(n_in=2, n_rec=6),
        lsg=LSGConfig(n_in=2 + 3 * 2, n_rec=8, n_out=6, alif_fraction=0.25),
        n_steps=40,
        clock_interval_steps=10,
        clock_period_steps=3,
        xyz_bits=2,
        batch=3,
    )
    fields.update(changes)
    return RobotConfig(**fields)


def random_network(key, p: SNNConfig, scale_in: float = 1.0, scale_rec: float = 0.6):
    k_in, k_rec, k_x = jax.random.split(key, 3)
    w_in = scale_in * jax.random.normal(k_in, (p.n_in, p.n_rec))
    w_rec = scale_rec * jax.random.normal(k_rec, (p.n_rec, p.n_rec))
    return w_in, w_rec, k_x


def reference_run(p: SNNConfig, x: np.ndarray, w_in: np.ndarray, w_rec: np.ndarray):
    """The LIF equations of the authors' lif_step with explicit loops over time and neurons (one sample)."""
    n, n_steps = p.n_rec, x.shape[0]
    beta = [p.beta if j >= n - p.n_alif else 0.0 for j in range(n)]
    v, z, r, b = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    zs, psis = np.zeros((n_steps, n)), np.zeros((n_steps, n))
    for t in range(n_steps):
        v_new, z_new, r_new, b_new = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
        for j in range(n):
            b_new[j] = p.rho * b[j] + z[j] if beta[j] else 0.0
            threshold = p.threshold + beta[j] * b_new[j]
            current = sum(w_in[i, j] * x[t, i] for i in range(p.n_in))
            current += sum(w_rec[i, j] * z[i] for i in range(n) if i != j)
            v_new[j] = p.alpha * v[j] + current - threshold * z[j]
            scaled = (v_new[j] - threshold) / p.threshold
            if r[j] <= 0:
                z_new[j] = float(scaled > 0)
                psis[t, j] = p.damping / p.threshold * max(0.0, 1.0 - abs(scaled))
            r_new[j] = min(max(r[j] + p.n_refractory * z_new[j] - 1, 0), p.n_refractory)
        v, z, r, b = v_new, z_new, r_new, b_new
        zs[t] = z
    return zs, psis


# ------------------------------------------------------------------------------------------- dynamics
@pytest.mark.parametrize("alif_fraction", [0.0, 0.5])
def test_run_matches_explicit_loops(x64, key, alif_fraction):
    p = SNNConfig(n_in=3, n_rec=4, n_out=2, threshold=0.6, alif_fraction=alif_fraction)
    w_in, w_rec, k_x = random_network(key, p)
    x = jax.random.bernoulli(k_x, 0.4, (2, 30, p.n_in)).astype(jnp.float64)
    record = run_snn(p, x, software_statistics(stack_weights(w_in, w_rec)))
    for sample in range(2):
        z_ref, psi_ref = reference_run(p, np.asarray(x[sample]), np.asarray(w_in), np.asarray(w_rec))
        np.testing.assert_array_equal(record.z[sample], z_ref)
        np.testing.assert_allclose(record.psi[sample], psi_ref, rtol=1e-12, atol=1e-14)
    assert 5 < float(record.z.sum()) < record.z.size / 2  # the network is active, not saturated


def constant_drive_spike_times(p: SNNConfig, drive: float, n_steps: int) -> list[int]:
    """Spike times of one LIF neuron under a constant input current ``drive``, from the closed form
    ``v(t) = drive (1 - alpha^(t+1)) / (1 - alpha) - thr sum_{s in spikes, s < t} alpha^(t-1-s)``."""
    spikes: list[int] = []
    for t in range(n_steps):
        v = drive * (1 - p.alpha ** (t + 1)) / (1 - p.alpha) - p.threshold * sum(p.alpha ** (t - 1 - s) for s in spikes)
        refractory = bool(spikes) and t - spikes[-1] < p.n_refractory
        if v > p.threshold and not refractory:
            spikes.append(t)
    return spikes


@pytest.mark.parametrize("drive", [0.1, 0.25, 5.0])
def test_lif_constant_input_spike_times(x64, drive):
    p = SNNConfig(n_in=1, n_rec=1, n_out=1, threshold=0.6)
    x = jnp.ones((1, 60, 1))
    record = run_snn(p, x, software_statistics(jnp.array([[drive], [0.0]])))
    times = list(np.flatnonzero(np.asarray(record.z[0, :, 0])))
    expected = constant_drive_spike_times(p, drive, 60)
    assert times == expected
    if drive == 0.1:  # first crossing: (1 - alpha^(t+1)) > thr (1 - alpha) / drive  ->  t = 6
        first = math.ceil(math.log(1 - p.threshold * (1 - p.alpha) / drive) / math.log(p.alpha)) - 1
        assert times[0] == first == 6
    if drive == 5.0:  # saturating drive: one spike every n_refractory steps
        assert times == list(range(0, 60, p.n_refractory))
    assert np.all(np.diff(times) >= p.n_refractory)


def test_reset_by_subtraction_and_refractory_step(x64):
    p = SNNConfig(n_in=1, n_rec=2, n_out=1, threshold=0.6, n_refractory=3)
    state = SNNState(
        v=jnp.array([[0.9, 0.3]]), z=jnp.array([[1.0, 0.0]]), refractory=jnp.array([[2.0, 0.0]]), b=jnp.zeros((1, 2))
    )
    new, psi = neuron_step(state, jnp.array([[0.5, 0.5]]), p)
    np.testing.assert_allclose(new.v, [[p.alpha * 0.9 + 0.5 - 0.6, p.alpha * 0.3 + 0.5]])
    assert float(new.v[0, 0]) > p.threshold
    # neuron 0 is above threshold but refractory: no spike, psi = 0; neuron 1 spikes
    np.testing.assert_array_equal(new.z, [[0.0, 1.0]])
    assert psi[0, 0] == 0 and psi[0, 1] > 0
    np.testing.assert_array_equal(new.refractory, [[1.0, 2.0]])


def test_no_self_connection(x64):
    p = SNNConfig(n_in=1, n_rec=2, n_out=1, threshold=0.6)
    x = jnp.zeros((1, 40, 1)).at[0, 0, 0].set(1.0)
    w_in = jnp.array([[1.0, 0.0]])
    runs = [
        run_snn(p, x, software_statistics(stack_weights(w_in, jnp.array([[d, 0.0], [0.0, d]])))).z for d in (0.0, 10.0)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert float(runs[0].sum()) == 1.0
    assert float(stack_weights(w_in, jnp.full((2, 2), 3.0))[1:].trace()) == 0.0


def test_alif_threshold_adapts(x64):
    lif = SNNConfig(n_in=1, n_rec=1, n_out=1, threshold=0.6)
    alif = SNNConfig(n_in=1, n_rec=1, n_out=1, threshold=0.6, alif_fraction=1.0)
    assert lif.n_alif == 0 and alif.n_alif == 1
    # one step: b <- rho b + z(t-1), threshold thr + beta b
    state = SNNState(jnp.array([[0.0]]), jnp.array([[1.0]]), jnp.array([[0.0]]), jnp.array([[0.5]]))
    new, _ = neuron_step(state, jnp.array([[0.0]]), alif)
    b = alif.rho * 0.5 + 1.0
    np.testing.assert_allclose(new.b, [[b]])
    np.testing.assert_allclose(new.v, [[-(0.6 + alif.beta * b)]])
    # under a constant drive the ALIF neuron slows down, the LIF neuron does not
    x = jnp.ones((1, 300, 1))
    weights = software_statistics(jnp.array([[0.3], [0.0]]))
    isi = {
        name: np.diff(np.flatnonzero(np.asarray(run_snn(p, x, weights).z[0, :, 0])))
        for name, p in (("lif", lif), ("alif", alif))
    }
    assert isi["lif"].max() - isi["lif"].min() <= 1
    assert isi["alif"][-1] > isi["alif"][0] + 5
    assert len(isi["alif"]) < len(isi["lif"])


def test_pseudo_derivative_matches_formula(x64):
    x = jnp.linspace(-2.5, 2.5, 101)
    grads = jax.vmap(jax.grad(lambda s: spike(s, 0.3)))(x)
    np.testing.assert_allclose(grads, 0.3 * np.maximum(0.0, 1.0 - np.abs(np.asarray(x))))
    np.testing.assert_array_equal(spike(x, 0.3), (np.asarray(x) > 0).astype(float))
    # d z / d v through one neuron step equals psi, and is 0 while refractory
    p = SNNConfig(n_in=1, n_rec=3, n_out=1, threshold=0.6)
    state = SNNState(jnp.array([[0.3, 0.55, 0.5]]), jnp.zeros((1, 3)), jnp.array([[0.0, 0.0, 2.0]]), jnp.zeros((1, 3)))
    current = jnp.array([[0.2, 0.3, 0.3]])
    dz = jax.jacfwd(lambda c: neuron_step(state, c, p)[0].z)(current)[0, :, 0, :]
    _, psi = neuron_step(state, current, p)
    np.testing.assert_allclose(jnp.diag(dz), psi[0])
    v = p.alpha * state.v + current
    np.testing.assert_allclose(psi[0, :2], pseudo_derivative(v, p.threshold, p)[0, :2])
    assert psi[0, 2] == 0 and psi[0, 1] > 0


# ------------------------------------------------------------------------------------------------ e-prop
def test_eprop_update_equals_offline_sum(x64, key):
    trainee = SNNConfig(n_in=3, n_rec=4, n_out=2, threshold=0.6)
    lsg = SNNConfig(n_in=5, n_rec=6, n_out=4, threshold=0.6, alif_fraction=0.5)
    k_t, k_l, k_clock, k_lsg_x, k_run = jax.random.split(key, 5)
    w_in, w_rec, _ = random_network(k_t, trainee)
    trainee_w = SNNWeights(w_in, w_rec, jnp.zeros((4, 2)))
    lsg_w = SNNWeights(*init_weights(k_l, lsg))
    lsg_w = lsg_w._replace(w_in=2.0 * lsg_w.w_in)
    clock = jax.random.bernoulli(k_clock, 0.4, (30, 3)).astype(jnp.float64)
    lsg_x = jax.random.bernoulli(k_lsg_x, 0.4, (2, 30, 5)).astype(jnp.float64)
    eta = 1e-2
    result = natural_eprop(
        trainee, lsg, trainee_w, lsg_w, clock, lsg_x, k_run, eta=eta, w_max=10.0, update_fn=software_update(None, 10.0)
    )

    z, psi = np.asarray(result.before.z[0]), np.asarray(result.before.psi[0])
    assert z.sum() > 3 and psi.max() > 0
    x = np.asarray(clock)
    for b in range(2):
        signal = np.asarray(result.learning_signals[b])
        assert np.abs(signal).max() > 0
        expected = np.zeros((3 + 4, 4))
        for i in range(3 + 4):
            for j in range(4):
                if i >= 3 and i - 3 == j:
                    continue  # no self-connection
                trace, total = 0.0, 0.0
                for t in range(30):
                    presynaptic = x[t, i] if i < 3 else (z[t - 1, i - 3] if t > 0 else 0.0)
                    trace = trainee.alpha * trace + presynaptic
                    total += signal[t, j] * psi[t, j] * trace
                expected[i, j] = -eta * total
        np.testing.assert_allclose(result.delta_w[b], expected, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(result.update.weights[b], stack_weights(w_in, w_rec) + expected, atol=1e-12)

    # the shared-pass (b = 1) contraction equals the per-task one
    traces = presynaptic_traces(clock[None], result.before.z, trainee.alpha)
    mask = recurrent_mask(trainee, jnp.float64)
    per_task = eprop_delta(
        jnp.repeat(traces, 2, 0), jnp.repeat(result.before.psi, 2, 0), result.learning_signals, eta, mask
    )
    np.testing.assert_allclose(per_task, result.delta_w, rtol=1e-12)


def test_software_update_quantizes_clips_and_counts(x64):
    w = jnp.array([[0.0, 0.95], [0.5, -0.2]])
    delta = jnp.array([[[0.02, 0.2], [0.04, -0.1]]])
    update = software_update(1.0 / 16, 1.0)(w, delta, None)
    np.testing.assert_allclose(update.applied, [[[0.0, 0.1875], [0.0625, -0.125]]])
    np.testing.assert_allclose(update.weights, [[[0.0, 1.0], [0.5625, -0.325]]])
    assert int(update.n_nonzero[0]) == 3
    grad = jax.grad(lambda d: software_update(1.0 / 16, 1.0)(w, d, None).weights.sum())(delta)
    np.testing.assert_array_equal(grad, np.ones_like(delta))  # straight-through rounding and clipping
    with pytest.raises(ConfigError):
        software_update(0.0)


def test_pcm_memory_keeps_untouched_devices(key):
    memory = pcm_memory(PCMDevice(), 3600.0)
    w = 0.3 * jax.random.normal(key, (6, 4))
    before, state = memory.read_initial(w, key)
    before = before.stats
    applied = jnp.zeros((2, 6, 4)).at[0, 1, 2].set(0.125).at[1, 3, 0].set(-0.0625)
    update = WeightUpdate(w + applied, applied, jnp.array([1, 1]))
    after = memory.read_updated(state, update, jax.random.fold_in(key, 1)).stats
    touched = np.asarray(applied != 0)
    # untouched devices keep their state: read 1 s later they have drifted by (3601/3600)^-nu only
    np.testing.assert_allclose(
        np.asarray(after.mean)[~touched], np.broadcast_to(before.mean, (2, 6, 4))[~touched], rtol=1e-4, atol=1e-7
    )
    assert not np.allclose(np.asarray(after.mean)[touched], np.asarray(w + applied)[touched])
    assert float(jnp.abs(before.mean - w).max()) > 0  # programming noise and drift
    # straight-through: the update of untouched devices still gets a gradient (as in software)
    grad = jax.grad(lambda a: memory.read_updated(state, WeightUpdate(w + a, a, None), key).stats.mean.sum())(applied)
    inside = np.asarray(jnp.abs(w + applied) < 1)
    np.testing.assert_array_equal(np.asarray(grad)[inside], 1.0)


def test_per_task_weight_gradient_matches_autodiff(x64, key):
    """The custom VJP of per-task weights equals plain autodiff through the scan."""
    w_in, w_rec, k_x = random_network(key, TINY)
    weights = jnp.stack([stack_weights(w_in, w_rec), stack_weights(1.1 * w_in, 0.9 * w_rec)])
    x = jax.random.bernoulli(k_x, 0.4, (2, 25, 3)).astype(jnp.float64)
    probe = jax.random.normal(jax.random.fold_in(key, 7), (2, 25, 4))

    def loss(w, simulate):
        xs = jnp.swapaxes(x, 0, 1)
        z, psi, _ = simulate(w, xs)
        return jnp.sum(snn.leaky_integrate(jnp.swapaxes(z, 0, 1), 0.9) * probe) + jnp.sum(psi**2)

    custom = jax.grad(loss)(weights, lambda w, xs: snn._simulate(TINY, IDEAL_MVM, w, jnp.zeros_like(w), xs, None))
    plain = jax.grad(loss)(weights, lambda w, xs: snn._scan(TINY, IDEAL_MVM, software_statistics(w), xs, None))
    assert float(jnp.abs(plain).max()) > 0
    np.testing.assert_allclose(custom, plain, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------ meta-loss
# the software model's meta-gradient also runs in test_train_step_and_inner_loop_shapes; slow-marked for time
@pytest.mark.parametrize("hardware_aware", [pytest.param(False, marks=pytest.mark.slow), True])
def test_meta_loss_gradients_finite_and_nonzero(x64, key, hardware_aware):
    config = tiny_robot(hardware_aware=hardware_aware, eta=0.05)
    params = init_params(key, config)
    targets = sample_trajectories(jax.random.fold_in(key, 1), config.arm_model, 3, n_steps=40, window=10)
    loss_and_grad = jax.jit(jax.value_and_grad(meta_loss, has_aux=True), static_argnames="config")
    (loss, aux), grads = loss_and_grad(params, targets, key, config)
    assert np.isfinite(float(loss))
    for name, grad in grads.items():
        assert grad.shape == params[name].shape
        assert bool(jnp.all(jnp.isfinite(grad))), name
        assert float(jnp.abs(grad).max()) > 0, name
    assert 0 <= float(aux["fraction_updated"]) <= 1
    assert float(aux["rate_trainee_hz"]) > 0 and float(aux["rate_lsg_hz"]) > 0


def test_train_step_and_inner_loop_shapes(key):
    config = tiny_robot()
    params = init_params(key, config)
    targets = sample_trajectories(key, config.arm_model, 3, n_steps=40, window=10)
    optimizer = make_optimizer(config)
    new_params, _, loss, aux = train_step(params, optimizer.init(params), targets, key, config)
    assert np.isfinite(float(loss)) and set(new_params) == set(params)
    assert any(float(jnp.abs(new_params[k] - params[k]).max()) > 0 for k in params)
    run = jax.jit(inner_loop, static_argnames="config")
    result = run(params, targets, key, config)
    assert result.before.xyz.shape == result.after.xyz.shape == (3, 40, 3)
    assert result.eprop.update.weights.shape == (3, 2 + 6, 6)
    assert result.eprop.before.z.shape == (1, 40, 6)  # pass 1 is shared by the tasks
    # a chip-like memory with read noise: per-task statistics and a read key
    noisy = run(params, targets, key, config, read_key=jax.random.fold_in(key, 2))
    assert noisy.eprop.before.z.shape == (3, 40, 6)


def test_inner_loop_with_chip_memory(key):
    """Evaluation path: pass 1 reads the programmed chip, each task re-programs a copy of it."""
    config = tiny_robot(eta=0.5)
    params = init_params(key, config)
    targets = sample_trajectories(key, config.arm_model, 3, n_steps=40, window=10)
    chip = Chip()
    chip.place_dense("trainee", (config.trainee.n_stack, config.trainee.n_rec))
    w_stack = jnp.clip(stack_weights(params["trainee_w_in"], params["trainee_w_rec"]), -1, 1)
    chip.program("trainee", w_stack, key)
    chip.advance(3600.0)

    def read_updated(previous, update, task_key):
        deployed, stats = chip.snapshot(), []
        for task, applied in enumerate(update.applied):
            chip.reprogram("trainee", applied, jax.random.fold_in(task_key, task), rounding="nearest")
            stats.append(chip.read_statistics("trainee"))
            chip.restore(deployed)
        stacked = WeightStatistics(*(jnp.stack(parts) for parts in zip(*stats, strict=True)))
        return dataclasses.replace(chip.layer("trainee"), stats=stacked)

    memory = WeightMemory(lambda w, k: (chip.layer("trainee"), None), read_updated)
    vectors = chip.counters["trainee"]["mvm_vectors"]
    result = inner_loop(params, targets, key, config, memory=memory, read_key=jax.random.fold_in(key, 3))
    assert result.after.xyz.shape == (3, 40, 3) and bool(jnp.all(jnp.isfinite(result.after.xyz)))
    assert int(result.eprop.update.n_nonzero.sum()) > 0
    # the chip's layers carry its ledger: both passes' reads are booked there, every task and step
    assert chip.counters["trainee"]["mvm_vectors"] - vectors == 2 * 3 * 40


# ------------------------------------------------------------------------------------ synaptic input
def test_software_statistics_equal_plain_matmul(key):
    k_w, k_x = jax.random.split(key)
    w = jax.random.normal(k_w, (7, 4))
    x = jax.random.bernoulli(k_x, 0.5, (3, 7)).astype(jnp.float32)
    stats = software_statistics(w)
    np.testing.assert_allclose(synaptic_currents(x, stats, None), x @ w, rtol=1e-6)
    np.testing.assert_allclose(synaptic_currents(x, stats, key), x @ w, rtol=1e-6)  # zero variance: no noise
    per_task = jnp.stack([w, 2 * w, -w])
    expected = jnp.einsum("bi,bij->bj", x, per_task)
    np.testing.assert_allclose(synaptic_currents(x, software_statistics(per_task), None), expected, rtol=1e-6)
    noisy = WeightStatistics(per_task, jnp.full_like(per_task, 0.01))
    assert not np.allclose(synaptic_currents(x, noisy, key), expected)


def test_clock_input_pattern():
    clock = clock_input()
    assert clock.shape == (249, 5) and clock.dtype == np.float32
    for k in range(5):
        np.testing.assert_array_equal(np.flatnonzero(clock[:, k]), 50 * k + np.arange(0, 50, 10))
    assert clock.sum(axis=1).max() == 1
    small = clock_input(12, 2, interval_steps=3, period_steps=2)
    np.testing.assert_array_equal(np.flatnonzero(small[:, 0]), [0, 2, 6, 8])


# ------------------------------------------------------------------------------------------- configs
def test_default_sizes():
    config = RobotConfig()
    assert (config.trainee.n_in, config.trainee.n_rec, config.trainee.n_out, config.trainee.threshold) == (
        5,
        250,
        2,
        0.6,
    )
    assert (config.lsg.n_in, config.lsg.n_rec, config.lsg.n_out, config.lsg.n_alif) == (53, 800, 250, 240)
    assert config.trainee.n_stack == 255
    hash(config)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SNNConfig(n_in=0, n_rec=4, n_out=1, threshold=0.6),
        lambda: SNNConfig(n_in=1, n_rec=4, n_out=1, threshold=-1.0),
        lambda: SNNConfig(n_in=1, n_rec=4, n_out=1, threshold=0.6, alif_fraction=1.5),
        lambda: SNNConfig(n_in=1, n_rec=4, n_out=1, threshold=0.6, readout_init="zeros"),
        lambda: TraineeConfig(tau_m_ms=float("nan")),
        lambda: RobotConfig(arm="scara"),
        lambda: RobotConfig(batch=0),
        lambda: RobotConfig(lsg=LSGConfig(n_in=50)),
        lambda: RobotConfig(lsg=LSGConfig(n_out=100)),
        lambda: RobotConfig(quantize_update="yes"),
        lambda: RobotConfig(hardware=ChipConfig(update=UpdateConfig(step=-0.1))),
        lambda: tiny_robot(eta=0.0),
    ],
)
def test_bad_config_raises(make):
    with pytest.raises(ConfigError) as info:
        make()
    assert "\n" not in str(info.value)
