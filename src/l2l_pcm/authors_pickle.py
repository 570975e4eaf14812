"""A safe reader for the authors' pretrained-model pickles (no TensorFlow, no plain ``pickle.load``).

Why: the pretrained models that come with the paper's code are Python pickles of TensorFlow 2.5
``ResourceVariable``s. Unpickling runs code — a pickle names any importable callable and has it called
with arguments of its choosing — so a plain ``pickle.load`` of a file from elsewhere is arbitrary code
execution, and loading them "properly" would also need TensorFlow. Instead, :func:`read_authors_pickle`
uses a restricted :class:`pickle.Unpickler` whose ``find_class`` knows exactly the globals the authors'
two files reference and refuses every other one (and every persistent id):

- ``numpy.ndarray``, ``numpy.dtype``, ``numpy.core.multiarray._reconstruct`` and
  ``numpy.core.numeric._frombuffer`` (also spelled ``numpy._core.*``, NumPy 2's name) map to the real
  NumPy functions — the only code from the allowlist that ever runs;
- ``functools.partial`` maps to :class:`_Partial`, which records ``(func, args, kwargs)`` and, when the
  pickle calls it, calls ``func`` only if ``func`` is one of the stand-ins below;
- ``tensorflow.python.ops.resource_variable_ops.ResourceVariable`` and
  ``tensorflow.python.framework.dtypes.as_dtype`` map to :class:`_ResourceVariable` and :class:`_AsDType`,
  which only record their arguments.

A TF variable pickles as ``partial(ResourceVariable, initial_value=<array>, name=..., dtype=as_dtype(...),
trainable=..., constraint=None, distribute_strategy=None)()``; the reader keeps ``initial_value``. Bare
NumPy arrays (pickled with protocol >= 3; protocol 2 goes through ``_codecs.encode``, which is refused) are
accepted in place of the wrapped variables: that is the same checkpoint minus the TF wrappers.

Attribution: the two files (``fewshot_pretrained-weights.pickle``, ``robot_pretrained-weights.pickle``) are
from the authors' repository IGITUGraz/RapidLearningInMemoryComputing, commit ``cc689bd``
(cc689bdf89833e6c765a35fa0f31b9b153b59f9c), licensed under the Apache License 2.0, copyright the
paper's authors (Ortner et al.). Redistributions of them, or of weights converted from them, must keep
this attribution and the license.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:  # NumPy >= 2 (numpy.core is a deprecated alias there)
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # NumPy 1.26
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

from l2l_pcm._io import file_sha256
from l2l_pcm.errors import CheckpointError, ConfigError

AUTHORS_CHECKPOINT_SHA256 = {
    "fewshot": "5eef10c1d36e209c98e3a411883319a6bfe2f98af338afcea602032110522dba",
    "robot": "9df7104628549bd4aac5b268a7f47428da9493ef38174593b3b6c89fbecbdf1c",
}
"""SHA-256 of the authors' files (commit cc689bd). :func:`read_authors_pickle` does not require a match."""

SCENARIOS = ("fewshot", "robot")
FEWSHOT_KEYS = ("conv1", "conv2", "conv3", "conv4", "readout")
ROBOT_KEYS = ("W_in_lsg", "W_rec_lsg", "W_out_lsg", "W_in_trainee", "W_rec_trainee", "W_out_trainee")
MAX_BYTES = 256 * 2**20
"""Largest file read (the authors' files are 0.3 and 3.8 MB)."""


class _Refused(Exception):
    """Raised inside the unpickler for a structure the stand-ins do not accept (becomes a CheckpointError)."""


class _AsDType:
    """Stand-in for ``tensorflow.python.framework.dtypes.as_dtype``: records its arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        raise _Refused("unexpected state for as_dtype")


class _ResourceVariable:
    """Stand-in for TF's ``ResourceVariable``: records its arguments (``initial_value`` holds the array)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        raise _Refused("unexpected state for ResourceVariable")


_CALLABLE_STAND_INS = (_ResourceVariable, _AsDType)


