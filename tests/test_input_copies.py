"""Inputs that cannot be read window by window at any speed are copied once into a hidden folder beside the
output (issue #15) and read from there — the same pixels — and the folder is gone when the run ends, however
it ends: a product zip's *deflated* measurement tiffs (inflated; stored members are still read in place) and
GeoTIFFs of compressed strips (tiled). Without room for a copy, the input is read in place, with a warning."""

from __future__ import annotations

import os
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from conftest import interrupt_after_blocks, write_geotiff

from sar2opt_geo import io
from sar2opt_geo.errors import InputError, OutputError
from sar2opt_geo.sentinel1 import safe
from sar2opt_geo.sentinel1.synth import ProductSpec, write_product


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    """The same synthetic dual-pol product as a SAFE folder, a stored zip and a deflated zip."""
    spec = ProductSpec(width=300, height=260, seed=8)
    root = tmp_path_factory.mktemp("unpack")
    stored = write_product(root / "stored", spec, zip_product=True)
    deflated = write_product(
        root / "deflated", spec, zip_product=True, zip_measurements="deflated", truth=False
    )
    return {"safe": stored.safe, "stored": stored.zip, "deflated": deflated.zip}


@pytest.fixture(autouse=True)
def _no_readers_left():
    io.close_readers()
    yield
    io.close_readers()


def measurement_members(zip_path) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(zip_path) as z:
        return [i for i in z.infolist() if i.filename.endswith(".tiff")]


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".inputs-" in p.name)


def test_unpack_inflates_a_deflated_member_to_its_exact_bytes(products, tmp_path):
    (stored_member,) = measurement_members(products["stored"])[:1]
    assert stored_member.compress_type == zipfile.ZIP_STORED
    member = measurement_members(products["deflated"])[0]
    assert member.compress_type == zipfile.ZIP_DEFLATED and member.compress_size < member.file_size
    container, _ = safe.locate(products["deflated"])
    rel = member.filename[len(container.prefix) :]
    assert container.is_deflated(rel)
    assert not safe.locate(products["stored"])[0].is_deflated(rel)
    (path,) = container.unpack([rel], tmp_path / "u")
    with zipfile.ZipFile(products["deflated"]) as z:
        assert open(path, "rb").read() == z.read(member)
    assert sorted(p.name for p in (tmp_path / "u").iterdir()) == [rel.rsplit("/", 1)[1]]  # no .part left


def test_without_room_to_unpack_the_product_is_read_in_place_with_a_warning(
    products, tmp_path, monkeypatch, caplog
):
    from sar2opt_geo.sentinel1.product import open_product

    need = sum(m.file_size for m in measurement_members(products["deflated"]))
    room = SimpleNamespace(total=10**12, used=10**12, free=need)  # the members fit, the headroom not
    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: room)
    with caplog.at_level("WARNING"):
        product = open_product(products["deflated"], unpack_dir=tmp_path / "u")
    assert all(b.measurement.startswith("/vsizip/") for b in product.bands)
    assert "MB needed to unpack its deflated measurement tiffs: reading them in place" in caplog.text
    assert not (tmp_path / "u").exists()
    want = open_product(products["stored"]).read_window(None, 0, 260, 0, 300)
    got = product.read_window(None, 0, 260, 0, 300)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_a_corrupt_deflated_member_is_an_input_error_and_leaves_no_file(products, tmp_path):
    bad = tmp_path / "bad.zip"
    data = bytearray(products["deflated"].read_bytes())
    member = measurement_members(products["deflated"])[0]
    start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    mid = start + member.compress_size // 2
    data[mid : mid + 64] = bytes(64)  # zeroes in the middle of the compressed stream
    bad.write_bytes(bytes(data))
    container, _ = safe.locate(bad)
    rel = member.filename[len(container.prefix) :]
    with pytest.raises(InputError, match="cannot be unpacked"):
        container.unpack([rel], tmp_path / "u")
    assert list((tmp_path / "u").iterdir()) == []


