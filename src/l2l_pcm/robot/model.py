r"""Meta-learning objective of the robot scenario: learn the trainee's initial weights and the LSG.

Per task (a target joint-velocity trajectory :math:`\omega^*` and its end-effector path
:math:`p^* = FK(\int \omega^*)`), the trainee adapts once with natural e-prop
(:func:`l2l_pcm.eprop.natural_eprop`) and the outer loss scores the trajectory it produces
*after* that update (Ortner et al. 2025, arXiv:2405.05141; the loss as in the authors' ``L2LTraineeLSG``,
github.com/IGITUGraz/RapidLearningInMemoryComputing, ``online_learning_robot/model/l2l_trainee_lsg.py``):

.. math::

    \mathcal{L} = \tfrac12 \mathrm{MSE}(\omega, \omega^*) + \tfrac12 \mathrm{MSE}(p, p^*)
      + \lambda \sum_{j \in \text{trainee}} (\bar r_j - r^*_{tr})^2
      + \lambda \sum_{j \in \text{LSG}} (\bar r_j - r^*_{LSG})^2,

with :math:`p` obtained by integrating the trainee's :math:`\omega` through the arm's kinematics
(:func:`l2l_pcm.robot.tasks.integrate_velocities`), :math:`\bar r_j` a neuron's mean spike count per
step over tasks and time (trainee: both passes) and the target rates (20 Hz trainee, 10 Hz LSG)
converted to spikes per step, as in the authors' code. The gradient w.r.t. all six weight matrices
flows by BPTT through both trainee passes, the e-prop update (pseudo-derivatives, traces, learning
signals) and the LSG; Adam with a staircase learning-rate decay (×0.99 every 500 iterations).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from l2l_pcm.chip import ChipConfig, UpdateConfig
from l2l_pcm.eprop import (
    EpropResult,
    SNNWeights,
    UpdateFn,
    WeightMemory,
    natural_eprop,
    pcm_memory,
    software_memory,
    software_update,
)
from l2l_pcm.errors import ConfigError, check_int, check_number
from l2l_pcm.pcm import PCMDevice
from l2l_pcm.robot.arm import Arm, ScorbotER7, TwoLinkArm
from l2l_pcm.robot.tasks import XYZ_CODES, Trajectories, integrate_velocities, spike_encode_xyz
from l2l_pcm.snn import LSGConfig, TraineeConfig, clock_input, init_weights, recurrent_mask
from l2l_pcm.vocabulary import ARM_DYNAMICS

__all__ = [
    "ARMS",
    "PARAM_NAMES",
    "ROBOT_HARDWARE",
    "RobotConfig",
    "InnerLoopResult",
    "default_memory",
    "update_rule",
    "init_params",
    "inner_loop",
    "meta_loss",
    "make_optimizer",
    "train_step",
]

ARMS = ("scorbot", "two_link")
PARAM_NAMES = ("trainee_w_in", "trainee_w_rec", "trainee_w_out", "lsg_w_in", "lsg_w_rec", "lsg_w_out")


def _positive(name: str, value: object, integer: bool = False) -> None:
    (check_int if integer else check_number)(f"RobotConfig.{name}", value)


ROBOT_HARDWARE = ChipConfig(update=UpdateConfig(rounding="nearest"))
"""The robot's default hardware: the chip's defaults with the authors' robot update rule, nearest rounding."""


