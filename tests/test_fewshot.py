import csv
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SHARED, figure_text, needs_shared

from l2l_pcm.chip import ChipConfig, UpdateConfig
from l2l_pcm.cli import main
from l2l_pcm.errors import CheckpointError, ConfigError, L2LPCMError
from l2l_pcm.fewshot import train as train_module
from l2l_pcm.fewshot.data import TaskSampler
from l2l_pcm.fewshot.deploy import ChipFewShotLearner
from l2l_pcm.fewshot.maml import MAMLConfig, evaluate_batch, make_optimizer, meta_batch_loss, meta_gradient, train_step
from l2l_pcm.fewshot.model import (
    CNNConfig,
    conv3x3_stride2,
    cross_entropy,
    embed,
    init_params,
    readout_gradient,
    software_conv,
)
from l2l_pcm.fewshot.train import load_fewshot_checkpoint, save_fewshot_checkpoint
from l2l_pcm.pcm import PCMDevice

TINY = MAMLConfig(channels=8, meta_batch=2, queries=2)
TINY_RUN = train_module.FewshotTrainConfig(
    model=TINY, iterations=4, validate_every=2, validation_tasks=2, checkpoint_every=2
)


def random_task(key, ways=5, shots=5, queries=2):
    k1, k2 = jax.random.split(key)
    support = (jax.random.uniform(k1, (ways * shots, 28, 28, 1)) < 0.1).astype(jnp.float32)
    query = (jax.random.uniform(k2, (ways * queries, 28, 28, 1)) < 0.1).astype(jnp.float32)
    return support, jnp.repeat(jnp.arange(ways), shots), query, jnp.repeat(jnp.arange(ways), queries)


def test_query_images_do_not_influence_each_other(key):
    params = init_params(key, CNNConfig(channels=8))
    sx, _, qx, _ = random_task(key)

    def conv(i, x):
        return software_conv(params[f"conv{i + 1}"], x)

    _, f_query = embed(conv, sx, qx)
    _, f_changed = embed(conv, sx, qx.at[0].set(1.0 - qx[0]))
    np.testing.assert_allclose(f_query[1:], f_changed[1:], rtol=1e-6, atol=1e-6)
    assert not np.allclose(f_query[0], f_changed[0])


def test_readout_gradient_is_the_cross_entropy_gradient(key):
    features = jax.random.normal(key, (25, 8))
    w = 0.1 * jax.random.normal(jax.random.fold_in(key, 1), (8, 5))
    labels = jnp.repeat(jnp.arange(5), 5)
    expected = jax.grad(lambda v: cross_entropy(features @ v, labels))(w)
    np.testing.assert_allclose(readout_gradient(features, features @ w, labels), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [28, 14, 7, 4, 5])
def test_im2col_conv_and_its_gradient_equal_xla_conv(key, size):
    kernel = jax.random.normal(key, (3, 3, 3, 4))
    images = jax.random.normal(jax.random.fold_in(key, 1), (2, size, size, 3))
    weights = jax.random.normal(jax.random.fold_in(key, 2), software_conv(kernel, images).shape)
    np.testing.assert_allclose(conv3x3_stride2(kernel, images), software_conv(kernel, images), rtol=1e-5, atol=1e-5)
    fast = jax.jit(jax.grad(lambda k, x: jnp.sum(conv3x3_stride2(k, x) * weights), argnums=(0, 1)))(kernel, images)
    reference = jax.grad(lambda k, x: jnp.sum(software_conv(k, x) * weights), argnums=(0, 1))(kernel, images)
    for got, expected in zip(fast, reference, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "variant",
    # pcm (noise, quantized inner steps) by default; the other two are the same code path minus parts
    [pytest.param("fp32", marks=pytest.mark.slow), pytest.param("4bit", marks=pytest.mark.slow), "pcm"],
)
def test_meta_gradient_equals_the_gradient_of_the_vmapped_objective(key, variant):
    """The task-by-task scan with the im2col conv is the same maths as ``grad(meta_batch_loss)``: same
    noise draws, same loss, same gradient for every weight (float tolerance)."""
    config = dataclasses.replace(TINY, variant=variant, meta_batch=3, update_budget=9)
    params = init_params(key, config.cnn)
    params["readout"] = 0.3 * jax.random.normal(key, params["readout"].shape)
    tasks = [random_task(jax.random.fold_in(key, i)) for i in range(3)]
    batch = tuple(jnp.stack(parts) for parts in zip(*tasks, strict=True))
    step_key = jax.random.PRNGKey(5)
    (loss, accuracies), grads = jax.jit(meta_gradient, static_argnames=("config",))(params, batch, step_key, config)
    objective = jax.value_and_grad(meta_batch_loss, has_aux=True)
    (ref_loss, ref_accuracies), ref_grads = objective(params, batch, step_key, config)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(accuracies, ref_accuracies, atol=1e-6)
    for name in params:
        scale = float(jnp.max(jnp.abs(ref_grads[name])))
        assert scale > 0, name
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=0, atol=1e-4 * scale, err_msg=name)


