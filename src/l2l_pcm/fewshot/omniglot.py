"""Omniglot for few-shot learning: loading (local copies or a download), caching, a validation split.

Task sampling is apart, in :mod:`l2l_pcm.fewshot.data` (it needs only an image array).

Omniglot (Lake et al., 2015) has 1623 handwritten characters ("classes") from 50 alphabets, 20
drawings each. The "background" set (30 alphabets, 964 classes) is used for meta-training, the
"evaluation" set (20 alphabets, 659 classes) for meta-testing. Few-shot work uses 28x28 images.

Three local forms of the data are accepted, checked in this order inside the data directory:

a. the compact NumPy files ``omniglot_background.npz`` / ``omniglot_evaluation.npz`` (packed
   105x105 bits, 1 = ink; their sha256 is checked unless ``verify=False``);
b. the canonical zips ``images_background.zip`` / ``images_evaluation.zip``
   (``images_background/<Alphabet>/characterNN/NNNN_DD.png``, PNG mode "1", white = background);
c. the same PNG tree already extracted: ``images_background/<Alphabet>/characterNN/NNNN_DD.png``.

With none of them present the zip of the requested split is downloaded into the data directory.
Every form yields the same canonical class order (alphabets sorted by name, then characters by
number, drawings by their DD suffix), so a class index means the same character whatever the form.

The 105x105 images are shrunk once to 28x28 and cached (see :func:`load_omniglot`), because decoding
and resizing 32,460 images takes seconds while loading the cache takes a fraction of one.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import logging
import os
import re
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from l2l_pcm._io import atomic_write_bytes, file_sha256
from l2l_pcm.errors import ConfigError, DataError, L2LPCMError

__all__ = [
    "SPLITS",
    "N_DRAWERS",
    "IMAGE_SIZE",
    "NPZ_SHA256",
    "ZIP_SHA256",
    "DOWNLOAD_URL",
    "ENV_VAR",
    "OmniglotImages",
    "resolve_data_dir",
    "load_omniglot",
    "split_background",
]

_log = logging.getLogger(__name__)

SPLITS = ("background", "evaluation")
N_DRAWERS = 20
"""Drawings per character in Omniglot."""
SOURCE_SIZE = 105
"""Side of the original Omniglot images."""
IMAGE_SIZE = 28
"""Side of the images handed to the learner (the usual few-shot resolution)."""

NPZ_SHA256 = {
    "background": "708dc067169a4cb0f56c3597220da589c6eacc325d93721aa1cb4eb7b7b3e8c0",
    "evaluation": "4b8815b26677b9c9e8fc485cd36ba41ce001ab867f631b14162d9129d7364b22",
}
"""sha256 of the compact npz files (from the data set's README)."""

ZIP_SHA256: dict[str, str | None] = {"background": None, "evaluation": None}
"""sha256 of the canonical zips; ``None`` = not known here, so not checked (never guessed)."""

DOWNLOAD_URL = "https://github.com/brendenlake/omniglot/raw/master/python/images_{split}.zip"
DOWNLOAD_TIMEOUT_S = 10.0
ENV_VAR = "L2L_PCM_DATA"

_CACHE_VERSION = 2  # 2: the cache records the hash of its arrays
_RESAMPLE_NAME = "box"
_REPO_ROOT = Path(__file__).resolve().parents[3]
_NPZ_KEYS = (
    "images",
    "image_shape",
    "character_index",
    "drawer_index",
    "alphabet_index",
    "alphabet_names",
    "character_names",
)
_CHAR_DIR = re.compile(r"^character(\d+)$")
_PNG_NAME = re.compile(r"^(\d+)_(\d+)\.png$")


def _one_line(problem: object) -> str:
    """An exception's (or reason's) text on one line: messages must fit the CLI's ``error: ...`` line."""
    text = " ".join(str(problem).split())
    return text or type(problem).__name__


# --------------------------------------------------------------------------------------------------
# The loaded data set
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class OmniglotImages:
    """One Omniglot split (or part of one) at 28x28, in canonical class order.

    ``images`` is float32 ``[n_classes, 20, 28, 28]`` in [0, 1] with 1 = ink, indexed by class and
    drawing (the DD of the file name minus 1). It is made read-only so a sampler or a training
    loop cannot silently alter the data that later tasks are drawn from.
    """

    images: np.ndarray
    class_names: list[str]
    """``"Alphabet/characterNN"`` for each class."""
    alphabet_names: list[str]
    """The alphabet of each class (same length as ``class_names``)."""
    split: str = ""
    """Where it came from: ``"background"``, ``"evaluation"`` or a part of the background set."""

    def __post_init__(self) -> None:
        images = np.asarray(self.images, dtype=np.float32).view()
        images.flags.writeable = False
        if images.ndim != 4:
            raise ConfigError(f"Omniglot images must be [classes, drawings, H, W], got shape {images.shape}")
        class_names = [str(name) for name in self.class_names]
        alphabet_names = [str(name) for name in self.alphabet_names]
        if not len(class_names) == len(alphabet_names) == images.shape[0]:
            raise ConfigError(
                f"{images.shape[0]} classes of images but {len(class_names)} class names and "
                f"{len(alphabet_names)} alphabet names"
            )
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "class_names", class_names)
        object.__setattr__(self, "alphabet_names", alphabet_names)

    @property
    def n_classes(self) -> int:
        return int(self.images.shape[0])

    @property
    def alphabets(self) -> list[str]:
        """The distinct alphabets, sorted by name."""
        return sorted(set(self.alphabet_names))

    def subset(self, class_indices: Sequence[int] | np.ndarray, split: str | None = None) -> OmniglotImages:
        """The classes ``class_indices`` (in that order) as a new :class:`OmniglotImages`."""
        index = np.asarray(class_indices, dtype=np.int64).reshape(-1)
        return OmniglotImages(
            images=self.images[index],
            class_names=[self.class_names[i] for i in index],
            alphabet_names=[self.alphabet_names[i] for i in index],
            split=self.split if split is None else split,
        )


