"""NIR export of a spiking network: the file ``nir.read`` loads, read back into the same network, and
the graph's own constants, simulated by an independent loop, give the same spikes and outputs."""

import dataclasses

import jax.numpy as jnp
import nir
import numpy as np
import pytest

from l2l_pcm.cli import main
from l2l_pcm.errors import ConfigError
from l2l_pcm.nir_export import from_nir, to_nir, write_nir
from l2l_pcm.robot.model import PARAM_NAMES
from l2l_pcm.robot.train import SHIPPED_CHECKPOINT, load_robot_checkpoint
from l2l_pcm.snn import (
    LSGConfig,
    SNNConfig,
    TraineeConfig,
    clock_input,
    init_weights,
    readout,
    run_snn,
    software_statistics,
    stack_weights,
)


def simulate_graph(graph: nir.NIRGraph, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spikes [T, n_rec] and readout [T, n_out] of the graph in float64, from its nodes alone: steps of dt
    with decay e^{−dt/τ} and input gain r·dt/τ, reset and refractoriness as its metadata says."""
    lif, li = graph.nodes["lif"], graph.nodes["readout"]
    dt = float(graph.metadata["dt"])
    alpha, kappa = np.exp(-dt / lif.tau), np.exp(-dt / li.tau)
    gain_lif, gain_li = lif.r * dt / lif.tau, li.r * dt / li.tau
    w_in, w_rec, w_out = (np.asarray(graph.nodes[n].weight, np.float64) for n in ("w_in", "w_rec", "w_out"))
    refractory_steps = int(lif.metadata["refractory_steps"])
    v, z, counter, y = np.zeros(len(alpha)), np.zeros(len(alpha)), np.zeros(len(alpha)), np.zeros(len(kappa))
    spikes, outputs = [], []
    for x in inputs:
        v = alpha * v + gain_lif * (w_in @ x + w_rec @ z) - lif.v_threshold * z  # reset by subtraction
        blocked = counter > 0
        z = np.where(blocked, 0.0, (v > lif.v_threshold).astype(float))
        counter = np.clip(counter + refractory_steps * z - 1, 0, refractory_steps)
        y = kappa * y + gain_li * (w_out @ z)
        spikes.append(z)
        outputs.append(y)
    return np.stack(spikes), np.stack(outputs)


def test_a_network_survives_the_round_trip_and_runs_the_same_from_the_graph(tmp_path, key, x64):
    p = dataclasses.replace(TraineeConfig(), n_rec=40, threshold=0.3)
    w_in, w_rec, w_out = (2.0 * w for w in init_weights(key, p))
    path = write_nir(tmp_path / "net.nir", to_nir(p, w_in, w_rec, w_out))
    graph = nir.read(path)
    q, r_in, r_rec, r_out = from_nir(graph)
    assert dataclasses.asdict(q) == dataclasses.asdict(SNNConfig(**dataclasses.asdict(p)))
    np.testing.assert_array_equal(r_in, np.asarray(w_in, np.float32))
    np.testing.assert_array_equal(r_rec, np.asarray(w_rec * (1 - jnp.eye(p.n_rec)), np.float32))
    np.testing.assert_array_equal(r_out, np.asarray(w_out, np.float32))

    clock = clock_input()
    weights = jnp.asarray(stack_weights(jnp.asarray(r_in, jnp.float64), jnp.asarray(r_rec, jnp.float64)))
    record = run_snn(q, jnp.asarray(clock, jnp.float64)[None], software_statistics(weights))
    ours_y = readout(q, record.z, jnp.asarray(r_out, jnp.float64))
    spikes, outputs = simulate_graph(graph, clock.astype(np.float64))
    assert spikes.sum() > 50  # the network is active, so the comparison says something
    np.testing.assert_array_equal(np.asarray(record.z[0]), spikes)
    np.testing.assert_allclose(np.asarray(ours_y[0]), outputs, rtol=1e-9, atol=1e-12)


def test_what_nir_cannot_hold_is_refused(key):
    lsg = LSGConfig()
    with pytest.raises(ConfigError, match="ALIF"):
        to_nir(lsg, *init_weights(key, lsg))
    p = TraineeConfig()
    graph = to_nir(p, *init_weights(key, p))
    del graph.nodes["w_rec"]
    with pytest.raises(ConfigError, match="not a recurrent LIF network"):
        from_nir(graph)
    with pytest.raises(ConfigError, match="W_out has shape"):
        to_nir(p, *init_weights(key, p)[:2], np.zeros((3, 3)))


def test_cli_exports_the_shipped_trainee(tmp_path, capsys):
    out = tmp_path / "scorbot.nir"
    assert main(["robot", "export-nir", str(SHIPPED_CHECKPOINT), str(out)]) == 0
    graph = nir.read(out)
    params, config, _ = load_robot_checkpoint(SHIPPED_CHECKPOINT)
    p, w_in, _, w_out = from_nir(graph)
    assert (p.n_in, p.n_rec, p.n_out) == (5, 250, 2) and p.n_refractory == config.model.trainee.n_refractory
    np.testing.assert_array_equal(w_in, np.asarray(params[PARAM_NAMES[0]]))
    np.testing.assert_array_equal(w_out, np.asarray(params[PARAM_NAMES[2]]))
    before = out.read_bytes()
    assert main(["robot", "export-nir", str(SHIPPED_CHECKPOINT), str(out)]) == 2  # kept, not overwritten
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
