"""The few-shot methods (MAML full and head-only, Meta-SGD, ProtoNet, fine-tuning): what each refuses,
what each computes, and that the chip's inner loop is the software one when the devices are ideal."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import needs_shared
from test_fewshot import TINY, random_task

from l2l_pcm.chip import ChipConfig, UpdateConfig
from l2l_pcm.cli import main
from l2l_pcm.errors import ConfigError
from l2l_pcm.fewshot import train as train_module
from l2l_pcm.fewshot.deploy import ChipFewShotLearner
from l2l_pcm.fewshot.maml import (
    INNER_RATES,
    MAMLConfig,
    adapt_task,
    evaluate_batch,
    make_optimizer,
    train_step,
    with_method_parameters,
)
from l2l_pcm.fewshot.model import init_params
from l2l_pcm.pcm import PCMDevice

PROTONET = dataclasses.replace(TINY, method="protonet", inner_steps=1, learn_initial_readout=False)
FINE_GRID = 2.0**-20


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"method": "reptile"}, "method must be one of"),
        ({"method": "protonet", "learn_initial_readout": False}, "inner_steps must be 1"),
        ({"method": "protonet", "inner_steps": 1}, "learn_initial_readout"),
        ({"method": "finetune"}, "learn_initial_readout"),
        ({"method": "maml", "variant": "pcm"}, "fp32 only"),
        ({"method": "maml", "update_budget": 8}, "update_budget"),
    ],
)
def test_a_setting_a_method_cannot_honour_is_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        MAMLConfig(**settings)


def test_finetune_is_not_meta_trained_and_rates_need_metasgd(key):
    finetune = dataclasses.replace(TINY, method="finetune", learn_initial_readout=False)
    images = np.zeros((10, 20, 28, 28), np.float32)
    with pytest.raises(ConfigError, match="fewshot pretrain"):
        train_module.make_trainer(finetune, images, images)
    params = with_method_parameters(init_params(key, TINY.cnn), dataclasses.replace(TINY, method="metasgd"))
    np.testing.assert_array_equal(params[INNER_RATES], np.full(params["readout"].shape, TINY.inner_lr, np.float32))
    with pytest.raises(ConfigError, match="Meta-SGD inner rates"):
        with_method_parameters(params, TINY)


def test_metasgd_at_uniform_rates_is_maml_head_and_learns_its_rates(key):
    params = init_params(key, TINY.cnn)
    params["readout"] = 0.2 * jax.random.normal(key, params["readout"].shape)
    metasgd = dataclasses.replace(TINY, method="metasgd")
    tasks = [random_task(jax.random.fold_in(key, i)) for i in range(2)]
    batch = tuple(jnp.stack(parts) for parts in zip(*tasks, strict=True))
    with_rates = with_method_parameters(params, metasgd)
    np.testing.assert_array_equal(
        evaluate_batch(with_rates, batch, key, metasgd).accuracies, evaluate_batch(params, batch, key, TINY).accuracies
    )
    opt_state = make_optimizer(metasgd).init(with_rates)
    trained, *_ = train_step(with_rates, opt_state, batch, key, metasgd)
    assert float(jnp.max(jnp.abs(trained[INNER_RATES] - with_rates[INNER_RATES]))) > 0  # the rates are learned


def test_protonet_classifies_by_the_nearest_support_class_mean(key):
    features = jax.random.normal(key, (25, 8))
    labels = jnp.repeat(jnp.arange(5), 5)
    queries = jax.random.normal(jax.random.fold_in(key, 1), (40, 8))
    query_labels = jax.random.randint(jax.random.fold_in(key, 2), (40,), 0, 5)
    readout0 = jnp.zeros((8, 5))
    _, outputs = adapt_task(PROTONET, readout0, features, labels, queries, query_labels, key)
    means = jnp.stack([features[labels == c].mean(axis=0) for c in range(5)])
    nearest = jnp.argmin(jnp.sum((queries[:, None, :] - means[None]) ** 2, axis=-1), axis=-1)
    assert float(outputs.accuracies[1]) == pytest.approx(float(jnp.mean(nearest == query_labels)))
    assert float(outputs.accuracies[0]) == pytest.approx(float(jnp.mean(query_labels == 0)))  # zero readout


def test_full_maml_adapts_the_conv_body_in_the_inner_loop(key):
    """Full MAML's meta-gradient reaches every kernel through the inner steps and training moves them."""
    config = dataclasses.replace(TINY, method="maml", inner_steps=2)
    params = init_params(key, config.cnn)
    tasks = [random_task(jax.random.fold_in(key, i)) for i in range(2)]
    batch = tuple(jnp.stack(parts) for parts in zip(*tasks, strict=True))
    opt_state = make_optimizer(config).init(params)
    trained, _, loss, accuracies = train_step(params, opt_state, batch, key, config)
    assert np.isfinite(float(loss)) and accuracies.shape == (3,)
    for name in params:
        assert float(jnp.max(jnp.abs(trained[name] - params[name]))) > 0, name


