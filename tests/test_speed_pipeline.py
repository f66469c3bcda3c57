"""The cheaper pipeline of issue #15 gives the same pixels and keeps its work state resumable.

Bit-for-bit output equality with the recorded digests is tests/test_golden.py; here: the vectorised nodata
fill against the formula it replaced, the work state's block files, and a resume over them.
"""

from __future__ import annotations

import numpy as np
import pytest

from sar2opt_geo.tasks import fill_nodata, model_tile
from sar2opt_geo.workstate import WorkState


def reference_fill(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The fill as first written (issue #12): every pixel gathered through 2-D index grids."""
    from scipy.ndimage import distance_transform_edt

    if valid.all() or not valid.any():
        return x
    _, (iy, ix) = distance_transform_edt(~valid, return_indices=True)
    h, w = valid.shape
    yy, xx = np.mgrid[0:h, 0:w]
    ry, rx = np.clip(2 * iy - yy, 0, h - 1), np.clip(2 * ix - xx, 0, w - 1)
    mirrored = valid[ry, rx]
    return x[:, np.where(mirrored, ry, iy), np.where(mirrored, rx, ix)]


def masks(rng: np.random.Generator, h: int, w: int):
    yy, xx = np.mgrid[0:h, 0:w]
    yield "left collar", xx >= rng.integers(1, w - 1)
    yield "diagonal edge", xx + 0.37 * yy > rng.uniform(0.2, 0.8) * w
    yield "mostly nodata", (yy > 0.8 * h) & (xx > 0.3 * w)
    yield "speckled holes", rng.random((h, w)) > 0.03
    yield "one valid pixel", (yy == h // 3) & (xx == w // 2)
    yield "all valid", np.ones((h, w), bool)
    yield "no valid pixel", np.zeros((h, w), bool)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("shape", [(64, 64), (37, 90)])
def test_fill_matches_the_reference_formula(channels, shape):
    rng = np.random.default_rng(15)
    x = rng.normal(size=(channels, *shape)).astype(np.float32)
    for name, valid in masks(rng, *shape):
        want = reference_fill(x, valid)
        got = fill_nodata(x, valid)
        assert np.array_equal(got, want), name
        slot = np.full_like(x, np.nan)
        assert fill_nodata(x, valid, out=slot) is slot
        assert np.array_equal(slot, want), name


def random_masks(rng: np.random.Generator, n: int):
    """Masks of every shape the fill's bounding-box crop must not notice: random speckle, round holes,
    rectangles, checkerboards (ties between equidistant valid pixels everywhere), a few valid pixels,
    slanted edges; tiles from 2 px to 40 px a side."""
    for k in range(n):
        h, w = (int(v) for v in rng.integers(2, 41, size=2))
        yy, xx = np.mgrid[0:h, 0:w]
        kind = k % 6
        if kind == 0:
            valid = rng.random((h, w)) > rng.uniform(0.02, 0.98)
        elif kind == 1:
            valid = np.ones((h, w), bool)
            for _ in range(int(rng.integers(1, 4))):
                cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, 8)
                valid &= (yy - cy) ** 2 + (xx - cx) ** 2 > r * r
        elif kind == 2:
            valid = np.ones((h, w), bool)
            a, b = sorted(rng.integers(0, h, 2))
            c, d = sorted(rng.integers(0, w, 2))
            valid[a : b + 1, c : d + 1] = False
        elif kind == 3:
            valid = ((yy // rng.integers(1, 4)) + (xx // rng.integers(1, 4))) % 2 == 0
        elif kind == 4:
            valid = np.zeros((h, w), bool)
            m = int(rng.integers(1, 5))
            valid[rng.integers(0, h, m), rng.integers(0, w, m)] = True
        else:
            valid = xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1) > rng.uniform(-w, w)
        yield valid


def test_the_cropped_distance_transform_gives_the_whole_tile_fill():
    """The fill runs scipy's transform on the invalid pixels' bounding box grown by one pixel: the same
    pixels as the transform of the whole tile (the reference), ties included (12 000 masks passed once
    offline; 1 200 here)."""
    rng = np.random.default_rng(20261201)
    for valid in random_masks(rng, 1200):
        h, w = valid.shape
        x = rng.normal(size=(1, h, w)).astype(np.float32)
        want = reference_fill(x, valid)
        assert np.array_equal(fill_nodata(x, valid), want)
        slot = np.empty((3, h, w), np.float32)
        assert np.array_equal(fill_nodata(x, valid, out=slot), np.repeat(want, 3, axis=0))


def test_fill_leaves_its_input_alone_and_fills_a_strided_slot_alike():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 40, 40)).astype(np.float32)
    before = x.copy()
    valid = np.ones((40, 40), bool)
    valid[:, :7] = False
    fill_nodata(x, valid)
    fill_nodata(x, valid, out=np.empty_like(x))
    assert np.array_equal(x, before)
    strided = np.full((3, 40, 80), np.nan, np.float32)[:, :, ::2]
    assert fill_nodata(x, valid, out=strided) is strided
    assert np.array_equal(strided, reference_fill(x, valid))


def test_a_single_band_filled_into_a_wider_slot_equals_the_fill_of_the_repeated_band():
    """The pipeline fills the one SAR band and broadcasts it into the model's channels (replicate_to)."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(1, 50, 60)).astype(np.float32)
    for name, valid in masks(rng, 50, 60):
        slot = np.full((3, 50, 60), np.nan, np.float32)
        fill_nodata(x, valid, out=slot)
        assert np.array_equal(slot, reference_fill(np.repeat(x, 3, axis=0), valid)), name
        slot[:] = np.nan
        model_tile(x, valid, 0, 0, 50, "constant", out=slot[:, :, :50])
        assert np.array_equal(slot[:, :, :50], np.repeat(x[:, :, :50], 3, axis=0)), name


def test_model_tile_writes_the_batch_slot():
    """A tile cut from a block's input, filled into its batch slot, equals the reference fill of that cut."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 100, 120)).astype(np.float32)
    valid = np.ones((100, 120), bool)
    valid[60:, :50] = False
    slot = np.empty((3, 48, 48), np.float32)
    for lr, lc in [(0, 0), (40, 20), (52, 72)]:
        want = reference_fill(x[:, lr : lr + 48, lc : lc + 48], valid[lr : lr + 48, lc : lc + 48])
        assert np.array_equal(model_tile(x, valid, lr, lc, 48, out=slot), want)
        tile = x[:, lr : lr + 48, lc : lc + 48]
        assert np.array_equal(model_tile(x, valid, lr, lc, 48, "constant", out=slot), tile)


def test_block_files_round_trip_atomically(tmp_path):
    ws = WorkState(tmp_path / "out.tif")
    assert ws.begin({"job": 1}, resume=False) is False
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(3, 30, 41), dtype=np.uint8)
    valid = rng.random((30, 41)) > 0.5
    ws.save_block("0-1", rgb, valid)
    got_rgb, got_valid = ws.load_block("0-1")
    assert got_rgb.dtype == np.uint8 and got_valid.dtype == bool
    assert np.array_equal(got_rgb, rgb) and np.array_equal(got_valid, valid)
    assert [p.name for p in ws.store.iterdir()] == ["0-1.npy"]  # no temporary left behind
    assert [len(level) for level in ws.load_block_levels("0-1")] == [2]  # no overview levels
    levels = [(rgb[:, ::f, ::f].copy(), valid[::f, ::f].copy()) for f in (2, 4)]
    ws.save_block("1-1", rgb, valid, levels)
    got = ws.load_block_levels("1-1")
    assert len(got) == 3
    for (a, av), (b, bv) in zip(got, [(rgb, valid), *levels], strict=True):
        assert np.array_equal(a, b) and np.array_equal(av, bv)
    assert np.array_equal(ws.load_block("1-1")[0], rgb)
    (ws.store / "1-1.npy").unlink()
    with pytest.raises(ValueError):  # object arrays cannot be saved without pickle: nothing is left
        ws.save_block("0-2", np.zeros((3, 4, 4), object), valid[:4, :4])
    assert sorted(p.name for p in ws.store.iterdir()) == ["0-1.npy"]


