"""A Flax NNX CNN on the emulated PCM chip without rewriting it (scikit-learn's bundled 8x8 digits).

Trains the CNN in software, puts it on a noiseless chip (it must compute what Flax computes), then on a PCM
chip with 8-bit converters calibrated on sample data, one hour after programming.

    pip install -e ".[frameworks,examples]"
    python examples/flax_on_chip.py [--steps 300]
"""

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from sklearn.datasets import load_digits

from l2l_pcm import flax_chip
from l2l_pcm.chip import ArraysConfig, Chip, ChipConfig, ForwardConfig
from l2l_pcm.pcm import PCMDevice


class CNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 16, (3, 3), strides=2, padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(16, 16, (3, 3), padding="SAME", rngs=rngs)
        self.head = nnx.Linear(16 * 4 * 4, 10, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))
        return self.head(x.reshape(x.shape[0], -1))


def main(steps: int = 300) -> dict:
    digits = load_digits()
    x, y = jnp.asarray(digits.images[..., None] / 16.0, jnp.float32), jnp.asarray(digits.target)
    (x_train, y_train), (x_test, y_test) = (x[:1200], y[:1200]), (x[1200:], y[1200:])
    model = CNN(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()  # noqa: E731
        optimizer.update(model, nnx.grad(loss)(model))

    for step in range(steps):
        batch = jax.random.choice(jax.random.PRNGKey(step), len(x_train), (64,))
        train_step(model, optimizer, x_train[batch], y_train[batch])

    def accuracy(m) -> float:
        return float(jnp.mean(jnp.argmax(nnx.jit(lambda m, x: m(x))(m, x_test), -1) == y_test))

    results = {"software_accuracy": accuracy(model)}
    noiseless = Chip(ChipConfig(device=PCMDevice().noiseless(), arrays=ArraysConfig(count=4)))
    results["noiseless_chip_accuracy"] = accuracy(flax_chip.to_chip(model, noiseless, jax.random.PRNGKey(1)).read())
    chip = Chip(ChipConfig(arrays=ArraysConfig(count=4), forward=ForwardConfig(dac_bits=8, adc_bits=8)))
    onchip = flax_chip.to_chip(model, chip, jax.random.PRNGKey(2))
    onchip.calibrate(lambda m: m(x_train[:256]))
    chip.advance(3600.0)
    results["pcm_chip_accuracy_1h"] = accuracy(onchip.read(nnx.Rngs(read=3)))
    for name in ("pcm_chip_accuracy_1h", "software_accuracy", "noiseless_chip_accuracy"):  # the last two last
        value = results[name]
        print(f"{name}: {value:.4f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    main(parser.parse_args().steps)