@pytest.mark.parametrize("method", ["metasgd", "protonet", pytest.param("maml", marks=pytest.mark.slow)])
def test_every_method_on_a_noiseless_chip_is_its_software_inner_loop(key, method):
    """Ideal devices, a 2^-20 update grid: each method's chip adaptation (its writes through the core)
    gives the software fp32 accuracies step by step."""
    config = {"metasgd": dataclasses.replace(TINY, method="metasgd"), "protonet": PROTONET}.get(
        method, dataclasses.replace(TINY, method="maml", inner_steps=2, inner_lr=0.5)
    )
    config = dataclasses.replace(config, channels=16, readout_scale=8.0).with_hardware(update__step=FINE_GRID)
    params = with_method_parameters(init_params(key, config.cnn), config)
    if method == "metasgd":
        params[INNER_RATES] = 0.3 * jax.random.uniform(key, params["readout"].shape)
    if method != "protonet":
        params["readout"] = 0.2 * jax.random.normal(key, params["readout"].shape)
    chip_config = ChipConfig(device=PCMDevice().noiseless(), update=UpdateConfig(step=FINE_GRID))
    learner = ChipFewShotLearner(params, config, key, chip_config)
    for i in range(2):
        sx, sy, qx, qy = random_task(jax.random.fold_in(key, 10 + i))
        chip_result = learner.adapt(sx, sy, qx, qy, key)
        batch = tuple(a[None] for a in (sx, sy, qx, qy))
        software = np.asarray(evaluate_batch(params, batch, key, config).accuracies)[0]
        first = 1 if method == "protonet" else 0  # before the write every logit ties at 0: the argmax is arbitrary
        np.testing.assert_allclose(chip_result.accuracy_per_step[first:], software[first:], atol=1e-6)
        assert chip_result.devices_reprogrammed > 0 and chip_result.updates_clipped == 0
        if method == "maml":  # every layer re-programmed
            assert chip_result.unique_devices_reprogrammed > learner.readout_devices


@needs_shared
def test_cli_baselines_prints_one_row_per_method_and_backend(tmp_path, capsys, key):
    protonet = dataclasses.replace(PROTONET, readout_scale=4.0)
    path = train_module.save_fewshot_checkpoint(
        tmp_path / "proto.safetensors", init_params(key, protonet.cnn), protonet
    )
    args = ["fewshot", "baselines", "--tasks", "2", "--queries", "2", "--methods", "maml_head,protonet"]
    assert main([*args, "--learner", f"protonet={path}", "--json", "--plot", str(tmp_path / "b.png")]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["method"], r["backend"]) for r in rows] == [
        ("maml_head", "software"),
        ("maml_head", "chip"),
        ("protonet", "software"),
        ("protonet", "chip"),
    ]
    for row in rows:
        assert 0 <= row["accuracy_mean"] <= 1
        assert (row["devices_reprogrammed_fraction"] is None) == (row["backend"] == "software")
    assert (tmp_path / "b.png").stat().st_size > 0
    assert main([*args[:-2], "--methods", "metasgd", "--learner", f"metasgd={path}"]) == 2
    assert "is a 'protonet' learner, given for method 'metasgd'" in capsys.readouterr().err