@dataclasses.dataclass(frozen=True)
class RobotConfig:
    """Everything the robot meta-training depends on (frozen, hashable: a static jit argument)."""

    trainee: TraineeConfig = TraineeConfig()
    lsg: LSGConfig = LSGConfig()
    arm: str = "scorbot"
    """``scorbot`` (Scorbot ER-VII, base + shoulder) or ``two_link`` (planar arm)."""
    n_steps: int = 249
    """Trajectory length in steps (1 ms)."""
    smoothing_window: int = 120
    """Length of the normalised Hann window that smooths the Brownian target velocities."""
    clock_interval_steps: int = 50
    """Each clock neuron is active for this many steps ..."""
    clock_period_steps: int = 10
    """... and spikes every this many steps while active."""
    xyz_bits: int = 16
    """Bits of the binary spike code of each target coordinate (LSG input)."""
    xyz_code: str = "full_range"
    """Spike code of the targets (:func:`l2l_pcm.robot.tasks.spike_encode_xyz`): ``full_range`` (covers the
    arm's whole reach) or ``authors`` (their code, which wraps around at 1 m; imported models need it)."""
    clip_predicted_angles: bool = True
    """Clip the network's integrated joint angles to the safe space before the kinematics, as a real arm's
    limits would (targets are always clipped). The authors do not clip (their ``L2LTraineeLSG.loss``,
    ``online_learning_robot/model/l2l_trainee_lsg.py``, github.com/IGITUGraz/RapidLearningInMemoryComputing);
    their imported models record False. Changes the measured MSE of predictions that leave the safe space."""
    w_out_on_pcm: bool = False
    """Also hold the trainee's readout ``W_out`` on PCM (programmed with the trainee, read with noise at
    every step), as the authors' code does (``lif_step_batch_noise``, ``online_learning_robot/functional/lif.py``
    in github.com/IGITUGraz/RapidLearningInMemoryComputing); False = a digital readout. Applies wherever
    the trainee is on PCM: hardware-aware training, software ``pcm`` evaluation and the chip."""
    velocity_dt_s: float = 0.01
    """Integration step of angular velocities to angles (as for the targets)."""
    dynamics: str = "kinematic"
    """What the outer loss, validation and evaluation score: ``kinematic``, the closed-form path of the
    integrated commands, or ``mujoco``, the path the simulated Scorbot executes (:mod:`l2l_pcm.robot.sim`,
    differentiated through MJX in training; extra ``sim``). ``robot eval/demo/sweep --dynamics`` override it."""
    eta: float = 1e-4
    """Inner (e-prop) learning rate."""
    lr: float = 1.5e-3
    """Adam learning rate of the outer loop ..."""
    lr_decay: float = 0.99
    """... multiplied by this factor ..."""
    lr_decay_every: int = 500
    """... every this many iterations (staircase)."""
    grad_clip_norm: float | None = None
    """Clip the meta-gradient to this global norm before Adam (None: no clipping, as the authors)."""
    batch: int = 90
    """Tasks per outer iteration."""
    reg_lambda: float = 0.25
    """Weight of the firing-rate regulariser (both networks)."""
    target_rate_trainee_hz: float = 20.0
    target_rate_lsg_hz: float = 10.0
    hardware_aware: bool = False
    """Meta-train through the statistical PCM model (:func:`l2l_pcm.eprop.pcm_memory`)."""
    quantize_update: bool = True
    """Round the written update to ``hardware.update.step`` as ``hardware.update.rounding`` says; false:
    exact updates (a software-only model, which cannot be deployed on a chip)."""
    hardware: ChipConfig = ROBOT_HARDWARE
    """The hardware tree, every hardware setting's one home: its device model is that of hardware-aware
    training, software ``pcm`` evaluation and the chip (its ``w_max`` bounds the trainee's weights), its
    ``update`` section the written update (step, rounding; default "nearest", the authors' robot rule) and
    the time until pass 2, its ``clock.training_age_s`` the age the PCM model reads the trainee at, and
    the chip is built from it."""

    def __post_init__(self) -> None:
        if not isinstance(self.trainee, TraineeConfig) or not isinstance(self.lsg, LSGConfig):
            raise ConfigError("RobotConfig.trainee / .lsg must be a TraineeConfig / LSGConfig")
        if self.arm not in ARMS:
            raise ConfigError(f"RobotConfig.arm must be one of {ARMS}, got {self.arm!r}")
        for name in (
            "n_steps",
            "smoothing_window",
            "clock_interval_steps",
            "clock_period_steps",
            "xyz_bits",
            "lr_decay_every",
            "batch",
        ):
            _positive(name, getattr(self, name), integer=True)
        for name in ("velocity_dt_s", "eta", "lr", "lr_decay"):
            _positive(name, getattr(self, name))
        for name in ("reg_lambda", "target_rate_trainee_hz", "target_rate_lsg_hz"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"RobotConfig.{name} must be a finite number >= 0, got {value!r}")
        if self.grad_clip_norm is not None:
            _positive("grad_clip_norm", self.grad_clip_norm)
        for name in ("hardware_aware", "clip_predicted_angles", "w_out_on_pcm", "quantize_update"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"RobotConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if self.dynamics not in ARM_DYNAMICS:
            raise ConfigError(f"RobotConfig.dynamics must be one of {ARM_DYNAMICS}, got {self.dynamics!r}")
        if self.dynamics == "mujoco" and self.arm != "scorbot":
            raise ConfigError("RobotConfig.dynamics 'mujoco' simulates the Scorbot ER-VII; arm must be 'scorbot'")
        if self.xyz_code not in XYZ_CODES:
            raise ConfigError(f"RobotConfig.xyz_code must be one of {XYZ_CODES}, got {self.xyz_code!r}")
        if not isinstance(self.hardware, ChipConfig):
            raise ConfigError(f"RobotConfig.hardware must be a ChipConfig, got {type(self.hardware).__name__}")
        if self.xyz_bits > 24:
            raise ConfigError(f"RobotConfig.xyz_bits must be <= 24, got {self.xyz_bits}")
        expected = self.trainee.n_in + 3 * self.xyz_bits
        if self.lsg.n_in != expected:
            raise ConfigError(
                f"RobotConfig: lsg.n_in must be trainee.n_in + 3*xyz_bits = {expected}, got {self.lsg.n_in}"
            )
        if self.lsg.n_out != self.trainee.n_rec:
            raise ConfigError(
                f"RobotConfig: lsg.n_out ({self.lsg.n_out}) must equal trainee.n_rec ({self.trainee.n_rec})"
            )
        if self.trainee.n_out != self.arm_model.n_moving:
            raise ConfigError(
                f"RobotConfig: trainee.n_out ({self.trainee.n_out}) must equal the arm's moving joints "
                f"({self.arm_model.n_moving})"
            )

    @property
    def arm_model(self) -> Arm:
        return ScorbotER7() if self.arm == "scorbot" else TwoLinkArm()

    @property
    def device(self) -> PCMDevice:
        return self.hardware.device

    def with_hardware(self, **settings) -> RobotConfig:
        """This config with hardware settings changed by their paths in the tree, as keywords with ``__``
        for ``.`` (``device="authors"``, ``clock__training_age_s=32.0``; see :meth:`ChipConfig.with_settings`)."""
        changes = {name.replace("__", "."): value for name, value in settings.items()}
        return dataclasses.replace(self, hardware=self.hardware.with_settings(changes))

    @property
    def w_max(self) -> float:
        return self.device.w_max

    def clock(self) -> jax.Array:
        """Clock input ``[n_steps, trainee.n_in]`` shared by both networks."""
        return jnp.asarray(
            clock_input(self.n_steps, self.trainee.n_in, self.clock_interval_steps, self.clock_period_steps)
        )


class InnerLoopResult(NamedTuple):
    """Trajectories before/after the update (``[B, T, ...]``) and the raw e-prop record."""

    before: Trajectories
    after: Trajectories
    eprop: EpropResult


def init_params(key: jax.Array, config: RobotConfig) -> dict[str, jax.Array]:
    """The six meta-parameters, initialised as in the authors' code (see :func:`l2l_pcm.snn.init_weights`)."""
    k_trainee, k_lsg = jax.random.split(key)
    trainee = init_weights(k_trainee, config.trainee)
    lsg = init_weights(k_lsg, config.lsg)
    return dict(zip(PARAM_NAMES, trainee + lsg, strict=True))


def _split(params: dict[str, jax.Array]) -> tuple[SNNWeights, SNNWeights]:
    missing = set(PARAM_NAMES) - set(params)
    if missing:
        raise ConfigError(f"robot params are missing {sorted(missing)}")
    trainee = SNNWeights(*(params[name] for name in PARAM_NAMES[:3]))
    lsg = SNNWeights(*(params[name] for name in PARAM_NAMES[3:]))
    return trainee, lsg


def update_rule(config: RobotConfig) -> UpdateFn:
    """How the trainee's update is written, from the hardware tree: its ``update`` step and rounding (exact
    if ``quantize_update`` is false), clipped to the device's ±w_max."""
    step = config.hardware.update.step if config.quantize_update else None
    return software_update(step, config.w_max, config.hardware.update.rounding)


def default_memory(config: RobotConfig) -> WeightMemory:
    """The software model meta-training uses: exact, or the PCM model if ``hardware_aware``."""
    if not config.hardware_aware:
        return software_memory(config.w_max)
    # "global" divides by the devices' mean drift since programming; "array"/"column" hold the weights as they
    # read on average at the training age (their calibration's reference age), which is the only age this
    # model reads at, so their gains are 1 in expectation here (the chip's re-calibration after the update,
    # read 1 s later, is not modelled: the chip-vs-software agreement test bounds it)
    compensation = config.hardware.drift_compensation
    mask = recurrent_mask(config.trainee)
    return pcm_memory(
        config.device,
        config.hardware.clock.training_age_s,
        mask,
        config.hardware.update.seconds_between,
        config.w_out_on_pcm,
        config.hardware.software_mvm_spec(),
        drift_compensation=compensation == "global",
    )


def inner_loop(
    params: dict[str, jax.Array],
    targets: Trajectories,
    key: jax.Array,
    config: RobotConfig,
    memory: WeightMemory | None = None,
    read_key: jax.Array | None = None,
) -> InnerLoopResult:
    """One natural-e-prop update per target trajectory and the trajectories before and after it.

    ``memory`` says how the trainee's stacked weights are stored and read: None = the training
    model (:func:`default_memory`); evaluation on the chip passes a memory whose ``read_initial``
    returns the chip's layer (:meth:`l2l_pcm.chip.Chip.layer`) and whose ``read_updated`` re-programs a copy
    of the chip per task with ``update.applied`` and returns the layer with the stacked per-task statistics;
    ``read_key`` then adds per-read noise (run as the layers' specs say: the chip's tiles, converters, noise
    mode), and the reads are booked on the chip. Pass 1 is returned
    broadcast to the batch.
    """
    trainee, lsg = _split(params)
    arm = config.arm_model
    batch, n_steps = targets.xyz.shape[:2]
    if n_steps != config.n_steps:
        raise ConfigError(f"targets have {n_steps} steps, config.n_steps is {config.n_steps}")
    clock = config.clock()
    lsg_inputs = jnp.concatenate(
        [
            jnp.broadcast_to(clock, (batch,) + clock.shape),
            spike_encode_xyz(targets.xyz, config.xyz_bits, config.xyz_code),
        ],
        axis=-1,
    )
    result = natural_eprop(
        config.trainee,
        config.lsg,
        trainee,
        lsg,
        clock,
        lsg_inputs,
        key,
        eta=config.eta,
        w_max=config.w_max,
        update_fn=update_rule(config),
        memory=default_memory(config) if memory is None else memory,
        read_key=read_key,
    )
    omega_before = jnp.broadcast_to(result.output_before, (batch,) + result.output_before.shape[1:])
    clip = config.clip_predicted_angles
    before = integrate_velocities(arm, omega_before, config.velocity_dt_s, clip_angles=clip)
    after = integrate_velocities(arm, result.output_after, config.velocity_dt_s, clip_angles=clip)
    return InnerLoopResult(before, after, result)


def _mse(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(a - b))


def _rate_penalty(mean_spikes: jax.Array, target_hz: float, dt_ms: float) -> jax.Array:
    """``sum_j (r_j - r*)^2`` with rates in spikes per step (authors' units)."""
    return jnp.sum(jnp.square(mean_spikes - target_hz * dt_ms / 1000.0))


def meta_loss(
    params: dict[str, jax.Array], targets: Trajectories, key: jax.Array, config: RobotConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Outer loss (module docstring) of a batch of tasks and metrics.

    aux: ``loss_task``, ``loss_reg``, ``mse_omega_before/after``, ``mse_xyz_before/after``,
    ``rate_trainee_hz`` (both passes), ``rate_trainee_after_hz``, ``rate_lsg_hz`` (means over neurons),
    ``fraction_updated`` (non-zero quantized entries over plastic synapses), ``mean_abs_delta_w``.
    """
    # hardware-aware: fresh read noise on every MVM, as on the chip
    read_key = jax.random.fold_in(key, 1) if config.hardware_aware else None
    result = inner_loop(params, targets, key, config, read_key=read_key)
    eprop = result.eprop
    mse_omega = _mse(result.after.angular_velocity, targets.angular_velocity)
    if config.dynamics == "mujoco":  # the path the simulated arm executes, differentiated through MJX
        from l2l_pcm.robot.sim import arm_simulation

        simulate = arm_simulation(config.arm_model, config.velocity_dt_s)
        result = result._replace(
            before=result.before._replace(xyz=simulate.execute(result.before.angular_velocity).xyz),
            after=result.after._replace(xyz=simulate.execute(result.after.angular_velocity).xyz),
        )
    mse_xyz = _mse(result.after.xyz, targets.xyz)
    loss_task = 0.5 * mse_omega + 0.5 * mse_xyz

    trainee, lsg = config.trainee, config.lsg
    rate_trainee = 0.5 * (jnp.mean(eprop.before.z, axis=(0, 1)) + jnp.mean(eprop.after.z, axis=(0, 1)))
    rate_lsg = jnp.mean(eprop.lsg_spikes, axis=(0, 1))
    loss_reg = config.reg_lambda * (
        _rate_penalty(rate_trainee, config.target_rate_trainee_hz, trainee.dt_ms)
        + _rate_penalty(rate_lsg, config.target_rate_lsg_hz, lsg.dt_ms)
    )
    plastic = trainee.n_in * trainee.n_rec + trainee.n_rec * (trainee.n_rec - 1)
    aux = {
        "loss_task": loss_task,
        "loss_reg": loss_reg,
        "mse_omega_before": _mse(result.before.angular_velocity, targets.angular_velocity),
        "mse_omega_after": mse_omega,
        "mse_xyz_before": _mse(result.before.xyz, targets.xyz),
        "mse_xyz_after": mse_xyz,
        "rate_trainee_hz": trainee.rate_hz(jnp.mean(rate_trainee)),
        "rate_trainee_after_hz": trainee.rate_hz(jnp.mean(eprop.after.z)),
        "rate_lsg_hz": lsg.rate_hz(jnp.mean(rate_lsg)),
        "fraction_updated": jnp.mean(eprop.update.n_nonzero) / plastic,
        "mean_abs_delta_w": jnp.mean(jnp.sum(jnp.abs(eprop.delta_w), axis=(-2, -1))) / plastic,
    }
    return loss_task + loss_reg, jax.tree_util.tree_map(jax.lax.stop_gradient, aux)


def make_optimizer(config: RobotConfig) -> optax.GradientTransformation:
    """Adam with ``lr · decay^floor(step / decay_every)``, after clipping to ``grad_clip_norm`` if set."""
    schedule = optax.exponential_decay(
        config.lr, transition_steps=config.lr_decay_every, decay_rate=config.lr_decay, staircase=True
    )
    if config.grad_clip_norm is None:
        return optax.adam(schedule)
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optax.adam(schedule))


@functools.partial(jax.jit, static_argnames=("config",))
def train_step(
    params: dict[str, jax.Array],
    opt_state: optax.OptState,
    targets: Trajectories,
    key: jax.Array,
    config: RobotConfig,
) -> tuple[dict[str, jax.Array], optax.OptState, jax.Array, dict[str, jax.Array]]:
    """One outer iteration: meta-gradient by BPTT through the inner loop, then Adam."""
    (loss, aux), grads = jax.value_and_grad(meta_loss, has_aux=True)(params, targets, key, config)
    aux = {**aux, "grad_norm": optax.tree.norm(grads)}
    updates, opt_state = make_optimizer(config).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, aux
