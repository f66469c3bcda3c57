"""Every refusal of the Sentinel-1 reader is a one-line InputError / UsageError naming the problem."""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import replace

import pytest

from sar2opt_geo.errors import InputError, UsageError
from sar2opt_geo.sentinel1 import open_product
from sar2opt_geo.sentinel1.synth import ProductSpec, write_product

SPEC = ProductSpec(width=96, height=80, seed=11)


@pytest.fixture(scope="module")
def safe(tmp_path_factory):
    return write_product(tmp_path_factory.mktemp("s1err"), SPEC, truth=False).safe


@pytest.fixture
def copy(safe, tmp_path):
    def make(name=None):
        dst = tmp_path / (name or safe.name)
        shutil.copytree(safe, dst)
        return dst

    return make


def _refused(path, *words, error=InputError, **kw):
    with pytest.raises(error) as exc:
        open_product(path, **kw)
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg
    for w in words:
        assert w in msg, msg
    return msg


def test_missing_annotation(copy):
    p = copy()
    for f in (p / "annotation").glob("*-vh-*.xml"):
        f.unlink()
    _refused(p, "no product annotation for VH")


def test_missing_calibration(copy):
    p = copy()
    for f in (p / "annotation" / "calibration").glob("calibration-*-vv-*.xml"):
        f.unlink()
    _refused(p, "no calibration annotation for VV")


def test_missing_measurement(copy):
    p = copy()
    for f in (p / "measurement").glob("*-vh-*.tiff"):
        f.unlink()
    _refused(p, "no measurement tiff for VH")
    assert open_product(p, metadata_only=True).polarisations == ("VV", "VH")


def test_slc_named_product(copy):
    p = copy(SPEC.name.replace("_GRDH_1S", "_SLC__1S"))
    _refused(p, "SLC", "only GRD")


def test_slc_in_manifest_and_annotation(copy):
    p = copy("product_without_a_safe_name")
    m = p / "manifest.safe"
    m.write_text(m.read_text().replace("<s1sarl1:productType>GRD<", "<s1sarl1:productType>SLC<"))
    _refused(p, "complex SLC product (IW)")
    m.write_text(m.read_text().replace("<s1sarl1:productType>SLC<", "<s1sarl1:productType>GRD<"))
    (ann,) = list((p / "annotation").glob("*-vv-*.xml"))
    ann.write_text(ann.read_text().replace("<productType>GRD<", "<productType>SLC<"))
    _refused(p, "SLC", ann.name)


def test_raw_product(tmp_path, safe):
    raw = tmp_path / "S1A_IW_RAW__0SDV_20230517T054102_20230517T054103_048000_05C0DE_1234.SAFE"
    raw.mkdir()
    text = (safe / "manifest.safe").read_text().replace(">GRD<", ">RAW<")
    (raw / "manifest.safe").write_text(text)
    _refused(raw, "level-0 RAW product (IW)")
    _refused(raw / "manifest.safe", "RAW")


@pytest.mark.parametrize("which", ["annotation", "calibration", "noise", "manifest"])
def test_corrupt_xml(copy, which):
    p = copy()
    target = {
        "annotation": lambda: next((p / "annotation").glob("*-vv-*.xml")),
        "calibration": lambda: next((p / "annotation" / "calibration").glob("calibration-*-vv-*.xml")),
        "noise": lambda: next((p / "annotation" / "calibration").glob("noise-*-vv-*.xml")),
        "manifest": lambda: p / "manifest.safe",
    }[which]()
    target.write_text(target.read_text()[:700])
    _refused(p, "corrupt XML", target.name)


def test_lut_values_that_are_not_numbers(copy):
    p = copy()
    cal = next((p / "annotation" / "calibration").glob("calibration-*-vv-*.xml"))
    text = cal.read_text()
    start = text.index("<sigmaNought")
    cal.write_text(text[: start + 30] + "x" + text[start + 31 :])
    _refused(p, "sigmaNought", cal.name)


def test_zip_without_safe(tmp_path):
    z = tmp_path / "download.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("readme.txt", "nothing here")
        zf.writestr("folder/file.xml", "<a/>")
    _refused(z, "zip holds no NAME.SAFE/ folder", "folder")