def test_open_product_reads_deflated_members_from_the_unpacked_copy(products, tmp_path):
    from sar2opt_geo.sentinel1.product import open_product

    in_place = open_product(products["deflated"])
    unpacked = open_product(products["deflated"], unpack_dir=tmp_path / "u")
    stored = open_product(products["stored"], unpack_dir=tmp_path / "s")
    assert all(b.measurement.startswith("/vsizip/") for b in in_place.bands)
    assert all(b.measurement.startswith(str(tmp_path / "u")) for b in unpacked.bands)
    assert all(b.measurement.startswith("/vsizip/") for b in stored.bands)  # stored: read in place
    assert not (tmp_path / "s").exists()
    for window in ((0, 260, 0, 300), (-7, 100, 250, 330)):
        want = stored.read_window(None, *window)
        for p in (in_place, unpacked):
            got = p.read_window(None, *window)
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_translate_and_calibrate_of_a_deflated_zip_give_the_stored_zips_pixels(
    products, tiny_model_path, tmp_path, monkeypatch
):
    """Both commands read the deflated product from their unpacked copy (never the member in place), write
    the pixels the stored zip gives, and leave no unpack folder behind."""
    from sar2opt_geo import filter_run, run
    from sar2opt_geo.distributed import ThreadedExecutor
    from sar2opt_geo.plan import TranslateOptions

    read_paths = []
    real = io.read_band

    def spy(path, *args, **kw):
        read_paths.append(path)
        return real(path, *args, **kw)

    monkeypatch.setattr("sar2opt_geo.sentinel1.product.read_band", spy)
    opts = TranslateOptions(model=tiny_model_path, device="cpu", chunk_size=192, backend="torch")
    outputs = {}
    for kind in ("stored", "deflated"):
        read_paths.clear()
        out = tmp_path / kind
        out.mkdir()
        run.run_translate(str(products[kind]), str(out / "t.tif"), opts, ThreadedExecutor(2))
        filter_run.run_filter(
            str(products[kind]),
            str(out / "s.tif"),
            None,
            ThreadedExecutor(2),
            chunk_size=128,
            require_product=True,
        )
        in_zip = {p.startswith("/vsizip/") for p in read_paths}
        assert in_zip == ({True} if kind == "stored" else {False})
        if kind == "deflated":
            assert all(".t.tif.inputs-" in p or ".s.tif.inputs-" in p for p in read_paths)
        assert leftovers(out) == []
        outputs[kind] = out
    for name in ("t.tif", "s.tif"):
        with rasterio.open(outputs["stored"] / name) as a, rasterio.open(outputs["deflated"] / name) as b:
            assert np.array_equal(a.read(), b.read())
            assert np.array_equal(a.read_masks(1), b.read_masks(1))


def test_a_failed_run_removes_its_unpacked_copy(products, tiny_model_path, tmp_path, monkeypatch):
    from sar2opt_geo import run
    from sar2opt_geo.distributed import ThreadedExecutor
    from sar2opt_geo.plan import TranslateOptions

    seen = []
    real = safe.Container.unpack

    def unpack_then_note(self, rels, folder):
        paths = real(self, rels, folder)
        seen.extend(paths)
        return paths

    def fail(*args, **kw):
        raise InputError("the scene statistics failed")

    monkeypatch.setattr(safe.Container, "unpack", unpack_then_note)
    monkeypatch.setattr(run, "measure_scene", fail)
    opts = TranslateOptions(model=tiny_model_path, device="cpu", chunk_size=192, backend="torch")
    with pytest.raises(InputError, match="statistics failed"):
        run.run_translate(str(products["deflated"]), str(tmp_path / "t.tif"), opts, ThreadedExecutor(2))
    assert len(seen) == 2  # VV and VH were unpacked, then the run failed
    assert leftovers(tmp_path) == [] and not (tmp_path / "t.tif").exists()