# --------------------------------------------------------------------------------------------------
# Where the data and the cache live
# --------------------------------------------------------------------------------------------------


def _user_cache_root() -> Path:
    return Path.home() / ".cache" / "l2l_pcm"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The Omniglot folder: ``data_dir``, else ``$L2L_PCM_DATA``, else the shared copy, else the user cache.

    The shared copy is ``../shared/data/omniglot`` next to the repository root (used only if it
    exists); the user cache is ``~/.cache/l2l_pcm/omniglot`` (downloads go there). A folder that
    was named explicitly (argument or environment) must exist: a typo should fail loudly rather
    than start a download into a new, misspelt folder.
    """
    for value, origin in ((data_dir, "data_dir argument"), (os.environ.get(ENV_VAR) or None, f"${ENV_VAR}")):
        if value is None:
            continue
        path = Path(value).expanduser()
        if not path.exists():
            raise DataError(f"Omniglot data directory not found: {path} (from {origin})")
        if not path.is_dir():
            raise DataError(f"Omniglot data directory is not a folder: {path} (from {origin})")
        return path
    shared = _REPO_ROOT.parent / "shared" / "data" / "omniglot"
    if shared.is_dir():
        return shared
    return _user_cache_root() / "omniglot"


def _folder_writable(path: Path) -> bool:
    """Whether the cache may be written into ``path`` (or create it).

    A folder whose mode grants write access to nobody counts as read-only even for root, who could
    write anyway: a shared, read-only data copy should not collect cache files.
    """
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    try:
        mode = probe.stat().st_mode
    except OSError:
        return False
    return probe.is_dir() and bool(mode & 0o222) and os.access(probe, os.W_OK | os.X_OK)


def _cache_dirs(cache_dir: str | os.PathLike | None, data_dir: Path) -> list[Path]:
    """Folders to look for a cache in, in order; a new cache goes into the first writable one."""
    if cache_dir is not None:
        return [Path(cache_dir).expanduser()]
    return [data_dir / ".cache", _user_cache_root()]


# --------------------------------------------------------------------------------------------------
# Decoding the three source forms
# --------------------------------------------------------------------------------------------------


class _Record(NamedTuple):
    """One PNG drawing found in a zip or a folder tree."""

    alphabet: str
    character: str  # "characterNN" as on disk
    number: int  # NN
    drawer: int  # DD - 1
    ref: str  # zip member name or file path


def _resize_ink(ink: np.ndarray) -> np.ndarray:
    """105x105 ink mask -> 28x28 uint8 (0..255), Pillow BOX filter on the float image.

    BOX averages the ink over each output pixel's footprint, so values stay in [0, 1] and the ink
    mass is kept; LANCZOS would ring below 0 and above 1 at stroke edges. Quantising to 8 bits here
    (error <= 1/510) makes a freshly built array bit-identical to one read back from the cache.
    """
    image = Image.fromarray(np.asarray(ink, dtype=np.float32))
    small = np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX), dtype=np.float32)
    return np.clip(np.rint(small * 255.0), 0, 255).astype(np.uint8)


def _decode_png(data: bytes, origin: str) -> np.ndarray:
    """PNG bytes -> boolean ink mask (Omniglot PNGs are white = background, black = ink)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            gray = np.asarray(image.convert("L"))
    except Exception as exc:  # Pillow raises several types for damaged files
        raise DataError(f"cannot decode Omniglot image {origin}: {_one_line(exc)}") from None
    if gray.shape != (SOURCE_SIZE, SOURCE_SIZE):
        raise DataError(
            f"Omniglot image {origin} is {gray.shape[1]}x{gray.shape[0]} pixels, expected {SOURCE_SIZE}x{SOURCE_SIZE}"
        )
    return gray < 128


