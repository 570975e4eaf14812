"""Target trajectories of the robot task and the binary spike code of Cartesian targets.

Each task of the robot scenario (Ortner et al. 2025, arXiv:2405.05141) is one random, smooth joint-velocity
trajectory. Following the authors' code (github.com/IGITUGraz/RapidLearningInMemoryComputing,
``online_learning_robot/datasets/trajectories.py``), for every moving joint ``j``:

1. Brownian motion of the angular velocity: ``w_j(t) = sum_{s<=t} xi_j(s)``, ``xi ~ N(0, sigma^2)``;
2. smoothing with a normalised Hann window ``h`` of length ``M`` (``sum h = 1``): the walk is
   zero-padded by ``(M-1)//2`` samples at the start and mirrored by ``M-1-(M-1)//2`` samples at the
   end, so ``omega(t) = sum_k h_k w_pad(t + k)`` keeps the length ``T`` and is not delayed;
3. ``omega`` is clipped to ``[-max_velocity, max_velocity]`` (rad/s);
4. the angles integrate the velocities from the start pose and are clipped to the safe space:
   ``q(t) = clip(q0 + dt * sum_{s<=t} omega(s), low, high)``;
5. the Cartesian targets are ``xyz(t) = FK(q(t))``.

Step 4 and 5 are :func:`integrate_velocities`, which the training loss also applies to the
network's output, so targets and predictions are computed by the same function.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from l2l_pcm.errors import ConfigError
from l2l_pcm.robot.arm import Arm

__all__ = [
    "Trajectories",
    "MAX_WINDOW",
    "hann_window",
    "smoothing_matrix",
    "integrate_velocities",
    "sample_trajectories",
    "spike_encode_xyz",
    "spike_decode_xyz",
    "XYZ_CODES",
    "FULL_RANGE_M",
]

MAX_WINDOW = 10_000
"""Upper bound on the smoothing window (it must also not exceed ``n_steps``)."""


class Trajectories(NamedTuple):
    """A batch of joint-space and Cartesian trajectories (a JAX pytree)."""

    angular_velocity: jnp.ndarray
    """``[B, T, n_moving]`` joint angular velocities (rad/s)."""
    angles: jnp.ndarray
    """``[B, T, n_moving]`` commanded joint angles of the moving joints (rad)."""
    xyz: jnp.ndarray
    """``[B, T, 3]`` end-effector position (m)."""


def _concrete_float(value: object) -> float | None:
    """``float(value)`` if it is known at trace time, ``None`` for a JAX tracer."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


def _check_positive_float(name: str, value: object, allow_zero: bool = False) -> None:
    v = _concrete_float(value)
    if v is None:  # traced under jit: cannot be checked here
        return
    ok = math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        raise ConfigError(f"{name}: must be finite and {'>=' if allow_zero else '>'} 0, got {value!r}")


def hann_window(window: int) -> np.ndarray:
    """Normalised *periodic* Hann window ``h_n = (1 - cos(2 pi n / M)) / 2``, ``sum h = 1`` (float64).

    The periodic form is what the authors' ``tf.signal.hann_window(M)`` returns (TensorFlow's default
    ``periodic=True``; ``online_learning_robot/datasets/trajectories.py``; its first sample is 0, the
    symmetric window's first and last are). For ``M <= 2`` a box of ``1/M`` is used.
    """
    window = _check_positive_int("window", window)
    h = np.ones(window) if window <= 2 else 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
    return h / h.sum()


@functools.lru_cache(maxsize=32)
def _smoothing_matrix_cached(n_steps: int, window: int) -> np.ndarray:
    h = hann_window(window)
    left = (window - 1) // 2
    mat = np.zeros((n_steps, n_steps))
    for t in range(n_steps):
        for k in range(window):
            s = t + k - left  # index into the unpadded walk
            if s < 0:  # zero padding at the start
                continue
            if s >= n_steps:  # mirror at the end (reflection without repeating the last sample)
                s = 2 * (n_steps - 1) - s
            mat[t, s] += h[k]
    mat.setflags(write=False)
    return mat


