"""Few-shot tasks drawn from an image array: N-way K-shot classification tasks for meta-training and
evaluation (:class:`TaskSampler`). The Omniglot images themselves are loaded by :mod:`l2l_pcm.fewshot.omniglot`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from l2l_pcm.errors import ConfigError
from l2l_pcm.fewshot.omniglot import OmniglotImages

__all__ = ["TaskIndices", "TaskSampler"]


# --------------------------------------------------------------------------------------------------
# Few-shot tasks
# --------------------------------------------------------------------------------------------------


class TaskIndices(NamedTuple):
    """Which images a batch of tasks was built from (for checks and for logging)."""

    classes: np.ndarray
    """int64 ``[n, ways]``: the class (row of the image array) behind label ``j``."""
    support_drawers: np.ndarray
    """int64 ``[n, ways*shots]``: the drawing of each support example."""
    query_drawers: np.ndarray
    """int64 ``[n, ways*queries]``: the drawing of each query example."""
    rotations: np.ndarray
    """int64 ``[n, ways]``: quarter turns (counter-clockwise, ``np.rot90``) applied to label ``j``."""


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return int(value)


def _make_rng(key_or_seed: object) -> np.random.Generator:
    """A NumPy generator from an int seed, a Generator (used as is) or a JAX PRNG key."""
    if isinstance(key_or_seed, np.random.Generator):
        return key_or_seed
    if isinstance(key_or_seed, (int, np.integer)) and not isinstance(key_or_seed, bool):
        if key_or_seed < 0:
            raise ConfigError(f"task seed must be non-negative, got {key_or_seed}")
        return np.random.default_rng(int(key_or_seed))
    data = key_or_seed
    dtype = getattr(data, "dtype", None)
    if dtype is not None and not isinstance(dtype, np.dtype):  # a typed JAX key: take its raw bits
        try:
            import jax

            data = jax.random.key_data(data)
        except Exception:
            data = None
    try:
        bits = np.asarray(data)
    except Exception:
        bits = np.asarray(None)
    if bits.dtype.kind not in "iu" or bits.size == 0:
        raise ConfigError(
            f"cannot seed task sampling from {type(key_or_seed).__name__}; "
            "pass an int seed, a numpy Generator or a JAX PRNG key"
        )
    return np.random.default_rng([int(b) for b in bits.astype(np.uint64).ravel()])


class TaskSampler:
    """Draws batches of N-way K-shot classification tasks from ``[classes, drawings, H, W]`` images.

    In each task ``ways`` distinct classes are drawn (without replacement: a class drawn twice
    would appear under two labels, an impossible task; the paper's code allowed it), and for each
    class ``shots + queries`` distinct drawings, the first ``shots`` as support, the rest as
    query, so no query image is also a support image. Labels ``0..ways-1`` are a fresh random
    permutation per task, so neither a class nor an example's position predicts its label.
    Examples are grouped by class (all ``shots`` of one class, then the next class).

    With ``augment_rotations`` (meant for meta-training only) all images of one class in a task
    are rotated by the same ``k * 90`` degrees, ``k`` uniform in {0, 1, 2, 3}, which acts like
    new classes. Rotations are drawn after everything else, so turning augmentation on does not
    change which classes and drawings a seed gives.
    """

    def __init__(
        self,
        images: np.ndarray | OmniglotImages,
        ways: int,
        shots: int,
        queries: int,
        augment_rotations: bool = False,
    ) -> None:
        array = images.images if isinstance(images, OmniglotImages) else images
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 4:
            raise ConfigError(f"task images must be [classes, drawings, H, W], got shape {array.shape}")
        self.ways = _positive_int("ways", ways)
        self.shots = _positive_int("shots", shots)
        self.queries = _positive_int("queries", queries)
        n_classes, n_drawers, height, width = array.shape
        if self.ways > n_classes:
            raise ConfigError(f"ways={self.ways} exceeds the number of classes ({n_classes})")
        if self.shots + self.queries > n_drawers:
            raise ConfigError(f"shots+queries={self.shots + self.queries} exceeds the {n_drawers} drawings per class")
        if augment_rotations and height != width:
            raise ConfigError(f"rotation augmentation needs square images, got {height}x{width}")
        self.images = array
        self.augment_rotations = bool(augment_rotations)

    @property
    def n_classes(self) -> int:
        return int(self.images.shape[0])

    def sample(
        self, key_or_seed: int | np.random.Generator | object, n_tasks: int, *, return_indices: bool = False
    ) -> tuple[np.ndarray, ...]:
        """Draw ``n_tasks`` tasks; the same seed (or JAX key) always gives the same tasks.

        Returns ``(support_x [n, ways*shots, H, W, 1] float32, support_y [n, ways*shots] int32,
        query_x [n, ways*queries, H, W, 1] float32, query_y [n, ways*queries] int32)``, and a
        :class:`TaskIndices` as fifth element when ``return_indices`` is true. Without-replacement
        draws use the argsort of uniform random keys, for the whole batch at once.
        """
        n = _positive_int("n_tasks", n_tasks)
        rng = _make_rng(key_or_seed)
        ways, shots, queries = self.ways, self.shots, self.queries
        n_classes, n_drawers, height, width = self.images.shape

        slot_class = np.argsort(rng.random((n, n_classes)), axis=1)[:, :ways]  # [n, ways]
        slot_label = np.argsort(rng.random((n, ways)), axis=1)  # a permutation per task
        drawers = np.argsort(rng.random((n, ways, n_drawers)), axis=2)[:, :, : shots + queries]
        if self.augment_rotations:
            slot_rotation = rng.integers(0, 4, size=(n, ways))
        else:
            slot_rotation = np.zeros((n, ways), dtype=np.int64)

        x = self.images[slot_class[:, :, None], drawers]  # [n, ways, shots+queries, H, W]
        for k in (1, 2, 3):
            turned = slot_rotation == k
            if turned.any():
                x[turned] = np.rot90(x[turned], k, axes=(-2, -1))
        y = np.broadcast_to(slot_label[:, :, None], (n, ways, shots + queries)).astype(np.int32)

        support_x = x[:, :, :shots].reshape(n, ways * shots, height, width, 1)
        query_x = x[:, :, shots:].reshape(n, ways * queries, height, width, 1)
        support_y = y[:, :, :shots].reshape(n, ways * shots)
        query_y = y[:, :, shots:].reshape(n, ways * queries)
        if not return_indices:
            return support_x, support_y, query_x, query_y
        by_label = np.argsort(slot_label, axis=1)  # slot of label j
        indices = TaskIndices(
            classes=np.take_along_axis(slot_class, by_label, axis=1).astype(np.int64),
            support_drawers=drawers[:, :, :shots].reshape(n, ways * shots).astype(np.int64),
            query_drawers=drawers[:, :, shots:].reshape(n, ways * queries).astype(np.int64),
            rotations=np.take_along_axis(slot_rotation, by_label, axis=1).astype(np.int64),
        )
        return support_x, support_y, query_x, query_y, indices
