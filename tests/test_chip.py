import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2l_pcm.chip import ArraysConfig, Chip, ChipConfig, ForwardConfig, UpdateConfig, conv_kernel_to_matrix
from l2l_pcm.cli import main
from l2l_pcm.errors import CheckpointError, ChipCapacityError, ConfigError
from l2l_pcm.pcm import PCMDevice, quantize

NOISELESS = ChipConfig(device=PCMDevice().noiseless())


def paper_cnn_chip(config=None):
    chip = Chip(config)
    chip.place_conv("conv1", (3, 3, 1, 56))
    for name in ("conv2", "conv3", "conv4"):
        chip.place_conv(name, (3, 3, 56, 56))
    chip.place_dense("readout", (56, 5))
    return chip


def test_paper_cnn_conv_layers_split_over_both_arrays():
    chip = paper_cnn_chip()
    for name in ("conv2", "conv3", "conv4"):
        tiles = chip.placements[name].tiles
        assert [t.rows for t in tiles] == [252, 252]
        assert {t.array for t in tiles} == {0, 1}
    used = chip.summary()["used_cells_per_array"]
    assert sum(used) == 9 * 56 + 3 * 504 * 56 + 56 * 5  # every weight of the network, one crosspoint each


def test_layer_that_does_not_fit_is_refused_with_a_clear_error():
    chip = paper_cnn_chip()
    with pytest.raises(ChipCapacityError, match=r"'big'.*does not fit.*2 array.*need 3 .*ArraysConfig\(count=3\)"):
        chip.place_dense("big", (256, 200))
    with pytest.raises(ChipCapacityError, match="need 32"):  # 8 x 4 tiles of 256 x 256
        Chip().place_dense("huge", (2048, 1024))
    with pytest.raises(ConfigError, match="already placed"):
        chip.place_dense("readout", (4, 4))


def test_layers_wider_and_taller_than_an_array_are_tiled_in_both_directions(key):
    weights = jnp.clip(0.3 * jax.random.normal(key, (784, 512)), -1, 1)
    x = jax.random.uniform(jax.random.fold_in(key, 1), (3, 784))
    for adc_bits in (None, 16):  # ideal outputs, and a 16-bit ADC per tile (partial sums added digitally)
        chip = Chip(
            ChipConfig(
                device=PCMDevice().noiseless(),
                arrays=ArraysConfig(count=8),
                forward=ForwardConfig(adc_bits=adc_bits, adc_range=16.0),
            )
        )
        placement = chip.place_dense("fc", (784, 512))
        assert len(placement.tiles) == 8 and {t.array for t in placement.tiles} == set(range(8))
        assert sorted((t.out_start, t.row_start) for t in placement.tiles) == [
            (out, row) for out in (0, 256) for row in (0, 196, 392, 588)
        ]
        chip.program("fc", weights, key)
        tolerance = 1e-4 if adc_bits is None else 2e-3
        np.testing.assert_allclose(chip.mvm("fc", x, None), x @ weights, rtol=1e-4, atol=tolerance)


def test_small_layers_share_an_arrays_rows_and_columns():
    chip = Chip()
    chip.place_dense("fc1", (784, 128))  # 4 tiles of 196 x 128: 196 rows of both arrays
    chip.place_dense("small", (50, 10))  # fits below fc1's tiles
    assert chip.placements["small"].tiles[0].array_row == 196


def test_a_layer_that_does_not_fit_next_to_the_others_repacks_the_network(key, tmp_path):
    """784-128-10 on two arrays: fc1's equal blocks leave 60 rows per array, too few for fc2's 128; the
    chip places both again in full-height blocks, and fc1's programmed weights do not change."""
    chip = Chip(NOISELESS)
    chip.place_dense("fc1", (784, 128))
    weights = 0.5 * jax.random.normal(key, (784, 128))
    chip.program("fc1", weights, key)
    before = chip.read_weights("fc1")
    chip.place_dense("fc2", (128, 10))
    assert [t.rows for t in chip.placements["fc1"].tiles] == [256, 256, 256, 16]
    np.testing.assert_array_equal(chip.read_weights("fc1"), before)
    x = jax.random.uniform(key, (4, 784))
    np.testing.assert_allclose(chip.mvm("fc1", x, None), x @ jnp.clip(weights, -1, 1), rtol=1e-4, atol=1e-4)
    chip.save(tmp_path / "mlp.safetensors")
    assert Chip.load(tmp_path / "mlp.safetensors").placements == chip.placements
    big = Chip(ChipConfig(arrays=ArraysConfig(count=8)))
    big.place_dense("fc1", (784, 512))
    big.place_dense("fc2", (512, 10))  # re-packed: 7 arrays for fc1, fc2 beside its last tiles
    assert sum(used > 0 for used in big.summary()["used_cells_per_array"]) == 8
    with pytest.raises(ChipCapacityError, match="need 9"):
        big.place_dense("fc3", (256, 256))


