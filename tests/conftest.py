import os
from pathlib import Path

import jax
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("L2L_PCM_COMPILATION_CACHE", "off")  # tests compile afresh; the CLI caches for users


def _shared_omniglot() -> Path | None:
    candidates = [os.environ.get("L2L_PCM_DATA"), Path(__file__).resolve().parents[2] / "shared/data/omniglot"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "omniglot_background.npz").is_file():
            return Path(candidate)
    return None


SHARED = _shared_omniglot()
needs_shared = pytest.mark.skipif(
    SHARED is None,
    reason="the shared Omniglot npz copy (../shared/data/omniglot or $L2L_PCM_DATA) is not present",
)


@pytest.fixture
def key():
    return jax.random.PRNGKey(1234)


@pytest.fixture
def x64():
    """Run a test in float64 (spiking dynamics and gradient checks), restoring the flag afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
