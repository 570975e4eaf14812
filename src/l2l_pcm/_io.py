"""Atomic file writing and safetensors + JSON bundles (never pickle).

A file is written to a temporary sibling and renamed over the target, so a crash, a full disk or a
kill leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
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


def refuse_output(output: str | os.PathLike, inputs: tuple, overwrite: bool = False) -> Path:
    """An output file a command may write: never one of its ``inputs`` (the same path or the same file under
    another name: writing it would destroy what is being read), and not an existing file unless
    ``overwrite``. Raises :class:`~l2l_pcm.errors.L2LPCMError` naming both."""
    output = Path(output)
    if not str(output).strip():
        raise L2LPCMError("the output path is empty (an unset variable?)")
    for source in inputs:
        source = Path(source)
        same = output.resolve() == source.resolve()
        if not same and output.exists() and source.exists():
            same = os.path.samefile(output, source)
        if same:
            raise L2LPCMError(f"{output} is also the input {source}: refusing to write over what is being read")
    if output.exists() and not overwrite:
        raise L2LPCMError(f"{output} already exists; pass --overwrite to replace it")
    return output


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (checksums of data sets, checkpoints, imported files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(path: str | os.PathLike, rows: list[Mapping]) -> Path:
    """Rows of dicts as CSV, atomically; the header is every key in the order it first appears (a row
    without a column leaves it empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(name for row in rows for name in row)))
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


CONTENT_HASH = "content_sha256"
"""Metadata field holding :func:`content_sha256` of a file's tensors and other metadata."""


def content_sha256(tensors: Mapping[str, np.ndarray], metadata: Mapping) -> str:
    """SHA-256 of every tensor (name, dtype, shape, bytes, in name order) and of the metadata (as sorted JSON,
    without this hash): a tensor whose bytes moved (e.g. two same-shaped tensors' offsets swapped in the
    header), or a config edited by hand, no longer matches."""
    digest = hashlib.sha256()
    digest.update(json.dumps({k: v for k, v in metadata.items() if k != CONTENT_HASH}, sort_keys=True).encode())
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping) -> Path:
    """Save named arrays and a JSON-serialisable ``metadata`` dict as one safetensors file.

    The metadata travels inside the safetensors header (as a JSON string under ``"l2l_pcm"``), so a
    checkpoint is a single file that is either complete or absent; it carries :func:`content_sha256`, which
    :func:`load_tensors` verifies.
    """
    from safetensors.numpy import save

    arrays = {name: np.ascontiguousarray(np.asarray(value)) for name, value in tensors.items()}
    metadata = json.loads(json.dumps(metadata))  # as it will be read back (tuples become lists)
    metadata[CONTENT_HASH] = content_sha256(arrays, metadata)
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
    if not isinstance(metadata, dict):
        raise CheckpointError(f"corrupt metadata in checkpoint {path}: a JSON object expected")
    stored = metadata.get(CONTENT_HASH)  # files written before content hashes carry none: read as they are
    if stored is not None and stored != content_sha256(tensors, metadata):
        raise CheckpointError(
            f"{path}: its tensors or metadata differ from what was written (the content hash does not match: "
            "edited or damaged); refusing to read it"
        )
    if kind is not None and metadata.get("kind") != kind:
        raise CheckpointError(f"{path} holds a '{metadata.get('kind')}' checkpoint, expected '{kind}'")
    return tensors, metadata