@pytest.mark.parametrize(
    "variant",
    # 4bit is fp32's path plus the quantizer that the gradient-equality tests cover; slow-marked for time
    ["fp32", pytest.param("4bit", marks=pytest.mark.slow), "pcm"],
)
def test_meta_training_reduces_the_loss_on_a_fixed_batch(key, variant):
    config = dataclasses.replace(TINY, variant=variant, meta_batch=2, outer_lr=3e-3)
    params = init_params(key, config.cnn)
    opt_state = make_optimizer(config).init(params)
    tasks = [random_task(jax.random.fold_in(key, i)) for i in range(2)]
    batch = tuple(jnp.stack(parts) for parts in zip(*tasks, strict=True))
    losses = []
    for step in range(15):
        params, opt_state, loss, accuracies = train_step(params, opt_state, batch, jax.random.PRNGKey(step), config)
        losses.append(float(loss))
        assert accuracies.shape == (config.inner_steps + 1,)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert all(float(jnp.max(jnp.abs(w))) <= 1.0 for w in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize("budget", [0, 7])
def test_chip_with_noise_off_matches_software(key, budget):
    """Same tasks, noiseless devices, a 2^-20 update grid: the chip's inner loop equals software fp32,
    with and without an update budget (at most ``budget`` readout weights changed per step)."""
    config = dataclasses.replace(TINY, channels=16, update_budget=budget).with_hardware(update__step=2.0**-20)
    params = init_params(key, config.cnn)
    params["readout"] = 0.2 * jax.random.normal(key, params["readout"].shape)
    chip_config = ChipConfig(device=PCMDevice().noiseless(), update=UpdateConfig(step=2.0**-20))
    learner = ChipFewShotLearner(params, config, key, chip_config)
    for i in range(3):
        sx, sy, qx, qy = random_task(jax.random.fold_in(key, 10 + i))
        f_s_chip, f_q_chip = learner.features(sx, qx, key)
        f_s, f_q = embed(lambda layer, x: software_conv(params[f"conv{layer + 1}"], x), sx, qx)
        np.testing.assert_allclose(f_s_chip, f_s, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(f_q_chip, f_q, rtol=1e-4, atol=1e-4)
        chip_result = learner.adapt(sx, sy, qx, qy, key)
        batch = tuple(a[None] for a in (sx, sy, qx, qy))
        software = np.asarray(evaluate_batch(params, batch, key, config).accuracies)[0]
        np.testing.assert_allclose(chip_result.accuracy_per_step, software, atol=1e-6)
        assert chip_result.devices_reprogrammed > 0
        if budget:  # one device per changed weight, two only where a weight changes sign
            assert chip_result.unique_devices_reprogrammed <= chip_result.devices_reprogrammed
            assert chip_result.devices_reprogrammed <= 2 * budget * config.inner_steps


@pytest.mark.parametrize("readout_scale", [1.0, 0.25])
def test_chip_and_software_pcm_model_store_the_readout_at_its_scale(key, readout_scale):
    """Noiseless devices, the real 1/16 grid, nearest rounding: the chip's inner loop and the software PCM
    model write the same readout, on the grid of readout_scale/16, at every readout scale."""
    from l2l_pcm.fewshot.maml import adapt_task

    config = dataclasses.replace(TINY, channels=16, variant="pcm", readout_scale=readout_scale, inner_lr=0.4)
    config = config.with_hardware(device=PCMDevice().noiseless(), update__rounding="nearest")
    params = init_params(key, config.cnn)
    params["readout"] = readout_scale / 16 * jnp.round(4 * jax.random.normal(key, params["readout"].shape))
    learner = ChipFewShotLearner(params, config, key)
    sx, sy, qx, qy = random_task(jax.random.fold_in(key, 3))
    chip_result = learner.adapt(sx, sy, qx, qy, key)
    chip_readout = learner.chip.read_weights("readout")
    f_s, f_q = learner.features(sx, qx, key)
    _, software = adapt_task(config, params["readout"], f_s, sy, f_q, qy, key)
    np.testing.assert_allclose(chip_result.accuracy_per_step, software.accuracies, atol=1e-6)
    assert int(software.updates_clipped) == chip_result.updates_clipped  # the same count on both
    steps = np.asarray(chip_readout) / (readout_scale * config.hardware.update.step)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    assert np.abs(steps).max() >= 1
    assert float(jnp.max(jnp.abs(chip_readout))) <= readout_scale + 1e-6  # updates past it clipped, as in software
    from l2l_pcm.fewshot.maml import inner_update

    written = inner_update(config, jnp.zeros((16, 5)), jax.random.normal(key, (16, 5)), key)
    grid = np.asarray(written) / (readout_scale * config.hardware.update.step)
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-4)
    assert float(jnp.max(jnp.abs(written))) <= readout_scale and np.abs(grid).max() >= 2


@pytest.mark.parametrize("variant", ["fp32", "4bit", "pcm"])
def test_update_budget_limits_changed_readout_weights(key, variant):
    from l2l_pcm.fewshot.maml import inner_update

    config = dataclasses.replace(TINY, variant=variant, update_budget=5, inner_lr=0.4)
    readout = jnp.zeros((8, 5))
    gradient = jax.random.normal(key, (8, 5))
    changed = inner_update(config, readout, gradient, key) != readout
    assert 1 <= int(jnp.sum(changed)) <= 5
    unlimited = inner_update(dataclasses.replace(config, update_budget=0), readout, gradient, key)
    assert int(jnp.sum(unlimited != readout)) > 5


def test_checkpoint_round_trip_and_bad_files(tmp_path, key):
    params = init_params(key, TINY.cnn)
    path = save_fewshot_checkpoint(tmp_path / "ckpt.safetensors", params, TINY, {"note": 1})
    loaded, config, meta = load_fewshot_checkpoint(path)
    assert config == TINY and meta["note"] == 1
    for name in params:
        np.testing.assert_array_equal(loaded[name], params[name])
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        load_fewshot_checkpoint(tmp_path / "cut.safetensors")
    # another model size under the same config name: shapes disagree
    bigger = init_params(key, CNNConfig(channels=12))
    from l2l_pcm.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "other.safetensors", "fewshot-maml", {"params": bigger}, {"config": TINY_RUN.to_json()})
    with pytest.raises(CheckpointError, match="shape"):
        load_fewshot_checkpoint(tmp_path / "other.safetensors")
    # a deployment setting chosen after training, set on export and recorded as such
    exported = tmp_path / "exported.safetensors"
    sets = ["model.readout_scale=0.35", "model.update_budget=8", "model.hardware.update.rounding=nearest"]
    assert main(["export", str(path), str(exported), *(arg for text in sets for arg in ("--set", text))]) == 0
    loaded, config, meta = load_fewshot_checkpoint(exported)
    expected = dataclasses.replace(TINY, readout_scale=0.35, update_budget=8)
    assert config == expected.with_hardware(update__rounding="nearest")  # a path into the hardware tree
    changes = {"model.readout_scale": 0.35, "model.update_budget": 8, "model.hardware.update.rounding": "nearest"}
    assert meta["export_changes"] == changes and meta["note"] == 1
    np.testing.assert_array_equal(loaded["readout"], params["readout"])
    save_checkpoint(tmp_path / "robot.safetensors", "robot-l2l", {"params": bigger}, {})
    with pytest.raises(CheckpointError, match="expected 'fewshot-maml'"):
        load_fewshot_checkpoint(tmp_path / "robot.safetensors")


