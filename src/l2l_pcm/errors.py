"""Error types that carry a one-line, user-facing message.

The CLI catches :class:`L2LPCMError` and prints ``error: <message>`` without a traceback, so every
message must name the offending input (a path, a field, a value) on its own.
"""

import math
import numbers


class L2LPCMError(Exception):
    """Base class of every error l2l-pcm raises on bad input."""


class ConfigError(L2LPCMError, ValueError):
    """A parameter, shape or command-line value is out of range or inconsistent."""


class DataError(L2LPCMError):
    """A dataset is missing, unreadable, of the wrong format or fails its checksum."""


class CheckpointError(L2LPCMError):
    """A checkpoint or chip-state file is missing, truncated, corrupt or of another kind."""


class ChipCapacityError(ConfigError):
    """A layer does not fit onto the crossbar arrays that are still free."""


def check_int(label: str, value: object, minimum: int = 1) -> int:
    """``value`` as an integer >= ``minimum``, or a :class:`ConfigError` naming ``label`` (bools are not counts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{label} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_number(label: str, value: object, minimum: float = 0.0, strict: bool = True) -> float:
    """``value`` as a finite number > ``minimum`` (>= if not ``strict``), or a one-line :class:`ConfigError`."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= minimum if strict else value < minimum):
        raise ConfigError(f"{label} must be a finite number {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return float(value)


SEED_MAX = 2**32 - 1
"""Largest seed: ``jax.random.PRNGKey`` and NumPy take any 32-bit seed, and derived seeds (seed·k + i)
stay far from their 64-bit limits."""


def check_seed(name: str, value: object) -> int:
    """``value`` as a seed, or a :class:`ConfigError` naming ``name`` (bools and floats are not seeds)."""
    if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SEED_MAX):
        raise ConfigError(f"{name} must be an integer in 0..{SEED_MAX}, got {value!r}")
    return value


class FixedAgeWarning(UserWarning):
    """Time was let pass on a chip whose device model reads every device at a fixed age (it changes nothing)."""
