"""Robot meta-training (the loop itself is :mod:`l2l_pcm.training`) and robot checkpoints.

Each iteration samples a fresh batch of target trajectories from key ``(seed, iteration)``; validation
uses a fixed set of trajectories from a separate key, so its MSE is comparable across iterations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path

import jax

from l2l_pcm import distributed, training
from l2l_pcm.checkpoint import format_version, load_checkpoint
from l2l_pcm.chip import refuse_hardware_fields
from l2l_pcm.errors import CheckpointError, ConfigError, check_seed
from l2l_pcm.robot.model import ROBOT_HARDWARE, RobotConfig, init_params, make_optimizer, meta_loss, train_step
from l2l_pcm.robot.tasks import sample_trajectories
from l2l_pcm.training import MetaTrainer
from l2l_pcm.validation import parse

CHECKPOINT_KIND = "robot-l2l"
SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "robot_scorbot.safetensors"
VALIDATION_KEY = 2**31 - 7


@dataclasses.dataclass(frozen=True)
class RobotTrainConfig:
    """The model config plus the loop's cadence."""

    model: RobotConfig = RobotConfig(batch=16, hardware_aware=True)
    iterations: int = 5000
    validate_every: int = 250
    validation_tasks: int = 64
    checkpoint_every: int = 100
    seed: int = 0
    """Seed of the initial weights and of every iteration's trajectories and noise, ``(seed, iteration)``; a
    run-loop setting beside the model, so runs that differ only in it share the compiled step."""

    def __post_init__(self) -> None:
        for name in ("iterations", "validate_every", "validation_tasks", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        check_seed("seed", self.seed)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> RobotTrainConfig:
        """From a JSON object, type-checked field by field; hardware settings only in ``model.hardware``."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"robot config: expected a JSON object of RobotTrainConfig fields, got {data!r}")
        data = dict(data)
        model = data.get("model", {})
        if isinstance(model, Mapping):
            model = dict(model)
            refuse_hardware_fields(model, "robot config.model")
            if "hardware" in model:  # fields it leaves out keep the robot's defaults (nearest rounding)
                model["hardware"] = ROBOT_HARDWARE.updated(model["hardware"], "robot config.model.hardware")
            data["model"] = model
        return parse(cls, data, "robot config")


def trajectories(config: RobotConfig, key: jax.Array, batch: int):
    return sample_trajectories(
        key, config.arm_model, batch, n_steps=config.n_steps, dt=config.velocity_dt_s, window=config.smoothing_window
    )


_evaluate_loss = jax.jit(meta_loss, static_argnames=("config",))


def validate(params, config: RobotConfig, tasks: int) -> dict:
    """Cartesian MSE before/after the update on fixed validation trajectories (software model)."""
    targets = trajectories(config, jax.random.PRNGKey(VALIDATION_KEY), tasks)
    _, aux = _evaluate_loss(params, targets, jax.random.PRNGKey(VALIDATION_KEY + 1), config)
    before, after = float(aux["mse_xyz_before"]), float(aux["mse_xyz_after"])
    return {
        "val_mse_before": before,
        "val_mse_after": after,
        "val_ratio": after / before,
        "score": -after if math.isfinite(after) else -math.inf,
    }


def make_trainer(config: RobotTrainConfig, init_from: str | Path | None = None) -> MetaTrainer:
    """The robot :class:`MetaTrainer` (one home for its step, shared by :func:`train` and tests).

    ``init_from``: start from another robot checkpoint's parameters (fresh optimiser state), keeping its
    metric rows as the earlier stages of this run's record.
    """
    model = config.model
    history = []
    if init_from is not None:
        source_params, source, source_metadata = load_robot_checkpoint(init_from)
        template = init_params(jax.random.PRNGKey(0), model)
        for name, value in source_params.items():
            if value.shape != template[name].shape:
                raise ConfigError(f"{init_from}: {name} has shape {value.shape}, this run needs {template[name].shape}")
        history = training.training_record(source_metadata)

    def init():
        params = init_params(jax.random.PRNGKey(config.seed), model) if init_from is None else source_params
        return params, make_optimizer(model).init(params)

    def step(params, opt_state, iteration):
        key = jax.random.fold_in(jax.random.PRNGKey(config.seed), iteration)
        key_targets, key_step = jax.random.split(key)
        targets = distributed.shard_tasks(trajectories(model, key_targets, model.batch))
        params, opt_state, loss, aux = train_step(params, opt_state, targets, key_step, model)
        metrics = {
            name: float(aux[name])
            for name in ("mse_xyz_after", "rate_trainee_hz", "rate_lsg_hz", "fraction_updated", "grad_norm")
        }
        return params, opt_state, float(loss), metrics

    return MetaTrainer(
        CHECKPOINT_KIND, config, init, step, lambda p: validate(p, model, config.validation_tasks), history=history
    )


def train(
    config: RobotTrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    init_from: str | Path | None = None,
    overwrite: bool = False,
    tensorboard: str | Path | None = None,
) -> dict:
    """Meta-train the trainee's initial weights and the LSG; see :mod:`l2l_pcm.training` for the files."""
    inputs = () if init_from is None else (init_from,)
    trainer = make_trainer(config, init_from)
    return training.run(
        trainer, out_dir, resume=resume, progress=progress, overwrite=overwrite, inputs=inputs, tensorboard=tensorboard
    )


def load_robot_checkpoint(path) -> tuple[dict, RobotTrainConfig, dict]:
    """(params, config, metadata) of a robot checkpoint; clear errors for foreign or damaged files.

    Format-1 files were meta-trained on another arm (a DH reconstruction) with the target bits in the
    opposite order: loading them now would score them on a task they never saw, so they are refused.
    """
    config, metadata = training.checkpoint_config(path, CHECKPOINT_KIND, RobotTrainConfig.from_json)
    if format_version(metadata) < 2:
        raise CheckpointError(
            f"{path} is a robot checkpoint of format 1 (before l2l-pcm used the authors' Scorbot kinematics and "
            "target code); its network would be evaluated on another task: retrain it"
        )
    template = init_params(jax.random.PRNGKey(0), config.model)
    trees, metadata = load_checkpoint(path, CHECKPOINT_KIND, {"params": template})
    return trees["params"], config, metadata
