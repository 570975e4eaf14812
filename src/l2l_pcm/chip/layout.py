"""Placement of network layers onto fixed-size crossbar arrays.

A layer is a matrix with one row per input (fan-in) and one column per output (fan-out); a conv kernel
of shape (kh, kw, c_in, c_out) becomes its im2col matrix of kh·kw·c_in rows. A matrix taller than an
array is split into row blocks of (nearly) equal height, each on its own array, and the partial sums are
added digitally after the ADCs — the mapping of the paper's Fig. 2e, where the 504-row conv matrices are
split 252 + 252 over the two arrays. A matrix wider than an array is split into column blocks too, and
each column block's outputs are the digital sum of its row blocks. Tiles are rectangles packed into the
arrays' free space (guillotine cuts: a tile takes the top-left corner of a free rectangle, whose rest
becomes a full-height strip to its right and the space below the tile), so small tiles share an array's
rows and columns. If the equal row split does not fit, full-height blocks (all but the last as tall as an
array) are tried. If a layer does not fit at all, every layer is placed again packed tightly into as few
arrays as possible; if that fails too, the error says how many arrays the network needs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from l2l_pcm.errors import ChipCapacityError, ConfigError


@dataclasses.dataclass(frozen=True)
class Tile:
    """One rectangular block of a layer on one array."""

    array: int
    row_start: int
    """First row of the layer's matrix held by this tile."""
    rows: int
    col_start: int
    """First column of the array used by this tile."""
    cols: int
    out_start: int = 0
    """First output (column of the layer's matrix) held by this tile."""
    array_row: int = 0
    """First row of the array used by this tile."""


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
    devices_per_polarity: int = 1
    """Devices per polarity of each unit cell (one cell per weight, one array crosspoint)."""

    @property
    def devices(self) -> int:
        """PCM devices holding this layer: 2·N per weight (a differential pair of N-device polarities)."""
        return 2 * self.devices_per_polarity * self.shape[0] * self.shape[1]

    @property
    def blocks(self) -> tuple[tuple[int, int, int, int], ...]:
        """(row_start, rows, out_start, cols) of every tile: the layer's blocks of its matrix."""
        return tuple((tile.row_start, tile.rows, tile.out_start, tile.cols) for tile in self.tiles)

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Shape of the layer's device arrays (:class:`l2l_pcm.chip.LayerState`)."""
        cells = () if self.devices_per_polarity == 1 else (self.devices_per_polarity,)
        return (2, *cells, *self.shape)

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
            devices_per_polarity=int(data.get("devices_per_polarity", 1)),
        )


def split_rows(rows: int, max_rows: int) -> list[tuple[int, int]]:
    """Split ``rows`` into the fewest blocks of at most ``max_rows``, as equal as possible: [(start, size)]."""
    blocks = math.ceil(rows / max_rows)
    base, extra = divmod(rows, blocks)
    sizes = [base + (1 if i < extra else 0) for i in range(blocks)]
    starts = [sum(sizes[:i]) for i in range(blocks)]
    return list(zip(starts, sizes, strict=True))


def split_full(rows: int, max_rows: int) -> list[tuple[int, int]]:
    """Blocks of ``max_rows`` and one remainder: [(start, size)]."""
    return [(start, min(max_rows, rows - start)) for start in range(0, rows, max_rows)]


Rect = tuple[int, int, int, int]
"""A free rectangle of an array: (first row, first column, rows, columns)."""


class ArraySpace:
    """The free rectangles of every array of a chip, filled by :meth:`place`."""

    def __init__(self, n_arrays: int, array_rows: int, array_cols: int) -> None:
        self.array_rows, self.array_cols = array_rows, array_cols
        self.free: list[list[Rect]] = [[(0, 0, array_rows, array_cols)] for _ in range(n_arrays)]

    def copy(self, extra_arrays: int = 0) -> ArraySpace:
        space = ArraySpace(0, self.array_rows, self.array_cols)
        space.free = [list(rects) for rects in self.free] + [
            [(0, 0, self.array_rows, self.array_cols)] for _ in range(extra_arrays)
        ]
        return space

    def used_cells(self) -> list[int]:
        """Crosspoints taken per array."""
        total = self.array_rows * self.array_cols
        return [total - sum(r[2] * r[3] for r in rects) for rects in self.free]

    def empty_arrays(self) -> int:
        """Arrays nothing is placed on yet."""
        return sum(used == 0 for used in self.used_cells())

    def place(
        self, name: str, blocks: list[tuple[int, int]], col_blocks: list[tuple[int, int]], spread: bool = True
    ) -> tuple[Tile, ...]:
        """Tiles for every (row block, column block), or ChipCapacityError (``self`` unchanged then).

        Each tile goes to the free rectangle that fits it most tightly; ``spread`` prefers arrays this layer
        does not use yet (so its blocks run in parallel on different arrays), else arrays already in use
        (so fewer arrays are opened).
        """
        trial = [list(rects) for rects in self.free]
        full = [(0, 0, self.array_rows, self.array_cols)]
        used: set[int] = set()
        tiles = []
        for out_start, cols in col_blocks:
            for row_start, rows in blocks:
                fits = [
                    (array, index)
                    for array, rects in enumerate(trial)
                    for index, (_, _, free_rows, free_cols) in enumerate(rects)
                    if free_rows >= rows and free_cols >= cols
                ]
                if not fits:
                    raise ChipCapacityError(f"layer '{name}' does not fit")

                def waste(choice, trial=trial, rows=rows, cols=cols, used=used):
                    array, index = choice
                    _, _, free_rows, free_cols = trial[array][index]
                    preference = array in used if spread else trial[array] == full
                    return (preference, min(free_rows - rows, free_cols - cols), free_rows * free_cols, array)

                array, index = min(fits, key=waste)
                row0, col0, free_rows, free_cols = trial[array].pop(index)
                # vertical cut first: the strip to the right keeps the full height (layers side by side in
                # column ranges, as the paper maps them), the space below the tile stays as wide as the tile
                rest = [(row0, col0 + cols, free_rows, free_cols - cols), (row0 + rows, col0, free_rows - rows, cols)]
                trial[array].extend(r for r in rest if r[2] > 0 and r[3] > 0)
                tiles.append(Tile(array, row_start, rows, col0, cols, out_start=out_start, array_row=row0))
                used.add(array)
        self.free = trial
        return tuple(tiles)


