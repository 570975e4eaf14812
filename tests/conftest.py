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


@pytest.fixture
def saved_figures(monkeypatch):
    """Every matplotlib figure saved during the test, as drawn: ``{"pixels": (width, height), "texts": [(text,
    font size in pt), ...]}`` (visible, non-empty texts: titles, labels, tick labels, legend entries)."""
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    records = []
    original = Figure.savefig

    def savefig(figure, *args, **kwargs):
        result = original(figure, *args, **kwargs)
        texts = [
            (text.get_text(), text.get_fontsize())
            for text in figure.findobj(Text)
            if text.get_visible() and text.get_text().strip()
        ]
        records.append({"pixels": tuple(float(v) for v in figure.get_size_inches() * figure.dpi), "texts": texts})
        return result

    monkeypatch.setattr(Figure, "savefig", savefig)
    return records


def figure_text(record: dict) -> str:
    """All texts of a :func:`saved_figures` record, one per line."""
    return "\n".join(text for text, _ in record["texts"])