def test_not_a_zip_and_not_a_product(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"not a zip at all")
    _refused(bad, "not a readable zip file")
    other = tmp_path / "scene.tif"
    other.write_bytes(b"")
    _refused(other, "not a Sentinel-1 product")
    _refused(tmp_path / "missing.SAFE", "no such file or directory")
    empty = tmp_path / "empty.SAFE"
    empty.mkdir()
    _refused(empty, "no Sentinel-1 measurement or annotation files")


def test_measurement_of_the_wrong_size(copy, tmp_path):
    other = write_product(tmp_path / "other", replace(SPEC, width=100), truth=False).safe
    p = copy()
    (dst,) = list((p / "measurement").glob("*-vv-*.tiff"))
    (src,) = list((other / "measurement").glob("*-vv-*.tiff"))
    shutil.copy(src, dst)
    _refused(p, "100 x 80", "96 x 80")


def test_bad_band_calibration_and_missing_noise(copy):
    p = copy()
    prod = open_product(p)
    with pytest.raises(UsageError, match="no 'HH' band"):
        prod.read_window(("HH",), 0, 10, 0, 10)
    with pytest.raises(UsageError, match="out of range 1..2"):
        prod.read_window((3,), 0, 10, 0, 10)
    with pytest.raises(UsageError, match="unknown calibration 'sigma1'"):
        prod.read_window(None, 0, 10, 0, 10, calibration="sigma1")
    with pytest.raises(UsageError, match="empty window"):
        prod.read_window(None, 5, 5, 0, 10)
    for f in (p / "annotation" / "calibration").glob("noise-*.xml"):
        f.unlink()
    prod = open_product(p)
    with pytest.raises(InputError, match="no noise annotation for VV; read it without denoising") as exc:
        prod.read_window(("VV",), 0, 10, 0, 10)
    assert "\n" not in str(exc.value)
    data, valid = prod.read_window(("VV",), 0, 10, 0, 10, denoise=False)
    assert data.shape == (1, 10, 10) and valid.any()


def test_every_dropped_or_garbled_element_reads_or_fails_in_one_line(tmp_path):
    """Drop, or replace the text of, each element kind of every XML file in turn: the product either
    still reads or is refused with a one-line error — never another exception."""
    import re

    from sar2opt_geo.errors import Sar2OptError

    safe = write_product(tmp_path, replace(SPEC, polarisations=("VV",)), truth=False).safe
    outcomes = {"read": 0, "refused": 0}
    for path in sorted(p for p in safe.rglob("*") if p.suffix in (".xml", ".safe")):
        original = path.read_text()
        for tag in sorted(set(re.findall(r"<([A-Za-z0-9:]+)[ >]", original))):
            dropped = re.sub(rf"<{tag}[ >].*?</{tag}>", "", original, count=1, flags=re.S)
            garbled = re.sub(rf"(<{tag}(?: [^>]*)?>)([^<]+)(</{tag}>)", r"\1abc\3", original, count=1)
            for variant in {dropped, garbled} - {original}:
                path.write_text(variant)
                try:
                    prod = open_product(safe)
                    prod.read_window(None, 0, 80, 0, 96)
                    prod.read_window(None, 0, 80, 0, 96, "gamma0", False)
                    outcomes["read"] += 1
                except Sar2OptError as exc:
                    assert "\n" not in str(exc), (path.name, tag, str(exc))
                    outcomes["refused"] += 1
        path.write_text(original)
    assert outcomes["refused"] > 50 and outcomes["read"] > 50


def test_vsizip_paths_that_name_no_product_member(safe, tmp_path):
    z = tmp_path / "p.zip"
    shutil.make_archive(str(z.with_suffix("")), "zip", safe.parent, safe.name)
    _refused(f"/vsizip/{tmp_path}/missing.zip/x", "no such file")
    _refused(f"/vsizip/{z}/OTHER.SAFE", "not OTHER.SAFE")
    _refused(f"/vsizip/{z}/{safe.name}/annotation/x.xml", "not a Sentinel-1 product member")
    _refused(f"/vsizip/{z}/{safe.name}/measurement/s1a-iw-grd-hh-x.tiff", "no such member")
    assert open_product(f"/vsizip/{z}/{safe.name}").polarisations == ("VV", "VH")


def test_annotation_of_another_polarisation(copy):
    p = copy()
    (ann,) = list((p / "annotation").glob("*-vh-*.xml"))
    ann.write_text(ann.read_text().replace("<polarisation>VH<", "<polarisation>HH<"))
    _refused(p, "annotation of HH under a VH file name")
