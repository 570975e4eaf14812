import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SHARED, needs_shared

from l2l_pcm.cli import main
from l2l_pcm.errors import CheckpointError, ConfigError
from l2l_pcm.fewshot import pretrain as pretrain_module
from l2l_pcm.fewshot import train as train_module
from l2l_pcm.fewshot.data import TaskSampler
from l2l_pcm.fewshot.maml import MAMLConfig
from l2l_pcm.fewshot.model import CONV_NAMES
from l2l_pcm.fewshot.pretrain import (
    PretrainConfig,
    batch_gradient,
    group_loss,
    init_pretrain_params,
    pretrain_step,
    sample_groups,
)

TINY_FEWSHOT = MAMLConfig(channels=8, meta_batch=2, queries=2)
TINY_FEWSHOT_RUN = train_module.FewshotTrainConfig(
    model=TINY_FEWSHOT, iterations=2, validate_every=1, validation_tasks=2
)
TINY = PretrainConfig(
    iterations=3, groups=2, validate_every=3, validation_tasks=2, checkpoint_every=3, fewshot=TINY_FEWSHOT
)


def synthetic_classes(seed=0, classes=12):
    """Classes of sparse random ink patterns, each drawing a noisy copy of its class's pattern."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((classes, 1, 28, 28)) < 0.08
    flips = rng.random((classes, 20, 28, 28)) < 0.02
    return (prototypes ^ flips).astype(np.float32)


def test_group_labels_name_the_class_and_its_quarter_turn():
    images = synthetic_classes()
    sampler = TaskSampler(images, 5, 5, 1, augment_rotations=True)
    x, labels = sample_groups(sampler, 3, 4, rotations=True)
    _, support_y, _, _, indices = sampler.sample(3, 4, return_indices=True)
    assert x.shape == (4, 25, 28, 28, 1) and labels.shape == (4, 25)
    for group in range(4):
        assert len(set(labels[group].tolist())) == 5
        for slot in range(25):
            task_label = support_y[group, slot]
            cls, turns = indices.classes[group, task_label], indices.rotations[group, task_label]
            assert labels[group, slot] == 4 * cls + turns
            drawing = images[cls, indices.support_drawers[group, slot]]
            np.testing.assert_array_equal(x[group, slot, :, :, 0], np.rot90(drawing, turns))


def test_the_scanned_gradient_is_the_gradient_of_the_mean_group_loss(key):
    params = init_pretrain_params(key, TINY_FEWSHOT, head_classes=48)
    params["head"] = 0.3 * jax.random.normal(key, params["head"].shape)
    sampler = TaskSampler(synthetic_classes(), 5, 5, 1, augment_rotations=True)
    images, labels = (jnp.asarray(a) for a in sample_groups(sampler, 0, 3, rotations=True))

    def mean_loss(params):
        kernels = [params[name] for name in CONV_NAMES]
        losses, _ = jax.vmap(lambda x, y: group_loss(TINY_FEWSHOT, (kernels, params["head"]), (x, y)))(images, labels)
        return jnp.mean(losses)

    expected_loss, expected = jax.jit(jax.value_and_grad(mean_loss))(params)
    loss, _, grads = jax.jit(batch_gradient, static_argnames="fewshot")(params, images, labels, fewshot=TINY_FEWSHOT)
    np.testing.assert_allclose(float(loss), float(expected_loss), rtol=1e-5)
    for name in (*CONV_NAMES, "head"):
        scale = float(jnp.abs(expected[name]).max())
        assert scale > 0
        np.testing.assert_allclose(np.asarray(grads[name]), np.asarray(expected[name]), atol=1e-5 * scale)
    assert np.all(np.asarray(grads["readout"]) == 0)


def test_pretraining_learns_to_classify_the_training_classes(key):
    fewshot = dataclasses.replace(TINY_FEWSHOT, augment_rotations=False)
    config = dataclasses.replace(TINY, iterations=80, learning_rate=1e-2, lr_schedule="constant", fewshot=fewshot)
    params = init_pretrain_params(key, fewshot, head_classes=12)
    optimizer = pretrain_module.make_optimizer(config)
    state = optimizer.init(params)
    sampler = TaskSampler(synthetic_classes(), 5, 5, 1)
    losses, accuracies = [], []
    for step in range(config.iterations):
        images, labels = sample_groups(sampler, step, 2, rotations=False)
        params, state, loss, acc = pretrain_step(params, state, jnp.asarray(images), jnp.asarray(labels), config)
        losses.append(float(loss))
        accuracies.append(float(acc))
    assert np.mean(losses[-10:]) < 0.3 * np.log(12)  # chance is log(12)
    assert np.mean(accuracies[-10:]) > 0.9
    assert all(float(jnp.abs(params[name]).max()) <= 1.0 for name in CONV_NAMES)


@needs_shared
def test_meta_training_starts_from_the_pretrained_body_and_keeps_its_record(tmp_path):
    from l2l_pcm.training import training_record

    pre = tmp_path / "pre"
    summary = pretrain_module.pretrain(TINY, pre, data_dir=SHARED, progress=False)
    assert summary["iterations"] == 3
    body, _ = pretrain_module.pretrained_body(pre / "best.safetensors", TINY_FEWSHOT)
    assert set(body) == {*CONV_NAMES, "readout"} and np.all(np.asarray(body["readout"]) == 0)

    meta_run = tmp_path / "meta"
    train_module.train(TINY_FEWSHOT_RUN, meta_run, data_dir=SHARED, progress=False, init_from=pre / "best.safetensors")
    _, _, meta = train_module.load_fewshot_checkpoint(meta_run / "last.safetensors")
    record = training_record(meta)
    assert [row["stage"] for row in record] == [1] + [2, 2]  # pre-training's validation row, then meta-training's
    assert record[0]["val_accuracy"] == pytest.approx(json.loads((pre / "metrics.json").read_text())[0]["val_accuracy"])

    trainer = train_module.make_trainer(
        TINY_FEWSHOT,
        np.zeros((10, 20, 28, 28), np.float32),
        np.zeros((10, 20, 28, 28), np.float32),
        init_from=pre / "best.safetensors",
    )
    start, _ = trainer.init()
    for name in CONV_NAMES:
        np.testing.assert_array_equal(np.asarray(start[name]), np.asarray(body[name]))

    # a pre-training checkpoint is a finetune learner: its body, a zero readout, its config's inner loop
    params, learner, _ = train_module.load_learner(pre / "best.safetensors")
    assert learner.method == "finetune" and not learner.learn_initial_readout
    assert learner.inner_lr == TINY.fewshot.inner_lr and learner.cnn == TINY.fewshot.cnn
    for name in (*CONV_NAMES, "readout"):
        np.testing.assert_array_equal(np.asarray(params[name]), np.asarray(body[name]))

    with pytest.raises(CheckpointError, match="pre-trained model"):
        train_module.make_trainer(
            dataclasses.replace(TINY_FEWSHOT, channels=16),
            np.zeros((10, 20, 28, 28), np.float32),
            np.zeros((10, 20, 28, 28), np.float32),
            init_from=pre / "best.safetensors",
        )


def test_pretrain_config_round_trips_and_refuses_bad_fields():
    assert PretrainConfig.from_json(json.loads(json.dumps(TINY.to_json()))) == TINY
    with pytest.raises(ConfigError, match="unknown PretrainConfig fields"):
        PretrainConfig.from_json({"iteratons": 3})
    with pytest.raises(ConfigError, match="learning_rate"):
        PretrainConfig(learning_rate=float("nan"))
    with pytest.raises(ConfigError, match="groups"):
        PretrainConfig(groups=0)


@needs_shared
def test_cli_pretrain_writes_a_run_and_refuses_to_start_over_it(tmp_path, capsys):
    config = tmp_path / "pre.json"
    config.write_text(json.dumps(TINY.to_json()))
    out = tmp_path / "pre"
    argv = ["fewshot", "pretrain", "--out", str(out), "--config", str(config), "--no-progress"]
    argv += ["--data-dir", str(SHARED)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["iterations"] == 3
    assert (out / "best.safetensors").is_file()
    before = (out / "best.safetensors").read_bytes()
    assert main(argv) != 0
    assert "already holds a training run" in capsys.readouterr().err
    assert (out / "best.safetensors").read_bytes() == before
