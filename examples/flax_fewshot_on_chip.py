"""A Flax NNX CNN as a few-shot learner on the chip: ProtoNet (Snell et al. 2017) on Omniglot.

The CNN is meta-trained in software on 5-way 5-shot tasks of the background alphabets, put on the chip
unchanged, and every unseen task (evaluation alphabets) is learned on the chip: its class prototypes are
written to a zero readout in one programming, quantized and counted (``tasks_on_chip``).

    pip install -e ".[frameworks]"
    python examples/flax_fewshot_on_chip.py [--steps 1000] [--tasks 100]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from l2l_pcm import flax_chip
from l2l_pcm.chip import Chip, ChipConfig, UpdateConfig
from l2l_pcm.fewshot.data import TaskSampler
from l2l_pcm.fewshot.deploy import tasks_on_chip
from l2l_pcm.fewshot.maml import MAMLConfig, prototype_bias, prototypes
from l2l_pcm.fewshot.omniglot import load_omniglot
from l2l_pcm.pcm import PCMDevice

LEARNER = MAMLConfig(method="protonet", inner_steps=1, learn_initial_readout=False)


class Embedding(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 32, (3, 3), strides=2, padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(32, 32, (3, 3), strides=2, padding="SAME", rngs=rngs)
        self.conv3 = nnx.Conv(32, 32, (3, 3), strides=2, padding="SAME", rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.conv3(jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))))
        f = x.max(axis=(-3, -2))
        return 4.0 * f / jnp.linalg.norm(f, axis=-1, keepdims=True)


def logits(model, sx, sy, qx):
    centres = prototypes(model(sx), sy, 5)
    return model(qx) @ centres + prototype_bias(centres)


def main(steps: int = 1000, tasks: int = 100) -> dict:
    train = TaskSampler(load_omniglot("background"), 5, 5, 5)
    model = Embedding(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, sx, sy, qx, qy):
        loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(logits(m, sx, sy, qx), qy).mean()  # noqa: E731
        optimizer.update(model, nnx.grad(loss)(model))

    for step in range(steps):
        train_step(model, optimizer, *(jnp.asarray(a[0]) for a in train.sample(step, 1)))
    tasks, key = TaskSampler(load_omniglot("evaluation"), 5, 5, 15).sample(12345, tasks), jax.random.PRNGKey(2)
    software = [jnp.mean(jnp.argmax(logits(model, *t[:3]), -1) == t[3]) for t in zip(*tasks, strict=True)]
    scale = 2.0 * float(jnp.max(jnp.abs(prototypes(model(tasks[0][0]), tasks[1][0], 5))))  # the readout's range

    def chip_accuracy(config: ChipConfig, noisy: bool) -> float:
        chip = Chip(config)
        onchip = flax_chip.to_chip(model, chip, jax.random.PRNGKey(1))
        chip.advance(3600.0)  # one hour of drift, then the layers as they read now
        read = onchip.read(nnx.Rngs(read=3) if noisy else None)
        forward = nnx.jit(lambda m, x: m(x))
        results = tasks_on_chip(chip, LEARNER, lambda x, key: forward(read, x), tasks, key, readout_scale=scale)
        return float(np.mean([result.accuracy_per_step[-1] for result in results]))

    noiseless = ChipConfig(device=PCMDevice().noiseless(), update=UpdateConfig(step=2.0**-20))
    results = {"pcm_chip_accuracy_1h": chip_accuracy(ChipConfig(), noisy=True), "software_accuracy": np.mean(software)}
    results["noiseless_chip_accuracy"] = chip_accuracy(noiseless, noisy=False)
    for name, value in results.items():
        print(f"{name}: {value:.4f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=100)
    main(**vars(parser.parse_args()))