def test_a_work_state_without_block_files_is_started_again(tmp_path, caplog):
    """State from before issue #15 (blocks in a Zarr store) cannot be resumed: a fresh start, said so."""
    ws = WorkState(tmp_path / "out.tif")
    ws.begin({"job": 1}, resume=False)
    ws.mark_done("0-0", {"n_tiles": 1, "n_eval": 1})
    import shutil

    shutil.rmtree(ws.store)
    (ws.root / "blocks.zarr").mkdir()
    with caplog.at_level("WARNING"):
        assert ws.begin({"job": 1}, resume=True) is False
    assert "nothing to resume" in caplog.text
    assert ws.done_records() == {} and ws.store.is_dir()


@pytest.mark.parametrize("fmt", ["cog", "zarr"])
def test_interrupted_run_resumes_from_block_files(fmt, small_scene, tiny_model_path, tmp_path, monkeypatch):
    """Ctrl-C after some blocks: their block files and records stay; ``--resume`` evaluates only the rest
    and writes the same output as an uninterrupted run, in either format."""
    from conftest import interrupt_after_blocks

    from sar2opt_geo import run
    from sar2opt_geo.distributed import ThreadedExecutor
    from sar2opt_geo.errors import Interrupted
    from sar2opt_geo.plan import TranslateOptions

    ext = ".tif" if fmt == "cog" else ".zarr"
    opts = TranslateOptions(model=tiny_model_path, device="cpu", chunk_size=192, fmt=fmt, backend="torch")
    whole = run.run_translate(small_scene, str(tmp_path / f"whole{ext}"), opts, ThreadedExecutor(2))

    resume_normally = interrupt_after_blocks(monkeypatch, 3)
    out = tmp_path / f"out{ext}"
    with pytest.raises(Interrupted):
        run.run_translate(small_scene, str(out), opts, ThreadedExecutor(2))
    ws = WorkState(out)
    kept = ws.done_records()
    assert len(kept) >= 3 and not out.exists()
    assert {p.stem for p in ws.store.glob("*.npy")} >= set(kept)  # a record always has its block file
    resume_normally()
    resumed = run.run_translate(small_scene, str(out), opts, ThreadedExecutor(2), resume=True)
    assert resumed.evaluations == whole.evaluations - sum(r["n_eval"] for r in kept.values())
    assert not ws.root.exists()
    if fmt == "cog":
        from sar2opt_geo import io

        a, ma = io.read_raster(tmp_path / "whole.tif", masked=True)
        b, mb = io.read_raster(out, masked=True)
        assert np.array_equal(a, b) and np.array_equal(ma["mask"], mb["mask"])
        assert io.validate_cog(out)[0]
    else:
        import xarray as xr

        a, b = xr.open_zarr(tmp_path / "whole.zarr"), xr.open_zarr(out)
        assert np.array_equal(a["rgb"].values, b["rgb"].values)
        assert np.array_equal(a["valid"].values, b["valid"].values)
        assert a["rgb"].chunks == b["rgb"].chunks and a.rio.crs == b.rio.crs


