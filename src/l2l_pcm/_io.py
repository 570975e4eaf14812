"""Atomic file writing and safetensors + JSON bundles (never pickle).

A file is written to a temporary sibling and renamed over the target, so a crash, a full disk or a
kill leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from l2l_pcm.errors import CheckpointError, L2LPCMError


def _temp_prefix(name: str) -> str:
    return f".{name}."


_TEMP_SUFFIX = ".tmp"


def _temp_file(folder: Path, name: str) -> tuple[int, str]:
    """Create ``folder`` if needed and an empty temp file for ``name`` in it: (fd, path)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=_temp_prefix(name), suffix=_TEMP_SUFFIX, dir=folder)
    except FileExistsError:  # ``folder`` itself is a file
        reason = os.strerror(errno.ENOTDIR)
    except OSError as exc:
        reason = exc.strerror or str(exc)
    raise L2LPCMError(f"cannot write to folder {folder}: {reason}")


def writable_folder(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check a file can be created in it, so a long run fails at its start,
    not at its first checkpoint hours later."""
    path = Path(path)
    fd, probe = _temp_file(path, "probe")
    os.close(fd)
    os.unlink(probe)
    return path


def remove_stale_temporaries(folder: str | os.PathLike, names: tuple[str, ...]) -> list[Path]:
    """Delete temp files that :func:`atomic_write_bytes` left for ``names`` when its process was killed
    mid-write (SIGKILL runs no cleanup); call only when no other process writes these files."""
    removed = []
    for name in names:
        for stale in Path(folder).glob(f"{_temp_prefix(name)}*{_TEMP_SUFFIX}"):
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    A killed process can leave its temp file behind (never a half-written ``path``); see
    :func:`remove_stale_temporaries`.
    """
    path = Path(path)
    fd, tmp = _temp_file(path.parent, path.name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise L2LPCMError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (checksums of data sets, checkpoints, imported files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping) -> Path:
    """Save named arrays and a JSON-serialisable ``metadata`` dict as one safetensors file.

    The metadata travels inside the safetensors header (as a JSON string under ``"l2l_pcm"``), so a
    checkpoint is a single file that is either complete or absent.
    """
    from safetensors.numpy import save

    arrays = {name: np.ascontiguousarray(np.asarray(value)) for name, value in tensors.items()}
    header = {"l2l_pcm": json.dumps(metadata, sort_keys=True)}
    return atomic_write_bytes(path, save(arrays, metadata=header))


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length and then a JSON object."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000


def load_tensors(path: str | os.PathLike, kind: str | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Load a file written by :func:`save_tensors`; check its ``kind`` field when given.

    Raises :class:`CheckpointError` naming the file for a missing, truncated or foreign file.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # safetensors raises several types for damaged files
        if not _looks_like_safetensors(path):
            raise CheckpointError(
                f"{path} is not a safetensors file (l2l-pcm checkpoints are; a PyTorch .pt or a pickle is not "
                "read, see `l2l-pcm import-authors` for the authors' pickles)"
            ) from None
        raise CheckpointError(f"corrupt or truncated checkpoint {path}: {exc}") from None
    if "l2l_pcm" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not an l2l-pcm checkpoint (no metadata)")
    try:
        metadata = json.loads(header["l2l_pcm"])
    except json.JSONDecodeError:
        raise CheckpointError(f"corrupt metadata in checkpoint {path}") from None
    if kind is not None and metadata.get("kind") != kind:
        raise CheckpointError(f"{path} holds a '{metadata.get('kind')}' checkpoint, expected '{kind}'")
    return tensors, metadata
