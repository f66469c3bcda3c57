"""A product zip whose measurement tiffs are *deflated* (issue #15): each such member is inflated once into a
hidden folder beside the output and read from there — the same pixels as the stored zip or the SAFE folder —
and the folder is gone when the run ends, however it ends. Stored members are still read in place."""

from __future__ import annotations

import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio

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
    return sorted(p.name for p in folder.iterdir() if ".unpack-" in p.name)


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


def test_unpack_refuses_when_the_disk_lacks_room(products, tmp_path, monkeypatch):
    container, _ = safe.locate(products["deflated"])
    member = measurement_members(products["deflated"])[0]
    rel = member.filename[len(container.prefix) :]
    total = 10**12
    room = SimpleNamespace(
        total=total, used=total, free=member.file_size
    )  # the member fits, the headroom not
    monkeypatch.setattr(safe.shutil, "disk_usage", lambda p: room)
    with pytest.raises(OutputError, match=r"GB needed to unpack the deflated measurement\(s\) of .* GB free"):
        container.unpack([rel], tmp_path / "u")
    assert list((tmp_path / "u").iterdir()) == []


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
            assert all(".t.tif.unpack-" in p or ".s.tif.unpack-" in p for p in read_paths)
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