def test_a_full_disk_while_unpacking_is_an_output_error_and_leaves_no_file(products, tmp_path, monkeypatch):
    import errno

    container, _ = safe.locate(products["deflated"])
    rels = [m.filename[len(container.prefix) :] for m in measurement_members(products["deflated"])]

    class FullDisk:
        def __init__(self, path, mode):
            self.path = path
            open(path, "wb").close()  # the .part file exists, as it would

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, chunk):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safe, "open", FullDisk, raising=False)
    with pytest.raises(OutputError, match=r"\.part: cannot be written .*No space left"):
        container.unpack(rels, tmp_path / "u")
    assert list((tmp_path / "u").iterdir()) == []


# ------------------------------------------------------------------------ GeoTIFFs of compressed strips


def sigma0(seed: int, h: int, w: int, count: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.gamma(2.0, 0.05, (count, h, w)).astype(np.float32)
    v[:, :, :30] = 0.0  # a nodata collar
    return v


def test_only_wide_geotiffs_of_compressed_strips_want_a_tiled_copy(tmp_path):
    v = sigma0(1, 40, io.TILED_COPY_MIN_WIDTH)
    assert io.wants_tiled_copy(write_geotiff(tmp_path / "a.tif", v, compress="deflate", nodata=0.0))
    assert io.wants_tiled_copy(write_geotiff(tmp_path / "b.tif", v, compress="lzw", blockysize=16))
    assert not io.wants_tiled_copy(write_geotiff(tmp_path / "c.tif", v[:, :, :-1], compress="deflate"))
    assert not io.wants_tiled_copy(write_geotiff(tmp_path / "d.tif", v))  # uncompressed: direct I/O
    tiled = write_geotiff(
        tmp_path / "e.tif", v, compress="deflate", tiled=True, blockxsize=256, blockysize=256
    )
    assert not io.wants_tiled_copy(tiled)


@pytest.mark.parametrize("layout", ["nodata", "mask-two-bands"])
def test_a_tiled_copy_reads_the_same_values_and_validity(tmp_path, layout):
    h, w = 300, 2100
    if layout == "nodata":
        v, extra = sigma0(2, h, w), {"nodata": 0.0}
    else:
        v = (sigma0(3, h, w, count=2) * 1000).astype(np.uint16)
        extra = {"mask": np.where(v[0] > 0, 255, 0).astype(np.uint8), "interleave": "pixel"}
    scene = write_geotiff(tmp_path / "s.tif", v, compress="deflate", **extra)
    assert io.wants_tiled_copy(scene) and scene.has_mask == (layout != "nodata")
    copy = io.tiled_copy(scene, tmp_path / "copies")
    assert copy.path == scene.path and copy.read_path.startswith(str(tmp_path / "copies"))
    assert not io.wants_tiled_copy(copy)  # never copied twice
    whole = io.read_window(copy, 0, h, 0, w)[1]
    assert not whole[:, :30].any() and whole[:, 30:].mean() > 0.99  # the collar is invalid, by nodata or mask
    with rasterio.open(copy.read_path) as src:
        assert src.profile["tiled"] and src.compression is None
        assert src.block_shapes[0] == (io.TILED_COPY_BLOCK, io.TILED_COPY_BLOCK)
    for r0, r1, c0, c1 in ((0, h, 0, w), (-20, 140, 1900, 2150), (77, 78, 5, 6), (100, 290, -8, 700)):
        want = io.read_window(scene, r0, r1, c0, c1)
        for keep_open in (False, True):
            got = io.read_window(copy, r0, r1, c0, c1, keep_open=keep_open)
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert sorted(p.name for p in (tmp_path / "copies").iterdir()) == ["tiled-s.tif"]


def test_without_room_for_a_tiled_copy_the_geotiff_is_read_in_place(tmp_path, monkeypatch, caplog):
    scene = write_geotiff(tmp_path / "s.tif", sigma0(4, 50, 2100), compress="deflate", nodata=0.0)
    room = SimpleNamespace(total=10**12, used=10**12, free=50 * 2100 * 4)
    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: room)
    with caplog.at_level("WARNING"):
        assert io.tiled_copy(scene, tmp_path / "copies") is scene
    assert "needed for a tiled copy of its compressed strips: reading it in place" in caplog.text
    assert not (tmp_path / "copies").exists()


