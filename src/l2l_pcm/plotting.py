"""Matplotlib without a screen, and figures written atomically as PNG."""

from __future__ import annotations

import io
from pathlib import Path

from l2l_pcm._io import atomic_write_bytes


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    pyplot().close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
