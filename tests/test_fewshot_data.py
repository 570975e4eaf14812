"""Tests of the Omniglot data layer: the three local forms, checksums, cache, split and task sampler.

Tests on the real data use the shared compact npz copy and are skipped when it is absent; the
zip and PNG-tree forms are tested on a tiny generated Omniglot-shaped data set.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, needs_shared
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from l2l_pcm.errors import ConfigError, DataError
from l2l_pcm.fewshot import omniglot
from l2l_pcm.fewshot.data import TaskSampler
from l2l_pcm.fewshot.omniglot import NPZ_SHA256, OmniglotImages, load_omniglot, split_background

# --------------------------------------------------------------------------------------------------
# A tiny Omniglot-shaped data set: 2 alphabets x 3 characters x 20 drawings, random 105x105 PNGs
# --------------------------------------------------------------------------------------------------

# Created out of canonical order on purpose: the loader must sort alphabets by name, characters by number.
TINY = {"Zeta_(test)": [10, 2, 1], "Alpha-Beta": [3, 1, 2]}
CANONICAL = [f"Alpha-Beta/character{n:02d}" for n in (1, 2, 3)] + [f"Zeta_(test)/character{n:02d}" for n in (1, 2, 10)]


def _write_tree(root: Path, split: str, rng: np.random.Generator) -> dict[tuple[str, int], np.ndarray]:
    """Writes images_<split>/<Alphabet>/characterNN/NNNN_DD.png; returns the ink masks [20, 105, 105]."""
    ink_by_class = {}
    file_number = 700
    for alphabet, numbers in TINY.items():
        for number in numbers:
            file_number += 1
            folder = root / f"images_{split}" / alphabet / f"character{number:02d}"
            folder.mkdir(parents=True)
            ink = rng.random((20, 105, 105)) < rng.uniform(0.02, 0.2)
            for drawer in range(20):
                # mode "1" with True = white background, False = black ink, as in the real PNGs
                Image.fromarray(~ink[drawer]).save(folder / f"{file_number:04d}_{drawer + 1:02d}.png")
            ink_by_class[(alphabet, number)] = ink
    return ink_by_class


def _zip_tree(tree_root: Path, split: str, target: Path) -> None:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted((tree_root / f"images_{split}").rglob("*")):
            archive.write(path, path.relative_to(tree_root).as_posix())


def _write_npz(ink_by_class: dict[tuple[str, int], np.ndarray], target: Path) -> None:
    """The README's compact form, rows deliberately in non-canonical class order."""
    rows, char_index, drawer_index, alpha_index = [], [], [], []
    alphabets = sorted(TINY)
    names = [f"{a}/character{n:02d}" for a, n in ink_by_class]
    for c, ((alphabet, _), ink) in enumerate(ink_by_class.items()):
        for drawer in range(20):
            rows.append(np.packbits(ink[drawer].reshape(-1).astype(np.uint8)))
            char_index.append(c)
            drawer_index.append(drawer)
            alpha_index.append(alphabets.index(alphabet))
    np.savez(
        target,
        images=np.stack(rows),
        image_shape=np.array([105, 105], np.int16),
        character_index=np.array(char_index, np.int16),
        drawer_index=np.array(drawer_index, np.int8),
        alphabet_index=np.array(alpha_index, np.int16),
        omniglot_id=np.array(char_index, np.int16) + 1,
        alphabet_names=np.array(alphabets),
        character_names=np.array(names),
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Folders holding the tiny background set as PNG tree, as zip and as npz; and its ink masks."""
    base = tmp_path_factory.mktemp("tiny")
    tree = base / "tree"
    ink = _write_tree(tree, "background", np.random.default_rng(7))
    (base / "zip").mkdir()
    _zip_tree(tree, "background", base / "zip" / "images_background.zip")
    (base / "npz").mkdir()
    _write_npz(ink, base / "npz" / "omniglot_background.npz")
    return {"tree": tree, "zip": base / "zip", "npz": base / "npz", "ink": ink}


def _box_28(ink: np.ndarray) -> np.ndarray:
    """Reference resize, written independently of the loader."""
    image = Image.fromarray(ink.astype(np.float32)).resize((28, 28), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float32)


def _assert_one_line(exc_info) -> None:
    assert "\n" not in str(exc_info.value)


# --------------------------------------------------------------------------------------------------
# The three local forms on the tiny set
# --------------------------------------------------------------------------------------------------


def test_tree_zip_and_npz_give_identical_arrays_in_canonical_order(tiny, tmp_path):
    loaded = {
        form: load_omniglot("background", data_dir=tiny[form], cache_dir=tmp_path / form, verify=False)
        for form in ("tree", "zip", "npz")
    }
    for form, result in loaded.items():
        assert result.class_names == CANONICAL, form
        assert result.alphabet_names == [name.split("/")[0] for name in CANONICAL]
        assert result.images.shape == (6, 20, 28, 28) and result.images.dtype == np.float32
        assert result.split == "background"
    np.testing.assert_array_equal(loaded["tree"].images, loaded["zip"].images)
    np.testing.assert_array_equal(loaded["tree"].images, loaded["npz"].images)


def test_images_are_box_resized_ink_with_1_for_ink(tiny, tmp_path):
    result = load_omniglot("background", data_dir=tiny["tree"], cache_dir=tmp_path)
    assert result.images.min() >= 0.0 and result.images.max() <= 1.0
    for c, name in enumerate(result.class_names):
        alphabet, character = name.split("/")
        ink = tiny["ink"][(alphabet, int(character.removeprefix("character")))]
        for drawer in (0, 7, 19):
            expected = _box_28(ink[drawer])
            np.testing.assert_allclose(result.images[c, drawer], expected, atol=0.5 / 255 + 1e-6)
        # ink mass is kept by the area filter (inverting black/white would give ~1 - mean)
        assert abs(result.images[c].mean() - ink.mean()) < 0.01


def test_loaded_images_are_read_only(tiny, tmp_path):
    result = load_omniglot("background", data_dir=tiny["tree"], cache_dir=tmp_path)
    with pytest.raises(ValueError):
        result.images[0, 0, 0, 0] = 1.0


def test_env_var_names_the_data_dir(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("L2L_PCM_DATA", str(tiny["zip"]))
    result = load_omniglot("background", cache_dir=tmp_path)
    assert result.class_names == CANONICAL


def test_cache_is_used_and_rebuilt_when_the_source_changes(tiny, tmp_path, monkeypatch):
    tree = tmp_path / "data"
    shutil.copytree(tiny["tree"], tree)
    cache = tmp_path / "cache"
    first = load_omniglot("background", data_dir=tree, cache_dir=cache)
    cache_files = list(cache.glob("omniglot_background_*.npz"))
    assert len(cache_files) == 1

    def no_build(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(omniglot, "_assemble", no_build)
    again = load_omniglot("background", data_dir=tree, cache_dir=cache)
    np.testing.assert_array_equal(first.images, again.images)
    assert again.class_names == first.class_names
    monkeypatch.undo()

    # a changed drawing changes the fingerprint: the new image is served, not the stale cache
    png = (
        tree
        / "images_background"
        / "Alpha-Beta"
        / "character01"
        / sorted(os.listdir(tree / "images_background" / "Alpha-Beta" / "character01"))[0]
    )
    Image.fromarray(np.ones((105, 105), dtype=bool)).save(png)  # all background
    os.utime(png, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = load_omniglot("background", data_dir=tree, cache_dir=cache)
    assert changed.images[0, 0].max() == 0.0
    assert first.images[0, 0].max() > 0.0

    # a damaged cache file is rebuilt, not an error
    for path in cache.glob("*.npz"):
        path.write_bytes(b"not an npz")
    rebuilt = load_omniglot("background", data_dir=tree, cache_dir=cache)
    np.testing.assert_array_equal(rebuilt.images, changed.images)

    # a cache whose images were blanked under the same key is not read (it would score at chance): rebuilt
    path = max(cache.glob("*.npz"), key=lambda p: p.stat().st_mtime_ns)  # the one just rebuilt
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["images"] = np.zeros_like(arrays["images"])
    np.savez_compressed(path, **arrays)
    with pytest.warns(RuntimeWarning, match="does not match the hash of its arrays"):
        again = load_omniglot("background", data_dir=tree, cache_dir=cache)
    np.testing.assert_array_equal(again.images, changed.images)


def test_default_cache_goes_to_data_dir_or_to_home_when_read_only(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    writable = tmp_path / "writable"
    shutil.copytree(tiny["zip"], writable)
    load_omniglot("background", data_dir=writable)
    assert len(list((writable / ".cache").glob("omniglot_background_*.npz"))) == 1

    read_only = tmp_path / "read_only"
    shutil.copytree(tiny["zip"], read_only)
    read_only.chmod(0o555)
    try:
        load_omniglot("background", data_dir=read_only)
        assert not (read_only / ".cache").exists()
        assert len(list((tmp_path / "home" / ".cache" / "l2l_pcm").glob("omniglot_background_*.npz"))) == 1
    finally:
        read_only.chmod(0o755)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def test_wrong_checksum_names_file_and_both_hashes(tiny, tmp_path):
    # the generated npz has the canonical name, so its (different) hash must be refused
    with pytest.raises(DataError, match="checksum mismatch") as exc_info:
        load_omniglot("background", data_dir=tiny["npz"], cache_dir=tmp_path)
    message = str(exc_info.value)
    assert "omniglot_background.npz" in message and NPZ_SHA256["background"] in message
    assert "got " in message
    _assert_one_line(exc_info)


@pytest.mark.parametrize("payload", [b"garbage, not a zip", b"PK\x03\x04truncated"])
def test_corrupt_npz_is_a_data_error(tmp_path, payload):
    (tmp_path / "omniglot_evaluation.npz").write_bytes(payload)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_omniglot("evaluation", data_dir=tmp_path, cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match="cannot read Omniglot npz") as exc_info:
        load_omniglot("evaluation", data_dir=tmp_path, cache_dir=tmp_path / "c", verify=False)
    _assert_one_line(exc_info)


def test_truncated_real_npz_is_a_data_error(tmp_path):
    source = SHARED / "omniglot_background.npz" if SHARED else None
    if source is None:
        pytest.skip("the shared Omniglot npz copy is not present")
    (tmp_path / "omniglot_background.npz").write_bytes(source.read_bytes()[:100_000])
    with pytest.raises(DataError, match="checksum mismatch"):
        load_omniglot("background", data_dir=tmp_path, cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match="cannot read"):
        load_omniglot("background", data_dir=tmp_path, cache_dir=tmp_path / "c", verify=False)


def test_npz_of_the_wrong_format_is_a_data_error(tmp_path):
    np.savez(tmp_path / "omniglot_background.npz", images=np.zeros((20, 1379), np.uint8))
    with pytest.raises(DataError, match="missing array") as exc_info:
        load_omniglot("background", data_dir=tmp_path, cache_dir=tmp_path / "c", verify=False)
    _assert_one_line(exc_info)


def test_corrupt_zip_is_a_data_error(tmp_path):
    (tmp_path / "images_background.zip").write_bytes(b"PK\x03\x04 but nothing else")
    with pytest.raises(DataError, match="images_background.zip"):
        load_omniglot("background", data_dir=tmp_path, cache_dir=tmp_path / "c")


def test_zip_without_the_expected_folders_is_a_data_error(tmp_path):
    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as archive:
        archive.writestr("Latin/character01/0001_01.png", b"")
    with pytest.raises(DataError, match="holds no images_background/"):
        load_omniglot("background", data_dir=tmp_path, cache_dir=tmp_path / "c")


def test_missing_drawing_is_a_data_error(tiny, tmp_path):
    tree = tmp_path / "data"
    shutil.copytree(tiny["tree"], tree)
    folder = tree / "images_background" / "Zeta_(test)" / "character10"
    sorted(folder.iterdir())[4].unlink()
    with pytest.raises(DataError, match=r"Zeta_\(test\)/character10 has 19 drawings.*missing 05") as exc_info:
        load_omniglot("background", data_dir=tree, cache_dir=tmp_path / "c")
    _assert_one_line(exc_info)


def test_image_of_the_wrong_size_is_a_data_error(tmp_path):
    folder = tmp_path / "images_evaluation" / "Latin" / "character01"
    folder.mkdir(parents=True)
    for drawer in range(1, 21):
        side = 28 if drawer == 3 else 105
        Image.fromarray(np.ones((side, side), dtype=bool)).save(folder / f"0001_{drawer:02d}.png")
    with pytest.raises(DataError, match="28x28 pixels, expected 105x105"):
        load_omniglot("evaluation", data_dir=tmp_path, cache_dir=tmp_path / "c")


def test_missing_data_dir_is_a_data_error(tmp_path, monkeypatch):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(DataError, match="not found") as exc_info:
        load_omniglot("background", data_dir=missing)
    assert str(missing) in str(exc_info.value)
    _assert_one_line(exc_info)
    monkeypatch.setenv("L2L_PCM_DATA", str(missing))
    with pytest.raises(DataError, match=r"L2L_PCM_DATA"):
        load_omniglot("background")


def test_empty_data_dir_without_download_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no Omniglot evaluation data"):
        load_omniglot("evaluation", data_dir=tmp_path, download=False)


def test_failed_download_says_how_to_give_a_local_copy(tmp_path, monkeypatch):
    calls = []

    def offline(url, timeout=None):
        calls.append((url, timeout))
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(omniglot.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="download of .* failed") as exc_info:
        load_omniglot("background", data_dir=tmp_path, cache_dir=tmp_path / "c")
    message = str(exc_info.value)
    assert "--data-dir" in message and "L2L_PCM_DATA" in message
    _assert_one_line(exc_info)
    url = "https://github.com/brendenlake/omniglot/raw/master/python/images_background.zip"
    assert calls == [(url, 10.0)]  # the canonical zip, with the 10 s timeout
    assert not (tmp_path / "images_background.zip").exists()


def test_download_is_saved_and_processed_as_a_zip(tiny, tmp_path, monkeypatch):
    payload = (tiny["zip"] / "images_background.zip").read_bytes()
    monkeypatch.setattr(omniglot.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(payload))
    result = load_omniglot("background", data_dir=tmp_path, cache_dir=tmp_path / "c")
    assert result.class_names == CANONICAL
    assert (tmp_path / "images_background.zip").read_bytes() == payload


def test_unknown_split_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown Omniglot split 'train'"):
        load_omniglot("train", data_dir=tmp_path)


# --------------------------------------------------------------------------------------------------
# The real data set (shared npz copy)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    cache = tmp_path_factory.mktemp("omniglot_cache")
    start = time.perf_counter()
    loaded = {split: load_omniglot(split, data_dir=SHARED, cache_dir=cache) for split in omniglot.SPLITS}
    return {"cache": cache, "first_load_s": time.perf_counter() - start, **loaded}


@needs_shared
def test_real_counts_shapes_and_order(real):
    background, evaluation = real["background"], real["evaluation"]
    assert background.images.shape == (964, 20, 28, 28)
    assert evaluation.images.shape == (659, 20, 28, 28)
    assert (len(background.alphabets), len(evaluation.alphabets)) == (30, 20)
    assert not set(background.alphabets) & set(evaluation.alphabets)
    for part in (background, evaluation):
        assert part.images.dtype == np.float32
        assert part.images.min() == 0.0 and part.images.max() == 1.0
        assert 0.05 < part.images.mean() < 0.12  # ink is ~8% of the pixels
        keys = [
            (a, int(n.rsplit("character", 1)[1])) for a, n in zip(part.alphabet_names, part.class_names, strict=True)
        ]
        assert keys == sorted(keys)
        assert len(set(part.class_names)) == part.n_classes
    assert background.class_names[0] == "Alphabet_of_the_Magi/character01"
    assert evaluation.class_names[-1] == "ULOG/character26"


@needs_shared
def test_real_images_match_a_direct_resize_of_the_npz(real):
    with np.load(SHARED / "omniglot_evaluation.npz", allow_pickle=False) as npz:
        names = npz["character_names"][npz["character_index"]]
        drawers, packed = npz["drawer_index"], npz["images"]
        evaluation = real["evaluation"]
        for c, d in [(0, 0), (100, 13), (658, 19)]:
            row = np.flatnonzero((names == evaluation.class_names[c]) & (drawers == d))
            assert row.size == 1
            ink = np.unpackbits(packed[row[0]], count=105 * 105).reshape(105, 105)
            np.testing.assert_allclose(evaluation.images[c, d], _box_28(ink), atol=0.5 / 255 + 1e-6)


@needs_shared
def test_real_first_load_is_fast_and_the_cache_reproduces_it(real):
    assert real["first_load_s"] < 30.0
    start = time.perf_counter()
    cached = {split: load_omniglot(split, data_dir=SHARED, cache_dir=real["cache"]) for split in omniglot.SPLITS}
    cached_s = time.perf_counter() - start
    assert cached_s < real["first_load_s"]
    assert len(list(real["cache"].glob("omniglot_*.npz"))) == 2
    for split in omniglot.SPLITS:
        np.testing.assert_array_equal(cached[split].images, real[split].images)
        assert cached[split].class_names == real[split].class_names
    print(f"first load of both splits {real['first_load_s']:.2f} s, cached load {cached_s:.3f} s")


@needs_shared
def test_real_background_split_holds_out_whole_alphabets(real):
    background = real["background"]
    train, validation = split_background(background)
    again_train, again_validation = split_background(background)
    assert validation.class_names == again_validation.class_names
    assert len(validation.alphabets) == 5 and len(train.alphabets) == 25
    assert not set(train.alphabets) & set(validation.alphabets)
    assert train.n_classes + validation.n_classes == 964
    assert validation.n_classes >= 20  # enough for 20-way tasks
    assert train.class_names == [n for n in background.class_names if n not in set(validation.class_names)]
    index = {name: i for i, name in enumerate(background.class_names)}
    np.testing.assert_array_equal(validation.images[0], background.images[index[validation.class_names[0]]])
    _, other = split_background(background, seed=1)
    assert other.alphabets != validation.alphabets


@needs_shared
def test_real_tasks_20_way_5_shot(real):
    sampler = TaskSampler(real["evaluation"], ways=20, shots=5, queries=15, augment_rotations=False)
    support_x, support_y, query_x, query_y, indices = sampler.sample(123, 4, return_indices=True)
    assert support_x.shape == (4, 100, 28, 28, 1) and query_x.shape == (4, 300, 28, 28, 1)
    _check_tasks(real["evaluation"].images, 20, 5, 15, support_x, support_y, query_x, query_y, indices)


# --------------------------------------------------------------------------------------------------
# split_background on a synthetic set
# --------------------------------------------------------------------------------------------------


def _synthetic_set(n_alphabets: int = 8, per_alphabet: int = 4) -> OmniglotImages:
    alphabets = [f"A{i:02d}" for i in range(n_alphabets) for _ in range(per_alphabet)]
    names = [f"{a}/character{j % per_alphabet + 1:02d}" for j, a in enumerate(alphabets)]
    images = np.random.default_rng(0).random((len(names), 20, 4, 4), dtype=np.float32)
    return OmniglotImages(images, names, alphabets, "background")


def test_split_background_is_deterministic_and_by_alphabet():
    full = _synthetic_set()
    train, validation = split_background(full, n_validation_alphabets=3, seed=5)
    assert len(validation.alphabets) == 3 and validation.n_classes == 12
    assert train.split == "background-train" and validation.split == "background-validation"
    assert split_background(full, n_validation_alphabets=3, seed=5)[1].alphabets == validation.alphabets


@pytest.mark.parametrize("n", [0, 8, -1, 2.5, True])
def test_split_background_rejects_impossible_sizes(n):
    with pytest.raises(ConfigError, match="n_validation_alphabets"):
        split_background(_synthetic_set(), n_validation_alphabets=n)


# --------------------------------------------------------------------------------------------------
# Task sampler
# --------------------------------------------------------------------------------------------------


def _check_tasks(images, ways, shots, queries, support_x, support_y, query_x, query_y, indices, augmented=None):
    n = support_x.shape[0]
    assert support_y.dtype == np.int32 and query_y.dtype == np.int32
    assert support_x.dtype == np.float32 and support_x.shape[-1] == 1
    assert support_y.shape == (n, ways * shots) and query_y.shape == (n, ways * queries)
    for t in range(n):
        # labels: exactly 0..ways-1, `shots` (`queries`) of each
        np.testing.assert_array_equal(np.bincount(support_y[t], minlength=ways), np.full(ways, shots))
        np.testing.assert_array_equal(np.bincount(query_y[t], minlength=ways), np.full(ways, queries))
        classes = indices.classes[t]
        assert len(set(classes.tolist())) == ways  # no class twice in a task
        for label in range(ways):
            s_drawers = set(indices.support_drawers[t][support_y[t] == label].tolist())
            q_drawers = set(indices.query_drawers[t][query_y[t] == label].tolist())
            assert len(s_drawers) == shots and len(q_drawers) == queries
            assert not s_drawers & q_drawers  # support and query are different drawings
        if augmented is False:
            assert not indices.rotations.any()
        # every image is exactly the indexed drawing, turned by its class's rotation
        for x, y, drawers in (
            (support_x, support_y, indices.support_drawers),
            (query_x, query_y, indices.query_drawers),
        ):
            for i in range(y.shape[1]):
                label = y[t, i]
                expected = np.rot90(images[classes[label], drawers[t, i]], indices.rotations[t, label])
                np.testing.assert_array_equal(x[t, i, :, :, 0], expected)


TOY = np.random.default_rng(1).random((12, 20, 5, 5), dtype=np.float32)  # asymmetric: rotations show


@settings(max_examples=40, deadline=None)
@given(
    ways=st.integers(1, 12),
    shots=st.integers(1, 10),
    queries=st.integers(1, 10),
    n_tasks=st.integers(1, 4),
    augment=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_sampler_invariants(ways, shots, queries, n_tasks, augment, seed):
    sampler = TaskSampler(TOY, ways, shots, queries, augment_rotations=augment)
    batch = sampler.sample(seed, n_tasks, return_indices=True)
    _check_tasks(TOY, ways, shots, queries, *batch, augmented=augment)


def test_sampler_is_reproducible_and_seeds_differ():
    sampler = TaskSampler(TOY, 5, 1, 3, augment_rotations=True)
    first, second = sampler.sample(42, 8), sampler.sample(42, 8)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], sampler.sample(43, 8)[0])
    from_generator = sampler.sample(np.random.default_rng(42), 8)
    np.testing.assert_array_equal(from_generator[0], first[0])


def test_sampler_accepts_jax_keys():
    jax = pytest.importorskip("jax")
    sampler = TaskSampler(TOY, 3, 2, 2)
    typed = sampler.sample(jax.random.key(3), 2)
    raw = sampler.sample(jax.random.PRNGKey(3), 2)
    np.testing.assert_array_equal(typed[0], raw[0])
    np.testing.assert_array_equal(typed[0], sampler.sample(jax.random.key(3), 2)[0])
    assert not np.array_equal(typed[0], sampler.sample(jax.random.key(4), 2)[0])


def test_augmentation_draws_all_rotations_and_leaves_the_rest_unchanged():
    plain = TaskSampler(TOY, 4, 2, 3, augment_rotations=False).sample(9, 50, return_indices=True)[4]
    turned = TaskSampler(TOY, 4, 2, 3, augment_rotations=True).sample(9, 50, return_indices=True)[4]
    np.testing.assert_array_equal(plain.classes, turned.classes)
    np.testing.assert_array_equal(plain.support_drawers, turned.support_drawers)
    assert set(np.unique(turned.rotations).tolist()) == {0, 1, 2, 3}
    assert not plain.rotations.any()


def test_labels_and_classes_are_spread_uniformly():
    sampler = TaskSampler(TOY, 5, 1, 1)
    _, support_y, _, _, indices = sampler.sample(0, 3000, return_indices=True)
    first_label = np.bincount(support_y[:, 0], minlength=5) / 3000  # position carries no label
    assert np.all(np.abs(first_label - 0.2) < 0.04)
    class_share = np.bincount(indices.classes.ravel(), minlength=12) / (3000 * 5)
    assert np.all(np.abs(class_share - 1 / 12) < 0.015)


@pytest.mark.parametrize(
    ("ways", "shots", "queries", "match"),
    [
        (13, 1, 1, r"ways=13 exceeds the number of classes \(12\)"),
        (5, 10, 11, r"shots\+queries=21 exceeds the 20 drawings"),
        (0, 1, 1, "ways must be at least 1"),
        (5, 0, 1, "shots must be at least 1"),
        (5, 1, 0, "queries must be at least 1"),
        (5.0, 1, 1, "ways must be an integer"),
    ],
)
def test_impossible_tasks_are_config_errors(ways, shots, queries, match):
    with pytest.raises(ConfigError, match=match) as exc_info:
        TaskSampler(TOY, ways, shots, queries)
    _assert_one_line(exc_info)


def test_bad_sample_arguments_are_config_errors():
    sampler = TaskSampler(TOY, 2, 1, 1)
    with pytest.raises(ConfigError, match="n_tasks must be at least 1"):
        sampler.sample(0, 0)
    with pytest.raises(ConfigError, match="cannot seed"):
        sampler.sample("seed", 1)
    with pytest.raises(ConfigError, match="non-negative"):
        sampler.sample(-1, 1)
    with pytest.raises(ConfigError, match="drawings, H, W"):
        TaskSampler(TOY[0], 2, 1, 1)