def test_translate_and_filter_read_compressed_strips_from_a_tiled_copy(
    tiny_model_path, tmp_path, monkeypatch
):
    """Both commands read a wide GeoTIFF of DEFLATE strips from their tiled copy (never the file itself),
    write the pixels the same scene gives when tiled, and leave no copy behind."""
    from sar2opt_geo import filter_run, run
    from sar2opt_geo.distributed import ThreadedExecutor
    from sar2opt_geo.plan import TranslateOptions

    v = sigma0(5, 260, 2100)
    inputs = {
        "strips": write_geotiff(tmp_path / "strips.tif", v, compress="deflate", nodata=0.0).path,
        "tiled": write_geotiff(
            tmp_path / "tiled.tif",
            v,
            compress="deflate",
            nodata=0.0,
            tiled=True,
            blockxsize=256,
            blockysize=256,
        ).path,
    }
    opened = []
    real = io._reader

    def spy(path, *args):
        opened.append(path)
        return real(path, *args)

    monkeypatch.setattr(io, "_reader", spy)
    opts = TranslateOptions(model=tiny_model_path, device="cpu", chunk_size=512, backend="torch")
    outputs = {}
    for kind, path in inputs.items():
        opened.clear()
        out = tmp_path / kind
        out.mkdir()
        run.run_translate(path, str(out / "t.tif"), opts, ThreadedExecutor(2))
        filter_run.run_filter(path, str(out / "f.tif"), None, ThreadedExecutor(2), chunk_size=512)
        if kind == "strips":
            assert opened and all("/.t.tif.inputs-" in p or "/.f.tif.inputs-" in p for p in opened)
        else:
            assert set(opened) == {path}
        assert leftovers(out) == []
        outputs[kind] = out
    for name in ("t.tif", "f.tif"):
        with rasterio.open(outputs["strips"] / name) as a, rasterio.open(outputs["tiled"] / name) as b:
            assert np.array_equal(a.read(), b.read(), equal_nan=True)
            assert np.array_equal(a.read_masks(1), b.read_masks(1))


def test_info_says_how_each_layout_is_read_and_what_is_copied(products, tmp_path):
    from sar2opt_geo.info import describe_scene

    def reading(path):
        return describe_scene(str(path), 256, 64, 960, False)["reading"]

    v = sigma0(6, 60, 2100)
    assert reading(write_geotiff(tmp_path / "d.tif", v, compress="deflate", nodata=0.0).path) == (
        "compressed strips: copied once into tiled form beside the output (0.5 MB); read in place, "
        "every window would decode whole rows"
    )
    narrow = write_geotiff(tmp_path / "n.tif", v[:, :, :500], compress="deflate", nodata=0.0).path
    assert reading(narrow) == "compressed strips, narrower than 2048 px: in place"
    assert reading(write_geotiff(tmp_path / "u.tif", v, nodata=0.0).path) == (
        "uncompressed strips: in place, with GDAL's direct I/O"
    )
    tiled = write_geotiff(tmp_path / "t.tif", v, nodata=0.0, tiled=True, blockxsize=256, blockysize=256).path
    assert reading(tiled) == "tiled: in place"
    need = sum(m.file_size for m in measurement_members(products["deflated"]))
    assert reading(products["deflated"]) == (
        f"2 deflated zip member(s): inflated once beside the output ({need / 1e6:.1f} MB) and read from there"
    )
    assert (
        reading(products["stored"]) == "stored zip members: in place (GDAL's direct I/O where uncompressed)"
    )
    assert reading(products["safe"]) == "measurement TIFFs: in place (GDAL's direct I/O where uncompressed)"