def place_layer(
    space: ArraySpace, placed: dict[str, tuple[int, int]], name: str, shape: tuple[int, int]
) -> tuple[ArraySpace, dict[str, tuple[Tile, ...]]]:
    """Place a (fan_in, fan_out) matrix next to the ``placed`` layers (name → shape, in placement order).

    Into the free ``space`` if it fits (:func:`_first_fit`); otherwise every layer is placed again, in the
    same order, packed tightly (:func:`_pack`): tiles are bookkeeping of where each weight sits, so moving
    them changes no programmed value. Returns the new space and the tiles of every layer that got tiles
    (only ``name``, or all of them after a re-pack); or raises ChipCapacityError naming how many arrays
    the network needs.
    """
    fan_in, fan_out = shape
    if fan_in < 1 or fan_out < 1:
        raise ConfigError(f"layer '{name}' has an empty matrix shape {shape}")
    trial = space.copy()
    tiles = _first_fit(trial, name, shape)
    if tiles is not None:
        return trial, {name: tiles}
    layers = {**placed, name: shape}
    empty = ArraySpace(len(space.free), space.array_rows, space.array_cols)
    packed = _pack(empty, layers)
    if packed is not None:
        return empty, packed
    n_arrays = len(space.free)
    needed = next(
        n_arrays + extra
        for extra in itertools.count(1)
        if _first_fit(space.copy(extra), name, shape) is not None or _pack(empty.copy(extra), layers) is not None
    )
    raise ChipCapacityError(
        f"layer '{name}' ({fan_in}x{fan_out}) does not fit: the chip has {n_arrays} array(s) of "
        f"{space.array_rows}x{space.array_cols} and the layers placed so far plus this one need {needed} "
        f"(e.g. ChipConfig(arrays=ArraysConfig(count={needed})))"
    )


def _pack(space: ArraySpace, layers: dict[str, tuple[int, int]]) -> dict[str, tuple[Tile, ...]] | None:
    """Every layer into ``space`` (updated), tight options first; None if one does not fit."""
    tiles = {}
    for name, shape in layers.items():
        placed = _first_fit(space, name, shape, tight_first=True)
        if placed is None:
            return None
        tiles[name] = placed
    return tiles


def _first_fit(space: ArraySpace, name: str, shape: tuple[int, int], tight_first: bool = False):
    """Place a matrix in ``space`` (updated), or return None.

    Rows are split equally (the paper's 252 + 252) or into full-height blocks, outputs beyond an array's
    width into equal column blocks. By default the first that fits of: each row split with its tiles
    spread over different arrays (parallel MVMs), then packed into arrays in use. ``tight_first`` (a
    re-pack) tries all of them, packed first, and takes the one that leaves the most arrays empty.
    """
    fan_in, fan_out = shape
    col_blocks = split_rows(fan_out, space.array_cols)
    splits = [split_rows(fan_in, space.array_rows), split_full(fan_in, space.array_rows)]
    options = [(spread, blocks) for spread in (True, False) for blocks in splits]
    best = None
    for spread, blocks in reversed(options) if tight_first else options:
        trial = space.copy()
        try:
            tiles = trial.place(name, blocks, col_blocks, spread)
        except ChipCapacityError:
            continue
        if best is None or trial.empty_arrays() > best[0].empty_arrays():
            best = (trial, tiles)
        if not tight_first:
            break
    if best is None:
        return None
    space.free = best[0].free
    return best[1]
