"""The hardware tree's update and clock settings take effect wherever they are accepted, or are refused.

One test per setting: it is changed once, in the tree, and the software models (few-shot ``pcm`` variant,
robot PCM memory and update rule) and the chip (the few-shot learner) each show the change. The other
sections are covered where they act: ``forward`` in ``test_chip_core.py`` / ``test_layer_api.py``,
``drift_compensation`` in ``test_chip_core.py`` and ``test_fewshot.py``, ``arrays`` and ``energy`` in
``test_chip.py``, ``device`` in ``test_robot_eval.py``.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2l_pcm.chip import ChipConfig, ClockConfig
from l2l_pcm.errors import ConfigError
from l2l_pcm.fewshot.deploy import ChipFewShotLearner
from l2l_pcm.fewshot.evaluate import evaluate_software
from l2l_pcm.fewshot.maml import MAMLConfig, adapt_task, inner_update, read_weights
from l2l_pcm.fewshot.model import init_params
from l2l_pcm.pcm import PCMDevice, device_profile
from l2l_pcm.robot.evaluate import evaluate as robot_evaluate
from l2l_pcm.robot.model import RobotConfig, default_memory, update_rule

FEWSHOT = MAMLConfig(channels=8, queries=2, variant="pcm", inner_steps=2)


@pytest.fixture(scope="module")
def fewshot_params():
    return init_params(jax.random.PRNGKey(0), FEWSHOT.cnn)


def images(key):
    """One 5-way 5-shot task of sparse random 28x28 images (2 queries per class)."""
    k1, k2 = jax.random.split(key)
    support = (jax.random.uniform(k1, (25, 28, 28, 1)) < 0.1).astype(jnp.float32)
    query = (jax.random.uniform(k2, (10, 28, 28, 1)) < 0.1).astype(jnp.float32)
    return support, jnp.repeat(jnp.arange(5), 5), query, jnp.repeat(jnp.arange(5), 2)


def features(key):
    k1, k2 = jax.random.split(key)
    f_support = jax.nn.relu(jax.random.normal(k1, (25, 8)))
    f_query = jax.nn.relu(jax.random.normal(k2, (10, 8)))
    return f_support, jnp.repeat(jnp.arange(5), 5), f_query, jnp.repeat(jnp.arange(5), 2)


def test_update_rounding_takes_effect_in_every_model_that_writes(key, fewshot_params):
    """A third of a step: nearest rounding writes nothing, stochastic rounding writes some of it."""
    nearest, stochastic = (FEWSHOT.with_hardware(update__rounding=r) for r in ("nearest", "stochastic"))
    third = FEWSHOT.hardware.update.step / 3
    gradient = jnp.full((8, 5), -third / FEWSHOT.inner_lr)
    assert not jnp.any(inner_update(nearest, jnp.zeros((8, 5)), gradient, key))  # few-shot pcm variant
    assert jnp.any(inner_update(stochastic, jnp.zeros((8, 5)), gradient, key))
    robot = RobotConfig()  # the robot's default: nearest, the authors' rule
    delta = jnp.full((1, 6, 4), third)
    assert not jnp.any(update_rule(robot)(jnp.zeros((6, 4)), delta, key).applied)
    robot_stochastic = robot.with_hardware(update__rounding="stochastic")
    assert jnp.any(update_rule(robot_stochastic)(jnp.zeros((6, 4)), delta, key).applied)
    # the chip: a learner writes its inner updates with the tree's rounding (noiseless devices, small steps)
    task = images(jax.random.PRNGKey(3))
    touched = {}
    for config in (nearest, stochastic):
        config = config.with_hardware(device=PCMDevice().noiseless())
        config = dataclasses.replace(config, inner_lr=0.02)
        learner = ChipFewShotLearner(fewshot_params, config, key)
        touched[config.hardware.update.rounding] = learner.adapt(*task, key).devices_reprogrammed
    assert touched["nearest"] < touched["stochastic"], touched


def test_time_between_updates_takes_effect_in_software_and_on_the_chip(key, fewshot_params):
    losses = []
    for seconds in (1.0, 1e7):
        config = FEWSHOT.with_hardware(update__seconds_between=seconds)
        loss, _ = adapt_task(config, jnp.zeros((8, 5)), *features(key), key)  # re-programmed devices drift
        losses.append(float(loss))
    assert losses[0] != losses[1]
    config = FEWSHOT.with_hardware(update__seconds_between=5.0)
    learner = ChipFewShotLearner(fewshot_params, config, key)
    learner.adapt(*images(key), key)
    age = config.hardware.clock.training_age_s
    assert learner.chip.now_s == pytest.approx(age + config.inner_steps * 5.0)


def test_training_age_is_where_the_software_models_read_and_the_chip_is_used(key, fewshot_params):
    weights = 0.5 * jax.random.normal(key, (64, 8))
    magnitude = {}
    for age in (1.0, 1e7):  # drift shrinks the conductances
        config = FEWSHOT.with_hardware(clock__training_age_s=age)
        magnitude[age] = float(jnp.mean(jnp.abs(read_weights(config, weights, key))))
    assert magnitude[1e7] < 0.95 * magnitude[1.0]
    robot = RobotConfig(hardware_aware=True)
    trainee = robot.trainee
    w_stack = 0.5 * jax.random.normal(key, (trainee.n_in + trainee.n_rec, trainee.n_rec))
    read = {}
    for age in (1.0, 1e7):
        memory = default_memory(robot.with_hardware(clock__training_age_s=age))
        read[age] = float(jnp.mean(jnp.abs(memory.read_initial(w_stack, key)[0].stats.mean)))
    assert read[1e7] < 0.95 * read[1.0]
    config = FEWSHOT.with_hardware(clock__training_age_s=120.0)
    assert ChipFewShotLearner(fewshot_params, config, key).chip.now_s == 120.0  # no deployment age: used at it


def test_deployment_age_is_the_chips_and_refused_where_it_cannot_apply(key, fewshot_params):
    config = FEWSHOT.with_hardware(clock__deployment_age_s=86400.0)
    assert ChipFewShotLearner(fewshot_params, config, key).chip.now_s == 86400.0
    with pytest.raises(ConfigError, match="deployment_age_s applies to the chip only"):
        evaluate_software(fewshot_params, config, None, tasks=2)
    robot = RobotConfig().with_hardware(clock__deployment_age_s=60.0)
    with pytest.raises(ConfigError, match="deployment_age_s applies to the chip only"):
        robot_evaluate({}, robot, "software", tasks=2)
    with pytest.raises(ConfigError, match="deployment_age_s 60.0 s: this device reads every device at a fixed age"):
        ChipConfig(device=device_profile("authors"), clock=ClockConfig(deployment_age_s=60.0))
    # the chip built for a model keeps the model's training age: another one is refused, not silently used
    other = ChipConfig(clock=ClockConfig(training_age_s=60.0))
    with pytest.raises(ConfigError, match="training_age_s 60.0 differs from the model's 3600.0"):
        ChipFewShotLearner(fewshot_params, FEWSHOT, key, other)
    np.testing.assert_equal(config.hardware.clock.age_in_use_s, 86400.0)


def test_drift_compensation_takes_effect_in_the_robots_software_model(key):
    """The robot's software PCM model (hardware-aware training, software pcm evaluation) applies the oracle
    compensation; the calibrated ones hold the weights as they read at the training age, the age this model
    reads at, so they leave its reads as they are (the shipped model deploys with "array")."""
    robot = RobotConfig(hardware_aware=True)
    trainee = robot.trainee
    w_stack = 0.5 * jax.random.normal(key, (trainee.n_in + trainee.n_rec, trainee.n_rec))
    read = {}
    for mode in ("none", "global", "array", "column"):
        memory = default_memory(robot.with_hardware(drift_compensation=mode, clock__training_age_s=1e7))
        read[mode] = float(jnp.mean(jnp.abs(memory.read_initial(w_stack, key)[0].stats.mean)))
    assert read["global"] > 1.1 * read["none"]  # the drift's shrink since programming undone
    assert read["array"] == read["column"] == read["none"]


def test_software_models_refuse_a_tree_whose_chip_only_settings_they_would_ignore():
    """Python refuses what the CLI refuses: another device reaches the software models; converters,
    compensation or a deployment age would not, so they are errors, not silently dropped."""
    from l2l_pcm.fewshot.evaluate import evaluate_software
    from l2l_pcm.fewshot.maml import MAMLConfig
    from l2l_pcm.robot.evaluate import evaluate
    from l2l_pcm.robot.model import RobotConfig

    fewshot, robot = MAMLConfig(variant="pcm"), RobotConfig(hardware_aware=True)
    for config, run in (
        (fewshot, lambda hardware: evaluate_software(None, fewshot, None, 2, "pcm", hardware=hardware)),
        (robot, lambda hardware: evaluate(None, robot, "software", 2, precision="pcm", chip_config=hardware)),
    ):
        for setting, value in (
            ("forward.adc_bits", 8),
            ("drift_compensation", "array"),
            ("clock.deployment_age_s", 60.0),
            ("arrays.rows", 128),
        ):
            with pytest.raises(ConfigError, match=f"hardware.{setting} applies to the chip only"):
                run(config.hardware.with_settings({setting: value}))
    with pytest.raises(ConfigError, match="hardware.forward.read_noise_mode applies to the chip only"):
        evaluate_software(
            None,
            fewshot,
            None,
            2,
            "pcm",
            hardware=fewshot.hardware.with_settings({"forward.read_noise_mode": "per_batch"}),
        )
    other_device = fewshot.hardware.with_settings({"device": "hermes"})
    assert fewshot.hardware.for_software_model(other_device) == other_device  # the software model applies it
    with pytest.raises(ConfigError, match="fp32 software model has no devices"):
        evaluate_software(None, fewshot, None, 2, "fp32", hardware=other_device)