def test_a_run_removes_the_copies_of_earlier_runs_whose_process_is_gone(tmp_path):
    """Copies left by a run killed outright are removed by the next run on the same output, when their
    process on this host is gone; those of a live process, another host, another output or without an
    owner are kept. The run's own folder carries its owner and is gone after it."""
    import json
    import socket
    import subprocess
    import sys

    from sar2opt_geo.workstate import InputCopies

    out = tmp_path / "t.tif"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    here = socket.gethostname()
    owners = {
        ".t.tif.inputs-dead0000": {"pid": int(dead.stdout), "host": here},
        ".t.tif.inputs-live0000": {"pid": os.getpid(), "host": here},
        ".t.tif.inputs-away0000": {"pid": int(dead.stdout), "host": here + "-elsewhere"},
        ".u.tif.inputs-dead0000": {"pid": int(dead.stdout), "host": here},  # another output's
        ".t.tif.inputs-none0000": None,
    }
    for name, owner in owners.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "big.tif").write_bytes(b"x" * 1000)
        if owner is not None:
            (tmp_path / name / "owner.json").write_text(json.dumps(owner))
    with InputCopies(out) as root:
        mine = json.loads((root / "owner.json").read_text())
        assert mine["pid"] == os.getpid() and mine["host"] == here and root.name.startswith(".t.tif.inputs-")
        assert not (tmp_path / ".t.tif.inputs-dead0000").exists()
        kept = sorted(p.name for p in tmp_path.iterdir() if p != root)
    assert kept == sorted(set(owners) - {".t.tif.inputs-dead0000"})
    assert not root.exists()


