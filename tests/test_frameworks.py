"""Flax NNX and Equinox models on the chip without rewriting them (l2l_pcm.flax_chip, l2l_pcm.equinox_chip):
on a noiseless chip they compute what the framework's own layers compute, layouts, paddings and digital
biases included; the same call gives hardware-aware training; one call calibrates the converters."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SHARED, needs_shared
from flax import nnx

from l2l_pcm import equinox_chip, flax_chip
from l2l_pcm.chip import ArraysConfig, Chip, ChipConfig, ForwardConfig
from l2l_pcm.errors import ConfigError
from l2l_pcm.pcm import PCMDevice

NOISELESS = ChipConfig(device=PCMDevice().noiseless(), arrays=ArraysConfig(count=8))


class EqxCNN(eqx.Module):
    convs: list
    head: eqx.nn.Linear

    def __init__(self, key):
        k = jax.random.split(key, 4)
        self.convs = [
            eqx.nn.Conv2d(1, 6, 3, stride=2, padding=1, key=k[0]),
            eqx.nn.Conv2d(6, 8, 3, stride=2, padding="SAME", key=k[1]),
            eqx.nn.Conv2d(8, 8, (3, 2), stride=(1, 2), padding="VALID", key=k[2]),
        ]
        self.head = eqx.nn.Linear(8 * 5 * 3, 5, key=k[3])

    def __call__(self, x):  # one CHW image, as Equinox
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        return self.head(x.reshape(-1))


class NnxCNN(nnx.Module):
    def __init__(self, rngs):
        self.c1 = nnx.Conv(1, 6, (3, 3), strides=2, padding="SAME", rngs=rngs)  # Flax pads (0, 1) here
        self.c2 = nnx.Conv(6, 8, (3, 3), strides=(2, 2), padding=((1, 0), (0, 1)), rngs=rngs)
        self.c3 = nnx.Conv(8, 8, (3, 2), padding="VALID", rngs=rngs)
        self.head = nnx.Linear(8 * 5 * 6, 5, rngs=rngs)

    def __call__(self, x):  # NHWC batch, as Flax
        for conv in (self.c1, self.c2, self.c3):
            x = jax.nn.relu(conv(x))
        return self.head(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.PRNGKey(1), (12, 28, 28, 1))


def test_equinox_model_on_a_noiseless_chip_equals_equinox(key, images):
    model = EqxCNN(key)
    chip = Chip(NOISELESS)
    onchip = equinox_chip.to_chip(model, chip, key)
    assert onchip.layer_names == ["convs_0", "convs_1", "convs_2", "head"]
    x = jnp.transpose(images, (0, 3, 1, 2))
    expected = jax.vmap(model)(x)
    got = jax.jit(jax.vmap(onchip.read()))(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-6)
    # OIHW kernels went on as HWIO; the (C, 1, 1) conv biases are the chip's digital biases, unchanged
    np.testing.assert_array_equal(np.asarray(chip.biases["convs_1"]), np.asarray(model.convs[1].bias).reshape(-1))
    assert chip.placements["convs_2"].kernel_shape == (3, 2, 8, 8)
    assert chip.counters["convs_0"]["mvm_vectors"] == 12 * 14 * 14  # reads under vmap booked on the chip


def test_flax_model_on_a_noiseless_chip_equals_flax(key, images):
    model = NnxCNN(nnx.Rngs(0))
    chip = Chip(NOISELESS)
    onchip = flax_chip.to_chip(model, chip, key)
    expected = model(images)
    got = nnx.jit(lambda m, x: m(x))(onchip.read(), images)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-6)
    one = onchip.read().c1(images[0])  # an unbatched HWC image, as nnx.Conv takes it too
    np.testing.assert_allclose(np.asarray(one), np.asarray(model.c1(images[0])), rtol=1e-5, atol=1e-6)
    assert chip.counters["c1"]["mvm_vectors"] == 12 * 14 * 14 + 14 * 14


def test_read_noise_is_fresh_per_call_and_per_example(key, images):
    noisy = Chip(ChipConfig(arrays=ArraysConfig(count=8)))
    onchip = flax_chip.to_chip(NnxCNN(nnx.Rngs(0)), noisy, key)
    noisy.advance(3600.0)
    model_now, run = onchip.read(nnx.Rngs(read=3)), nnx.jit(lambda m, x: m(x))
    first, second = run(model_now, images), run(model_now, images)
    assert float(jnp.abs(first - second).max()) > 0
    eqx_chip = Chip(ChipConfig(arrays=ArraysConfig(count=8)))
    eqx_onchip = equinox_chip.to_chip(EqxCNN(key), eqx_chip, key)
    eqx_chip.advance(3600.0)
    same = jnp.repeat(jnp.transpose(images[:1], (0, 3, 1, 2)), 4, axis=0)
    read = eqx_onchip.read()
    noisy_reads = jax.jit(jax.vmap(lambda x, k: equinox_chip.with_read_key(read, k)(x)))
    outputs = noisy_reads(same, jax.random.split(key, 4))
    assert float(jnp.abs(outputs[0] - outputs[1]).max()) > 0  # same image, its own noise
    expectation = jax.jit(jax.vmap(read))(same)
    assert float(jnp.abs(expectation[0] - expectation[1]).max()) == 0  # no key: the expectation


def test_the_same_call_gives_hardware_aware_training(key, images):
    model, x = EqxCNN(key), jnp.transpose(images, (0, 3, 1, 2))
    clean = equinox_chip.hardware_aware(model, ChipConfig(device=PCMDevice().noiseless()), key)
    np.testing.assert_allclose(
        np.asarray(jax.jit(jax.vmap(clean))(x)), np.asarray(jax.jit(jax.vmap(model))(x)), rtol=1e-5, atol=1e-6
    )
    loss = lambda m: jnp.sum(jax.vmap(equinox_chip.hardware_aware(m, ChipConfig(), key))(x) ** 2)  # noqa: E731
    grads = eqx.filter_jit(jax.grad(loss))(model)
    for weight in (grads.head.weight, grads.convs[0].weight):
        assert bool(jnp.all(jnp.isfinite(weight))) and float(jnp.abs(weight).max()) > 0
    nnx_model = NnxCNN(nnx.Rngs(0))
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(flax_chip.hardware_aware(m, ChipConfig(), key)(images) ** 2)))(nnx_model)
    assert float(jnp.abs(grads.c1.kernel.get_value()).max()) > 0


def test_one_call_calibrates_the_converters(key, images):
    """8-bit converters at their default ranges clip most of what this network's layers send them; one
    calibrate call on sample data sets every layer's ranges and the outputs come back near software."""
    model = NnxCNN(nnx.Rngs(0))
    config = ChipConfig(
        device=PCMDevice().noiseless(), arrays=ArraysConfig(count=8), forward=ForwardConfig(dac_bits=8, adc_bits=8)
    )
    errors = {}
    for calibrated in (False, True):
        chip = Chip(config)
        onchip = flax_chip.to_chip(model, chip, key)
        if calibrated:
            onchip.calibrate(lambda m: m(images))
            assert chip.counters["c1"]["mvm_vectors"] == 0  # calibration reads are not booked
        out = onchip.read()(images)
        errors[calibrated] = float(jnp.abs(out - model(images)).max() / jnp.abs(model(images)).max())
    assert errors[False] > 0.3 and errors[True] < 0.05, errors


