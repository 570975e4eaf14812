"""A spiking network learns a pattern with e-prop on the emulated PCM chip (Bellec et al. 2020, Fig. 2).

100 LIF neurons, driven by 20 inputs of frozen random spikes, learn to draw two sums of sinusoids over
500 ms through a fixed readout. Only the recurrent crossbar [W_in; W_rec] learns, by e-prop with symmetric
feedback: on the chip every time step is one crossbar read and every update is quantized, stochastically
rounded and written by re-programming the devices it changes; in software the same rule runs on exact
float weights. Prints the loss before and after learning on each, and the devices re-programmed.

    python examples/snn_pattern_on_chip.py [--iterations 150]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from l2l_pcm.chip import AnalogLayer, Chip, ChipConfig
from l2l_pcm.eprop import feedback_eprop, feedback_matrix
from l2l_pcm.snn import SNNConfig, init_weights, stack_weights


def main(iterations: int = 150, steps: int = 500) -> dict:
    p = SNNConfig(n_in=20, n_rec=100, n_out=2, threshold=1.0, n_refractory=2)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    w_in, w_rec, w_out = init_weights(keys[0], p)
    w_out = 10.0 * w_out  # a fixed readout, large enough to draw the pattern
    inputs = (jax.random.uniform(keys[1], (1, steps, p.n_in)) < 0.03).astype(jnp.float32)
    t = jnp.arange(steps) / 1000.0
    target = 0.4 * jnp.stack([jnp.sin(8 * np.pi * t) + 0.5 * jnp.sin(14 * np.pi * t), jnp.cos(6 * np.pi * t)], -1)

    def loss_fn(outputs):
        return 0.5 * jnp.mean(jnp.sum((outputs[0] - target) ** 2, axis=-1))

    feedback = feedback_matrix(p, "symmetric", w_out)  # errors sent back through the readout weights
    step = jax.jit(feedback_eprop, static_argnames=("p", "loss_fn", "eta"))
    chip = Chip(ChipConfig())
    chip.place_dense("recurrent", (p.n_stack, p.n_rec))
    chip.program("recurrent", stack_weights(w_in, w_rec), keys[2], scaling="layer")
    weights, results, devices = stack_weights(w_in, w_rec), {}, 0
    for backend in ("software", "chip"):
        losses = []
        for i in range(iterations):
            layer = chip.layer("recurrent") if backend == "chip" else AnalogLayer.exact(weights)
            key_read, key_write = jax.random.split(jax.random.PRNGKey(100 + i))
            result = step(p, layer, w_out, inputs, loss_fn, feedback, eta=0.1, read_key=key_read)
            losses.append(float(result.loss))
            if backend == "software":
                weights = weights + result.delta_stack
                continue
            layer.book(result.record.reads)
            report = chip.reprogram("recurrent", result.delta_stack, key_write, rounding="stochastic")
            devices += report.devices_touched
            chip.advance(1.0)
        results[f"{backend}_loss_before"] = losses[0]
        results[f"{backend}_loss_after"] = float(np.mean(losses[-10:]))
    results["chip_devices_reprogrammed_per_update"] = devices / iterations
    for name, value in results.items():
        print(f"{name}: {value:.4g}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=150)
    main(parser.parse_args().iterations)
