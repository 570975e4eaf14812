"""An Equinox CNN on the emulated PCM chip without rewriting it (scikit-learn's bundled 8x8 digits).

Trains the CNN in software, puts it on a noiseless chip (it must compute what Equinox computes), then on a
PCM chip with 8-bit converters calibrated on sample data, one hour after programming, every test image
read with its own noise.

    pip install -e ".[frameworks,examples]"
    python examples/equinox_on_chip.py [--steps 300]
"""

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from sklearn.datasets import load_digits

from l2l_pcm import equinox_chip
from l2l_pcm.chip import ArraysConfig, Chip, ChipConfig, ForwardConfig
from l2l_pcm.pcm import PCMDevice


class CNN(eqx.Module):
    layers: list

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.layers = [
            eqx.nn.Conv2d(1, 16, 3, stride=2, padding=1, key=k1),
            eqx.nn.Conv2d(16, 16, 3, padding="SAME", key=k2),
            eqx.nn.Linear(16 * 4 * 4, 10, key=k3),
        ]

    def __call__(self, x):  # one 1x8x8 image
        x = jax.nn.relu(self.layers[1](jax.nn.relu(self.layers[0](x))))
        return self.layers[2](x.reshape(-1))


def main(steps: int = 300) -> dict:
    digits = load_digits()
    x, y = jnp.asarray(digits.images[:, None] / 16.0, jnp.float32), jnp.asarray(digits.target)
    (x_train, y_train), (x_test, y_test) = (x[:1200], y[:1200]), (x[1200:], y[1200:])
    model, optimizer = CNN(jax.random.PRNGKey(0)), optax.adam(3e-3)
    state = optimizer.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def train_step(model, state, x, y):
        loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(jax.vmap(m)(x), y).mean()  # noqa: E731
        updates, state = optimizer.update(eqx.filter_grad(loss)(model), state)
        return eqx.apply_updates(model, updates), state

    for step in range(steps):
        batch = jax.random.choice(jax.random.PRNGKey(step), len(x_train), (64,))
        model, state = train_step(model, state, x_train[batch], y_train[batch])

    def accuracy(m, key=None) -> float:
        keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, len(x_test))
        read = (lambda xi, k: m(xi)) if key is None else (lambda xi, k: equinox_chip.with_read_key(m, k)(xi))
        return float(jnp.mean(jnp.argmax(jax.jit(jax.vmap(read))(x_test, keys), -1) == y_test))

    results = {"software_accuracy": accuracy(model)}
    noiseless = Chip(ChipConfig(device=PCMDevice().noiseless(), arrays=ArraysConfig(count=4)))
    results["noiseless_chip_accuracy"] = accuracy(equinox_chip.to_chip(model, noiseless, jax.random.PRNGKey(1)).read())
    chip = Chip(ChipConfig(arrays=ArraysConfig(count=4), forward=ForwardConfig(dac_bits=8, adc_bits=8)))
    onchip = equinox_chip.to_chip(model, chip, jax.random.PRNGKey(2))
    onchip.calibrate(lambda m: jax.vmap(m)(x_train[:256]))
    chip.advance(3600.0)
    results["pcm_chip_accuracy_1h"] = accuracy(onchip.read(), jax.random.PRNGKey(3))
    for name in ("pcm_chip_accuracy_1h", "software_accuracy", "noiseless_chip_accuracy"):  # the last two last
        value = results[name]
        print(f"{name}: {value:.4f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    main(parser.parse_args().steps)
