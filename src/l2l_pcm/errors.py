"""Error types that carry a one-line, user-facing message.

The CLI catches :class:`L2LPCMError` and prints ``error: <message>`` without a traceback, so every
message must name the offending input (a path, a field, a value) on its own.
"""


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


SEED_MAX = 2**32 - 1
"""Largest seed: ``jax.random.PRNGKey`` and NumPy take any 32-bit seed, and derived seeds (seed·k + i)
stay far from their 64-bit limits."""


def check_seed(name: str, value: object) -> int:
    """``value`` as a seed, or a :class:`ConfigError` naming ``name`` (bools and floats are not seeds)."""
    if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SEED_MAX):
        raise ConfigError(f"{name} must be an integer in 0..{SEED_MAX}, got {value!r}")
    return value