def test_the_cli_says_when_it_copies_an_input_unless_quiet(products, tiny_model_path, tmp_path, capsys):
    """A copy takes seconds to minutes before any progress bar: ``calibrate`` and ``translate`` say it on
    stderr at the default verbosity (and nothing else of their INFO logs), and nothing with ``-q``."""
    from conftest import run_cli

    code, _, err = run_cli(["calibrate", products["deflated"], tmp_path / "a.tif"], capsys)
    assert code == 0, err
    notices = [line for line in err.splitlines() if line.startswith("INFO: ")]
    assert len(notices) == 1 and "unpacking 2 deflated measurement tiff(s) of" in notices[0], err
    v = sigma0(7, 200, 2100)
    strips = write_geotiff(tmp_path / "strips.tif", v, compress="deflate", nodata=0.0).path
    args = ["translate", strips, tmp_path / "t.tif", "--model", tiny_model_path, "--backend", "torch"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert [line for line in err.splitlines() if line.startswith("INFO: ")] == [
        f"INFO: {strips}: copying its compressed strips into tiled form beside the output (1.7 MB), once: "
        "read in place, every window would decode whole image rows again"
    ]
    code, _, err = run_cli(["calibrate", "-q", products["deflated"], tmp_path / "b.tif"], capsys)
    assert code == 0 and err == "", err


def test_an_interrupted_run_on_a_copied_input_resumes(products, tiny_model_path, tmp_path, monkeypatch):
    """Ctrl-C removes the copies but keeps the finished blocks; ``--resume`` copies the input again (the
    saved state names the original file, not the copy) and evaluates only the rest, to the same output."""
    from sar2opt_geo import run
    from sar2opt_geo.distributed import ThreadedExecutor
    from sar2opt_geo.errors import Interrupted
    from sar2opt_geo.plan import TranslateOptions
    from sar2opt_geo.workstate import WorkState

    opts = TranslateOptions(model=tiny_model_path, device="cpu", chunk_size=128, backend="torch")
    zipped = str(products["deflated"])
    whole = run.run_translate(zipped, str(tmp_path / "whole.tif"), opts, ThreadedExecutor(2))
    resume_normally = interrupt_after_blocks(monkeypatch, 2)
    out = tmp_path / "out.tif"
    with pytest.raises(Interrupted):
        run.run_translate(zipped, str(out), opts, ThreadedExecutor(2))
    kept = WorkState(out).done_records()
    assert len(kept) >= 2 and leftovers(tmp_path) == []
    resume_normally()
    resumed = run.run_translate(zipped, str(out), opts, ThreadedExecutor(2), resume=True)
    assert resumed.evaluations == whole.evaluations - sum(r["n_eval"] for r in kept.values())
    assert leftovers(tmp_path) == []
    a, ma = io.read_raster(tmp_path / "whole.tif", masked=True)
    b, mb = io.read_raster(out, masked=True)
    assert np.array_equal(a, b) and np.array_equal(ma["mask"], mb["mask"])


def test_a_zip_packed_like_cdse_and_asf_since_2023_reads_in_place(products, tmp_path):
    """Since 2023-09-26 the Copernicus Data Space Ecosystem packs Sentinel-1 zips without directory entries,
    and ASF's zips store every member uncompressed (``zipinfo`` listings in ASFHyP3/hyp3-gamma#491 and
    johntruckenbrodt/spatialist#36). Such a zip is found, read in place (nothing to unpack: the
    measurements are stored) and gives the SAFE folder's pixels."""
    from sar2opt_geo.sentinel1.product import open_product

    safe_dir = products["safe"]
    z = tmp_path / (safe_dir.name[: -len(".SAFE")] + ".zip")
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(p for p in safe_dir.rglob("*") if p.is_file()):
            zf.write(path, f"{safe_dir.name}/{path.relative_to(safe_dir).as_posix()}")
    with zipfile.ZipFile(z) as zf:
        assert not any(n.endswith("/") for n in zf.namelist())
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    zipped = open_product(z, unpack_dir=tmp_path / "u")
    folder = open_product(safe_dir)
    assert zipped.polarisations == folder.polarisations == ("VV", "VH")
    assert all(b.measurement.startswith("/vsizip/") for b in zipped.bands) and not (tmp_path / "u").exists()
    for window in ((0, 260, 0, 300), (-7, 100, 250, 330)):
        want, got = folder.read_window(None, *window), zipped.read_window(None, *window)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_info_shows_the_files_block_shape_and_none_for_a_product(products, tmp_path):
    from sar2opt_geo.info import describe_scene

    v = sigma0(8, 60, 700)
    strips = write_geotiff(tmp_path / "s.tif", v, compress="deflate", nodata=0.0).path
    assert describe_scene(strips, 256, 64, 960, False)["block_shape"] == "700 x 2"  # GDAL's ~8 KB strips
    assert describe_scene(str(products["safe"]), 256, 64, 960, False)["block_shape"] is None


def test_a_copy_that_fails_is_a_one_line_error_leaving_nothing(
    tiny_model_path, tmp_path, capsys, monkeypatch
):
    """GDAL failing mid-copy (a corrupt strip, a full disk): ``translate`` exits 1 with one line naming the
    input and the cause, and leaves no output, no partial copy and no copy folder."""
    from conftest import run_cli
    from rasterio.errors import RasterioIOError

    strips = write_geotiff(tmp_path / "s.tif", sigma0(9, 80, 2100), compress="deflate", nodata=0.0).path

    def failing_copy(src, dst, **kw):
        open(dst, "wb").write(b"partial")
        raise RasterioIOError("TIFFReadEncodedStrip() failed.")

    monkeypatch.setattr(io.rasterio.shutil, "copy", failing_copy)
    args = ["translate", strips, tmp_path / "t.tif", "--model", tiny_model_path, "--backend", "torch"]
    code, _, err = run_cli(args, capsys)
    assert code == 1
    notice, error = err.splitlines()  # the notice that the copy started, then one error line
    assert notice.startswith(f"INFO: {strips}: copying its compressed strips")
    assert error.startswith(f"Error: {strips}: could not be copied into tiled form at ")
    assert error.endswith("TIFFReadEncodedStrip() failed.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]
