"""Parsing of Sentinel-1 SAFE XML: ``manifest.safe`` and the product annotation (image size, times, pass,
pixel spacing, geolocation grid).

Written by hand on the standard library's ElementTree: the only maintained parser of these files,
xarray-sentinel, validates against bundled schemas (slow on 2 MB annotations), reads only SAFE folders and
fails on some real noise files; we need a handful of fields, found by local element name so that the
namespaced manifest and the un-namespaced annotations are read the same way. Every malformed file is an
:class:`~sar2opt_geo.errors.InputError` one-liner naming the file.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from sar2opt_geo.errors import InputError

#: Product types the reader accepts; the others are refused naming their type.
READABLE_PRODUCT_TYPES = ("GRD",)


def local(tag: str) -> str:
    """Element name without its ``{namespace}``."""
    return tag.rsplit("}", 1)[-1]


def parse_xml(data: bytes, name: str) -> ET.Element:
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise InputError(f"{name}: corrupt XML ({exc})") from None


def find(root: ET.Element, path: str) -> ET.Element | None:
    """First element along a ``/``-separated path of local names (any depth for a leading ``//``)."""
    parts = [p for p in path.split("/") if p]
    nodes = [root]
    deep = path.startswith("//")
    for i, part in enumerate(parts):
        nxt = []
        for node in nodes:
            children = node.iter() if (deep and i == 0) else node
            nxt.extend(c for c in children if local(c.tag) == part)
        if not nxt:
            return None
        nodes = nxt
    return nodes[0]


def findall(root: ET.Element, path: str) -> list[ET.Element]:
    """All elements at the end of a ``/``-separated path of local names (relative to ``root``)."""
    nodes = [root]
    for part in [p for p in path.split("/") if p]:
        nodes = [c for node in nodes for c in node if local(c.tag) == part]
    return nodes


def text(root: ET.Element, path: str, name: str, *, required: bool = True) -> str | None:
    el = find(root, path)
    if el is None or el.text is None or not el.text.strip():
        if required:
            raise InputError(f"{name}: missing element {path.strip('/')}")
        return None
    return el.text.strip()


def number(root: ET.Element, path: str, name: str, kind=float):
    raw = text(root, path, name)
    try:
        return kind(raw)
    except ValueError:
        raise InputError(f"{name}: element {path.strip('/')} is not a number ({raw!r})") from None


def array(el: ET.Element | None, name: str, what: str, dtype=np.float64) -> np.ndarray:
    """A whitespace-separated number list (checked against its ``count`` attribute when present)."""
    if el is None:
        raise InputError(f"{name}: missing element {what}")
    try:
        values = np.array((el.text or "").split(), dtype=dtype)
    except ValueError:
        raise InputError(f"{name}: element {what} holds a value that is not a number") from None
    count = el.get("count")
    if count is not None and count.isdigit() and int(count) != values.size:
        raise InputError(f"{name}: element {what} has {values.size} values but count={count}")
    if values.size == 0:
        raise InputError(f"{name}: element {what} is empty")
    return values


# ------------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class ManifestInfo:
    mission: str | None  # "S1A" ...
    mode: str | None  # "IW", "EW", "SM", "S1".."S6", "WV"
    product_type: str | None  # "GRD", "SLC", "RAW", "OCN"
    product_class: str | None
    pass_direction: str | None  # "ASCENDING" / "DESCENDING"
    polarisations: tuple[str, ...]
    ipf_version: str | None
    start_time: str | None
    stop_time: str | None


def parse_manifest(data: bytes, name: str) -> ManifestInfo:
    root = parse_xml(data, name)
    if local(root.tag) != "XFDU":
        raise InputError(f"{name}: not a SAFE manifest (root element {local(root.tag)!r})")
    number_el = find(root, "//platform/number")
    family = find(root, "//platform/familyName")
    mission = None
    if number_el is not None and number_el.text and family is not None and (family.text or "").strip():
        mission = "S1" + number_el.text.strip().upper()
    ipf = None
    for el in root.iter():
        if local(el.tag) == "software" and "IPF" in (el.get("name") or "") and el.get("version"):
            ipf = el.get("version")
            break

    def t(path):
        el = find(root, path)
        return el.text.strip() if el is not None and el.text and el.text.strip() else None

    pols = tuple(
        (el.text or "").strip().upper()
        for el in root.iter()
        if local(el.tag) == "transmitterReceiverPolarisation" and (el.text or "").strip()
    )
    pass_dir = t("//orbitProperties/pass")
    return ManifestInfo(
        mission=mission,
        mode=t("//instrumentMode/mode"),
        product_type=t("//standAloneProductInformation/productType"),
        product_class=t("//standAloneProductInformation/productClass"),
        pass_direction=pass_dir.upper() if pass_dir else None,
        polarisations=pols,
        ipf_version=ipf,
        start_time=t("//acquisitionPeriod/startTime"),
        stop_time=t("//acquisitionPeriod/stopTime"),
    )


#: ``S1A_IW_GRDH_1SDV_...``: mission, mode, product type, resolution class.
SAFE_NAME = re.compile(
    r"^(?P<mission>S1[A-D])_(?P<mode>IW|EW|WV|S[1-6]|EN|N[1-6]|Z[1-6IEW])_(?P<type>GRD|SLC|RAW|OCN|ETA)"
    r"(?P<res>[HMF_])_(?P<level>[0-2])(?P<cls>[SAN])(?P<pol>SH|SV|DH|DV|HH|HV|VV|VH)_",
    re.IGNORECASE,
)


def check_product_type(product_type: str | None, mode: str | None, where: str) -> None:
    if product_type is None:
        return
    ptype = product_type.strip().upper()
    if ptype not in READABLE_PRODUCT_TYPES:
        what = {
            "SLC": "complex SLC",
            "RAW": "level-0 RAW",
            "OCN": "level-2 OCN",
        }.get(ptype, ptype)
        raise InputError(
            f"{where}: Sentinel-1 {what} product{f' ({mode})' if mode else ''} is not supported; "
            "only GRD products (IW/EW/SM, GRDH/GRDM) can be read"
        )


# ------------------------------------------------------------------------------------- image annotation


@dataclass(frozen=True, eq=False)
class ImageAnnotation:
    """The fields of one polarisation's product annotation that the reader uses."""

    mission: str
    product_type: str
    mode: str
    swath: str
    polarisation: str
    pass_direction: str  # "ASCENDING" / "DESCENDING"
    width: int
    height: int
    range_spacing: float
    azimuth_spacing: float
    first_line_time: str
    last_line_time: str
    azimuth_time_interval: float
    noise_removed: bool  # thermalNoiseCorrectionPerformed
    geolocation: np.ndarray  # (n, 6): line, pixel, longitude, latitude, height, incidence angle


def parse_annotation(data: bytes, name: str) -> ImageAnnotation:
    root = parse_xml(data, name)
    if local(root.tag) != "product":
        raise InputError(f"{name}: not a Sentinel-1 product annotation (root element {local(root.tag)!r})")
    header = find(root, "adsHeader")
    if header is None:
        raise InputError(f"{name}: missing element adsHeader")
    product_type = text(header, "productType", name)
    mode = text(header, "mode", name)
    check_product_type(product_type, mode, name)
    info = find(root, "imageAnnotation/imageInformation")
    if info is None:
        raise InputError(f"{name}: missing element imageAnnotation/imageInformation")
    pass_dir = text(root, "generalAnnotation/productInformation/pass", name).upper()
    width = number(info, "numberOfSamples", name, int)
    height = number(info, "numberOfLines", name, int)
    if width < 1 or height < 1:
        raise InputError(f"{name}: image size {width} x {height} is empty")
    noise_done = text(
        root, "imageAnnotation/processingInformation/thermalNoiseCorrectionPerformed", name, required=False
    )
    points = findall(root, "geolocationGrid/geolocationGridPointList/geolocationGridPoint")
    if not points:
        raise InputError(f"{name}: no geolocationGrid points")
    grid = np.empty((len(points), 6), dtype=np.float64)
    for i, p in enumerate(points):
        grid[i] = [
            number(p, "line", name),
            number(p, "pixel", name),
            number(p, "longitude", name),
            number(p, "latitude", name),
            number(p, "height", name),
            number(p, "incidenceAngle", name) if find(p, "incidenceAngle") is not None else np.nan,
        ]
    return ImageAnnotation(
        mission=text(header, "missionId", name).upper(),
        product_type=product_type.upper(),
        mode=mode.upper(),
        swath=text(header, "swath", name).upper(),
        polarisation=text(header, "polarisation", name).upper(),
        pass_direction=pass_dir,
        width=width,
        height=height,
        range_spacing=number(info, "rangePixelSpacing", name),
        azimuth_spacing=number(info, "azimuthPixelSpacing", name),
        first_line_time=text(info, "productFirstLineUtcTime", name),
        last_line_time=text(info, "productLastLineUtcTime", name),
        azimuth_time_interval=number(info, "azimuthTimeInterval", name),
        noise_removed=(noise_done or "false").lower() == "true",
        geolocation=grid,
    )
