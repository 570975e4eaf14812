"""What a result needs to be traced to its run: library version, checkpoint, hardware, date, commit.

Every JSON result of ``eval`` / ``demo`` carries :func:`provenance` under ``"provenance"``, so a number
in a paper can be reproduced from the file alone.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import subprocess
from pathlib import Path

from l2l_pcm._io import file_sha256
from l2l_pcm.chip import ChipConfig
from l2l_pcm.pcm import profile_name

_REPOSITORY = Path(__file__).resolve().parents[2]


def git_commit() -> str | None:
    """The commit of the source tree this library runs from (``+dirty`` with local changes), or None."""
    if not (_REPOSITORY / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(_REPOSITORY), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(_REPOSITORY), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def provenance(checkpoint: str | os.PathLike, hardware: ChipConfig | None, **settings) -> dict:
    """The provenance block: version, checkpoint path and sha256, the full hardware configuration (its
    device's profile name and every field; None where no hardware model took part, e.g. the few-shot fp32
    software model), the settings of the run as asked (seed, tasks, backend, time since programming...),
    UTC date, commit."""
    return run_provenance(
        checkpoint=str(checkpoint),
        checkpoint_sha256=file_sha256(checkpoint),
        device_profile=None if hardware is None else profile_name(hardware.device),
        hardware=None if hardware is None else dataclasses.asdict(hardware),
        **settings,
    )


def run_provenance(**settings) -> dict:
    """Version, the given settings, UTC date and commit: the part of a provenance block every run has
    (a comparison of several checkpoints records each one's path and sha256 beside its result)."""
    from l2l_pcm import __version__

    return {
        "l2l_pcm_version": __version__,
        **settings,
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
    }
