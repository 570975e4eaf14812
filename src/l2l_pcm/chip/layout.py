"""Placement of network layers onto fixed-size crossbar arrays.

A layer is a matrix with one row per input (fan-in) and one column per output (fan-out); a conv kernel
of shape (kh, kw, c_in, c_out) becomes its im2col matrix of kh·kw·c_in rows. A matrix taller than an
array is split into row blocks of (nearly) equal height, each on its own array, and the partial sums are
added digitally after the ADCs — the mapping of the paper's Fig. 2e, where the 504-row conv matrices are
split 252 + 252 over the two arrays. Tiles occupy full-height column ranges of an array, packed left to
right.
"""

from __future__ import annotations

import dataclasses
import math

from l2l_pcm.errors import ChipCapacityError, ConfigError


@dataclasses.dataclass(frozen=True)
class Tile:
    """One rectangular block of a layer on one array."""

    array: int
    row_start: int
    """First row of the layer's matrix held by this tile (rows of the array start at 0)."""
    rows: int
    col_start: int
    """First column of the array used by this tile."""
    cols: int


@dataclasses.dataclass(frozen=True)
class LayerPlacement:
    name: str
    kind: str
    """"dense" or "conv"."""
    shape: tuple[int, int]
    """(fan_in, fan_out) of the matrix on the chip."""
    kernel_shape: tuple[int, ...] | None
    """(kh, kw, c_in, c_out) for a conv layer, else None."""
    tiles: tuple[Tile, ...]

    @property
    def devices(self) -> int:
        """PCM devices holding this layer: two per weight (differential pair)."""
        return 2 * self.shape[0] * self.shape[1]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> LayerPlacement:
        return cls(
            name=data["name"],
            kind=data["kind"],
            shape=tuple(data["shape"]),
            kernel_shape=None if data["kernel_shape"] is None else tuple(data["kernel_shape"]),
            tiles=tuple(Tile(**tile) for tile in data["tiles"]),
        )


def split_rows(rows: int, max_rows: int) -> list[tuple[int, int]]:
    """Split ``rows`` into the fewest blocks of at most ``max_rows``, as equal as possible: [(start, size)]."""
    blocks = math.ceil(rows / max_rows)
    base, extra = divmod(rows, blocks)
    sizes = [base + (1 if i < extra else 0) for i in range(blocks)]
    starts = [sum(sizes[:i]) for i in range(blocks)]
    return list(zip(starts, sizes, strict=True))


def place_matrix(
    name: str,
    shape: tuple[int, int],
    free_cols: list[int],
    array_rows: int,
    array_cols: int,
) -> tuple[Tile, ...]:
    """Choose tiles for a (fan_in, fan_out) matrix given each array's free columns (mutated on success).

    Each row block goes to the array with the most free columns that is not yet used by the same layer
    (so blocks of one layer run in parallel on different arrays), falling back to any array with room.
    """
    fan_in, fan_out = shape
    if fan_in < 1 or fan_out < 1:
        raise ConfigError(f"layer '{name}' has an empty matrix shape {shape}")
    if fan_out > array_cols:
        raise ChipCapacityError(f"layer '{name}' has {fan_out} outputs but an array has only {array_cols} columns")
    blocks = split_rows(fan_in, array_rows)
    trial = list(free_cols)
    used_arrays: set[int] = set()
    tiles = []
    for row_start, rows in blocks:
        candidates = [a for a in range(len(trial)) if trial[a] >= fan_out]
        if not candidates:
            raise ChipCapacityError(
                f"layer '{name}' ({fan_in}x{fan_out}, {len(blocks)} tile(s) of {rows}x{fan_out}) does not fit: "
                f"free columns per array are {free_cols}"
            )
        fresh = [a for a in candidates if a not in used_arrays] or candidates
        array = max(fresh, key=lambda a: (trial[a], -a))
        col_start = array_cols - trial[array]
        tiles.append(Tile(array=array, row_start=row_start, rows=rows, col_start=col_start, cols=fan_out))
        trial[array] -= fan_out
        used_arrays.add(array)
    free_cols[:] = trial
    return tuple(tiles)
