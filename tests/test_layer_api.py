"""The layer API (l2l_pcm.deploy, Chip.layer, analog_dense/analog_conv, hardware_aware) and the example."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2l_pcm import AnalogLayer, Chip, ChipConfig, analog_conv, analog_dense, deploy, hardware_aware
from l2l_pcm.chip import ArraysConfig, ForwardConfig
from l2l_pcm.errors import ConfigError
from l2l_pcm.pcm import PCMDevice

NOISELESS = ChipConfig(device=PCMDevice().noiseless(), arrays=ArraysConfig(count=8))


def test_noise_off_mvm_equals_matmul_for_weights_within_and_beyond_w_max(key):
    chip = Chip(NOISELESS)
    chip.place_dense("fc", (784, 512))  # 4 x 2 tiles over 8 arrays
    x = jax.random.uniform(key, (8, 784))
    small = jnp.clip(jax.random.normal(key, (784, 512)), -1, 1)
    chip.program("fc", small, key)
    np.testing.assert_allclose(chip.mvm("fc", x, None), x @ small, rtol=1e-4, atol=1e-3)
    large = 5 * small
    report = chip.program("fc", large, key, scaling="layer")
    assert report.weights_clipped == 0
    reference = x @ large
    np.testing.assert_allclose(
        chip.mvm("fc", x, None), reference, rtol=1e-4, atol=1e-4 * float(jnp.abs(reference).max())
    )


def test_deploy_places_scales_and_programs_a_dict_and_layers_work_in_jit_grad_vmap(key):
    chip = Chip(ChipConfig(arrays=ArraysConfig(count=8)))
    params = {"fc1": 3 * jax.random.normal(key, (784, 512)), "fc2": jax.random.normal(key, (512, 10))}
    reports = deploy(params, chip, key, biases={"fc2": jnp.arange(10.0)})
    assert set(reports) == {"fc1", "fc2"} and all(r.weights_clipped == 0 for r in reports.values())
    assert sum(used > 0 for used in chip.summary()["used_cells_per_array"]) == 8
    chip.advance(3600.0)  # read noise grows with age (none at t = 0)
    layer = chip.layer("fc2")
    assert isinstance(layer, AnalogLayer)
    h = jax.random.uniform(key, (6, 512))
    expected = h @ chip.read_weights("fc2") + jnp.arange(10.0)
    np.testing.assert_allclose(jax.jit(analog_dense)(layer, h, None), expected, rtol=1e-5, atol=1e-4)
    noisy = jax.vmap(lambda k: analog_dense(layer, h, k))(jax.random.split(key, 3))
    assert noisy.shape == (3, 6, 10) and not np.allclose(noisy[0], noisy[1])
    grad = jax.grad(lambda x: analog_dense(layer, x, None).sum())(h)
    np.testing.assert_allclose(grad, jnp.broadcast_to(chip.read_weights("fc2").sum(1), h.shape), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="not in params"):
        deploy(params, chip, key, biases={"fc3": jnp.zeros(3)})
    with pytest.raises(ConfigError, match="2-D .* or 4-D"):
        deploy({"odd": jnp.zeros(3)}, Chip(), key)


def test_analog_conv_matches_the_chip_and_xla(key):
    chip = Chip(ChipConfig(device=PCMDevice().noiseless()))
    kernel = 0.3 * jax.random.normal(key, (3, 3, 4, 8))
    deploy({"conv": kernel}, chip, key, scaling="none")
    images = jax.random.normal(key, (2, 9, 9, 4))
    ours = analog_conv(chip.layer("conv"), images, None, stride=2, padding=1)
    reference = jax.lax.conv_general_dilated(
        images, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(chip.conv2d("conv", images, None), reference, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="conv layer"):
        analog_conv(AnalogLayer.exact(jnp.ones((4, 8))), images, None, stride=1, padding=1)


def test_converters_saturate_counted_and_warned_then_calibrated(key):
    chip = Chip(ChipConfig(forward=ForwardConfig(dac_bits=8, adc_bits=8)))
    deploy({"fc": jax.random.normal(key, (64, 32))}, chip, key)
    x = 4 * jax.random.uniform(key, (100, 64))  # inputs up to 4 against the default DAC range 1
    chip.mvm("fc", x, key)
    assert chip.saturation("fc")["dac"] > 0.5
    assert any("'fc'" in line and "DAC" in line for line in chip.saturation_warnings())
    chip.calibrate("fc", x)
    fresh = chip.counters["fc"]["dac_saturated"]
    chip.mvm("fc", x, key)
    assert chip.counters["fc"]["dac_saturated"] == fresh  # no new clipping after calibration


def test_hardware_aware_params_use_the_device_model_and_leave_biases(key):
    weights = jnp.full((64, 64), 3.0).at[0, 0].set(4.0)
    params = {"w": weights, "b": jnp.ones(64)}
    noisy = hardware_aware(params, PCMDevice(), key, 3600.0)
    assert noisy["b"] is params["b"]
    error = noisy["w"] - weights
    assert 0.05 < float(jnp.std(error)) < 1.0  # noise in the scaled range (max |W| = 4 at g_max)
    assert float(error.mean()) < -0.1  # and drift: conductances decay
    grad = jax.grad(lambda p: hardware_aware(p, PCMDevice(), key, 3600.0)["w"].sum())(params)
    np.testing.assert_allclose(grad["w"][1:], 1.0)  # straight-through inside the range
    quiet = hardware_aware(params, PCMDevice().noiseless(), key, 3600.0)
    np.testing.assert_allclose(quiet["w"], params["w"], rtol=1e-6)


# the tutorial docs/tutorials/mlp.md shows this script: it runs in the default suite at toy size (about 30 s)
def test_the_mlp_example_runs_at_toy_size(tmp_path):
    path = Path(__file__).parents[1] / "examples" / "mlp_on_chip.py"
    spec = importlib.util.spec_from_file_location("mlp_on_chip", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(
        ["--hidden", "32", "--epochs", "3", "--chips", "1", "--times", "1 day", "--out", str(tmp_path)]
    )
    assert (tmp_path / "mlp_on_chip.png").stat().st_size > 10_000
    assert result["software"]["fp32-trained"] > 0.8  # 98.5 % at full size
    assert len(result["chip"]) == 2 * 2  # two models, compensation none and array
    assert all(row["accuracy_mean"] > 0.7 for row in result["chip"] if row["model"] == "fp32-trained")
    assert result["dac8_calibrated"][0] >= result["dac8_uncalibrated"][0] - 0.02