def _parse_drawing(alphabet: str, character: str, file_name: str, ref: str) -> _Record:
    char_match = _CHAR_DIR.match(character)
    name_match = _PNG_NAME.match(file_name)
    if char_match is None or name_match is None:
        raise DataError(f"unexpected Omniglot file {ref} (expected <Alphabet>/characterNN/NNNN_DD.png)")
    drawer = int(name_match.group(2)) - 1
    if not 0 <= drawer < N_DRAWERS:
        raise DataError(f"Omniglot file {ref} has drawing number {drawer + 1}, expected 01..{N_DRAWERS}")
    return _Record(alphabet, character, int(char_match.group(1)), drawer, ref)


def _scan_zip(path: Path, split: str) -> list[_Record]:
    prefix = f"images_{split}/"
    records = []
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot read Omniglot zip {path}: {_one_line(exc)}") from None
    for name in names:
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        parts = name[len(prefix) :].split("/")
        if not parts[-1].lower().endswith(".png") or any(part.startswith(".") for part in parts):
            continue
        if len(parts) != 3:
            raise DataError(
                f"unexpected Omniglot file {path}:{name} (expected {prefix}<Alphabet>/characterNN/NNNN_DD.png)"
            )
        records.append(_parse_drawing(parts[0], parts[1], parts[2], name))
    if not records:
        raise DataError(f"{path} holds no {prefix}<Alphabet>/characterNN/NNNN_DD.png images")
    return records


def _scan_tree(root: Path) -> list[_Record]:
    records = []
    for alphabet_dir in sorted(root.iterdir()):
        if alphabet_dir.name.startswith(".") or not alphabet_dir.is_dir():
            continue
        for char_dir in sorted(alphabet_dir.iterdir()):
            if char_dir.name.startswith(".") or not char_dir.is_dir():
                continue
            for png in sorted(char_dir.iterdir()):
                if png.name.startswith(".") or not png.name.lower().endswith(".png"):
                    continue
                records.append(_parse_drawing(alphabet_dir.name, char_dir.name, png.name, str(png)))
    if not records:
        raise DataError(f"{root} holds no <Alphabet>/characterNN/NNNN_DD.png images")
    return records