def test_robot_trainee_fits_one_array():
    chip = Chip()
    placement = chip.place_dense("trainee", (255, 250))
    assert len(placement.tiles) == 1


def test_noiseless_chip_mvm_and_conv_equal_software(key):
    chip = paper_cnn_chip(NOISELESS)
    kernel = 0.3 * jax.random.normal(key, (3, 3, 56, 56))
    chip.program("conv2", kernel, key)
    chip.advance(86400.0)
    images = jax.random.normal(jax.random.fold_in(key, 1), (3, 14, 14, 56))
    reference = jax.lax.conv_general_dilated(
        images, jnp.clip(kernel, -1, 1), (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    out = chip.conv2d("conv2", images, jax.random.fold_in(key, 2))
    assert out.shape == reference.shape == (3, 7, 7, 56)
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4)
    w = 0.4 * jax.random.normal(key, (56, 5))
    chip.program("readout", w, key)
    x = jax.random.normal(key, (10, 56))
    np.testing.assert_allclose(chip.mvm("readout", x, key), x @ jnp.clip(w, -1, 1), rtol=1e-5, atol=1e-5)


def test_mvm_read_noise_is_fresh_per_read_with_the_right_variance(key):
    chip = Chip()
    chip.place_dense("layer", (64, 8))
    chip.program("layer", 0.5 * jax.random.normal(key, (64, 8)), key)
    chip.advance(3600.0)
    x = jnp.tile(jax.random.uniform(key, (1, 64)), (20_000, 1))
    y = chip.mvm("layer", x, jax.random.fold_in(key, 3))
    stats = chip.read_statistics("layer")
    expected_std = jnp.sqrt((x[0] ** 2) @ stats.variance)
    np.testing.assert_allclose(jnp.mean(y, axis=0), x[0] @ stats.mean, atol=float(expected_std.max()) * 0.05)
    np.testing.assert_allclose(jnp.std(y, axis=0), expected_std, rtol=0.03)
    assert float(jnp.min(jnp.std(y, axis=0))) > 0


def test_reprogram_touches_exactly_devices_with_nonzero_quantized_update(key):
    chip = Chip()
    chip.place_dense("layer", (128, 64))
    weights = jnp.clip(0.4 * jax.random.normal(key, (128, 64)), -0.8, 0.8)  # away from the ±1 rails
    chip.program("layer", weights, key)
    chip.advance(600.0)
    before = chip.states["layer"]
    update = 0.04 * jax.random.normal(jax.random.fold_in(key, 1), (128, 64))
    reprogram_key = jax.random.fold_in(key, 2)
    report = chip.reprogram("layer", update, reprogram_key, rounding="nearest")
    after = chip.states["layer"]

    quantized = np.asarray(quantize(update, 1 / 16))
    nonzero = quantized != 0
    changed = np.asarray((after.g_prog_uS != before.g_prog_uS) | (after.programmed_at_s != before.programmed_at_s))
    pair_changed = changed.any(axis=0)
    assert 0 < nonzero.sum() < nonzero.size
    np.testing.assert_array_equal(pair_changed, nonzero)
    assert report.pairs_touched == int(nonzero.sum())
    assert report.devices_touched == int(changed.sum())
    # untouched devices keep every field bit for bit; touched ones carry the new time
    for field_before, field_after in zip(before, after, strict=True):
        np.testing.assert_array_equal(np.asarray(field_before)[~changed], np.asarray(field_after)[~changed])
    assert np.all(np.asarray(after.programmed_at_s)[changed] == 600.0)
    # the digital record holds old target + quantized update
    new_weights = PCMDevice().conductances_to_weights(after.g_target_uS)
    np.testing.assert_allclose(new_weights, weights + quantized, atol=1e-5)
    assert chip.counters["layer"]["devices_programmed"] == 2 * 128 * 64 + report.devices_touched


def test_drift_follows_each_devices_own_programming_time(key):
    config = ChipConfig(device=PCMDevice(prog_noise_scale=0.0, read_noise_scale=0.0))
    chip = Chip(config)
    chip.place_dense("layer", (4, 4))
    chip.program("layer", jnp.full((4, 4), 0.5), key)
    chip.advance(20.0 * 1000)
    update = jnp.zeros((4, 4)).at[0, 0].set(0.125)
    chip.reprogram("layer", update, key, rounding="nearest")
    read = np.asarray(chip.read_weights("layer"))
    assert read[0, 0] == pytest.approx(0.625)  # freshly programmed: no drift yet
    others = read.ravel()[1:]
    assert np.all(others < 0.5)  # programmed 1000·t0 ago: drifted, ν ~ |N(0.049, 0.008)|
    assert float(np.mean(others)) == pytest.approx(0.5 * 1000 ** (-0.049), rel=0.05)
    chip.advance(20.0 * 1000)
    assert float(chip.read_weights("layer")[0, 0]) < 0.625


def test_drift_compensation_removes_the_mean_drift(key):
    weights = 0.5 * jax.random.normal(key, (64, 32))
    errors = {}
    for compensated in (False, True):
        chip = Chip(ChipConfig(drift_compensation=compensated))
        chip.place_dense("layer", (64, 32))
        chip.program("layer", weights, key)
        chip.advance(86400.0)
        read = chip.read_weights("layer")
        errors[compensated] = float(jnp.mean((read - jnp.clip(weights, -1, 1)) * jnp.sign(weights)))
    assert errors[False] < -0.05
    assert abs(errors[True]) < 0.25 * abs(errors[False])


def test_dac_and_adc_quantize(key):
    chip = Chip(
        ChipConfig(device=PCMDevice().noiseless(), forward=ForwardConfig(dac_bits=4, adc_bits=4, adc_range=2.0))
    )
    chip.place_dense("layer", (300, 3))  # two tiles: each digitised separately
    chip.program("layer", jnp.full((300, 3), 0.01), key)
    y = chip.mvm("layer", jnp.linspace(-1, 1, 300)[None, :] * jnp.ones((5, 1)), None)
    step = 2.0 / 7
    assert np.allclose(np.asarray(y) / step, np.round(np.asarray(y) / step), atol=1e-4)


def test_counters_and_energy_estimate(key):
    chip = Chip()
    chip.place_dense("layer", (300, 10))
    chip.program("layer", jnp.zeros((300, 10)), key)
    chip.mvm("layer", jnp.ones((7, 300)), key)
    counters = chip.counters["layer"]
    assert counters["mvm_vectors"] == 7 and counters["array_mvms"] == 14 and counters["macs"] == 7 * 3000
    assert counters["devices_programmed"] == 6000 and counters["program_events"] == 1
    report = chip.energy_report()["layer"]
    assert report["mvm_energy_pJ"] == pytest.approx(7 * 3000 * 0.19)
    assert report["programming_energy_pJ"] == pytest.approx(6000 * 10 * 50)


def test_save_and_load_round_trip(tmp_path, key):
    chip = paper_cnn_chip()
    chip.program("readout", 0.3 * jax.random.normal(key, (56, 5)), key)
    chip.advance(123.0)
    chip.reprogram("readout", 0.1 * jax.random.normal(key, (56, 5)), key, rounding="stochastic")
    chip.mvm("readout", jnp.ones((3, 56)), key)
    path = tmp_path / "chip.safetensors"
    chip.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["chip.safetensors"]  # no temp file left behind
    loaded = Chip.load(path)
    assert loaded.now_s == 123.0 and loaded.counters == chip.counters
    assert loaded.placements == chip.placements
    for a, b in zip(loaded.states["readout"], chip.states["readout"], strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(loaded.read_weights("readout"), chip.read_weights("readout"))


def test_corrupt_truncated_or_foreign_state_files(tmp_path, key):
    chip = Chip()
    chip.place_dense("layer", (8, 8))
    chip.program("layer", jnp.zeros((8, 8)), key)
    good = tmp_path / "chip.safetensors"
    chip.save(good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        Chip.load(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(200))
    with pytest.raises(CheckpointError, match="garbage"):
        Chip.load(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        Chip.load(tmp_path / "missing.safetensors")
    from l2l_pcm._io import save_tensors

    foreign = tmp_path / "foreign.safetensors"
    save_tensors(foreign, {"w": np.zeros(3, np.float32)}, {"kind": "fewshot-checkpoint"})
    with pytest.raises(CheckpointError, match="expected 'chip-state'"):
        Chip.load(foreign)


def test_bad_inputs_name_the_problem(key):
    chip = Chip()
    chip.place_dense("layer", (8, 4))
    with pytest.raises(ConfigError, match="not been programmed"):
        chip.mvm("layer", jnp.ones(8), key)
    with pytest.raises(ConfigError, match=r"shape \(4, 8\), expected \(8, 4\)"):
        chip.program("layer", jnp.zeros((4, 8)), key)
    with pytest.raises(ConfigError, match="NaN"):
        chip.program("layer", jnp.full((8, 4), jnp.nan), key)
    chip.program("layer", jnp.zeros((8, 4)), key)
    with pytest.raises(ConfigError, match=r"expected \[\.\.\., 8\]"):
        chip.mvm("layer", jnp.ones((2, 5)), key)
    with pytest.raises(ConfigError, match="no layer named 'nope'"):
        chip.mvm("nope", jnp.ones(8), key)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="advance"):
            chip.advance(bad)
    with pytest.raises(ConfigError, match="rounding"):
        chip.reprogram("layer", jnp.zeros((8, 4)), key, rounding="up")
    with pytest.raises(ConfigError, match="arrays.count"):
        ChipConfig(arrays=ArraysConfig(count=0))
    with pytest.raises(ConfigError, match="adc_bits"):
        ChipConfig(forward=ForwardConfig(adc_bits=1))


@pytest.mark.parametrize(("size", "stride", "padding"), [(6, 2, 1), (7, 2, 1), (28, 2, 1), (5, 1, 1), (8, 1, 0)])
def test_conv_kernel_matrix_order_matches_patches(key, size, stride, padding):
    kernel = jax.random.normal(key, (3, 3, 2, 4))
    images = jax.random.normal(jax.random.fold_in(key, 1), (2, size, size, 2))
    from l2l_pcm.chip import image_patches

    patches = image_patches(images, (3, 3), stride, padding)
    reference = jax.lax.conv_general_dilated(
        images,
        kernel,
        (stride, stride),
        ((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    np.testing.assert_allclose(patches @ conv_kernel_to_matrix(kernel), reference, rtol=1e-5, atol=1e-5)


def test_cli_chip_stats_json(capsys):
    assert main(["chip", "stats", "--json", "--samples", "20000"]) == 0
    data = json.loads(capsys.readouterr().out)
    keys = {
        "g_target_uS",
        "prog_std_target_uS",
        "prog_std_measured_uS",
        "nu_mean_target",
        "nu_mean_measured",
        "nu_std_target",
        "nu_std_measured",
        "read_std_target_uS",
        "read_std_measured_uS",
        "samples",
    }
    assert len(data["rows"]) >= 10 and keys <= set(data["rows"][0])


@pytest.mark.slow  # end-to-end chip demo with its plot (9 s)
def test_cli_chip_demo_writes_plot(tmp_path, capsys):
    assert main(["chip", "demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 d" in out and "devices" in out
    assert (tmp_path / "chip_drift.png").stat().st_size > 10_000


def test_drift_demo_shows_the_calibrated_compensation_and_the_oracle_as_reference(tmp_path, saved_figures):
    from l2l_pcm.chip.diagnostics import drift_demo, plot_drift_demo

    result = drift_demo(jax.random.PRNGKey(0), shape=(64, 32), times_s=(1.0, 86400.0))
    assert result.error_mean[-1] < -0.05  # a day of drift, uncompensated
    assert abs(result.error_mean_compensated[-1]) < 0.02 and abs(result.error_mean_oracle[-1]) < 0.02
    assert result.error_mean_compensated != result.error_mean_oracle  # the chip's own estimate, not the oracle's
    plot_drift_demo(result, tmp_path / "drift.png")
    text = "\n".join(text for text, _ in saved_figures[0]["texts"])
    assert "mean error, calibrated compensation, per array" in text and "global drift compensation" not in text
    assert "oracle global factor (reference: no chip can measure it)" in text and "64×32 layer" in text


def test_cli_rejects_bad_sample_count(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["chip", "stats", "--samples", "0"])
    assert exc.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_per_batch_read_noise_shares_one_draw_across_a_call(key):
    chip = Chip(ChipConfig(forward=ForwardConfig(read_noise_mode="per_batch")))
    chip.place_dense("layer", (32, 4))
    chip.program("layer", 0.5 * jax.random.normal(key, (32, 4)), key)
    chip.advance(3600.0)
    x = jnp.ones((3, 32))
    y = chip.mvm("layer", x, key)
    np.testing.assert_allclose(y[0], y[1])  # same noisy weights for every vector of one call
    assert not np.allclose(y[0], chip.mvm("layer", x, jax.random.fold_in(key, 1))[0])
    with pytest.raises(ConfigError, match="read_noise_mode"):
        ChipConfig(forward=ForwardConfig(read_noise_mode="sometimes"))


def test_shape_and_device_class_errors_are_one_line_config_errors(tmp_path):
    import dataclasses

    from l2l_pcm.pcm import PCMDevice

    chip = Chip()
    with pytest.raises(ConfigError, match=r"dense layer 'c' needs a \(fan_in, fan_out\) shape.*use place_conv"):
        chip.place_dense("c", (3, 3, 56, 56))

    @dataclasses.dataclass(frozen=True)
    class MyDevice(PCMDevice):
        pass

    custom = Chip(ChipConfig(device=MyDevice()))
    custom.place_dense("layer", (4, 4))
    with pytest.raises(ConfigError, match="device class MyDevice"):
        custom.save(tmp_path / "chip.safetensors")
    assert not (tmp_path / "chip.safetensors").exists()
    # sequences are accepted where the device takes tuples (a JSON list, say)
    assert PCMDevice(prog_noise_coeffs_uS=[0.26348, 1.9650, -1.1731]) == PCMDevice()


@pytest.mark.parametrize("scaling", ["layer", "column"])
def test_weight_scaling_holds_weights_beyond_w_max_and_a_digital_bias(key, scaling, tmp_path):
    weights = 5.0 * jax.random.uniform(key, (40, 12), minval=-1, maxval=1) * jnp.linspace(0.1, 1, 12)
    bias = jnp.arange(12.0)
    x = jax.random.normal(jax.random.fold_in(key, 1), (4, 40))
    chip = Chip(NOISELESS)
    chip.place_dense("fc", (40, 12))
    report = chip.program("fc", weights, key, scaling=scaling, bias=bias)
    assert report.weights_clipped == 0
    np.testing.assert_allclose(chip.mvm("fc", x, None), x @ weights + bias, rtol=1e-4, atol=1e-4)
    if scaling == "column":  # every column uses the whole conductance range
        np.testing.assert_allclose(chip.scales["fc"], jnp.max(jnp.abs(weights), axis=0), rtol=1e-6)
    chip.save(tmp_path / "chip.safetensors")
    loaded = Chip.load(tmp_path / "chip.safetensors")
    np.testing.assert_allclose(loaded.mvm("fc", x, None), x @ weights + bias, rtol=1e-4, atol=1e-4)
    # an update is quantized on the devices' grid: a step of update_step x scale in weight units
    step = float(chip.scales["fc"][0]) * NOISELESS.update.step
    update = jnp.zeros((40, 12)).at[0, 0].set(step)
    chip.reprogram("fc", update, key, rounding="nearest")
    np.testing.assert_allclose(chip.read_weights("fc")[0, 0], weights[0, 0] + step, rtol=1e-4, atol=1e-5)


def test_weights_beyond_w_max_without_scaling_are_clipped_and_counted(key):
    chip = Chip(NOISELESS)
    chip.place_dense("fc", (3, 2))
    report = chip.program("fc", jnp.array([[5.0, 0.5], [-2.0, 0.1], [0.3, 1.0]]), key)
    assert report.weights_clipped == 2 and chip.counters["fc"]["weights_clipped"] == 2
    np.testing.assert_allclose(chip.read_weights("fc")[:, 0], [1.0, -1.0, 0.3], atol=1e-5)
    with pytest.raises(ConfigError, match="scaling must be one of"):
        chip.program("fc", jnp.zeros((3, 2)), key, scaling="global")


def test_a_numeric_scaling_sets_a_zero_layers_range_and_updates_past_it_are_counted(key):
    """A layer programmed at zero with scaling 0.25 has the range ±0.25 and an update grid of 0.25/16;
    an update that would carry a weight past ±0.25 is stored at the bound and counted."""
    from l2l_pcm.chip import deploy

    chip = Chip(NOISELESS)
    deploy({"fc": jnp.zeros((3, 2)), "other": jnp.ones((2, 2))}, chip, key, scaling={"fc": 0.25})
    np.testing.assert_allclose(chip.scales["fc"], [0.25, 0.25])
    np.testing.assert_allclose(chip.scales["other"], [1.0, 1.0])  # a layer not named: "none"
    update = jnp.array([[0.1, 0.0], [0.0, -0.3], [0.0, 0.0]])
    report = chip.reprogram("fc", update, key, rounding="nearest")
    # 0.1 is 6.4 steps of 1/64: 6 steps; -0.3 is past the range: clipped to -0.25
    np.testing.assert_allclose(chip.read_weights("fc"), [[6 / 64, 0.0], [0.0, -0.25], [0.0, 0.0]], atol=1e-6)
    assert report.weights_clipped == 1 and chip.counters["fc"]["weights_clipped"] == 1
    report = chip.reprogram("fc", jnp.zeros((3, 2)).at[0, 0].set(0.05), key, rounding="nearest")
    assert report.weights_clipped == 0  # 6/64 + 3/64 stays inside
    with pytest.raises(ConfigError, match="not in params"):
        deploy({"fc": jnp.zeros((3, 2))}, Chip(NOISELESS), key, scaling={"fc2": 0.5})
    with pytest.raises(ConfigError, match="finite number > 0"):
        chip.program("fc", jnp.zeros((3, 2)), key, scaling=-1.0)


def test_calibrated_periphery_recovers_what_fixed_ranges_clip(key, tmp_path):
    """ReLU-like inputs up to ~9 through an 8-bit DAC/ADC: the config's ±1 DAC range clips them (counted);
    calibration from sample inputs sets an unsigned DAC and a per-layer ADC range and the error drops."""
    weights = jnp.clip(0.3 * jax.random.normal(key, (100, 20)), -1, 1)
    x = 9.0 * jax.random.uniform(jax.random.fold_in(key, 1), (64, 100)) ** 2
    exact = x @ weights
    config = ChipConfig(device=PCMDevice().noiseless(), forward=ForwardConfig(dac_bits=8, adc_bits=8))
    chip = Chip(config)
    chip.place_dense("fc", (100, 20))
    chip.program("fc", weights, key)
    error_fixed = float(jnp.mean(jnp.abs(chip.mvm("fc", x, None) - exact)))
    fixed = chip.saturation("fc")
    assert fixed["dac"] > 0.5
    ranges = chip.calibrate("fc", x[:32])
    assert ranges.dac_unsigned and ranges.dac_range == pytest.approx(float(jnp.max(x[:32])))
    error_calibrated = float(jnp.mean(jnp.abs(chip.mvm("fc", x, None) - exact)))
    assert error_calibrated < 0.05 * error_fixed
    assert error_calibrated < 0.02 * float(jnp.mean(jnp.abs(exact)))
    chip.save(tmp_path / "chip.safetensors")
    assert Chip.load(tmp_path / "chip.safetensors").layer_periphery("fc") == ranges
    with pytest.raises(ConfigError, match="adc_range of layer 'fc' must be a finite number > 0"):
        chip.set_periphery("fc", adc_range=0.0)


def test_hardware_config_from_partial_json_and_a_profile_name():
    from l2l_pcm.pcm import device_profile

    data = {"device": "authors", "forward": {"adc_bits": 8}, "energy": {"mvm_latency_ns": 100.0}}
    hardware = ChipConfig.from_json(data)
    assert hardware.device == device_profile("authors") and hardware.forward.adc_bits == 8
    assert hardware.energy.mvm_latency_ns == 100.0 and hardware.arrays.count == 2
    assert ChipConfig.from_json(hardware.to_json()) == hardware  # round trip through JSON
    # a partial tree laid over another keeps what it leaves out; dotted settings the same
    base = ChipConfig(update=UpdateConfig(step=1 / 32, rounding="nearest"))
    over = base.updated({"forward": {"dac_bits": 8}})
    assert over.update == base.update and over.forward.dac_bits == 8
    assert base.with_settings({"forward.dac_bits": 8, "update.rounding": "nearest"}) == over
    with pytest.raises(ConfigError, match=r"dac_bits -> forward.dac_bits"):  # the flat config of format 4
        ChipConfig.from_json({"dac_bits": 8})
    with pytest.raises(ConfigError, match=r"update.rounding: must be one of"):
        base.with_settings({"update.rounding": "up"})
    with pytest.raises(ConfigError, match="unknown ChipConfig fields"):
        ChipConfig.from_json({"n_array": 4})


# ------------------------------------------------------------------------------------ unit cells
def test_two_device_unit_cells_cut_noise_by_sqrt2_and_count_every_device(tmp_path):
    """N devices per polarity: each programmed, drifting and read on its own, averaged into one weight."""
    weights = jnp.full((256, 64), 0.5)
    errors, read_stds, counts = {}, {}, {}
    for count in (1, 2):
        device = PCMDevice(devices_per_polarity=count)
        chip = Chip(ChipConfig(device=device))
        chip.place_dense("layer", weights.shape)
        report = chip.program("layer", weights, jax.random.PRNGKey(3))
        chip.advance(3600.0)
        errors[count] = float(jnp.std(chip.read_weights("layer") - weights))
        read_stds[count] = float(jnp.sqrt(jnp.mean(chip.read_statistics("layer").variance)))
        update = jnp.zeros(weights.shape).at[:10, :3].set(0.0625)
        step = chip.reprogram("layer", update, jax.random.PRNGKey(4), rounding="nearest")
        counts[count] = (report.devices_touched, step.devices_touched, step.pairs_touched, step.rows_touched)
        assert chip.placements["layer"].devices == 2 * count * weights.size
        if count == 2:
            path = tmp_path / "cells.safetensors"
            chip.save(path)
            loaded = Chip.load(path)
            np.testing.assert_array_equal(loaded.read_weights("layer"), chip.read_weights("layer"))
            assert loaded.states["layer"].g_prog_uS.shape == (2, 2, 256, 64)
    # programming noise + drift spread, and read noise: both about 1/sqrt(2) (16k weights: ±2 %)
    assert errors[2] / errors[1] == pytest.approx(1 / np.sqrt(2), rel=0.05)
    assert read_stds[2] / read_stds[1] == pytest.approx(1 / np.sqrt(2), rel=0.05)
    # a full program writes every device; a positive update moves the N G+ devices of 30 weights
    assert counts[1] == (2 * weights.size, 30, 30, 10)
    assert counts[2] == (4 * weights.size, 60, 30, 10)


def test_software_pcm_model_sees_the_unit_cell():
    weights = jnp.full((128, 128), 0.5)
    spread = {
        n: float(jnp.std(PCMDevice(devices_per_polarity=n).noisy_weights(jax.random.PRNGKey(0), weights, 3600.0)))
        for n in (1, 4)
    }
    assert spread[4] / spread[1] == pytest.approx(0.5, rel=0.05)


def test_unit_cell_size_is_validated():
    for bad in (0, 1.5, True, 17):
        with pytest.raises(ConfigError, match="devices_per_polarity"):
            PCMDevice(devices_per_polarity=bad)
    with pytest.raises(ConfigError, match="authors_jitter.*devices_per_polarity 1"):
        PCMDevice(devices_per_polarity=2, initial_programming="authors_jitter", fixed_age_s=32.0)


def test_counter_noise_generator_draws_standard_normals_and_the_chip_uses_it(key):
    from l2l_pcm.chip.crossbar import counter_normal

    z = np.asarray(counter_normal(key, (1000, 1000)), dtype=np.float64)
    assert abs(z.mean()) < 0.005 and abs(z.std() - 1) < 0.005
    for q, expected in ((0.5, 0.0), (0.8413, 1.0), (0.9772, 2.0), (0.00135, -3.0)):  # normal quantiles
        assert np.quantile(z, q) == pytest.approx(expected, abs=0.02)
    other = np.asarray(counter_normal(jax.random.fold_in(key, 1), (1000, 1000)))
    assert abs(np.corrcoef(z.ravel(), other.ravel())[0, 1]) < 0.005  # another key: another stream
    assert abs(np.corrcoef(z[:, :-1].ravel(), z[:, 1:].ravel())[0, 1]) < 0.005  # neighbours independent
    outputs = {}
    for rng in ("threefry", "counter"):
        chip = Chip(ChipConfig(forward=ForwardConfig(read_noise_rng=rng)))
        chip.place_dense("layer", (256, 64))
        chip.program("layer", jnp.full((256, 64), 0.5), key)
        chip.advance(3600.0)
        x = jnp.ones((2000, 256))
        outputs[rng] = np.asarray(chip.mvm("layer", x, key) - chip.mvm("layer", x, None))
    assert not np.allclose(outputs["threefry"], outputs["counter"])
    assert outputs["counter"].std() == pytest.approx(outputs["threefry"].std(), rel=0.03)
    with pytest.raises(ConfigError, match="read_noise_rng"):
        ChipConfig(forward=ForwardConfig(read_noise_rng="mersenne"))


# ---------------------------------------------------------------------------------- drift compensation
@pytest.mark.parametrize("mode", ["array", "column"])
def test_calibrated_drift_compensation_holds_the_output_scale_over_time_and_ages(key, mode):
    """Measured by noisy reads of known inputs: the output gain against the chip's own record stays within
    2 % of its 1-s value at 1 day and 1 month, also right after half the layer was re-programmed."""
    weights = 0.3 * jax.random.normal(key, (256, 128))
    x = jax.random.uniform(jax.random.fold_in(key, 1), (500, 256))

    def gain(chip):
        reference = x @ chip.intended_weights("layer")
        y = chip.mvm("layer", x, jax.random.fold_in(key, 2))
        return float(jnp.sum(y * reference) / jnp.sum(reference * reference))

    gains = {}
    for age in (1.0, 86400.0, 30 * 86400.0):
        for compensation in ("none", mode):
            chip = Chip(ChipConfig(drift_compensation=compensation))
            chip.place_dense("layer", weights.shape)
            chip.program("layer", weights, key)
            chip.advance(age)
            gains[compensation, age] = gain(chip)
    assert gains["none", 86400.0] < 0.75  # drift is real
    for age in (86400.0, 30 * 86400.0):
        assert gains[mode, age] == pytest.approx(gains[mode, 1.0], rel=0.02)
    calibrations = chip.counters["layer"]["calibration_vectors"]
    assert calibrations > 0 and chip.counters["layer"]["mvm_vectors"] == 500 + calibrations
    update = jnp.zeros(weights.shape).at[:, :64].set(0.25)  # young devices among old ones
    chip.reprogram("layer", update, key, rounding="nearest")
    chip.advance(1.0)
    reference = x @ chip.intended_weights("layer")
    y = chip.mvm("layer", x, jax.random.fold_in(key, 3))
    for columns in (slice(0, 64), slice(64, 128)):  # the gains of 32 calibration reads vary by ~2 % between chips
        ratio = float(jnp.sum(y[:, columns] * reference[:, columns]) / jnp.sum(reference[:, columns] ** 2))
        assert ratio == pytest.approx(gains[mode, 1.0], rel=0.035)


def test_drift_compensation_names_and_older_configs():
    assert ChipConfig(drift_compensation=True).drift_compensation == "global"
    assert ChipConfig(drift_compensation=False).drift_compensation == "none"
    with pytest.raises(ConfigError, match="drift_compensation: expected str, got bool"):  # a JSON file is strict
        ChipConfig.from_json({"drift_compensation": True})
    from l2l_pcm.checkpoint import migrated_config  # ... a checkpoint of the flat format with a bool is migrated

    old = {"format_version": 4, "config": {"hardware": {"drift_compensation": True}}}
    assert ChipConfig.from_json(migrated_config(old)["hardware"]).drift_compensation == "global"
    with pytest.raises(ConfigError, match="drift_compensation must be one of"):
        ChipConfig(drift_compensation="sometimes")