def smoothing_matrix(n_steps: int, window: int) -> np.ndarray:
    """Linear map ``S[T, T]`` of the padded Hann smoothing: ``omega = S @ w`` (float64, read-only).

    Writing the padding + convolution as one constant matrix makes it exact, jit-friendly and cheap
    (``T`` is a few hundred).
    """
    n_steps = _check_positive_int("n_steps", n_steps)
    window = _check_positive_int("window", window)
    if window > min(n_steps, MAX_WINDOW):
        raise ConfigError(f"window: must be <= n_steps ({n_steps}) and <= {MAX_WINDOW}, got {window}")
    return _smoothing_matrix_cached(n_steps, window)


def integrate_velocities(
    arm: Arm,
    omega: jnp.ndarray,
    dt: float = 0.01,
    start_angles: jnp.ndarray | None = None,
    clip_angles: bool = True,
) -> Trajectories:
    """Integrate joint velocities ``omega[..., T, n_moving]`` (rad/s) to angles and positions.

    ``q(t) = clip(q0 + dt * sum_{s<=t} omega(s), low, high)`` with ``q0 = arm.home_angles`` unless
    ``start_angles`` (``[..., n_moving]``) is given, ``low/high = arm.joint_limits_rad``;
    ``xyz(t) = arm.forward_kinematics(q(t))``. ``clip_angles=False`` skips the clipping: the authors
    clip their targets but not the network's predicted angles (``BrownianTrajectoriesScorbot.generate_data``
    and ``L2LTraineeLSG.loss`` in github.com/IGITUGraz/RapidLearningInMemoryComputing), which raises the
    measured error of a prediction that leaves the safe space.

    Differentiable: ``jnp.clip`` passes the gradient unchanged where the angle is inside the safe
    space and gives 0 for angles clipped at a limit, so only those (time, joint) entries stop
    contributing to ``d loss / d omega``; the other entries keep their full gradient. ``omega`` is
    returned unchanged as ``angular_velocity``.
    """
    omega = jnp.asarray(omega)
    if not jnp.issubdtype(omega.dtype, jnp.floating):
        omega = omega.astype(jnp.float32)
    if omega.ndim < 2 or omega.shape[-1] != arm.n_moving:
        raise ConfigError(
            f"omega: expected shape [..., T, {arm.n_moving}] for {type(arm).__name__}, got {tuple(omega.shape)}"
        )
    _check_positive_float("dt", dt)
    q0 = jnp.asarray(arm.home_angles, omega.dtype) if start_angles is None else jnp.asarray(start_angles)
    if q0.shape[-1:] != (arm.n_moving,):
        raise ConfigError(f"start_angles: expected shape [..., {arm.n_moving}], got {tuple(q0.shape)}")
    limits = np.asarray(arm.joint_limits_rad)
    angles = q0[..., None, :] + dt * jnp.cumsum(omega, axis=-2)
    if clip_angles:
        angles = jnp.clip(angles, limits[:, 0].astype(omega.dtype), limits[:, 1].astype(omega.dtype))
    return Trajectories(omega, angles, arm.forward_kinematics(angles))


def sample_trajectories(
    key: jax.Array,
    arm: Arm,
    batch: int,
    n_steps: int = 249,
    dt: float = 0.01,
    window: int = 120,
    velocity_step_std: float | None = None,
    max_velocity: float = math.pi,
) -> Trajectories:
    """Sample ``batch`` random target trajectories of ``n_steps`` steps (see the module docstring).

    ``velocity_step_std`` defaults to ``arm.velocity_step_std`` (``0.65 * sqrt(0.01)`` for the
    Scorbot, ``1.0 * sqrt(0.01)`` for the two-link arm). ``arm``, ``batch``, ``n_steps`` and
    ``window`` fix shapes and must be static under :func:`jax.jit`; the float parameters may be
    traced (they are then not validated). Output is float32.
    """
    batch = _check_positive_int("batch", batch)
    smoother = jnp.asarray(smoothing_matrix(n_steps, window), jnp.float32)
    sigma = arm.velocity_step_std if velocity_step_std is None else velocity_step_std
    _check_positive_float("dt", dt)
    _check_positive_float("velocity_step_std", sigma, allow_zero=True)
    _check_positive_float("max_velocity", max_velocity)

    steps = sigma * jax.random.normal(key, (batch, n_steps, arm.n_moving), jnp.float32)
    walk = jnp.cumsum(steps, axis=1)
    omega = jnp.einsum("ts,bsj->btj", smoother, walk)
    omega = jnp.clip(omega, -max_velocity, max_velocity)
    return integrate_velocities(arm, omega, dt)


