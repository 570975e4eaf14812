"""The safe reader of the authors' pretrained-model pickles: real files, malicious and broken inputs."""

import builtins
import functools
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from l2l_pcm.authors_pickle import AUTHORS_CHECKPOINT_SHA256, read_authors_pickle, sha256_of
from l2l_pcm.errors import CheckpointError, ConfigError

AUTHORS = Path(__file__).resolve().parents[2] / "shared/reference/authors_checkpoints"
FEWSHOT = AUTHORS / "fewshot_pretrained-weights.pickle"
ROBOT = AUTHORS / "robot_pretrained-weights.pickle"
ROBOT_SHAPES = {
    "W_in_lsg": (53, 800),
    "W_rec_lsg": (800, 800),
    "W_out_lsg": (800, 250),
    "W_in_trainee": (5, 250),
    "W_rec_trainee": (250, 250),
    "W_out_trainee": (250, 2),
}


def _real(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"the authors' checkpoint {path} is not present")
    return path


def _raises(path: Path, scenario: str, *fragments: str) -> str:
    """Read ``path``, expect a one-line CheckpointError naming it and containing ``fragments``."""
    with pytest.raises(CheckpointError) as info:
        read_authors_pickle(path, scenario)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


def _dump(tmp_path: Path, name: str, obj: object, protocol: int = 4) -> Path:
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def _fewshot_arrays(channels: int = 8, ways: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 1, channels)] + [(3, 3, channels, channels)] * 3 + [(channels, ways)]
    return [rng.normal(size=shape).astype(np.float32) for shape in shapes]


def _robot_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    shapes = {"W_in_lsg": (7, 12), "W_rec_lsg": (12, 12), "W_out_lsg": (12, 10)}
    shapes |= {"W_in_trainee": (5, 10), "W_rec_trainee": (10, 10), "W_out_trainee": (10, 2)}
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}


# --- the authors' files ------------------------------------------------------------------------------------


def test_real_fewshot_file():
    weights = read_authors_pickle(_real(FEWSHOT), "fewshot")
    assert list(weights) == ["conv1", "conv2", "conv3", "conv4", "readout"]
    assert weights["conv1"].shape == (3, 3, 1, 56)
    for name in ("conv2", "conv3", "conv4"):
        assert weights[name].shape == (3, 3, 56, 56)
    assert weights["readout"].shape == (56, 5)
    for array in weights.values():
        assert array.dtype == np.float32 and np.isfinite(array).all()
    np.testing.assert_allclose(np.abs(weights["readout"]).max(), 0.469, rtol=1e-2)


def test_real_robot_file():
    weights = read_authors_pickle(_real(ROBOT), "robot")
    assert set(weights) == set(ROBOT_SHAPES)
    for name, shape in ROBOT_SHAPES.items():
        assert weights[name].shape == shape and weights[name].dtype == np.float32
        assert np.isfinite(weights[name]).all()
    np.testing.assert_allclose(np.abs(weights["W_out_trainee"]).max(), 0.0325, rtol=1e-2)  # ≈ 0.033
    np.testing.assert_allclose(np.mean(np.abs(weights["W_in_trainee"]) > 1), 0.108, atol=5e-3)


def test_real_digests():
    assert sha256_of(_real(FEWSHOT)) == AUTHORS_CHECKPOINT_SHA256["fewshot"]
    assert sha256_of(_real(ROBOT)) == AUTHORS_CHECKPOINT_SHA256["robot"]


def test_digest_not_required(tmp_path):
    # a bit-different copy of the same content (another pickle of bare arrays) still loads
    path = _dump(tmp_path, "copy.pickle", _fewshot_arrays())
    assert sha256_of(path) != AUTHORS_CHECKPOINT_SHA256["fewshot"]
    assert read_authors_pickle(path, "fewshot")["conv1"].shape == (3, 3, 1, 8)


# --- bare NumPy arrays (the same format minus the TF wrappers) -------------------------------------------


