"""Test-only generator architectures whose output is known by construction, and scenes that feed them.

Importing this module registers the architecture ``test_position_probe`` in the model registry (the tests'
conftest imports it; cluster workers get it with ``dask worker --preload probe_models``), so probe models are
ordinary safetensors checkpoints that the translate path loads like any other.

The probe reads a *position scene* (:func:`write_position_scene`): two linear bands whose valid pixels hold
``(row + 1) / POSITION_SCALE`` and ``(col + 1) / POSITION_SCALE``. Through the checkpoint's radiometry
(linear, clip [0, 1] → [−1, 1], exact in float32 for these values) every model input pixel says where in the
scene it comes from, so the probe can

* ``mode="field"``: output :func:`field` of each pixel's absolute position: tiles then agree exactly where
  they overlap, and any seam or offset in the blended output is a blending defect;
* ``mode="tile_constant"``: output one constant per tile, +0.5 / −0.5 on a checkerboard of tile indexes: the
  blended output is continuous only if the blending weights are;
* in both modes, append one line per evaluated tile to ``log`` (if set): ``pid row0 col0 sha1-of-input``,
  with the tile's scene origin decoded from its own input pixels. That is an evaluation count kept at the
  torch module, independent of the pipeline's bookkeeping.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch
from torch import nn

from sar2opt_geo.models.checkpoint import CheckpointMeta, save_checkpoint
from sar2opt_geo.models.registry import is_model, register_model

ARCH = "test_position_probe"
POSITION_SCALE = 4096  # band value = (index + 1) / POSITION_SCALE: exact in float32 for index < 4095
POSITION_RADIOMETRY = {"scale": "linear", "clip": [0.0, 1.0], "out_range": [-1.0, 1.0]}


def field(rows, cols):
    """The smooth RGB field (tanh units, |value| ≤ 0.8) the ``field`` probe paints; numpy or torch."""
    lib = torch if isinstance(rows, torch.Tensor) else np
    two_pi = 2 * np.pi
    return [
        0.6 * lib.sin(two_pi * rows / 700.0) * lib.cos(two_pi * cols / 900.0) + 0.2,
        0.7 * lib.cos(two_pi * (rows + cols) / 1300.0),
        0.5 * lib.sin(two_pi * cols / 611.0) - 0.3 * lib.cos(two_pi * rows / 523.0),
    ]


def tile_constant(i: int, j: int) -> float:
    """The value the ``tile_constant`` probe paints on tile ``(i, j)``: a checkerboard of ±0.5."""
    return 0.5 if (i + j) % 2 == 0 else -0.5


class PositionProbe(nn.Module):
    def __init__(self, mode: str = "field", log: str = "", stride: int = 192, in_channels: int = 2):
        super().__init__()
        if in_channels != 2:
            raise ValueError("the position probe takes the two position bands")
        if mode not in ("field", "tile_constant"):
            raise ValueError(f"unknown probe mode {mode!r}")
        self.mode, self.log, self.stride = mode, log, stride
        # one real tensor, so the checkpoint is an ordinary safetensors file with weights
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unit = (x[:, :2].double() + 1.0) / 2.0
        pos = torch.round(unit * POSITION_SCALE) - 1  # (N, 2, T, T): row, col; −1 where nodata
        valid = pos[:, 0] >= 0
        out = torch.zeros((x.shape[0], 3) + tuple(x.shape[2:]), dtype=torch.float32)
        lines = []
        for n in range(x.shape[0]):
            r0, c0 = _origin(pos[n], valid[n])
            if self.log:
                digest = hashlib.sha1(x[n].cpu().numpy().tobytes()).hexdigest()[:16]
                lines.append(f"{os.getpid()} {r0} {c0} {digest}\n")
            if self.mode == "field":
                f = field(pos[n, 0], pos[n, 1])
                for ch in range(3):
                    out[n, ch] = torch.where(valid[n], f[ch], torch.zeros_like(f[ch])).float()
            else:
                out[n] = tile_constant(r0 // self.stride, c0 // self.stride)
        if lines:
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, "".join(lines).encode())
            finally:
                os.close(fd)
        return out * self.gain


def _origin(pos: torch.Tensor, valid: torch.Tensor) -> tuple[int, int]:
    """The tile's scene origin from its decoded positions. Pixels past the scene's bottom/right edges are
    reflect-padded copies (wrong positions), but the first row and the first column holding a valid pixel
    are always inside the scene (a tile is only evaluated when it has a valid in-scene pixel): the row code
    is right in any column of an in-scene row, and the column code in any row of an in-scene column."""
    rows = torch.nonzero(valid.any(dim=1)).flatten()
    cols = torch.nonzero(valid.any(dim=0)).flatten()
    if len(rows) == 0:
        return -1, -1
    a, b = int(rows[0]), int(cols[0])
    b_in_a = int(torch.nonzero(valid[a]).flatten()[0])
    a_in_b = int(torch.nonzero(valid[:, b]).flatten()[0])
    return int(pos[0, a, b_in_a]) - a, int(pos[1, a_in_b, b]) - b


if not is_model(ARCH):
    register_model(ARCH)(PositionProbe)


# ----------------------------------------------------------------------------------------------- helpers


def save_probe(path, mode: str = "field", log: str = "", stride: int = 192) -> str:
    meta = CheckpointMeta(
        name=f"probe-{mode}",
        architecture=ARCH,
        arch_args={"mode": mode, "log": str(log), "stride": stride, "in_channels": 2},
        input_bands=["VV", "VH"],
        radiometry=dict(POSITION_RADIOMETRY),
        provenance={"source": "tests/probe_models.py: output known by construction"},
    )
    save_checkpoint(path, PositionProbe(mode, str(log), stride), meta)
    return str(path)


def read_log(path) -> list[tuple[int, int, int, str]]:
    """``(pid, row0, col0, input hash)`` per evaluated tile, in the order they were logged."""
    try:
        text = open(path).read()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        pid, r0, c0, digest = line.split()
        out.append((int(pid), int(r0), int(c0), digest))
    return out


def footprint(height: int, width: int) -> np.ndarray:
    """A slanted swath with a wide nodata collar (as a GRD footprint): valid where True."""
    r, c = np.indices((height, width), dtype=np.float64)
    u = (c - 0.5 * width) + 0.35 * (r - 0.5 * height)
    return (np.abs(u) < 0.36 * width) & (r > 0.04 * height) & (r < 0.93 * height)


def write_position_scene(path, height: int, width: int, valid: np.ndarray | None = None) -> str:
    """A georeferenced float32 GeoTIFF (bands VV, VH; nodata 0) whose valid pixels encode their position."""
    import rasterio
    from rasterio.transform import from_origin

    assert max(height, width) < POSITION_SCALE - 1
    r, c = np.indices((height, width), dtype=np.float32)
    data = np.stack([(r + 1) / POSITION_SCALE, (c + 1) / POSITION_SCALE]).astype(np.float32)
    if valid is not None:
        data[:, ~valid] = 0
    profile = dict(
        driver="GTiff", width=width, height=height, count=2, dtype="float32", nodata=0.0, tiled=True,
        blockxsize=512, blockysize=512, crs="EPSG:32633", transform=from_origin(500000, 5000000, 10, 10),
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.set_band_description(1, "VV")
        dst.set_band_description(2, "VH")
    return str(path)