class _Partial:
    """Stand-in for ``functools.partial``: records ``(func, args, kwargs)``; calls only stand-in ``func``s.

    ``partial.__reduce__`` pickles as ``partial(func)`` followed by BUILD with ``(func, args, kwds, dict)``.
    """

    def __init__(self, func: Any = None, *args: Any, **kwargs: Any) -> None:
        self.func, self.args, self.kwargs = func, args, kwargs

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 4):
            raise _Refused("functools.partial state is not a (func, args, kwds, dict) tuple")
        func, args, kwds, extra = state
        if not isinstance(args, tuple) or not isinstance(kwds, dict | None) or not isinstance(extra, dict | None):
            raise _Refused("functools.partial state has the wrong types")
        if kwds and not all(isinstance(key, str) for key in kwds):
            raise _Refused("functools.partial keywords are not strings")
        self.func, self.args, self.kwargs = func, args, dict(kwds or {})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not (isinstance(self.func, type) and issubclass(self.func, _CALLABLE_STAND_INS)):
            raise _Refused(f"functools.partial of {type(self.func).__name__} is not a TF variable")
        return self.func(*self.args, *args, **{**self.kwargs, **kwargs})


_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("functools", "partial"): _Partial,
    ("tensorflow.python.ops.resource_variable_ops", "ResourceVariable"): _ResourceVariable,
    ("tensorflow.python.framework.dtypes", "as_dtype"): _AsDType,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
}


