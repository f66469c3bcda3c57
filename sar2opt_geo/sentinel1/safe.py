"""Finding the files of a Sentinel-1 product, whatever form it comes in.

Accepted inputs: a ``NAME.SAFE`` folder (or any folder laid out like one), its ``manifest.safe``, the
downloaded ``NAME.zip`` holding one top-level ``NAME.SAFE/`` (read in place: XML through :mod:`zipfile`,
measurement tiffs stored uncompressed in the zip through GDAL's ``/vsizip/``; a *deflated* measurement member
is inflated once into a folder the caller owns (:meth:`Container.unpack`), because a deflate stream has no
random access and reading it in place decompresses whole image rows again for every window; GDAL's
``/vsizip/NAME.zip/NAME.SAFE/...`` notation is understood too), a measurement tiff inside a SAFE (only that
polarisation is opened; its sibling annotation is found), the renamed layouts of public cloud copies
(``measurement/iw-vv.tiff``, ``annotation/iw-vv.xml``, ``annotation/calibration/calibration-iw-vv.xml``,
``.../noise-iw-vv.xml``) and the ``-cog.tiff`` measurement names of COG SAFE products.

Files are matched by pattern (swath and polarisation in the file name) in ``measurement/``,
``annotation/`` and ``annotation/calibration/``; the manifest is read for the product type and
polarisation list but is not trusted for file names. Written by hand: GDAL's SAFE driver neither reads
the renamed layouts nor calibrates GRD (OSGeo/gdal#5826).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from zlib import error as zlib_error

from sar2opt_geo.errors import InputError, OutputError
from sar2opt_geo.io import human_bytes

log = logging.getLogger(__name__)

MEASUREMENT_DIR = "measurement"
ANNOTATION_DIR = "annotation"
CALIBRATION_DIR = "annotation/calibration"

#: ``[s1a-]iw-[grd-]vv[-20210809t...-001][-cog].tiff`` (stem without the kind prefix and extension).
_STEM = (
    r"(?:(?P<mission>s1[a-d])-)?(?P<swath>iw[1-3]?|ew[1-5]?|s[1-6]|wv[12]?|en|n[1-6])-"
    r"(?:(?P<ptype>grd|slc|ocn)-)?(?P<pol>hh|hv|vv|vh)(?P<rest>(?:-[0-9a-z]+)*?)"
)
MEASUREMENT_RE = re.compile(rf"^{_STEM}(?P<cog>-cog)?\.tiff?$", re.IGNORECASE)
ANNOTATION_RE = re.compile(rf"^{_STEM}\.xml$", re.IGNORECASE)
CALIBRATION_RE = re.compile(rf"^calibration-{_STEM}\.xml$", re.IGNORECASE)
NOISE_RE = re.compile(rf"^noise-{_STEM}\.xml$", re.IGNORECASE)

POLARISATIONS = ("VV", "VH", "HH", "HV")

UNPACK_CHUNK = 8 << 20  # bytes a read while inflating a member


@dataclass(frozen=True)
class Container:
    """A product's root: a directory, or a member prefix (``NAME.SAFE/``) inside a zip file."""

    root: str  # absolute directory or zip path
    prefix: str = ""  # member prefix inside a zip ("" for a directory)
    is_zip: bool = False

    def list(self) -> list[str]:
        """Relative POSIX paths of the files in the folders a product uses."""
        if self.is_zip:
            with _open_zip(self.root) as zf:
                names = zf.namelist()
            return [n[len(self.prefix) :] for n in names if n.startswith(self.prefix) and not n.endswith("/")]
        out = []
        for sub in ("", MEASUREMENT_DIR, ANNOTATION_DIR, CALIBRATION_DIR):
            d = os.path.join(self.root, sub)
            if not os.path.isdir(d):
                continue
            for entry in sorted(os.listdir(d)):
                if os.path.isfile(os.path.join(d, entry)):
                    out.append(f"{sub}/{entry}" if sub else entry)
        return out

    def read(self, rel: str) -> bytes:
        try:
            if self.is_zip:
                with _open_zip(self.root) as zf:
                    return zf.read(self.prefix + rel)
            with open(os.path.join(self.root, rel), "rb") as fh:
                return fh.read()
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise InputError(f"{self.display(rel)}: cannot be read ({exc})") from None

    def is_deflated(self, rel: str) -> bool:
        """Whether ``rel`` is a compressed zip member (a folder's files and stored members are not)."""
        if not self.is_zip:
            return False
        with _open_zip(self.root) as zf:
            try:
                return zf.getinfo(self.prefix + rel).compress_type != zipfile.ZIP_STORED
            except KeyError:
                raise InputError(f"{self.display(rel)}: no such member") from None

    def member_bytes(self, rels: list[str]) -> int:
        """Uncompressed bytes of the zip members ``rels`` (0 for a folder or none)."""
        if not self.is_zip or not rels:
            return 0
        with _open_zip(self.root) as zf:
            return sum(zf.getinfo(self.prefix + rel).file_size for rel in rels)

    def unpack(self, rels: list[str], folder: str | os.PathLike) -> list[str]:
        """Inflate the zip members ``rels`` into ``folder`` (created; the caller removes it), one thread each
        (zlib releases the GIL: two polarisations take the time of one on two cores), and return the files'
        paths. Each member's CRC-32 is checked as it streams (:mod:`zipfile`); a file appears under its
        final name only once complete. The caller checks the room first (:func:`sar2opt_geo.io.room_for`)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with _open_zip(self.root) as zf:
            infos = [zf.getinfo(self.prefix + rel) for rel in rels]
        need = sum(i.file_size for i in infos)
        log.info(
            "unpacking %d deflated measurement tiff(s) of %s (%s) beside the output, once: read in "
            "place, each would be decompressed again for every window",
            len(rels),
            self.root,
            human_bytes(need),
            extra={"notice": True},
        )
        t0 = time.perf_counter()
        dests = [str(folder / PurePosixPath(rel).name) for rel in rels]
        with ThreadPoolExecutor(max_workers=max(1, min(len(rels), os.cpu_count() or 1))) as pool:
            list(pool.map(self._inflate, rels, infos, dests))  # re-raises the first member's error
        log.info(
            "unpacked %d deflated measurement tiff(s) of %s into %s in %.1f s",
            len(rels),
            self.root,
            folder,
            time.perf_counter() - t0,
        )
        return dests

    def _inflate(self, rel: str, info: zipfile.ZipInfo, dest: str) -> None:
        part = dest + ".part"
        try:
            with _open_zip(self.root) as zf, zf.open(info) as src:
                try:
                    out = open(part, "wb")
                except OSError as exc:
                    raise OutputError(f"{part}: cannot be written ({exc})") from None
                with out:
                    while True:
                        try:
                            chunk = src.read(UNPACK_CHUNK)
                        except (OSError, zipfile.BadZipFile, EOFError, zlib_error) as exc:
                            raise InputError(f"{self.display(rel)}: cannot be unpacked ({exc})") from None
                        if not chunk:
                            break
                        try:
                            out.write(chunk)
                        except OSError as exc:
                            raise OutputError(f"{part}: cannot be written ({exc})") from None
            os.replace(part, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)

    def gdal_path(self, rel: str) -> str:
        if self.is_zip:
            return f"/vsizip/{self.root}/{self.prefix}{rel}"
        return os.path.join(self.root, rel)

    def display(self, rel: str = "") -> str:
        if self.is_zip:
            return f"{self.root}:{self.prefix}{rel}"
        return os.path.join(self.root, rel) if rel else self.root

    @property
    def name(self) -> str:
        return PurePosixPath(self.prefix.rstrip("/")).name if self.is_zip else Path(self.root).name


def _open_zip(path: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable zip file ({exc})") from None


@dataclass(frozen=True)
class BandFiles:
    polarisation: str
    measurement: str | None  # relative paths inside the container
    annotation: str | None
    calibration: str | None
    noise: str | None


@dataclass(frozen=True)
class ProductFiles:
    container: Container
    manifest: str | None
    bands: tuple[BandFiles, ...]
    requested: str  # the path the user gave
    only: tuple[str, ...] = field(default=())  # polarisations restricted by a measurement-tiff input


def locate(path: str | os.PathLike) -> tuple[Container, str | None]:
    """The container of the product at ``path`` and the polarisation a measurement tiff input restricts
    the product to (None for the whole product)."""
    if str(path).startswith("/vsizip/"):
        return _locate_vsizip(str(path))
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file or directory")
    p = p.resolve()
    if p.is_dir():
        return Container(str(p)), None
    low = p.name.lower()
    if low == "manifest.safe":
        return Container(str(p.parent)), None
    if low.endswith(".zip"):
        with _open_zip(str(p)) as zf:
            tops = sorted({n.split("/", 1)[0] for n in zf.namelist() if "/" in n})
        safes = [t for t in tops if t.upper().endswith(".SAFE")]
        if not safes:
            raise InputError(
                f"{path}: zip holds no NAME.SAFE/ folder (top level: {', '.join(tops) or 'empty'})"
            )
        if len(safes) > 1:
            raise InputError(f"{path}: zip holds {len(safes)} SAFE folders; give one product per zip")
        return Container(str(p), prefix=safes[0] + "/", is_zip=True), None
    m = MEASUREMENT_RE.match(p.name)
    if m and p.parent.name.lower() == MEASUREMENT_DIR:
        return Container(str(p.parent.parent)), m.group("pol").upper()
    raise InputError(
        f"{path}: not a Sentinel-1 product (expected a SAFE folder, its manifest.safe, the product .zip or a "
        "measurement tiff inside a SAFE)"
    )


def _locate_vsizip(path: str) -> tuple[Container, str | None]:
    """``/vsizip/PRODUCT.zip[/NAME.SAFE[/manifest.safe | /measurement/FILE.tiff]]`` (GDAL's notation)."""
    m = re.match(r"^/vsizip/(.+?\.zip)(?:/(.*))?$", path, re.IGNORECASE)
    if m is None:
        raise InputError(f"{path}: not a /vsizip/ path to a Sentinel-1 product .zip")
    zip_path, member = m.group(1), (m.group(2) or "").strip("/")
    if not os.path.isfile(zip_path):
        raise InputError(f"{zip_path}: no such file")
    container, _ = locate(zip_path)
    if not member:
        return container, None
    parts = member.split("/")
    if parts[0] + "/" != container.prefix:
        raise InputError(f"{path}: the zip holds {container.prefix.rstrip('/')}, not {parts[0]}")
    rest = [q.lower() for q in parts[1:]]
    if rest in ([], ["manifest.safe"]):
        return container, None
    mm = MEASUREMENT_RE.match(parts[-1])
    if len(rest) == 2 and rest[0] == MEASUREMENT_DIR and mm:
        if member not in _names(zip_path):
            raise InputError(f"{path}: no such member in the zip")
        return container, mm.group("pol").upper()
    raise InputError(f"{path}: not a Sentinel-1 product member (SAFE folder, manifest or measurement tiff)")


def _names(zip_path: str) -> list[str]:
    with _open_zip(zip_path) as zf:
        return zf.namelist()


def discover(path: str | os.PathLike) -> ProductFiles:
    container, only = locate(path)
    files = container.list()
    manifest = "manifest.safe" if "manifest.safe" in files else None
    found: dict[str, dict[str, list[str]]] = {}
    patterns = {
        "measurement": (MEASUREMENT_DIR, MEASUREMENT_RE),
        "annotation": (ANNOTATION_DIR, ANNOTATION_RE),
        "calibration": (CALIBRATION_DIR, CALIBRATION_RE),
        "noise": (CALIBRATION_DIR, NOISE_RE),
    }
    for rel in files:
        parent, _, base = rel.rpartition("/")
        for kind, (folder, rx) in patterns.items():
            if parent.lower() != folder:
                continue
            m = rx.match(base)
            if m:
                found.setdefault(m.group("pol").upper(), {}).setdefault(kind, []).append(rel)
    bands = []
    for pol in POLARISATIONS:
        kinds = found.get(pol)
        if not kinds:
            continue
        if only and pol != only:
            continue
        bands.append(
            BandFiles(
                polarisation=pol,
                measurement=_pick(kinds.get("measurement")),
                annotation=_pick(kinds.get("annotation")),
                calibration=_pick(kinds.get("calibration")),
                noise=_pick(kinds.get("noise")),
            )
        )
    return ProductFiles(
        container=container,
        manifest=manifest,
        bands=tuple(bands),
        requested=str(path),
        only=(only,) if only else (),
    )


def _pick(items: list[str] | None) -> str | None:
    """One file per kind and polarisation (GRD); several (SLC swaths) keep the first, sorted, and the product
    type check refuses such products anyway."""
    if not items:
        return None
    return sorted(items)[0]