XYZ_CODES = ("full_range", "authors")
"""Spike codes of the LSG's target input (:func:`spike_encode_xyz`)."""

FULL_RANGE_M = 1.25
"""Half-width (m) of the ``full_range`` code: covers both arms' whole reach (Scorbot |x|, |y| <= 0.921 m,
z in [-0.459, 1.176] m with the shoulder's ±70°; two-link arm |x|, |y| <= 1 m) with a margin."""


def _check_code(code: str, bits: int) -> int:
    bits = _check_positive_int("bits", bits)
    if bits > 24:
        raise ConfigError(f"bits: must be <= 24 (float32 resolution), got {bits}")
    if code not in XYZ_CODES:
        raise ConfigError(f"xyz code must be one of {XYZ_CODES}, got {code!r}")
    return bits


def spike_encode_xyz(xyz: jnp.ndarray, bits: int = 16, code: str = "full_range") -> jnp.ndarray:
    """Binary spike code of Cartesian positions, the LSG's target input (``[..., 3] -> [..., 3*bits]``).

    Each coordinate ``c`` (m) becomes an integer ``n`` written as ``bits`` binary neurons, **least
    significant bit first** (the authors' order, ``BrownianTrajectoriesScorbot.get_data`` in
    ``online_learning_robot/datasets/trajectories.py``); the output is
    ``[x bits | y bits | z bits]`` as float32 0/1. Not differentiable.

    * ``code="authors"``: ``n = trunc((c + 1) 2^(bits-1))`` modulo ``2^bits``, the authors' code: it covers
      ``[-1, 1)`` m and **wraps around** outside (z = 1.1 m is sent like z = -0.9 m). Their models need it.
    * ``code="full_range"`` (this project's models): ``n = floor((c / R + 1) 2^(bits-1))`` with
      ``R = FULL_RANGE_M``, saturating at ``0`` and ``2^bits - 1``; it covers the arms' whole reach, so
      no reachable target is sent wrongly (resolution ``R / 2^(bits-1)``, 38 µm at 16 bits).
    """
    bits = _check_code(code, bits)
    xyz = jnp.asarray(xyz, jnp.float32)
    if xyz.ndim == 0 or xyz.shape[-1] != 3:
        raise ConfigError(f"xyz: last dimension must be 3, got shape {tuple(xyz.shape)}")
    scale = float(2 ** (bits - 1))
    if code == "authors":
        n = ((xyz + 1.0) * scale).astype(jnp.int32)  # truncation towards zero, as int64() in their code
    else:
        n = jnp.clip(jnp.floor((xyz / FULL_RANGE_M + 1.0) * scale), 0, 2 * scale - 1).astype(jnp.int32)
    shifts = jnp.arange(bits, dtype=jnp.int32)
    spikes = (n[..., None] >> shifts) & 1  # [..., 3, bits], least significant bit first
    return spikes.reshape(xyz.shape[:-1] + (3 * bits,)).astype(jnp.float32)


def spike_decode_xyz(spikes: jnp.ndarray, bits: int = 16, code: str = "full_range") -> jnp.ndarray:
    """Inverse of :func:`spike_encode_xyz` up to its resolution (``authors``: modulo the wrap-around)."""
    bits = _check_code(code, bits)
    spikes = jnp.asarray(spikes)
    if spikes.ndim == 0 or spikes.shape[-1] != 3 * bits:
        raise ConfigError(f"spikes: last dimension must be {3 * bits}, got shape {tuple(spikes.shape)}")
    weights = 2.0 ** jnp.arange(bits, dtype=jnp.float32)
    grouped = spikes.reshape(spikes.shape[:-1] + (3, bits)).astype(jnp.float32)
    unit = (grouped * weights).sum(-1) / float(2 ** (bits - 1)) - 1.0
    return unit if code == "authors" else unit * FULL_RANGE_M