def test_impossible_configs_are_rejected():
    with pytest.raises(ConfigError, match="exceeds the 20 drawings"):
        MAMLConfig(shots=15, queries=10)
    with pytest.raises(ConfigError, match="variant"):
        MAMLConfig(variant="8bit")
    with pytest.raises(ConfigError, match="inner_lr"):
        MAMLConfig(inner_lr=float("nan"))
    with pytest.raises(ConfigError, match="meta_batch"):
        MAMLConfig(meta_batch=0)


@needs_shared
def test_resume_after_interruption_gives_the_same_parameters(tmp_path):
    straight = tmp_path / "straight"
    train_module.train(TINY_RUN, straight, data_dir=SHARED, progress=False)
    interrupted = tmp_path / "interrupted"
    train_module.train(dataclasses.replace(TINY_RUN, iterations=2), interrupted, data_dir=SHARED, progress=False)
    with pytest.raises(CheckpointError, match="another config"):
        train_module.train(
            dataclasses.replace(TINY_RUN, seed=5), interrupted, data_dir=SHARED, resume=True, progress=False
        )
    _, _, meta = load_fewshot_checkpoint(interrupted / "last.safetensors")
    assert meta["iteration"] == 2
    train_module.train(TINY_RUN, interrupted, data_dir=SHARED, resume=True, progress=False)  # continue to 4
    a, _, _ = load_fewshot_checkpoint(straight / "last.safetensors")
    b, _, _ = load_fewshot_checkpoint(interrupted / "last.safetensors")
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-7)
    rows = json.loads((interrupted / "metrics.json").read_text())
    assert [row["iteration"] for row in rows] == [2, 4]


