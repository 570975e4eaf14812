"""An Equinox CNN as a few-shot learner on the chip: ProtoNet (Snell et al. 2017) on Omniglot.

The CNN is meta-trained in software on 5-way 5-shot tasks of the background alphabets, put on the chip
unchanged, and every unseen task (evaluation alphabets) is learned on the chip: its class prototypes are
written to a zero readout in one programming, quantized and counted (``tasks_on_chip``).

    pip install -e ".[frameworks]"
    python examples/equinox_fewshot_on_chip.py [--steps 1000] [--tasks 100]
"""

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from l2l_pcm import equinox_chip
from l2l_pcm.chip import Chip, ChipConfig, UpdateConfig
from l2l_pcm.fewshot.data import TaskSampler
from l2l_pcm.fewshot.deploy import tasks_on_chip
from l2l_pcm.fewshot.maml import MAMLConfig, prototype_bias, prototypes
from l2l_pcm.fewshot.omniglot import load_omniglot
from l2l_pcm.pcm import PCMDevice

LEARNER = MAMLConfig(method="protonet", inner_steps=1, learn_initial_readout=False)


def make_model(key):  # three 3x3 stride-2 convs with ReLU, on one 1x28x28 image
    keys = jax.random.split(key, 3)
    convs = [eqx.nn.Conv2d(c, 32, 3, stride=2, padding=1, key=keys[i]) for i, c in enumerate((1, 32, 32))]
    return eqx.nn.Sequential([layer for conv in convs for layer in (conv, eqx.nn.Lambda(jax.nn.relu))])


def embed(model, images, key=None):  # NHWC images as the task sampler gives them; features max-pooled, L2-normed
    keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, len(images))
    read = (lambda x, k: model(x)) if key is None else (lambda x, k: equinox_chip.with_read_key(model, k)(x))
    f = jax.vmap(read)(jnp.moveaxis(jnp.asarray(images), -1, 1), keys).max(axis=(-2, -1))
    return 4.0 * f / jnp.linalg.norm(f, axis=-1, keepdims=True)


def logits(model, sx, sy, qx):
    centres = prototypes(embed(model, sx), sy, 5)
    return embed(model, qx) @ centres + prototype_bias(centres)


def main(steps: int = 1000, tasks: int = 100) -> dict:
    train = TaskSampler(load_omniglot("background"), 5, 5, 5)
    model, optimizer = make_model(jax.random.PRNGKey(0)), optax.adam(1e-3)
    state = optimizer.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def train_step(model, state, sx, sy, qx, qy):
        loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(logits(m, sx, sy, qx), qy).mean()  # noqa: E731
        updates, state = optimizer.update(eqx.filter_grad(loss)(model), state)
        return eqx.apply_updates(model, updates), state

    for step in range(steps):
        model, state = train_step(model, state, *(jnp.asarray(a[0]) for a in train.sample(step, 1)))
    tasks, key = TaskSampler(load_omniglot("evaluation"), 5, 5, 15).sample(12345, tasks), jax.random.PRNGKey(2)
    software = [jnp.mean(jnp.argmax(logits(model, *t[:3]), -1) == t[3]) for t in zip(*tasks, strict=True)]
    scale = 2.0 * float(jnp.max(jnp.abs(prototypes(embed(model, tasks[0][0]), tasks[1][0], 5))))  # the readout's range

    def chip_accuracy(config: ChipConfig, noisy: bool) -> float:
        chip = Chip(config)
        onchip = equinox_chip.to_chip(model, chip, jax.random.PRNGKey(1))
        chip.advance(3600.0)  # one hour of drift, then the layers as they read now
        read = onchip.read()
        features = eqx.filter_jit(lambda x, key: embed(read, x, key if noisy else None))
        results = tasks_on_chip(chip, LEARNER, features, tasks, key, readout_scale=scale)
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
