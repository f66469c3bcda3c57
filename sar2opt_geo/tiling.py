"""Tile grid and block plan: which tiles exist, which Dask block owns each tile, and what each block reads.

Typed, picklable planning objects in the spirit of odc-geo's GeoBox/tiling (but in pixel space, since a scene
may be georeferenced by GCPs only):

- :class:`TileGrid` — one scene-aligned grid of ``tile``×``tile`` tiles at stride ``tile − overlap``
  starting at pixel (0, 0). The last row/column of tiles may extend past the scene; those pixels are read
  reflect-padded (see :func:`sar2opt_geo.io.read_window`), never filled with black.
- :class:`BlockPlan` — the output split into square blocks of ``chunk`` pixels (a multiple of the stride).
  Every tile is *owned* by exactly one block (the one holding its top-left corner), so every tile is evaluated
  exactly once; a block's weighted partial sums spill at most ``overlap`` pixels into its right/lower
  neighbours, and each output block adds up the partial sums of the blocks that reach it (overlap-add).

Hand-written: this bookkeeping is specific to overlap-add inference; no library plans it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from sar2opt_geo.errors import UsageError


@dataclass(frozen=True)
class TileGrid:
    height: int
    width: int
    tile: int = 256
    overlap: int = 64

    def __post_init__(self):
        if self.tile < 16 or self.tile % 16:
            raise UsageError(f"--tile-size must be a multiple of 16 and >= 16 (got {self.tile})")
        if not 0 <= self.overlap < self.tile:
            raise UsageError(f"--overlap must be in [0, tile size) (got {self.overlap})")
        if self.overlap % 2:
            raise UsageError(f"--overlap must be even (got {self.overlap})")
        if self.height < 1 or self.width < 1:
            raise UsageError("empty raster")

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    def _n(self, size: int) -> int:
        return 1 if size <= self.tile else math.ceil((size - self.tile) / self.stride) + 1

    @property
    def n_rows(self) -> int:
        return self._n(self.height)

    @property
    def n_cols(self) -> int:
        return self._n(self.width)

    @property
    def count(self) -> int:
        return self.n_rows * self.n_cols

    def origin(self, i: int, j: int) -> tuple[int, int]:
        return i * self.stride, j * self.stride

    def padded_shape(self) -> tuple[int, int]:
        """Extent covered by the grid (may exceed the scene at the bottom/right)."""
        return (self.n_rows - 1) * self.stride + self.tile, (self.n_cols - 1) * self.stride + self.tile


@dataclass(frozen=True)
class Block:
    """One output block and the tiles it owns (tile index ranges are half-open)."""

    bi: int
    bj: int
    row0: int
    row1: int
    col0: int
    col1: int
    ti0: int
    ti1: int
    tj0: int
    tj1: int
    stride: int
    tile: int

    @property
    def n_tiles(self) -> int:
        return max(0, self.ti1 - self.ti0) * max(0, self.tj1 - self.tj0)

    @property
    def key(self) -> str:
        return f"{self.bi}-{self.bj}"

    @property
    def acc_bounds(self) -> tuple[int, int, int, int]:
        """Pixel region ``(r0, r1, c0, c1)`` covered by the tiles this block owns (may exceed the scene)."""
        return (
            self.ti0 * self.stride,
            (self.ti1 - 1) * self.stride + self.tile,
            self.tj0 * self.stride,
            (self.tj1 - 1) * self.stride + self.tile,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return self.row1 - self.row0, self.col1 - self.col0


@dataclass(frozen=True)
class BlockPlan:
    grid: TileGrid
    chunk: int

    @classmethod
    def create(
        cls, grid: TileGrid, chunk_size: int, source_block: tuple[int, int] | None = None
    ) -> BlockPlan:
        """Round ``chunk_size`` to a multiple of the stride (and, when cheap, of the source's block size)."""
        if chunk_size < 1:
            raise UsageError(f"--chunk-size must be positive (got {chunk_size})")
        s = grid.stride
        unit = s
        if source_block is not None:
            bh, bw = source_block
            if bh == bw and bh > 1:
                lcm = s * bh // math.gcd(s, bh)
                if lcm <= chunk_size:
                    unit = lcm
        chunk = max(unit, round(chunk_size / unit) * unit)
        return cls(grid=grid, chunk=chunk)

    @property
    def n_brows(self) -> int:
        return math.ceil(self.grid.height / self.chunk)

    @property
    def n_bcols(self) -> int:
        return math.ceil(self.grid.width / self.chunk)

    @property
    def n_blocks(self) -> int:
        return self.n_brows * self.n_bcols

    def _tile_range(self, b: int, n_tiles: int) -> tuple[int, int]:
        per = self.chunk // self.grid.stride
        return min(b * per, n_tiles), min((b + 1) * per, n_tiles)

    def block(self, bi: int, bj: int) -> Block:
        g = self.grid
        ti0, ti1 = self._tile_range(bi, g.n_rows)
        tj0, tj1 = self._tile_range(bj, g.n_cols)
        return Block(
            bi=bi,
            bj=bj,
            row0=bi * self.chunk,
            row1=min((bi + 1) * self.chunk, g.height),
            col0=bj * self.chunk,
            col1=min((bj + 1) * self.chunk, g.width),
            ti0=ti0,
            ti1=ti1,
            tj0=tj0,
            tj1=tj1,
            stride=g.stride,
            tile=g.tile,
        )

    @cached_property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(self.block(bi, bj) for bi in range(self.n_brows) for bj in range(self.n_bcols))

    def contributors(self, block: Block) -> list[Block]:
        """Blocks owning tiles that overlap ``block``'s output region (itself included when it owns tiles)."""
        out = []
        reach = math.ceil(self.grid.overlap / self.chunk) if self.grid.overlap else 0
        for bi in range(max(0, block.bi - reach), block.bi + 1):
            for bj in range(max(0, block.bj - reach), block.bj + 1):
                other = self.block(bi, bj)
                if other.n_tiles == 0:
                    continue
                r0, r1, c0, c1 = other.acc_bounds
                if r0 < block.row1 and r1 > block.row0 and c0 < block.col1 and c1 > block.col0:
                    out.append(other)
        return out
