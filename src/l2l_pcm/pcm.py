r"""Statistical model of phase-change-memory (PCM) devices.

This module knows about single devices and differential pairs of devices, nothing about networks or
crossbars (that is :mod:`l2l_pcm.chip`). Every function is pure, works on arrays of any shape, and draws
randomness only from an explicit ``jax.random`` key, so it can be jitted, vmapped over batches of weight
tensors and differentiated.

The model is IBM's statistical PCM model (Nandakumar et al., ICECS 2019; Joshi et al., Nat. Commun. 2020),
with the constants used by Ortner et al. 2025 and by aihwkit's ``PCMLikeNoiseModel``. With
:math:`\hat g = |g_T| / g_{max}` the normalised target conductance:

* programming noise, in µS:
  :math:`\sigma_{prog}(g_T) = \max(c_0 + c_1 \hat g + c_2 \hat g^2, 0)`, :math:`g_P = g_T + \sigma_{prog}\,\xi`,
  clipped to :math:`[0, g_{max}]`;
* drift: :math:`g(t) = g_P\,(t/t_0)^{-\nu}` for :math:`t > t_0`, with a per-device exponent
  :math:`\nu = |\mu_\nu + \sigma_\nu \xi|`,
  :math:`\mu_\nu = \mathrm{clip}(a_\mu \ln\hat g + b_\mu)`,
  :math:`\sigma_\nu = \mathrm{clip}(a_\sigma \ln\hat g + b_\sigma)`;
* 1/f read noise, drawn at every read:
  :math:`Q_s = \min(q\,\hat g^{-0.65}, Q_{max})`,
  :math:`\sigma_{read} = |g(t)|\,Q_s\,\sqrt{\ln\frac{t + t_{read}}{2 t_{read}}}`.

Conventions differ between implementations of this model, and each is a field of :class:`PCMDevice`,
collected in the named profiles of :data:`DEVICE_PROFILES` (``ibm``, the default; ``authors``;
``aihwkit``). For :math:`Q_s`: this project evaluates it on the normalised *target* :math:`\hat g`; aihwkit
on the normalised *programmed* conductance :math:`|g_P|/g_{max}` (aihwkit 1.1 ``PCMLikeNoiseModel``,
github.com/IBM/aihwkit, src/aihwkit/inference/noise/pcm.py; ``read_noise_q_from``); the authors' code
(github.com/IGITUGraz/RapidLearningInMemoryComputing, ``PCMNoise`` in ``few_shot_image_classification/pcm.py``
and ``online_learning_robot/module/pcm.py``) on :math:`|g|` in µS, about 8× less read noise at :math:`g_{max}`
(``read_noise_uses_microsiemens``). aihwkit further differs in its time origin, clipping of
:math:`g_P`, clamped reads and :math:`\sigma_{prog}` scaling; the authors' code in its fixed
:math:`t/t_0 = 32`, initial write and re-programming (field docstrings).

A signed weight :math:`w \in [-w_{max}, w_{max}]` is stored on a differential pair
:math:`G^+ = g_{max}\max(w, 0)/w_{max}`, :math:`G^- = g_{max}\max(-w, 0)/w_{max}`, read as
:math:`w = w_{max}(G^+ - G^-)/g_{max}`. Conductance arrays of a pair carry a leading axis of size 2
(index 0 = :math:`G^+`, 1 = :math:`G^-`).

A *unit cell* may hold :math:`N` devices per polarity (``devices_per_polarity``; HERMES-like cells use 2):
all :math:`N` are programmed to the same target, each with its own programming noise, drift exponent and
read noise, and the weight is their average, :math:`w = \frac{w_{max}}{N g_{max}}\sum_k (G^+_k - G^-_k)`.
Device arrays then carry a second axis of size :math:`N` (shape ``[2, N, ...]``); with :math:`N = 1` they
keep the pair shape ``[2, ...]``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from l2l_pcm.errors import ConfigError, check_number
from l2l_pcm.validation import parse
from l2l_pcm.vocabulary import DEVICE_PROFILE_NAMES

_G_REL_FLOOR = 1e-7  # keeps ln(ĝ) finite for devices at zero conductance, as aihwkit does
AUTHORS_INITIAL_JITTER = 0.01
"""Half-width of the uniform jitter of the authors' initial write, in units of w_max (their
``PCMNoise.init_weights``, github.com/IGITUGraz/RapidLearningInMemoryComputing)."""
_CHOICES = {
    "read_noise_q_from": ("target", "programmed"),
    "drift_time_origin": ("t0", "aihwkit"),
    "initial_programming": ("program", "authors_jitter"),
    "reprogram_from": ("target", "read"),
}


def _is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class PCMDevice:
    """Constants of the PCM device model; every field can be overridden.

    Defaults are the published IBM model (programming-noise polynomial, drift and read-noise
    constants as in Ortner et al.'s code and aihwkit ``PCMLikeNoiseModel``), ``g_max`` = 25 µS.
    Frozen and hashable, so it can be a static argument of a jitted function.
    """

    g_max_uS: float = 25.0
    """Largest programmable conductance of one device; maps to ``w_max``."""
    w_max: float = 1.0
    """Weight represented by a pair at (G⁺, G⁻) = (g_max, 0)."""
    prog_noise_coeffs_uS: tuple[float, float, float] = (0.26348, 1.9650, -1.1731)
    """(c0, c1, c2) of σ_prog = c0 + c1·ĝ + c2·ĝ² in µS (Nandakumar et al. 2019)."""
    prog_noise_scale: float = 1.0
    """Multiplier on σ_prog (0 switches programming noise off)."""
    drift_mu_coeffs: tuple[float, float] = (-0.0155, 0.0244)
    """(a, b) of μ_ν = a·ln ĝ + b."""
    drift_mu_clip: tuple[float, float] = (0.049, 0.1)
    """(low, high) that μ_ν is clipped to."""
    drift_sigma_coeffs: tuple[float, float] = (-0.0125, -0.0059)
    """(a, b) of σ_ν = a·ln ĝ + b."""
    drift_sigma_clip: tuple[float, float] = (0.008, 0.045)
    """(low, high) that σ_ν is clipped to."""
    drift_scale: float = 1.0
    """Multiplier on ν (0 switches drift off)."""
    t0_s: float = 20.0
    """Reference time of the drift law; no drift before it (aihwkit default 20 s; the authors' code
    evaluates drift at the fixed ratio t/t0 = 32)."""
    read_noise_q_coeff: float = 0.0088
    """c of the 1/f read-noise amplitude Q_s = min(c·ĝ^(−e), Q_max) (Nandakumar et al. 2019)."""
    read_noise_q_exponent: float = 0.65
    """e of Q_s = min(c·ĝ^(−e), Q_max)."""
    read_noise_q_max: float = 0.2
    """Q_max of Q_s = min(c·ĝ^(−e), Q_max)."""
    t_read_s: float = 250e-9
    """Integration time of one read."""
    read_noise_scale: float = 1.0
    """Multiplier on σ_read (0 switches read noise off; the authors' robot code uses 1/√2 for two
    averaged devices per polarity)."""
    read_noise_uses_microsiemens: bool = False
    """False: Q_s on normalised conductance (published model; aihwkit normalises too, but g_P, see
    ``read_noise_q_from``). True: Q_s(|g| in µS), the authors' code
    (github.com/IGITUGraz/RapidLearningInMemoryComputing, ``PCMNoise.read_noise``): ~8× less read noise."""
    read_noise_log_divisor: float = 2.0
    """k of ln((t + t_read)/(k·t_read)) in σ_read: 2 in the published model and aihwkit; 1 in the authors'
    robot and conv-layer code (``PCMNoise.read_noise`` in ``online_learning_robot/module/pcm.py``,
    ``PCMNoise.read_noise_sigma`` in ``few_shot_image_classification/pcm.py``)."""
    read_noise_q_from: str = "target"
    """Which conductance Q_s is evaluated on: "target" g_T (this project's default) or "programmed" g_P
    (aihwkit's ``PCMLikeNoiseModel``): they differ on the idle device of a pair and below ~1 µS."""
    clamp_reads_at_zero: bool = False
    """aihwkit clamps every read conductance at 0 (``PCMLikeNoiseModel``). The chip then uses the exact mean
    and variance of the clamped (rectified-normal) read of each device."""
    clip_programmed_at_g_max: bool = True
    """Clip g_P to [0, g_max] (this project, the authors' code) or only at 0 (aihwkit's ``PCMLikeNoiseModel``)."""
    prog_noise_reference_g_max_uS: float | None = None
    """aihwkit scales σ_prog by g_max/25 µS (``PCMLikeNoiseModel``): set 25.0 for that; None = σ_prog in µS
    as published."""
    drift_time_origin: str = "t0"
    """"t0": g(t) = g_P·(max(t, t0)/t0)^(−ν), no drift before t0, t in the read-noise log (this project);
    "aihwkit": ((t + t0)/t0)^(−ν) and t + t0 in the read-noise log (aihwkit's ``PCMLikeNoiseModel``)."""
    fixed_age_s: float | None = None
    """If set, every device drifts and reads as if it were this old, whatever the chip clock says: the
    authors' code evaluates drift at t/t0 = 32 with t0 = 1 s, and read noise at t = 32 s, both right
    after programming and again after re-programming (their ``PCMNoise.drift_noise``, ``read_noise`` and
    ``re_program``)."""
    initial_programming: str = "program"
    """How a layer is first written. "program": target + programming noise (published model).
    "authors_jitter" (the authors' ``PCMNoise.init_weights``; needs ``fixed_age_s``): no
    programming noise, w + U(±0.01·w_max), drifted, and their arithmetic for |w| > w_max, which reflects
    such a weight to about 2·sign(w)·w_max − w: clip(clip(w) + u + clip(w·d) − w) with d = (t/t0)^(−ν)."""
    reprogram_from: str = "target"
    """New target of a re-programmed pair: "target" = last target + update (the chip's digital record);
    "read" = its current drifted weight + update (the authors' ``PCMNoise.re_program``), so it drifts again."""
    idle_device_noise: bool = True
    """Whether a device programmed to 0 µS (the idle half of a pair) gets programming noise (published
    model, aihwkit) or stays at exactly 0 (the authors' code: noise on the active polarity only)."""
    devices_per_polarity: int = 1
    """Devices per polarity of a unit cell, averaged into one weight (module docstring): N independent
    devices cut programming noise, drift spread and read noise by about √N, and cost N× the devices
    (counted, and in the programming energy)."""

    def __post_init__(self) -> None:
        for name in (
            "prog_noise_coeffs_uS",
            "drift_mu_coeffs",
            "drift_mu_clip",
            "drift_sigma_coeffs",
            "drift_sigma_clip",
        ):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):  # a JSON list or any sequence means the same as a tuple
                object.__setattr__(self, name, tuple(value))
        for name in ("g_max_uS", "w_max", "t0_s", "t_read_s", "read_noise_q_coeff", "read_noise_q_max"):
            check_number(f"PCMDevice.{name}", getattr(self, name))
        for name in ("prog_noise_scale", "drift_scale", "read_noise_scale", "read_noise_q_exponent"):
            check_number(f"PCMDevice.{name}", getattr(self, name), strict=False)
        if self.g_max_uS > 1e3:
            raise ConfigError(f"PCMDevice.g_max_uS = {self.g_max_uS} µS is not a PCM conductance (expected <= 1000 µS)")

        def numbers(name: str, count: int) -> tuple | None:
            value = getattr(self, name)
            if isinstance(value, tuple) and len(value) == count and all(_is_finite_number(v) for v in value):
                return value
            return None

        for name in ("drift_mu_clip", "drift_sigma_clip"):
            pair = numbers(name, 2)
            if pair is None or not 0 <= pair[0] <= pair[1]:
                raise ConfigError(
                    f"PCMDevice.{name} must be two numbers with 0 <= low <= high, got {getattr(self, name)!r}"
                )
        for name, count in (("prog_noise_coeffs_uS", 3), ("drift_mu_coeffs", 2), ("drift_sigma_coeffs", 2)):
            if numbers(name, count) is None:
                raise ConfigError(f"PCMDevice.{name} must be {count} finite numbers, got {getattr(self, name)!r}")
        for name in (
            "read_noise_uses_microsiemens",
            "clamp_reads_at_zero",
            "clip_programmed_at_g_max",
            "idle_device_noise",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"PCMDevice.{name} must be true or false, got {getattr(self, name)!r}")
        check_number("PCMDevice.read_noise_log_divisor", self.read_noise_log_divisor)
        for name in ("prog_noise_reference_g_max_uS", "fixed_age_s"):
            if getattr(self, name) is not None:
                check_number(f"PCMDevice.{name}", getattr(self, name))
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"PCMDevice.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.initial_programming == "authors_jitter" and self.fixed_age_s is None:
            raise ConfigError("PCMDevice.initial_programming 'authors_jitter' drifts at a fixed age: set fixed_age_s")
        count = self.devices_per_polarity
        if not (isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= 16):
            raise ConfigError(f"PCMDevice.devices_per_polarity must be an integer in [1, 16], got {count!r}")
        if count > 1 and self.initial_programming == "authors_jitter":
            raise ConfigError(
                "PCMDevice.initial_programming 'authors_jitter' writes one value per weight: it needs "
                "devices_per_polarity 1"
            )

    def replace(self, **changes) -> PCMDevice:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def noiseless(self) -> PCMDevice:
        """The same device with programming noise, drift, read noise and the initial jitter switched off."""
        return self.replace(prog_noise_scale=0.0, drift_scale=0.0, read_noise_scale=0.0, initial_programming="program")

    # ----------------------------------------------------------------------------------- mapping
    def weights_to_conductances(self, weights: jax.Array, clip: bool = True) -> jax.Array:
        """Target conductances [2, ...] (µS) of the differential pairs that store ``weights`` (clipped to ±w_max)."""
        w = (jnp.clip(weights, -self.w_max, self.w_max) if clip else weights) * (self.g_max_uS / self.w_max)
        return jnp.stack([jnp.maximum(w, 0.0), jnp.maximum(-w, 0.0)])

    def conductances_to_weights(self, conductances: jax.Array) -> jax.Array:
        """Weights represented by differential pairs [2, ...] or unit cells [2, N, ...] (µS)."""
        return self.cell_average(conductances[0] - conductances[1]) * (self.w_max / self.g_max_uS)

    def to_cells(self, pair_conductances: jax.Array) -> jax.Array:
        """Pair targets [2, ...] → the targets of every device of the unit cells ([2, N, ...] if N > 1)."""
        count = self.devices_per_polarity
        if count == 1:
            return pair_conductances
        shape = jnp.shape(pair_conductances)
        return jnp.broadcast_to(jnp.expand_dims(pair_conductances, 1), (shape[0], count, *shape[1:]))

    def cell_average(self, per_device: jax.Array) -> jax.Array:
        """Average over the N devices of a polarity (axis 0 of ``per_device`` if N > 1)."""
        return per_device if self.devices_per_polarity == 1 else jnp.mean(per_device, axis=0)

    def weight_moments(self, g_mean_uS: jax.Array, g_var_uS: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and variance of a read weight from its devices' read moments ([2, ...] or [2, N, ...]): the
        devices read independently, so the variance of their average is the sum of variances over N²."""
        scale = self.w_max / self.g_max_uS
        count = self.devices_per_polarity
        mean = self.cell_average(g_mean_uS[0] - g_mean_uS[1]) * scale
        variance = self.cell_average(g_var_uS[0] + g_var_uS[1]) * (scale**2 / count)
        return mean, variance

    def _g_rel(self, g_target_uS: jax.Array) -> jax.Array:
        return jnp.maximum(jnp.abs(g_target_uS) / self.g_max_uS, _G_REL_FLOOR)

    # ------------------------------------------------------------------------------ programming
    def prog_noise_std_uS(self, g_target_uS: jax.Array) -> jax.Array:
        """σ_prog(g_T) in µS."""
        c0, c1, c2 = self.prog_noise_coeffs_uS
        g = jnp.abs(g_target_uS) / self.g_max_uS
        scale = self.prog_noise_scale
        if self.prog_noise_reference_g_max_uS is not None:
            scale = scale * self.g_max_uS / self.prog_noise_reference_g_max_uS
        return scale * jnp.maximum(c0 + c1 * g + c2 * g * g, 0.0)

    def drift_nu_mean_std(self, g_target_uS: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(μ_ν, σ_ν) of the normal distribution whose absolute value is the drift exponent ν."""
        log_g = jnp.log(self._g_rel(g_target_uS))
        mu = jnp.clip(self.drift_mu_coeffs[0] * log_g + self.drift_mu_coeffs[1], *self.drift_mu_clip)
        sigma = jnp.clip(self.drift_sigma_coeffs[0] * log_g + self.drift_sigma_coeffs[1], *self.drift_sigma_clip)
        return mu, sigma

    def drift_nu_moments(self, g_target_uS: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Exact mean and std of ν = |N(μ_ν, σ_ν)| (a folded normal), times ``drift_scale``."""
        mu, sigma = self.drift_nu_mean_std(g_target_uS)
        ratio = mu / sigma
        mean = sigma * jnp.sqrt(2 / jnp.pi) * jnp.exp(-0.5 * ratio**2) + mu * (1 - 2 * jax.scipy.stats.norm.cdf(-ratio))
        var = mu**2 + sigma**2 - mean**2
        return self.drift_scale * mean, self.drift_scale * jnp.sqrt(jnp.maximum(var, 0.0))

    def program(self, key: jax.Array, g_target_uS: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Program devices to ``g_target_uS``; returns (programmed conductance, drift exponent ν).

        Both are fixed at programming time: the conductance read later follows from them, the time
        since programming and fresh read noise (:meth:`read`).
        """
        key_prog, key_nu = jax.random.split(key)
        noise = jax.random.normal(key_prog, jnp.shape(g_target_uS), dtype=jnp.result_type(g_target_uS, jnp.float32))
        if not self.idle_device_noise:
            noise = jnp.where(g_target_uS > 0, noise, 0.0)
        g_max = self.g_max_uS if self.clip_programmed_at_g_max else jnp.inf
        g_prog = jnp.clip(g_target_uS + self.prog_noise_std_uS(g_target_uS) * noise, 0.0, g_max)
        return g_prog, self._draw_nu(key_nu, g_target_uS, g_prog.dtype)

    def _draw_nu(self, key: jax.Array, g_target_uS: jax.Array, dtype) -> jax.Array:
        mu, sigma = self.drift_nu_mean_std(g_target_uS)
        return self.drift_scale * jnp.abs(mu + sigma * jax.random.normal(key, jnp.shape(g_target_uS), dtype=dtype))

    def program_weights(self, key: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """First write of signed ``weights``: (target conductances, programmed conductances, ν), each
        [2, ...] ([2, N, ...] for unit cells of N devices per polarity).

        ``initial_programming="program"``: :meth:`program` of the pairs' targets. ``"authors_jitter"``: the
        authors' initial write (field docstring); g_P is set so that the read at ``fixed_age_s`` returns
        exactly their drifted weight, and both devices of a pair share one ν drawn from |w|.
        """
        g_target = self.to_cells(self.weights_to_conductances(weights))
        if self.initial_programming == "program":
            return (g_target, *self.program(key, g_target))
        key_jitter, key_nu = jax.random.split(key)
        w = jnp.asarray(weights, jnp.result_type(weights, jnp.float32))
        w_max = self.w_max
        nu = self._draw_nu(key_nu, jnp.abs(w) * (self.g_max_uS / w_max), w.dtype)
        decay = self.drift_factor(nu, self.fixed_age_s)
        jitter = AUTHORS_INITIAL_JITTER * w_max * jax.random.uniform(key_jitter, w.shape, w.dtype, -1.0, 1.0)
        clip = functools.partial(jnp.clip, min=-w_max, max=w_max)
        written = clip(clip(w) + jitter)
        drifted = clip(clip(w) + jitter + clip(w * decay) - w)
        g_prog = self.weights_to_conductances(drifted / decay, clip=False)
        return self.weights_to_conductances(written), g_prog, jnp.stack([nu, nu])

    def reprogram_target(
        self, g_target_uS: jax.Array, g_now_uS: jax.Array, update: jax.Array, base_weights: jax.Array | None = None
    ) -> jax.Array:
        """Target conductances [2, ...] of pairs after adding a weight ``update`` (``reprogram_from``), or
        to ``base_weights`` if given (a chip that compensates drift writes relative to its estimate)."""
        base = self.reprogram_base(g_target_uS, g_now_uS, base_weights)
        return self.to_cells(self.weights_to_conductances(base + update))

    def reprogram_base(
        self, g_target_uS: jax.Array, g_now_uS: jax.Array, base_weights: jax.Array | None = None
    ) -> jax.Array:
        """The weights [fan_in, fan_out] an update is added to: ``base_weights`` if given, else the pairs'
        targets or their drifted reads (``reprogram_from``)."""
        if base_weights is not None:
            return base_weights
        return self.conductances_to_weights(g_target_uS if self.reprogram_from == "target" else g_now_uS)

    # ----------------------------------------------------------------------------------- drift
    def refuse_fixed_age(self, time_since_programming_s: float | None, label: str = "time since programming") -> None:
        """Refuse an asked-for time since programming on a device that reads every device at a fixed age
        (``fixed_age_s``, the authors' convention): the time could not take effect."""
        if time_since_programming_s is not None and self.fixed_age_s is not None:
            raise ConfigError(
                f"{label} {time_since_programming_s!r} s: this device reads every device at a "
                f"fixed age of {self.fixed_age_s:g} s (the authors' convention), so a time since programming "
                "cannot apply"
            )

    def effective_age_s(self, time_since_programming_s: jax.Array) -> jax.Array:
        """The age the drift and read-noise laws see: ``fixed_age_s`` if set, else the real one."""
        return (
            time_since_programming_s
            if self.fixed_age_s is None
            else jnp.full_like(jnp.asarray(time_since_programming_s, jnp.float32), self.fixed_age_s)
        )

    def drift_factor(self, nu: jax.Array, time_since_programming_s: jax.Array) -> jax.Array:
        """g(t)/g_P: (max(t, t0)/t0)^(−ν), or ((t + t0)/t0)^(−ν) with ``drift_time_origin="aihwkit"``."""
        t = self.effective_age_s(time_since_programming_s)
        if self.drift_time_origin == "aihwkit":
            ratio = (jnp.maximum(t, 0.0) + self.t0_s) / self.t0_s
        else:
            ratio = jnp.maximum(t, self.t0_s) / self.t0_s
        return jnp.exp(-nu * jnp.log(ratio))

    def expected_conductance(self, g_target_uS: jax.Array, time_since_programming_s: float) -> jax.Array:
        """What devices programmed to ``g_target_uS`` read on average at an age (the chip's prediction from its
        digital record): the mean of g_P (a normal around g_T clipped to [0, g_max], so an idle device at
        0 µS reads above 0), times the mean drift factor (:meth:`expected_drift_factor`)."""
        g_target = jnp.asarray(g_target_uS)
        sigma = self.prog_noise_std_uS(g_target)
        if not self.idle_device_noise:
            sigma = jnp.where(g_target > 0, sigma, 0.0)
        high = self.g_max_uS if self.clip_programmed_at_g_max else jnp.inf
        safe = jnp.maximum(sigma, 1e-12)
        lo, hi = (0.0 - g_target) / safe, (high - g_target) / safe
        cdf, pdf = jax.scipy.stats.norm.cdf, jax.scipy.stats.norm.pdf
        upper = jnp.where(jnp.isfinite(hi), high * (1 - cdf(hi)), 0.0)
        clipped_mean = upper + g_target * (cdf(hi) - cdf(lo)) + safe * (pdf(lo) - pdf(hi))
        mean = jnp.where(sigma > 0, clipped_mean, jnp.clip(g_target, 0.0, high))
        return mean * self.expected_drift_factor(g_target, time_since_programming_s)

    def expected_drift_factor(self, g_target_uS: jax.Array, time_since_programming_s: float) -> jax.Array:
        """E[g(t)/g_P] over the drift exponent ν = s·|N(μ_ν, σ_ν)| of devices programmed to ``g_target_uS``
        (exact: with drift factor exp(−νL), E = e^{−aμ+a²σ²/2}Φ(μ/σ − aσ) + e^{aμ+a²σ²/2}Φ(−μ/σ − aσ), a = sL)."""
        nu_one = jnp.ones_like(jnp.asarray(g_target_uS, jnp.float32))
        log_ratio = -jnp.log(self.drift_factor(nu_one, jnp.asarray(time_since_programming_s, jnp.float32)))
        a = self.drift_scale * log_ratio
        mu, sigma = self.drift_nu_mean_std(g_target_uS)
        cdf = jax.scipy.stats.norm.cdf
        return jnp.exp(-a * mu + 0.5 * (a * sigma) ** 2) * cdf(mu / sigma - a * sigma) + jnp.exp(
            a * mu + 0.5 * (a * sigma) ** 2
        ) * cdf(-mu / sigma - a * sigma)

    def drift(self, g_prog_uS: jax.Array, nu: jax.Array, time_since_programming_s: jax.Array) -> jax.Array:
        """Conductance after drift: g_P·(t/t0)^(−ν) for t > t0, unchanged before t0 (see :meth:`drift_factor`)."""
        return g_prog_uS * self.drift_factor(nu, time_since_programming_s)

    # -------------------------------------------------------------------------------- read noise
    def read_noise_std_uS(
        self,
        g_target_uS: jax.Array,
        g_now_uS: jax.Array,
        time_since_programming_s: jax.Array,
        g_prog_uS: jax.Array | None = None,
    ) -> jax.Array:
        """σ_read = |g(t)|·Q_s·sqrt(ln((t + t_read)/(k t_read))), zero for t <= (k − 1) t_read.

        Q_s is evaluated on g_T, or on ``g_prog_uS`` with ``read_noise_q_from="programmed"``; k is
        ``read_noise_log_divisor``; t is the effective age (plus t0 with ``drift_time_origin="aihwkit"``).
        """
        g_q = g_target_uS
        if self.read_noise_q_from == "programmed" and g_prog_uS is not None:
            g_q = g_prog_uS
        if self.read_noise_uses_microsiemens:
            g_for_q = jnp.maximum(jnp.abs(g_q), _G_REL_FLOOR)
        else:
            g_for_q = self._g_rel(g_q)
        q_s = jnp.minimum(self.read_noise_q_coeff / g_for_q**self.read_noise_q_exponent, self.read_noise_q_max)
        t = jnp.asarray(self.effective_age_s(time_since_programming_s), dtype=jnp.result_type(g_now_uS, jnp.float32))
        if self.drift_time_origin == "aihwkit":
            t = t + self.t0_s
        log_term = jnp.maximum(jnp.log((t + self.t_read_s) / (self.read_noise_log_divisor * self.t_read_s)), 0.0)
        return self.read_noise_scale * jnp.abs(g_now_uS) * q_s * jnp.sqrt(log_term)

    def read_moments(self, g_now_uS: jax.Array, sigma_uS: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and variance of one read g(t) + σ·ξ; with ``clamp_reads_at_zero`` those of max(0, ·)."""
        if not self.clamp_reads_at_zero:
            return g_now_uS, sigma_uS**2
        safe = jnp.maximum(sigma_uS, 1e-12)
        a = g_now_uS / safe
        cdf, pdf = jax.scipy.stats.norm.cdf(a), jax.scipy.stats.norm.pdf(a)
        mean = g_now_uS * cdf + safe * pdf
        second = (g_now_uS**2 + safe**2) * cdf + g_now_uS * safe * pdf
        mean = jnp.where(sigma_uS > 0, mean, jnp.maximum(g_now_uS, 0.0))
        var = jnp.where(sigma_uS > 0, jnp.maximum(second - mean**2, 0.0), 0.0)
        return mean, var

    def read(
        self,
        key: jax.Array,
        g_target_uS: jax.Array,
        g_prog_uS: jax.Array,
        nu: jax.Array,
        time_since_programming_s: jax.Array,
    ) -> jax.Array:
        """One noisy read of programmed devices: drift to ``t`` then add fresh 1/f read noise."""
        g_now = self.drift(g_prog_uS, nu, time_since_programming_s)
        sigma = self.read_noise_std_uS(g_target_uS, g_now, time_since_programming_s, g_prog_uS)
        g_read = g_now + sigma * jax.random.normal(key, jnp.shape(g_now), dtype=g_now.dtype)
        return jnp.maximum(g_read, 0.0) if self.clamp_reads_at_zero else g_read

    # ------------------------------------------------------------- software hardware-aware model
    def noisy_weights(self, key: jax.Array, weights: jax.Array, time_since_programming_s: float) -> jax.Array:
        """Weights as a PCM chip would return them after programming and one read at time ``t``.

        For hardware-aware training: the forward value carries programming noise, drift and read
        noise; the gradient is straight-through (∂/∂w = 1 inside the weight range), so the same model
        that the chip uses shapes the loss without its noise entering the backward pass.
        """
        key_prog, key_read = jax.random.split(key)
        g_target, g_prog, nu = self.program_weights(key_prog, weights)
        g_read = self.read(key_read, g_target, g_prog, nu, time_since_programming_s)
        noisy = self.conductances_to_weights(g_read)
        clipped = jnp.clip(weights, -self.w_max, self.w_max)
        return clipped + jax.lax.stop_gradient(noisy - clipped)


# ---------------------------------------------------------------------------------------- profiles
DEVICE_PROFILES: dict[str, PCMDevice] = {
    "ibm": PCMDevice(),
    "authors": PCMDevice(
        t0_s=1.0,
        fixed_age_s=32.0,
        read_noise_uses_microsiemens=True,
        read_noise_log_divisor=1.0,
        read_noise_scale=1.0 / math.sqrt(2.0),
        initial_programming="authors_jitter",
        reprogram_from="read",
        idle_device_noise=False,
    ),
    "hermes": PCMDevice(devices_per_polarity=2),
    "aihwkit": PCMDevice(
        drift_time_origin="aihwkit",
        clip_programmed_at_g_max=False,
        clamp_reads_at_zero=True,
        read_noise_q_from="programmed",
        prog_noise_reference_g_max_uS=25.0,
    ),
}
"""Named device conventions (one home; ``l2l-pcm chip stats --device NAME`` prints each).

* ``ibm``: IBM's published statistical model (Nandakumar et al. 2019, Joshi et al. 2020) as this project
  applies it: Q_s on the normalised target, g_P clipped to [0, g_max], no drift before t0 = 20 s.
* ``authors``: the paper's code (github.com/IGITUGraz/RapidLearningInMemoryComputing, ``PCMNoise`` in
  ``few_shot_image_classification/pcm.py`` and ``online_learning_robot/module/pcm.py``): t/t0 = 32 at every read
  (t0 = 1 s, age fixed at 32 s) right after programming and again after re-programming; the first write adds U(±0.01)
  jitter, no programming noise, and reflects |w| > 1; re-programming starts from the drifted weight and puts noise on
  the active polarity only; read noise with Q_s on µS, ln((t + t_read)/t_read), and 1/√2 for two devices averaged per
  polarity. (The authors' few-shot readout used ln((t + t_read)/(2 t_read)) without the 1/√2, about 1.4× this read
  noise, which is itself ~8× below the published model's: not modelled separately.) Their code models its two devices
  per polarity only through that 1/√2 on the read noise, so this profile keeps one device per polarity and their
  arithmetic; ``hermes`` has two real devices.
* ``hermes``: ``ibm`` with unit cells of 2 devices per polarity (4 per weight), as on IBM's HERMES core and
  as the paper's code assumes (``number_of_synapses = 2`` in its ``PCMNoise.read_noise``): every device
  programmed, drifting and read on its own.
* ``aihwkit``: aihwkit 1.1 ``PCMLikeNoiseModel`` conventions (github.com/IBM/aihwkit,
  src/aihwkit/inference/noise/pcm.py): drift ((t + t0)/t0)^(−ν) and
  t + t0 in the read-noise log, g_P clipped only at 0, reads clamped at 0, Q_s on the programmed g_P,
  σ_prog scaled by g_max/25 µS. (aihwkit draws the 1/f term once per drift call; the chip draws it at
  every read.)
"""


if tuple(DEVICE_PROFILES) != DEVICE_PROFILE_NAMES:  # the CLI offers the names without importing JAX
    raise ImportError(f"l2l_pcm.vocabulary.DEVICE_PROFILE_NAMES {DEVICE_PROFILE_NAMES} != {tuple(DEVICE_PROFILES)}")


def device_profile(name: str) -> PCMDevice:
    """The :class:`PCMDevice` of a named profile (``ibm``, ``authors``, ``hermes``, ``aihwkit``)."""
    if name not in DEVICE_PROFILES:
        raise ConfigError(f"unknown device profile {name!r}; choose one of {sorted(DEVICE_PROFILES)}")
    return DEVICE_PROFILES[name]


def device_from_json(data: object, path: str = "device") -> PCMDevice:
    """A device from a config: a profile name, or a JSON object of :class:`PCMDevice` fields, type-checked
    field by field (:func:`l2l_pcm.validation.parse`; lists become tuples)."""
    if isinstance(data, str):
        return device_profile(data)
    if isinstance(data, PCMDevice):
        return data
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a profile name {sorted(DEVICE_PROFILES)} or a JSON object of PCMDevice fields, "
            f"got {data!r}"
        )
    return parse(PCMDevice, data, path)


def profile_name(device: PCMDevice) -> str:
    """The profile a device equals, or ``custom``."""
    return next((name for name, preset in DEVICE_PROFILES.items() if preset == device), "custom")


# ------------------------------------------------------------------------------------ quantization
def quantize(values: jax.Array, step: float, key: jax.Array | None = None) -> jax.Array:
    """Round ``values`` to multiples of ``step`` with a straight-through gradient.

    Without a key: round to nearest (the authors' robot update). With a key: unbiased stochastic
    rounding, floor(x/step + U[0,1))·step, E[q] = x (the authors' few-shot update). The backward
    pass treats the rounding as identity, so the quantizer composes with any update rule.
    """
    if not step > 0:
        raise ConfigError(f"quantization step must be > 0, got {step}")
    scaled = values / step
    if key is None:
        rounded = jnp.round(scaled)
    else:
        rounded = jnp.floor(scaled + jax.random.uniform(key, jnp.shape(values), dtype=scaled.dtype))
    return values + jax.lax.stop_gradient(rounded * step - values)


def keep_largest(update: jax.Array, count: int) -> jax.Array:
    """``update`` with all but its ``count`` largest-magnitude entries set to zero (0 = keep all).

    A device budget for on-chip learning: the digital periphery computes the whole update, and only
    the ``count`` weights that need the largest change are re-programmed. Exactly ``count`` entries
    survive (ties broken by position), so the budget holds on every step. The kept entries pass
    gradients, so a meta-learner trained with the budget in the loop learns to live with it.
    """
    if not (isinstance(count, int) and count >= 0):
        raise ConfigError(f"update budget must be an integer >= 0, got {count!r}")
    size = math.prod(jnp.shape(update))
    if count == 0 or count >= size:
        return update
    _, kept = jax.lax.top_k(jnp.abs(jax.lax.stop_gradient(update)).ravel(), count)
    mask = jnp.zeros(size, dtype=bool).at[kept].set(True).reshape(jnp.shape(update))
    return jnp.where(mask, update, 0.0)


def quantize_weights(weights: jax.Array, bits: int, w_max: float = 1.0, key: jax.Array | None = None) -> jax.Array:
    """Symmetric ``bits``-bit weights: 2^(bits-1)−1 levels per sign in [−w_max, w_max], straight-through.

    "4-bit" = sign + 3 magnitude bits = 15 levels, step w_max/7. (The authors' software 4-bit model used
    step 1/8 over [−1, 7/8]; a symmetric grid keeps zero exact and both signs equal.)
    """
    if not (isinstance(bits, int) and bits >= 2):
        raise ConfigError(f"weight bits must be an integer >= 2, got {bits!r}")
    step = w_max / (2 ** (bits - 1) - 1)
    clipped = jnp.clip(weights, -w_max, w_max)
    clipped = weights + jax.lax.stop_gradient(clipped - weights)
    return quantize(clipped, step, key)
