"""E-prop with feedback as a function of (network, task loss): close to BPTT's gradient, learns a pattern,
and the example learns it on the chip."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2l_pcm.chip import AnalogLayer
from l2l_pcm.eprop import feedback_eprop, feedback_matrix
from l2l_pcm.errors import ConfigError
from l2l_pcm.snn import SNNConfig, init_weights, readout, run_snn, software_statistics, stack_weights

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_symmetric_eprop_points_where_bptt_points(key, x64):
    """Without refractoriness, symmetric e-prop's update of [W_in; W_rec] is close in direction to the
    negative BPTT gradient of the same loss (Bellec et al. 2020: e-prop drops only the gradient paths
    through other neurons' future spikes)."""
    p = SNNConfig(n_in=20, n_rec=60, n_out=2, threshold=1.0, n_refractory=0)
    w_in, w_rec, w_out = init_weights(key, p)
    x = (jax.random.uniform(jax.random.fold_in(key, 1), (1, 300, p.n_in)) < 0.03).astype(jnp.float64)
    target = jnp.sin(jnp.arange(300) / 30.0)[None, :, None] * jnp.ones((1, 1, 2))

    def loss_fn(y):
        return 0.5 * jnp.mean(jnp.sum((y - target) ** 2, axis=-1))

    weights = stack_weights(w_in, w_rec)
    result = feedback_eprop(p, AnalogLayer.exact(weights), w_out, x, loss_fn, w_out, eta=1.0)
    bptt = -jax.grad(lambda w: loss_fn(readout(p, run_snn(p, x, software_statistics(w)).z, w_out)))(weights)
    bptt = bptt * (result.delta_stack != 0)  # both have no self-connections
    cosine = jnp.sum(bptt * result.delta_stack) / (jnp.linalg.norm(bptt) * jnp.linalg.norm(result.delta_stack))
    assert float(result.record.z.mean()) > 0.005  # spiking, so the comparison says something
    assert float(cosine) > 0.6
    exact_out = -jax.grad(lambda w: loss_fn(readout(p, run_snn(p, x, software_statistics(weights)).z, w)))(w_out)
    np.testing.assert_allclose(result.delta_out, exact_out, rtol=1e-9, atol=1e-12)


def test_feedback_matrices(key):
    p = SNNConfig(n_in=2, n_rec=8, n_out=3, threshold=1.0)
    w_out = jnp.ones((8, 3))
    assert feedback_matrix(p, "symmetric", w_out) is w_out
    random = feedback_matrix(p, "random", w_out, key)
    assert random.shape == (8, 3) and not np.allclose(random, w_out)
    with pytest.raises(ConfigError, match="needs a key"):
        feedback_matrix(p, "random", w_out)
    with pytest.raises(ConfigError, match="feedback must be one of"):
        feedback_matrix(p, "transpose", w_out)


def test_the_pattern_example_learns_on_the_chip(capsys):
    sys.path.insert(0, str(EXAMPLES))
    try:
        import snn_pattern_on_chip
    finally:
        sys.path.remove(str(EXAMPLES))
    results = snn_pattern_on_chip.main(iterations=30, steps=300)
    assert results["chip_loss_after"] < 0.5 * results["chip_loss_before"]
    assert results["software_loss_after"] < 0.5 * results["software_loss_before"]
    assert results["chip_devices_reprogrammed_per_update"] > 0
    assert "chip_loss_after:" in capsys.readouterr().out