def test_resume_with_a_lost_block_file(small_scene, tiny_model_path, tmp_path, capsys, monkeypatch):
    """A record whose block file is gone (a work state tampered with): one line, exit 1, the state discarded
    (the next run starts from the beginning), nothing at the output path."""
    from conftest import run_cli

    out = tmp_path / "o.tif"
    args = ["translate", small_scene, out, "--model", tiny_model_path, "--chunk-size", "192", "-q"]
    with monkeypatch.context() as m:
        m.setattr(WorkState, "discard", lambda self: None)  # keep the finished work state
        code, _, err = run_cli([*args, "--backend", "torch"], capsys)
    assert code == 0, err
    ws = WorkState(out)
    victim = sorted(ws.store.glob("*.npy"))[0]
    victim.unlink()
    out.unlink()
    code, _, err = run_cli([*args, "--backend", "torch", "--resume"], capsys)
    assert code == 1
    line = err.strip()
    assert "\n" not in line and line.startswith("Error: ") and f"block {victim.stem} is missing" in line
    assert not ws.root.exists() and not out.exists()


@pytest.mark.parametrize(
    "size, tile, overlap, chunk",
    [
        ((1000, 900), 256, 128, 384),
        ((1000, 900), 256, 128, 128),
        ((700, 1300), 128, 32, 192),
        ((600, 600), 64, 0, 128),
    ],
)
def test_the_finished_corner_of_a_block_is_reached_by_its_own_tiles_only(size, tile, overlap, chunk):
    """An acc task finishes the pixels of its block at rows ≥ a, columns ≥ c itself (uint8, no float sums
    leave it for them): no other block's tile may reach them. Checked tile by tile against the plan."""
    from sar2opt_geo.tasks import border_rects, finished_offsets
    from sar2opt_geo.tiling import BlockPlan, TileGrid

    g = TileGrid(*size, tile, overlap)
    plan = BlockPlan.create(g, chunk)
    owner = {}
    for b in plan.blocks:
        for i in range(b.ti0, b.ti1):
            for j in range(b.tj0, b.tj1):
                owner[i, j] = b.key
    n_finished = 0
    for b in plan.blocks:
        h, w = b.shape
        a, c = finished_offsets(plan, b)
        foreign = np.zeros((h, w), bool)  # reached by a tile another block owns
        for (i, j), key in owner.items():
            if key == b.key:
                continue
            r0, c0 = i * g.stride - b.row0, j * g.stride - b.col0
            foreign[max(r0, 0) : max(r0 + tile, 0), max(c0, 0) : max(c0 + tile, 0)] = True
        assert not foreign[a:, c:].any(), b.key
        n_finished += (h - a) * (w - c)
        # the border strips and the corner tile the block exactly once
        cover = np.zeros((h, w), int)
        cover[a:, c:] += 1
        for _, (p0, p1, q0, q1) in border_rects(h, w, a, c):
            cover[p0:p1, q0:q1] += 1
        assert (cover == 1).all(), b.key
        if b.bi and b.bj and chunk > overlap and b.n_tiles:  # the corner is as large as it can be
            assert (a, c) == (overlap, overlap), b.key
    assert n_finished > 0 or chunk <= overlap