@needs_shared
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = train_module.train_step
    calls = {"n": 0}

    def flaky(params, opt_state, batch, key, config, schedule_steps=0):
        calls["n"] += 1
        params, opt_state, loss, accuracies = original(params, opt_state, batch, key, config, schedule_steps)
        return params, opt_state, (loss * jnp.nan if calls["n"] == 3 else loss), accuracies

    monkeypatch.setattr(train_module, "train_step", flaky)
    with pytest.raises(L2LPCMError, match="iteration 3.*last good checkpoint.*iteration 2"):
        train_module.train(TINY_RUN, tmp_path, data_dir=SHARED, progress=False)
    _, _, meta = load_fewshot_checkpoint(tmp_path / "last.safetensors")
    assert meta["iteration"] == 2


@needs_shared
def test_cli_eval_json_on_both_backends(tmp_path, capsys, monkeypatch):
    params = init_params(jax.random.PRNGKey(0), TINY.cnn)
    path = save_fewshot_checkpoint(tmp_path / "tiny.safetensors", params, TINY)
    outputs = {}
    for backend in ("software", "chip"):
        code = main(
            [
                "fewshot",
                "eval",
                "--checkpoint",
                str(path),
                "--backend",
                backend,
                "--tasks",
                "3",
                "--queries",
                "2",
                "--json",
                "--data-dir",
                str(SHARED),
            ]
        )
        assert code == 0
        outputs[backend] = json.loads(capsys.readouterr().out)
    keys = {
        "backend",
        "ways",
        "shots",
        "tasks",
        "accuracy_mean",
        "accuracy_ci95",
        "accuracy_per_step",
        "devices_reprogrammed_mean",
        "devices_reprogrammed_fraction",
    }
    for backend, result in outputs.items():
        assert keys <= set(result) and result["backend"] == backend and result["tasks"] == 3
        assert len(result["accuracy_per_step"]) == 5
    assert outputs["chip"]["devices_reprogrammed_fraction"] > 0
    # the provenance records what took effect: no hardware model in the fp32 software model, the chip's tree
    assert outputs["software"]["provenance"]["hardware"] is None
    assert outputs["chip"]["provenance"]["hardware"]["update"]["step"] == TINY.hardware.update.step
    assert outputs["chip"]["readout_scale"] == 1.0 and outputs["chip"]["warnings"] == []
    # a readout range far too small for the updates: the clipped updates are counted and warned about
    args = ["fewshot", "eval", "--checkpoint", str(path), "--tasks", "2", "--queries", "2", "--json"]
    assert main([*args, "--data-dir", str(SHARED), "--readout-scale", "0.001"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["readout_scale"] == 0.001 and result["readout_updates_clipped_mean"] > 0
    assert "readout updates were clipped" in err
    # ... and the same in the software models that store the readout at that scale; fp32 has none: refused
    software = [*args, "--data-dir", str(SHARED), "--readout-scale", "0.001", "--backend", "software"]
    for precision in ("pcm", "4bit"):
        assert main([*software, "--precision", precision]) == 0
        out, err = capsys.readouterr()
        assert json.loads(out)["readout_updates_clipped_mean"] > 0 and "readout updates were clipped" in err
    assert main([*software, "--precision", "fp32"]) == 2
    assert "--readout-scale does not apply to the fp32 software model" in capsys.readouterr().err
    # tasks from the held-out validation alphabets instead, where deployment settings are chosen
    from l2l_pcm.fewshot import data

    drawn_from = []
    monkeypatch.setattr(data.TaskSampler, "__init__", _recording(data.TaskSampler.__init__, drawn_from))
    assert main([*args, "--data-dir", str(SHARED), "--alphabets", "validation"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"]["alphabets"] == "validation"
    assert set(drawn_from[-1]) == {
        "Burmese_(Myanmar)",
        "Futurama",
        "Inuktitut_(Canadian_Aboriginal_Syllabics)",
        "Ojibwe_(Canadian_Aboriginal_Syllabics)",
        "Syriac_(Estrangelo)",
    }
    # per-task rows on disk, and chip instances: chip 0 is the single-chip evaluation, the others differ
    per_task = tmp_path / "tasks.csv"
    chip_args = [*args[:-1], "--data-dir", str(SHARED), "--chips", "3", "--per-task", str(per_task), "--json"]
    assert main(chip_args) == 0
    several = json.loads(capsys.readouterr().out)
    assert "per_task" not in several and several["chips"] == 3 and several["tasks"] == 2
    with per_task.open() as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["chip"]), int(r["task"])) for r in rows] == [(c, t) for c in range(3) for t in range(2)]
    assert {"accuracy_after", "accuracy_per_step_4", "programming_operations", "distinct_devices"} <= set(rows[0])
    assert all(int(r["distinct_devices"]) <= int(r["programming_operations"]) for r in rows)
    assert main([*args[:-1], "--data-dir", str(SHARED), "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert several["accuracy_per_chip"][0] == pytest.approx(single["accuracy_mean"])
    chip_means = [np.mean([float(r["accuracy_after"]) for r in rows if int(r["chip"]) == c]) for c in range(3)]
    assert chip_means == pytest.approx(several["accuracy_per_chip"])
    assert several["accuracy_between_chips_std"] == pytest.approx(np.std(chip_means, ddof=1))
    assert main([*args[:-1], "--backend", "software", "--chips", "2", "--data-dir", str(SHARED)]) == 2
    assert "--chips applies to the chip only" in capsys.readouterr().err


def _recording(init, calls: list):
    def record(self, images, *rest, **kw):
        calls.append(images.alphabets)
        init(self, images, *rest, **kw)

    return record


def test_cli_eval_bad_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert main(["fewshot", "eval", "--checkpoint", str(bad), "--tasks", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "bad.safetensors" in err


def test_task_sampler_refuses_impossible_requests():
    images = np.zeros((4, 20, 28, 28), np.float32)
    with pytest.raises(ConfigError):
        TaskSampler(images, ways=5, shots=1, queries=1)


@needs_shared
def test_init_from_keeps_the_earlier_stages_in_the_record(tmp_path):
    from l2l_pcm.training import training_record

    first = tmp_path / "first"
    train_module.train(TINY_RUN, first, data_dir=SHARED, progress=False)
    second = tmp_path / "second"
    stage2 = dataclasses.replace(TINY_RUN, iterations=2, seed=3)
    train_module.train(
        dataclasses.replace(stage2, iterations=1),
        second,
        data_dir=SHARED,
        progress=False,
        init_from=first / "best.safetensors",
    )
    # a resumed later stage keeps the history it started with, even without --init-from
    train_module.train(stage2, second, data_dir=SHARED, resume=True, progress=False)
    _, _, meta = load_fewshot_checkpoint(second / "last.safetensors")
    record = training_record(meta)
    best_first = load_fewshot_checkpoint(first / "best.safetensors")[2]["iteration"]
    assert [row["stage"] for row in record] == [1] * len(meta["history"]) + [2] * len(meta["metrics"])
    assert [row["iteration"] for row in record if row["stage"] == 1][-1] == best_first
    assert [row["iteration"] for row in record if row["stage"] == 2] == [best_first + 1, best_first + 2]
    assert all(a["seconds"] <= b["seconds"] for a, b in zip(record, record[1:], strict=False))


def test_evaluation_refuses_a_task_shape_the_readout_cannot_score(key):
    from l2l_pcm.fewshot.evaluate import evaluate_chip, evaluate_software

    params = init_params(key, TINY.cnn)  # 5-way readout
    with pytest.raises(ConfigError, match=r"ways=10 but the checkpoint's readout has 5 outputs"):
        evaluate_software(params, dataclasses.replace(TINY, ways=10), None, tasks=4)
    with pytest.raises(ConfigError, match=r"number of tasks must be an integer in 2\.\.100,000"):
        evaluate_chip(params, TINY, None, tasks=1)


def test_chip_refuses_an_update_step_other_than_the_models(key):
    params = init_params(key, TINY.cnn)
    with pytest.raises(ConfigError, match=r"the chip's hardware.update .*step=0.0625.* differs from the model's"):
        ChipFewShotLearner(params, TINY.with_hardware(update__step=1 / 32), key, ChipConfig())
    with pytest.raises(ConfigError, match=r"hardware.clock.training_age_s 3600.0 differs from the model's 32.0"):
        ChipFewShotLearner(params, TINY.with_hardware(clock__training_age_s=32.0), key, ChipConfig())


def test_plots_write_images(tmp_path, saved_figures):
    from l2l_pcm.fewshot.evaluate import plot_example_task, plot_inner_step_curves
    from l2l_pcm.plotting import MIN_FONT_PT

    rng = np.random.default_rng(0)
    ways, shots, queries = 3, 2, 4
    support_y, query_y = np.repeat(np.arange(ways), shots), np.repeat(np.arange(ways), queries)
    predictions = query_y.copy()
    predictions[0] = 1  # one wrong prediction is marked
    path = plot_example_task(
        rng.random((ways * shots, 28, 28, 1)), support_y, rng.random((ways * queries, 28, 28, 1)), query_y,
        predictions, tmp_path / "task.png", ways,
    )  # fmt: skip
    assert path.stat().st_size > 1000
    result = {"ways": ways, "shots": shots, "tasks": 10}
    result.update(accuracy_per_step=[0.33, 0.8, 0.9], accuracy_per_step_ci95=[0.01, 0.02, 0.02])
    chip = {**result, "accuracy_per_step": [0.33, 0.78, 0.89]}
    results = {"software 32-bit": result, "emulated PCM chip": chip}
    assert plot_inner_step_curves(results, tmp_path / "steps.png").stat().st_size > 1000
    task, steps = saved_figures
    assert "on the emulated PCM chip" in figure_text(task)
    text = figure_text(steps)  # every step, and the last ones zoomed, where the backends differ; n; what a bar is
    assert "n = 10 unseen tasks" in text and "error bars: 95 % CI over tasks" in text
    assert "steps 1–2 zoomed" in text and "emulated PCM chip: 89.00 ± 2.00 %" in text
    for record in saved_figures:  # readable on a slide
        assert min(size for _, size in record["texts"]) >= MIN_FONT_PT


def test_training_curves_mark_where_validation_changes(tmp_path, saved_figures):
    from l2l_pcm.fewshot.evaluate import plot_training_curves, stage_description

    row = {"train_loss": 0.3, "train_accuracy": 0.9, "val_accuracy": 0.9, "val_ci95": 0.01}
    metrics = [{**row, "iteration": i, "stage": 1, "stage_end": 200} for i in (100, 200)]
    metrics += [{**row, "iteration": i, "stage": 2, "stage_end": 300} for i in (250, 300)]
    labels = {1: stage_description("fp32", None), 2: stage_description("pcm", 32)}
    plot_training_curves(metrics, tmp_path / "training.png", labels, validation_tasks=200)
    text = figure_text(saved_figures[0])
    assert "stage 2 from iteration 200:\nvalidates the PCM model, update budget 32" in text
    assert "stage 1: software 32-bit, no update budget" in text and "validation, 200 tasks" in text


def test_baselines_figure_names_what_it_counts(tmp_path, saved_figures):
    from pathlib import Path

    from l2l_pcm.fewshot.baselines import plot_baselines

    record = json.loads((Path(__file__).parents[1] / "docs/figures/fewshot_baselines.json").read_text())
    plot_baselines(record, tmp_path / "baselines.png")
    text = figure_text(saved_figures[0])
    assert "programming operations per adaptation" in text and "devices re-programmed" not in text
    assert "software 32-bit" in text and "emulated PCM chip" in text and "n = 600 unseen tasks" in text


@needs_shared
def test_software_eval_refuses_read_noise_settings_it_cannot_apply(tmp_path, capsys):
    """The few-shot software PCM model reads its conv body once per meta-batch and its readout per vector,
    whatever the read-noise mode says: a mode given with --hardware is refused there, and accepted (taking
    effect) on the chip; the generator applies to both."""
    params = init_params(jax.random.PRNGKey(0), TINY.cnn)
    path = save_fewshot_checkpoint(tmp_path / "tiny.safetensors", params, TINY)
    hardware = tmp_path / "hw.json"
    hardware.write_text(json.dumps({"forward": {"read_noise_mode": "per_batch"}}))
    base = ["fewshot", "eval", "--checkpoint", str(path), "--tasks", "2", "--queries", "2", "--data-dir", str(SHARED)]
    assert main([*base, "--backend", "software", "--precision", "pcm", "--hardware", str(hardware)]) == 2
    assert "hardware.forward.read_noise_mode applies to the chip only" in capsys.readouterr().err
    assert main([*base, "--backend", "chip", "--hardware", str(hardware), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"]["hardware"]["forward"]["read_noise_mode"] == "per_batch"
    hardware.write_text(json.dumps({"forward": {"read_noise_rng": "threefry"}}))
    assert main([*base, "--backend", "software", "--precision", "pcm", "--hardware", str(hardware)]) == 0


def test_an_initial_readout_held_at_zero_stays_zero_while_the_body_learns(tmp_path, key):
    params = init_params(key, TINY.cnn)
    params["readout"] = 0.3 * jax.random.normal(key, params["readout"].shape)
    source = save_fewshot_checkpoint(tmp_path / "source.safetensors", params, TINY)
    images = (jax.random.uniform(key, (12, 20, 28, 28)) < 0.1).astype(np.float32)
    config = dataclasses.replace(TINY, learn_initial_readout=False)
    trainer = train_module.make_trainer(config, np.asarray(images), np.asarray(images), init_from=source)
    start, opt_state = trainer.init()
    assert not np.any(np.asarray(start["readout"]))
    after, opt_state, _, _ = trainer.step(start, opt_state, 0)
    after, _, _, _ = trainer.step(after, opt_state, 1)
    assert not np.any(np.asarray(after["readout"]))
    assert not np.allclose(np.asarray(after["conv2"]), np.asarray(params["conv2"]))
    with pytest.raises(ConfigError, match="learn_initial_readout must be true or false"):
        MAMLConfig(learn_initial_readout="no")


@needs_shared
def test_software_pcm_model_and_chip_agree_on_the_same_tasks():
    """The software PCM model is the chip's physics (one programming per deployment, only changed devices
    re-programmed, per-device ages, fresh noise per readout read): on the same 40 tasks of the shipped model
    the two agree within their intervals at every inner step, and the paired per-task difference is small."""
    from l2l_pcm.fewshot.evaluate import evaluate_chip, evaluate_software
    from l2l_pcm.fewshot.omniglot import load_omniglot
    from l2l_pcm.fewshot.train import SHIPPED_CHECKPOINT

    params, config, _ = load_fewshot_checkpoint(SHIPPED_CHECKPOINT)
    images = load_omniglot("evaluation", SHARED)
    chip = evaluate_chip(params, config, images, tasks=40, seed=3)
    software = evaluate_software(params, config, images, tasks=40, precision="pcm", seed=3)
    for step in range(config.inner_steps + 1):
        difference = abs(chip["accuracy_per_step"][step] - software["accuracy_per_step"][step])
        allowed = chip["accuracy_per_step_ci95"][step] + software["accuracy_per_step_ci95"][step]
        assert difference <= allowed, (step, chip["accuracy_per_step"], software["accuracy_per_step"])
    assert abs(chip["accuracy_mean"] - software["accuracy_mean"]) < 0.02
    assert chip["time_since_programming_s"] == config.hardware.clock.training_age_s  # the age every task starts at


def test_pcm_training_refuses_a_compensation_its_model_cannot_apply():
    images = np.zeros((10, 20, 28, 28), np.float32)
    for mode in ("array", "column"):
        config = dataclasses.replace(TINY, variant="pcm", hardware=ChipConfig(drift_compensation=mode))
        with pytest.raises(ConfigError, match="calibrated"):
            train_module.make_trainer(config, images, images)
    train_module.make_trainer(
        dataclasses.replace(TINY, variant="fp32", hardware=ChipConfig(drift_compensation="array")), images, images
    )