class _AllowlistUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in ``_ALLOWED`` and refuses persistent ids."""

    def __init__(self, data: bytes, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"{self._path}: refusing global '{module}.{name}' (not one of the authors' checkpoint formats)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"{self._path}: refusing persistent id (not one of the authors' checkpoint formats)")


sha256_of = file_sha256
"""Hex SHA-256 digest of a file (compare with :data:`AUTHORS_CHECKPOINT_SHA256`)."""


def _describe(obj: Any) -> str:
    """Short description of an unpickled object for error messages."""
    if isinstance(obj, list | tuple | dict):
        return f"a {type(obj).__name__} of {len(obj)} entries"
    if isinstance(obj, np.ndarray):
        return f"an array of shape {obj.shape}"
    if isinstance(obj, _ResourceVariable | _Partial | _AsDType):
        return f"a {type(obj).__name__.lstrip('_')} stand-in"
    return f"a {type(obj).__name__}"


def _is_variable(obj: Any) -> bool:
    return isinstance(obj, np.ndarray) or isinstance(obj, _ResourceVariable)


def _array(path: Path, name: str, obj: Any) -> np.ndarray:
    """The float32 array of one variable (a recorded ResourceVariable or a bare array), checked finite."""
    value = obj.kwargs.get("initial_value") if isinstance(obj, _ResourceVariable) else obj
    if not isinstance(value, np.ndarray):
        raise CheckpointError(f"{path}: variable '{name}' has no array initial_value (got {_describe(value)})")
    if value.dtype.kind != "f":
        raise CheckpointError(f"{path}: variable '{name}' is not a floating-point array (dtype {value.dtype})")
    array = np.array(value, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise CheckpointError(f"{path}: variable '{name}' contains {bad} NaN or inf value(s)")
    return array


def _check_shapes(path: Path, arrays: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]]) -> None:
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise CheckpointError(f"{path}: variable '{name}' has shape {arrays[name].shape}, expected {shape}")


def _fewshot(path: Path, obj: Any) -> dict[str, np.ndarray]:
    """conv1 (3,3,1,C), conv2..conv4 (3,3,C,C), readout (C,W), from a list of 5 variables."""
    if not (isinstance(obj, list) and len(obj) == 5 and all(_is_variable(item) for item in obj)):
        raise CheckpointError(
            f"{path} is not the authors' few-shot checkpoint format: expected a list of 5 variables, "
            f"got {_describe(obj)}"
        )
    arrays = {name: _array(path, name, item) for name, item in zip(FEWSHOT_KEYS, obj, strict=True)}
    conv1, readout = arrays["conv1"], arrays["readout"]
    if conv1.ndim != 4 or conv1.shape[:3] != (3, 3, 1) or conv1.shape[3] < 1:
        raise CheckpointError(f"{path}: variable 'conv1' has shape {conv1.shape}, expected (3, 3, 1, C)")
    channels = conv1.shape[3]
    if readout.ndim != 2 or readout.shape[1] < 1:
        raise CheckpointError(f"{path}: variable 'readout' has shape {readout.shape}, expected ({channels}, W)")
    expected = {f"conv{i}": (3, 3, channels, channels) for i in (2, 3, 4)}
    _check_shapes(path, arrays, {**expected, "readout": (channels, readout.shape[1])})
    return arrays


def _robot(path: Path, obj: Any) -> dict[str, np.ndarray]:
    """The six robot matrices, [pre, post], with the trainee and LSG sizes consistent."""
    if not (isinstance(obj, dict) and set(obj) == set(ROBOT_KEYS) and all(_is_variable(v) for v in obj.values())):
        keys = sorted(map(str, obj)) if isinstance(obj, dict) else None
        got = f"a dict with keys {keys}" if keys is not None else _describe(obj)
        raise CheckpointError(
            f"{path} is not the authors' robot checkpoint format: expected a dict of 6 variables "
            f"{', '.join(ROBOT_KEYS)}, got {got}"
        )
    arrays = {name: _array(path, name, obj[name]) for name in ROBOT_KEYS}
    for name, array in arrays.items():
        if array.ndim != 2 or 0 in array.shape:
            raise CheckpointError(f"{path}: variable '{name}' has shape {array.shape}, expected a non-empty matrix")
    n_rec = arrays["W_in_trainee"].shape[1]
    n_out = arrays["W_out_trainee"].shape[1]
    n_lsg = arrays["W_in_lsg"].shape[1]
    expected = {
        "W_rec_trainee": (n_rec, n_rec),
        "W_out_trainee": (n_rec, n_out),
        "W_rec_lsg": (n_lsg, n_lsg),
        "W_out_lsg": (n_lsg, n_rec),
    }
    _check_shapes(path, arrays, expected)
    return arrays


def _unpickle(path: Path) -> Any:
    """The object in the file, built by the allowlist unpickler; every failure is a one-line CheckpointError."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise CheckpointError(f"{path}: is not a file")
        if size > MAX_BYTES:
            raise CheckpointError(f"{path}: {size} bytes is too large for one of the authors' checkpoints")
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: authors' checkpoint not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise CheckpointError(f"{path}: empty file, not a pickle")
    try:
        obj = _AllowlistUnpickler(data, path).load()
    except CheckpointError:
        raise
    except _Refused as exc:
        raise CheckpointError(f"{path}: {exc} (not one of the authors' checkpoint formats)") from None
    except (EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"{path}: not a pickle, or truncated ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # corrupt opcodes raise anything from ValueError to MemoryError
        raise CheckpointError(f"{path}: corrupt pickle ({type(exc).__name__}: {exc})") from None
    return obj


def read_authors_pickle(path: str | os.PathLike[str], scenario: str) -> dict[str, np.ndarray]:
    """Float32 weights from one of the authors' pretrained-model pickles, without running code from it.

    ``scenario`` is ``"fewshot"`` (keys ``conv1``..``conv4`` in HWIO and ``readout``) or ``"robot"`` (the
    file's keys ``W_in_lsg``, ``W_rec_lsg``, ``W_out_lsg``, ``W_in_trainee``, ``W_rec_trainee``,
    ``W_out_trainee``, [pre, post]). The file's digest is not checked (see :func:`sha256_of`).
    """
    if scenario not in SCENARIOS:
        raise ConfigError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    path = Path(path)
    obj = _unpickle(path)
    return _fewshot(path, obj) if scenario == "fewshot" else _robot(path, obj)