def _tree_fingerprint(records: list[_Record], root: Path) -> str:
    """Names, sizes and modification times of every PNG: cheap, and changes when any file does."""
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: r.ref):
        info = os.stat(record.ref)
        digest.update(f"{Path(record.ref).relative_to(root)}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _assemble(
    records: list[_Record], read: Callable[[str], bytes], origin: str
) -> tuple[np.ndarray, list[str], list[str]]:
    """Group drawings into classes in canonical order, check all 20 are there, decode and shrink."""
    classes: dict[tuple[str, int, str], dict[int, str]] = {}
    for record in records:
        drawings = classes.setdefault((record.alphabet, record.number, record.character), {})
        if record.drawer in drawings:
            raise DataError(
                f"{origin}: drawing {record.drawer + 1:02d} of {record.alphabet}/{record.character} "
                f"appears twice ({drawings[record.drawer]} and {record.ref})"
            )
        drawings[record.drawer] = record.ref
    order = sorted(classes)
    for key in order:
        if len(classes[key]) != N_DRAWERS:
            missing = [f"{m + 1:02d}" for m in range(N_DRAWERS) if m not in classes[key]]
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise DataError(
                f"{origin}: {key[0]}/{key[2]} has {len(classes[key])} drawings, expected {N_DRAWERS} (missing {shown})"
            )
    small = np.empty((len(order), N_DRAWERS, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for c, key in enumerate(order):
        for drawer in range(N_DRAWERS):
            ref = classes[key][drawer]
            small[c, drawer] = _resize_ink(_decode_png(read(ref), ref))
    return small, [f"{a}/{ch}" for a, _, ch in order], [a for a, _, _ in order]


def _build_from_zip(path: Path, split: str) -> tuple[np.ndarray, list[str], list[str]]:
    records = _scan_zip(path, split)
    try:
        with zipfile.ZipFile(path) as archive:
            return _assemble(records, archive.read, str(path))
    except (zipfile.BadZipFile, OSError) as exc:  # e.g. a CRC error in one member
        raise DataError(f"cannot read Omniglot zip {path}: {_one_line(exc)}") from None


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or _one_line(exc)}") from None


def _build_from_npz(path: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """Unpack the compact npz (rows of packed 105x105 bits, 1 = ink) and shrink every image."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in _NPZ_KEYS if key not in npz.files]
            if missing:
                raise DataError(f"{path} is not an Omniglot npz: missing array(s) {', '.join(missing)}")
            arrays = {key: npz[key] for key in _NPZ_KEYS}
    except DataError:
        raise
    except Exception as exc:  # zipfile, numpy and OS errors for damaged files
        raise DataError(f"cannot read Omniglot npz {path}: {_one_line(exc)}") from None

    packed, shape = arrays["images"], arrays["image_shape"]
    char, drawer, alpha = arrays["character_index"], arrays["drawer_index"], arrays["alphabet_index"]
    alphabet_table, character_table = arrays["alphabet_names"], arrays["character_names"]
    n = packed.shape[0] if packed.ndim == 2 else -1
    if shape.shape != (2,) or tuple(int(s) for s in shape) != (SOURCE_SIZE, SOURCE_SIZE):
        raise DataError(f"{path}: image_shape is {shape.tolist()}, expected [{SOURCE_SIZE}, {SOURCE_SIZE}]")
    n_bytes = (SOURCE_SIZE * SOURCE_SIZE + 7) // 8
    if packed.dtype != np.uint8 or packed.ndim != 2 or packed.shape[1] != n_bytes:
        raise DataError(f"{path}: images must be uint8 [N, {n_bytes}], got {packed.dtype} {list(packed.shape)}")
    for name, index in (("character_index", char), ("drawer_index", drawer), ("alphabet_index", alpha)):
        if index.shape != (n,) or index.dtype.kind not in "iu":
            raise DataError(f"{path}: {name} must be integer [{n}], got {index.dtype} {list(index.shape)}")
    for name, table in (("alphabet_names", alphabet_table), ("character_names", character_table)):
        if table.ndim != 1 or table.dtype.kind != "U":
            raise DataError(f"{path}: {name} must be a 1-D string array, got {table.dtype} {list(table.shape)}")
    if n == 0 or n % N_DRAWERS:
        raise DataError(f"{path}: {n} images is not a positive multiple of {N_DRAWERS}")
    if char.min() < 0 or char.max() >= len(character_table) or alpha.min() < 0 or alpha.max() >= len(alphabet_table):
        raise DataError(f"{path}: character_index or alphabet_index out of range of the name tables")

    rows = np.lexsort((drawer, char)).reshape(-1, N_DRAWERS)  # [classes, 20] row numbers
    if not (
        np.all(char[rows] == char[rows[:, :1]])
        and np.array_equal(drawer[rows], np.broadcast_to(np.arange(N_DRAWERS), rows.shape))
    ):
        raise DataError(f"{path}: every character must have exactly drawings 0..{N_DRAWERS - 1} once each")
    if not np.all(alpha[rows] == alpha[rows[:, :1]]):
        raise DataError(f"{path}: the drawings of one character belong to different alphabets")
    class_names = [str(character_table[i]) for i in char[rows[:, 0]]]
    alphabet_names = [str(alphabet_table[i]) for i in alpha[rows[:, 0]]]

    keys = []
    for name, alphabet in zip(class_names, alphabet_names, strict=True):
        head, _, character = name.rpartition("/")
        match = _CHAR_DIR.match(character)
        if head != alphabet or match is None:
            raise DataError(f"{path}: character name '{name}' does not read '{alphabet}/characterNN'")
        keys.append((alphabet, int(match.group(1)), character))
    order = sorted(range(len(keys)), key=keys.__getitem__)  # canonical order, whatever the file's

    small = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    chunk = 2048  # unpack in slices: all 19,280 unpacked images at once would take 200 MB
    for start in range(0, n, chunk):
        bits = np.unpackbits(packed[start : start + chunk], axis=1, count=SOURCE_SIZE * SOURCE_SIZE)
        for i, ink in enumerate(bits.reshape(-1, SOURCE_SIZE, SOURCE_SIZE)):
            small[start + i] = _resize_ink(ink)
    rows = rows[order]
    return small[rows], [class_names[i] for i in order], [alphabet_names[i] for i in order]


# --------------------------------------------------------------------------------------------------
# Checksums, download, cache
# --------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or _one_line(exc)}") from None


def _check_sha256(name: str | Path, expected: str | None, got: str) -> None:
    if expected is not None and got != expected:
        raise DataError(f"checksum mismatch for {name}: expected sha256 {expected}, got {got}")


def _download_zip(data_dir: Path, split: str, verify: bool) -> Path:
    """Fetch ``images_<split>.zip`` into ``data_dir``; any failure is a one-line DataError with a hint."""
    url = DOWNLOAD_URL.format(split=split)
    target = data_dir / f"images_{split}.zip"
    hint = (
        f"pass --data-dir or set {ENV_VAR} to a folder holding a local copy "
        f"(omniglot_{split}.npz, images_{split}.zip or images_{split}/)"
    )
    _log.info("no Omniglot %s data in %s: downloading %s", split, data_dir, url)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            payload = response.read()
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError, timeouts, bad reply
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise DataError(
            f"no Omniglot {split} data in {data_dir} and the download of {url} failed ({_one_line(reason)}); {hint}"
        ) from None
    if not zipfile.is_zipfile(io.BytesIO(payload)):
        raise DataError(f"the download of {url} did not return a zip file; {hint}")
    expected = ZIP_SHA256[split] if verify else None
    _check_sha256(url, expected, hashlib.sha256(payload).hexdigest())
    try:
        atomic_write_bytes(target, payload)
    except L2LPCMError as exc:
        raise DataError(f"downloaded {url} but could not save it: {exc}; {hint}") from None
    return target


def _cache_key(split: str, form: str, fingerprint: str) -> str:
    """Names the cache by everything that changes its content: source, split, size and filter."""
    spec = {
        "version": _CACHE_VERSION,
        "split": split,
        "form": form,
        "source": fingerprint,
        "size": IMAGE_SIZE,
        "resample": _RESAMPLE_NAME,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def _arrays_sha256(small: np.ndarray, class_names, alphabet_names) -> str:
    """SHA-256 of a cache's arrays: the images (shape and bytes) and both name lists."""
    digest = hashlib.sha256(repr(small.shape).encode())
    digest.update(np.ascontiguousarray(small).tobytes())
    digest.update(json.dumps([list(map(str, class_names)), list(map(str, alphabet_names))]).encode())
    return digest.hexdigest()


def _read_cache(path: Path, key: str) -> tuple[np.ndarray, list[str], list[str]] | None:
    """The cached arrays, or ``None`` for a missing, damaged or foreign cache (it is then rebuilt). The
    cache records the hash of its arrays: one whose images changed under the same key (blanked, edited)
    is rebuilt with a warning, never read."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["key"]) != key:
                return None
            small, class_names, alphabet_names = npz["images"], npz["class_names"], npz["alphabet_names"]
            recorded = str(npz["arrays_sha256"]) if "arrays_sha256" in npz.files else None
    except Exception:  # a damaged cache is not an error: it is only rebuilt
        return None
    if recorded != _arrays_sha256(small, class_names, alphabet_names):
        warnings.warn(
            f"Omniglot cache {path} does not match the hash of its arrays (edited or damaged); rebuilding it "
            "from the source",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    if (
        small.dtype != np.uint8
        or small.ndim != 4
        or small.shape[1:] != (N_DRAWERS, IMAGE_SIZE, IMAGE_SIZE)
        or class_names.shape != (small.shape[0],)
        or alphabet_names.shape != (small.shape[0],)
    ):
        return None
    return small, [str(s) for s in class_names], [str(s) for s in alphabet_names]


def _write_cache(
    folders: list[Path], file_name: str, key: str, small: np.ndarray, class_names: list[str], alphabet_names: list[str]
) -> Path | None:
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        key=np.array(key),
        images=small,
        class_names=np.array(class_names),
        alphabet_names=np.array(alphabet_names),
        arrays_sha256=np.array(_arrays_sha256(small, class_names, alphabet_names)),
    )
    problems = []
    for folder in folders:
        if not _folder_writable(folder):
            problems.append(f"{folder} is not writable")
            continue
        try:
            return atomic_write_bytes(folder / file_name, buffer.getvalue())
        except L2LPCMError as exc:
            problems.append(str(exc))
    warnings.warn(f"Omniglot cache not written ({'; '.join(problems)})", RuntimeWarning, stacklevel=3)
    return None


# --------------------------------------------------------------------------------------------------
# Public loading API
# --------------------------------------------------------------------------------------------------


def load_omniglot(
    split: str,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    verify: bool = True,
    download: bool = True,
) -> OmniglotImages:
    """Load one Omniglot split as float32 ``[n_classes, 20, 28, 28]`` in [0, 1], 1 = ink.

    ``data_dir`` is resolved by :func:`resolve_data_dir`; the forms inside it are tried in the
    order npz, zip, PNG tree (module docstring), and without any of them the split's zip is
    downloaded there (``download=False`` turns that off). ``verify`` checks the sha256 of the npz
    files (and of the zips, once their hashes are known).

    Images are resized from 105x105 with Pillow's **BOX** filter on the float ink image and stored
    as 8-bit levels (so values are multiples of 1/255). The result is cached as
    ``omniglot_<split>_<key>.npz`` in ``cache_dir``, by default ``<data_dir>/.cache`` when that
    folder may be written, else ``~/.cache/l2l_pcm``. The key covers the source file's content
    hash (npz, zip) or the names, sizes and modification times of its PNGs (tree), so a changed
    source is never served from a stale cache.

    Raises :class:`ConfigError` for an unknown split and :class:`DataError` for missing,
    unreadable, malformed or checksum-failing data, or a failed download.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown Omniglot split '{split}' (expected one of: {', '.join(SPLITS)})")
    root = resolve_data_dir(data_dir)
    npz_path, zip_path, tree_path = (
        root / f"omniglot_{split}.npz",
        root / f"images_{split}.zip",
        root / f"images_{split}",
    )
    records: list[_Record] = []
    if npz_path.is_file():
        form, source = "npz", npz_path
    elif zip_path.is_file():
        form, source = "zip", zip_path
    elif tree_path.is_dir():
        form, source = "tree", tree_path
    elif download:
        form, source = "zip", _download_zip(root, split, verify)
    else:
        raise DataError(
            f"no Omniglot {split} data in {root} (expected omniglot_{split}.npz, images_{split}.zip or images_{split}/)"
        )

    if form == "tree":
        records = _scan_tree(source)
        fingerprint = _tree_fingerprint(records, source)
    else:
        fingerprint = _sha256(source)
        if verify:
            _check_sha256(source, NPZ_SHA256[split] if form == "npz" else ZIP_SHA256[split], fingerprint)

    key = _cache_key(split, form, fingerprint)
    file_name = f"omniglot_{split}_{key}.npz"
    folders = _cache_dirs(cache_dir, root)
    for folder in folders:
        cached = _read_cache(folder / file_name, key)
        if cached is not None:
            return _as_images(*cached, split)

    if form == "npz":
        built = _build_from_npz(source)
    elif form == "zip":
        built = _build_from_zip(source, split)
    else:
        built = _assemble(records, _read_file, str(source))
    _write_cache(folders, file_name, key, *built)
    return _as_images(*built, split)


def _as_images(small: np.ndarray, class_names: list[str], alphabet_names: list[str], split: str) -> OmniglotImages:
    images = small.astype(np.float32)
    images *= np.float32(1.0 / 255.0)
    return OmniglotImages(images, class_names, alphabet_names, split)


def split_background(
    images: OmniglotImages, n_validation_alphabets: int = 5, seed: int = 0
) -> tuple[OmniglotImages, OmniglotImages]:
    """Split a set by whole alphabets into (meta-training, validation) parts.

    Validation must hold out whole alphabets, as the evaluation set does, or it would measure
    recognition of new drawings of known alphabets rather than of new alphabets. The held-out
    alphabets are the ``n_validation_alphabets`` whose ``sha256(f"{seed}:{name}")`` sorts first:
    deterministic across platforms and NumPy versions, and a different ``seed`` gives another
    choice. Both parts keep the canonical class order. With the defaults, 5 of the 30 background
    alphabets are held out.
    """
    if isinstance(n_validation_alphabets, bool) or not isinstance(n_validation_alphabets, (int, np.integer)):
        raise ConfigError(f"n_validation_alphabets must be an integer, got {n_validation_alphabets!r}")
    alphabets = images.alphabets
    if not 1 <= n_validation_alphabets < len(alphabets):
        raise ConfigError(
            f"n_validation_alphabets={n_validation_alphabets} must be between 1 and {len(alphabets) - 1} "
            f"(the set has {len(alphabets)} alphabets)"
        )
    ranked = sorted(alphabets, key=lambda name: hashlib.sha256(f"{seed}:{name}".encode()).hexdigest())
    held_out = set(ranked[:n_validation_alphabets])
    is_validation = np.array([name in held_out for name in images.alphabet_names])
    base = images.split or "set"
    return (
        images.subset(np.flatnonzero(~is_validation), split=f"{base}-train"),
        images.subset(np.flatnonzero(is_validation), split=f"{base}-validation"),
    )