def test_bare_fewshot_arrays_load(tmp_path):
    arrays = _fewshot_arrays(channels=8, ways=3)
    weights = read_authors_pickle(_dump(tmp_path, "bare.pickle", arrays), "fewshot")
    for got, want in zip(weights.values(), arrays, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("protocol", [4, 5])
def test_bare_robot_arrays_load(tmp_path, protocol):
    arrays = _robot_arrays()
    weights = read_authors_pickle(_dump(tmp_path, "bare.pickle", arrays, protocol), "robot")
    assert set(weights) == set(arrays)
    for name, array in arrays.items():
        np.testing.assert_array_equal(weights[name], array)


def test_float64_arrays_become_float32(tmp_path):
    arrays = [array.astype(np.float64) for array in _fewshot_arrays()]
    weights = read_authors_pickle(_dump(tmp_path, "f64.pickle", arrays), "fewshot")
    assert all(array.dtype == np.float32 for array in weights.values())


# --- malicious pickles: nothing may run ------------------------------------------------------------------


class _Reduces:
    """An object that pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _malicious_cases(marker: Path):
    return {
        "os.system": (_Reduces(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
        "eval": (_Reduces(eval, f"__import__('os').system('touch {marker}')"), "builtins.eval"),
        "exec": (_Reduces(builtins.exec, f"open({str(marker)!r}, 'w').close()"), "builtins.exec"),
        "inside a valid list": (
            [*_fewshot_arrays()[:4], _Reduces(os.system, f"touch {marker}")],
            f"{os.system.__module__}.system",
        ),
        "partial of os.system": (
            _Reduces(functools.partial(os.system, f"touch {marker}"), ()),
            f"{os.system.__module__}.system",
        ),
    }


@pytest.mark.parametrize("case", ["os.system", "eval", "exec", "inside a valid list", "partial of os.system"])
@pytest.mark.parametrize("scenario", ["fewshot", "robot"])
def test_malicious_globals_are_refused(tmp_path, case, scenario):
    marker = tmp_path / "pwned"
    obj, refused = _malicious_cases(marker)[case]
    path = _dump(tmp_path, "evil.pickle", obj)
    _raises(path, scenario, f"refusing global '{refused}'", "not one of the authors' checkpoint formats")
    assert not marker.exists()


def test_partial_of_an_allowed_numpy_function_is_not_called(tmp_path):
    # functools.partial(numpy.dtype, "f4")() uses only allowlisted globals, but the partial stand-in calls
    # nothing except the TF stand-ins
    path = _dump(tmp_path, "partial.pickle", [_Reduces(functools.partial(np.dtype, "f4"), ())] * 5)
    _raises(path, "fewshot", "functools.partial of", "not a TF variable")


def test_persistent_ids_are_refused(tmp_path):
    class _PersistentPickler(pickle.Pickler):
        def persistent_id(self, obj):
            return "external" if isinstance(obj, str) else None

    path = tmp_path / "persistent.pickle"
    with open(path, "wb") as handle:
        _PersistentPickler(handle, protocol=4).dump(["x"])
    _raises(path, "fewshot", "refusing persistent id")


# --- broken or foreign files -----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    _raises(tmp_path / "absent.pickle", "robot", "not found")


def test_directory(tmp_path):
    _raises(tmp_path, "robot", "is not a file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pickle"
    path.write_bytes(b"")
    _raises(path, "fewshot", "empty file")


def test_garbage_bytes(tmp_path):
    path = tmp_path / "garbage.pickle"
    path.write_bytes(b"this is not a pickle at all\n" + np.random.default_rng(3).bytes(1000))
    _raises(path, "fewshot")


@pytest.mark.parametrize("source, scenario", [(FEWSHOT, "fewshot"), (ROBOT, "robot")])
def test_truncated_real_file(tmp_path, source, scenario):
    data = _real(source).read_bytes()
    path = tmp_path / "truncated.pickle"
    path.write_bytes(data[: len(data) // 2])
    _raises(path, scenario, "truncated")


def test_truncated_bare_pickle(tmp_path):
    data = pickle.dumps(_fewshot_arrays(), protocol=4)
    path = tmp_path / "truncated.pickle"
    path.write_bytes(data[:-1])  # without the STOP opcode
    _raises(path, "fewshot", "truncated")


def test_robot_file_read_as_fewshot():
    _raises(_real(ROBOT), "fewshot", "is not the authors' few-shot checkpoint format", "expected a list of 5 variables")


def test_fewshot_file_read_as_robot():
    _raises(_real(FEWSHOT), "robot", "is not the authors' robot checkpoint format", "got a list of 5 entries")


@pytest.mark.parametrize(
    "obj, scenario",
    [
        (_fewshot_arrays()[:4], "fewshot"),
        ({"conv1": 1}, "fewshot"),
        (42, "fewshot"),
        ([1, 2, 3, 4, 5], "fewshot"),
        ({**_robot_arrays(), "extra": np.zeros(2, np.float32)}, "robot"),
        ({name: 1.0 for name in ROBOT_SHAPES}, "robot"),
    ],
)
def test_other_structures(tmp_path, obj, scenario):
    label = "few-shot" if scenario == "fewshot" else "robot"
    _raises(_dump(tmp_path, "other.pickle", obj), scenario, f"is not the authors' {label} checkpoint format")


def test_fewshot_wrong_shape(tmp_path):
    arrays = _fewshot_arrays(channels=8)
    arrays[2] = np.zeros((3, 3, 8, 9), np.float32)
    path = _dump(tmp_path, "shape.pickle", arrays)
    _raises(path, "fewshot", "variable 'conv3' has shape (3, 3, 8, 9), expected (3, 3, 8, 8)")


def test_fewshot_wrong_readout(tmp_path):
    arrays = _fewshot_arrays(channels=8)
    arrays[4] = np.zeros((7, 5), np.float32)
    _raises(_dump(tmp_path, "readout.pickle", arrays), "fewshot", "variable 'readout' has shape (7, 5)")


def test_fewshot_wrong_conv1(tmp_path):
    arrays = _fewshot_arrays(channels=8)
    arrays[0] = np.zeros((3, 3, 3, 8), np.float32)
    _raises(_dump(tmp_path, "conv1.pickle", arrays), "fewshot", "'conv1' has shape (3, 3, 3, 8), expected (3, 3, 1, C)")


def test_robot_inconsistent_shapes(tmp_path):
    arrays = _robot_arrays()
    arrays["W_out_lsg"] = np.zeros((12, 11), np.float32)  # the trainee has 10 neurons
    _raises(_dump(tmp_path, "shape.pickle", arrays), "robot", "'W_out_lsg' has shape (12, 11), expected (12, 10)")


def test_robot_not_a_matrix(tmp_path):
    arrays = _robot_arrays()
    arrays["W_rec_trainee"] = np.zeros(10, np.float32)
    _raises(_dump(tmp_path, "vector.pickle", arrays), "robot", "'W_rec_trainee' has shape (10,)")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(tmp_path, bad):
    arrays = _fewshot_arrays()
    arrays[1][0, 0, 0, 0] = bad
    _raises(_dump(tmp_path, "nan.pickle", arrays), "fewshot", "'conv2' contains 1 NaN or inf")


def test_non_float_arrays(tmp_path):
    arrays = _robot_arrays()
    arrays["W_in_trainee"] = np.ones((5, 10), np.int64)
    _raises(_dump(tmp_path, "int.pickle", arrays), "robot", "'W_in_trainee' is not a floating-point array")


@pytest.mark.parametrize("scenario", ["omniglot", "", "Robot"])
def test_wrong_scenario_name(tmp_path, scenario):
    with pytest.raises(ConfigError, match="scenario must be one of fewshot, robot"):
        read_authors_pickle(tmp_path / "whatever.pickle", scenario)