def test_spill_strips_round_trip_and_read_the_layout_written_before():
    """--resume reads a finished block's spill strips back: as written now (each strip with its corner),
    and as written before the acc tasks finished their blocks (the right strip holding every row of the
    extent)."""
    from sar2opt_geo.tasks import BlockPartial, Partial, _partial_from_spill, _spill_strips
    from sar2opt_geo.tiling import BlockPlan, TileGrid

    plan = BlockPlan.create(TileGrid(1000, 900, 256, 128), 384)
    b = plan.block(1, 1)
    h, w = b.shape
    hh, ww = h + 128, w + 128
    rng = np.random.default_rng(4)
    wy, sw = rng.random((3, hh, ww), dtype=np.float32), rng.random((hh, ww), dtype=np.float32)
    valid = rng.random((hh, ww)) > 0.2
    right = Partial(f"{b.key}:right", b.row0, b.col0 + w, wy[:, :h, w:], sw[:h, w:], valid[:h, w:], 0, 0)
    bottom = Partial(f"{b.key}:bottom", b.row0 + h, b.col0, wy[:, h:], sw[h:], valid[h:], 0, 0)
    p = BlockPartial(b.key, (), None, (right, bottom), n_eval=7, n_tiles=b.n_tiles)

    old_layout = {  # what _spill_strips wrote before: slices of the whole extent
        "right_wy": wy[:, :, w:], "right_w": sw[:, w:], "right_valid": valid[:, w:],
        "bottom_wy": wy[:, h:, :], "bottom_w": sw[h:, :], "bottom_valid": valid[h:, :],
        "shape": np.array([hh, ww]), "n_eval": np.array(7),
    }  # fmt: skip
    for z in (_spill_strips(p), old_layout):
        back = _partial_from_spill(b, z)
        assert back.key == b.key and back.finished is None and back.own == ()
        assert [q.key for q in back.spill] == [right.key, bottom.key]
        for got, want in zip(back.spill, (right, bottom), strict=True):
            assert (got.row0, got.col0) == (want.row0, want.col0)
            for name in ("sum_wy", "sum_w", "valid"):
                assert np.array_equal(getattr(got, name), getattr(want, name)), name