def test_layers_the_chip_cannot_run_are_refused(key):
    class Grouped(eqx.Module):
        conv: eqx.nn.Conv2d

    with pytest.raises(ConfigError, match="grouped, dilated"):
        equinox_chip.to_chip(Grouped(eqx.nn.Conv2d(4, 4, 3, groups=2, key=key)), Chip(NOISELESS), key)
    with pytest.raises(ConfigError, match="Conv1d is not supported"):
        equinox_chip.to_chip(eqx.nn.Conv1d(2, 2, 3, key=key), Chip(NOISELESS), key)
    with pytest.raises(ConfigError, match="dilated"):
        flax_chip.to_chip(nnx.Conv(2, 2, (3, 3), kernel_dilation=2, rngs=nnx.Rngs(0)), Chip(NOISELESS), key)
    with pytest.raises(ConfigError, match="no nnx.Linear or nnx.Conv"):
        flax_chip.to_chip(nnx.LayerNorm(4, rngs=nnx.Rngs(0)), Chip(NOISELESS), key)
    shared = Chip(NOISELESS)  # a second model on the same chip would be programmed over the first
    first = equinox_chip.to_chip(eqx.nn.Linear(4, 3, key=key), shared, key)
    with pytest.raises(ConfigError, match=r"layers \['layer'\] are already on this chip"):
        equinox_chip.to_chip(eqx.nn.Linear(4, 3, key=jax.random.PRNGKey(9)), shared, key)
    second = equinox_chip.to_chip(eqx.nn.Linear(4, 3, key=jax.random.PRNGKey(9)), shared, key, prefix="second_")
    assert first.layer_names == ["layer"] and second.layer_names == ["second_layer"]


