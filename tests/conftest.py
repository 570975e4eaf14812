import os

import jax
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


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