@pytest.mark.parametrize("example", ["flax_on_chip", "equinox_on_chip"])
def test_the_framework_examples_run_and_the_noiseless_chip_matches_software(example, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "examples" / f"{example}.py"
    spec = importlib.util.spec_from_file_location(example, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(steps=40)
    printed = capsys.readouterr().out
    last_two = printed.strip().splitlines()[-2:]  # the interface: the output ends with these two lines
    assert last_two == [
        f"software_accuracy: {results['software_accuracy']:.4f}",
        f"noiseless_chip_accuracy: {results['noiseless_chip_accuracy']:.4f}",
    ]
    assert abs(results["software_accuracy"] - results["noiseless_chip_accuracy"]) <= 1e-3
    assert results["software_accuracy"] > 0.5  # 40 steps learn something: the comparison is not of chance
    assert results["pcm_chip_accuracy_1h"] > 0.5
    assert sum(1 for line in path.read_text().splitlines() if line.strip()) <= 75  # user code stays short


@needs_shared
@pytest.mark.parametrize("example", ["flax_fewshot_on_chip", "equinox_fewshot_on_chip"])
def test_the_fewshot_examples_learn_tasks_on_the_chip(example, capsys, monkeypatch):
    """A user's Flax / Equinox CNN meta-trained as a ProtoNet, every task learned on the chip: the noiseless
    chip gives the software accuracy, and the short run learns more than chance (20 %)."""
    import importlib.util
    from pathlib import Path

    monkeypatch.setenv("L2L_PCM_DATA", str(SHARED))
    path = Path(__file__).parents[1] / "examples" / f"{example}.py"
    spec = importlib.util.spec_from_file_location(example, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(steps=20, tasks=4)
    assert capsys.readouterr().out.strip().splitlines()[-2:] == [
        f"software_accuracy: {results['software_accuracy']:.4f}",
        f"noiseless_chip_accuracy: {results['noiseless_chip_accuracy']:.4f}",
    ]
    assert abs(results["software_accuracy"] - results["noiseless_chip_accuracy"]) <= 1e-3
    assert results["software_accuracy"] > 0.3 and results["pcm_chip_accuracy_1h"] > 0.3


class LinenCNN:  # built lazily: flax.linen is imported by the test that uses it
    @staticmethod
    def make():
        from flax import linen

        class CNN(linen.Module):
            @linen.compact
            def __call__(self, x):
                x = linen.relu(linen.Conv(8, (3, 3), strides=2, padding="SAME")(x))  # pads (0, 1) at stride 2
                x = linen.relu(linen.Conv(8, (3, 3), padding=((0, 1), (1, 0)))(x))
                x = linen.LayerNorm()(x.reshape(x.shape[0], -1))  # stays digital
                return linen.Dense(10)(x)

        return CNN()


def test_a_linen_model_on_a_noiseless_chip_equals_linen_and_trains_hardware_aware(key):
    from flax import linen

    model = LinenCNN.make()
    x = jax.random.normal(key, (4, 9, 9, 1))
    variables = model.init(jax.random.PRNGKey(1), x)
    chip = Chip(NOISELESS)
    onchip = flax_chip.linen_to_chip(model, variables, x, chip, key)
    assert onchip.layer_names == ["Conv_0", "Conv_1", "Dense_0"]
    expected = model.apply(variables, x)
    np.testing.assert_allclose(jax.jit(onchip.read())(x), expected, rtol=1e-5, atol=1e-5)
    assert chip.counters["Dense_0"]["mvm_vectors"] > 0  # the reads are booked on the chip

    aware = flax_chip.linen_hardware_aware(model, variables, x, NOISELESS, key)
    np.testing.assert_allclose(aware(variables, x), expected, rtol=1e-5, atol=1e-5)

    def loss(apply, v):
        return jnp.sum(apply(v, x) ** 2)

    grads = jax.grad(lambda v: loss(aware, v))(variables)["params"]["Conv_0"]["kernel"]
    exact = jax.grad(lambda v: loss(model.apply, v))(variables)["params"]["Conv_0"]["kernel"]
    kernel = variables["params"]["Conv_0"]["kernel"]
    inside = jnp.abs(kernel) < jnp.max(jnp.abs(kernel))  # at the range's edge the clip's gradient ties at 1/2
    np.testing.assert_allclose(grads[inside], exact[inside], rtol=1e-4, atol=1e-5)  # straight through

    class Grouped(linen.Module):
        @linen.compact
        def __call__(self, x):
            return linen.Conv(8, (3, 3), feature_group_count=2)(x)

    with pytest.raises(ConfigError, match="grouped or dilated"):
        flax_chip.linen_to_chip(
            Grouped(), Grouped().init(key, jnp.ones((1, 5, 5, 2))), jnp.ones((1, 5, 5, 2)), Chip(NOISELESS), key
        )
