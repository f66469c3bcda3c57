"""The scenes the web app serves, found once at start-up and addressed by identifier only.

A scene groups up to three layers on one map: ``sar`` (the input), ``translated`` (a model output) and
``optical`` (a truth image). Sources:

- a folder holding ``sar.tif`` (a ``demo`` / ``synth scene`` folder): one scene with ``translated.tif`` and
  ``optical.tif`` when present;
- any other ``*.tif`` / ``*.tiff`` under the given paths: one scene of one layer (SAR for 1–2 band or float
  rasters, RGB otherwise; an output tagged by ``translate`` is a ``translated`` layer);
- the scenes of job specs: the input as ``sar``, the job's output as ``translated`` (shown once it exists);
- translated uploads of this session (added by the app).

Hidden folders (work state ``.OUT.work``) and temporary ``*.partial*`` files are skipped. Identifiers are a
slug of the name plus a hash of the path; requests name scenes and layers by identifier and the catalogue
answers with its own paths, so no path from a request is ever opened.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from sar2opt_geo.serve import tiles

log = logging.getLogger(__name__)

LAYER_ORDER = ("sar", "translated", "optical")
LAYER_LABELS = {"sar": "SAR input", "translated": "translated", "optical": "optical truth"}
RASTER_SUFFIXES = (".tif", ".tiff")


@dataclass
class Layer:
    name: str  # sar | translated | optical
    path: str
    kind: str  # sar | rgb
    facts: tiles.RasterFacts | None = None  # None: the file does not exist yet (job output)
    #: A COG copy with overviews in the app's temporary folder, made at start-up for a large SAR input
    #: without overviews (tiles then come from it; point values still from ``path``).
    tile_path: str | None = None
    overviews: str = "none"  # without overviews in the file: none | building | ready | failed

    @property
    def tiles_from(self) -> str:
        return self.tile_path or self.path

    def ready(self) -> bool:
        return self.facts is not None or self.refresh()

    def refresh(self) -> bool:
        """A job output that did not exist at start-up: read its facts once it does."""
        if self.facts is None and os.path.isfile(self.path):
            try:
                self.facts = tiles.raster_facts(self.path)
            except ValueError:
                return False
        return self.facts is not None


@dataclass
class Scene:
    id: str
    name: str
    source: str  # folder | file | job | upload
    layers: dict[str, Layer] = field(default_factory=dict)

    def describe(self) -> dict:
        layers = []
        for name in LAYER_ORDER:
            lay = self.layers.get(name)
            if lay is None or not lay.ready():
                continue
            f = lay.facts
            layers.append(
                {
                    "name": name,
                    "label": LAYER_LABELS[name],
                    "kind": lay.kind,
                    "bands": list(f.band_names),
                    "count": f.count,
                    "dtype": f.dtype,
                    "width": f.width,
                    "height": f.height,
                    "minzoom": f.minzoom,
                    "maxzoom": f.maxzoom,
                    "bounds": list(f.bounds_wgs84),
                    "gcps": f.gcps,
                    "overviews": "file" if f.overviews else lay.overviews,
                }
            )
        bounds = None
        if layers:
            bs = [lay["bounds"] for lay in layers]
            bounds = [
                min(b[0] for b in bs),
                min(b[1] for b in bs),
                max(b[2] for b in bs),
                max(b[3] for b in bs),
            ]
        return {"id": self.id, "name": self.name, "source": self.source, "layers": layers, "bounds": bounds}


def scene_id(name: str, path: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "scene"
    return f"{slug}-{hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]}"


def _kind(facts: tiles.RasterFacts) -> str:
    if facts.count >= 3 and facts.dtype == "uint8":
        return "rgb"
    return "sar"


class Catalog:
    """Scenes by identifier (thread-safe: uploads add scenes while tiles are served)."""

    def __init__(self):
        self._scenes: dict[str, Scene] = {}
        self._lock = threading.Lock()
        self.skipped: list[str] = []  # "path: reason" for rasters that cannot be mapped

    def get(self, sid: str) -> Scene | None:
        with self._lock:
            return self._scenes.get(sid)

    def all(self) -> list[Scene]:
        with self._lock:
            return list(self._scenes.values())

    def add(self, scene: Scene) -> Scene:
        with self._lock:
            self._scenes[scene.id] = scene
        return scene

    def _layer(self, name: str, path: str, kind: str | None = None, must_exist: bool = True) -> Layer | None:
        if not os.path.isfile(path):
            return None if must_exist else Layer(name, path, kind or "rgb", None)
        try:
            facts = tiles.raster_facts(path)
            kind = kind or _kind(facts)
            if kind == "sar":  # what translate refuses (a bare integer raster) is refused here too
                tiles.check_sar_layer(path, facts)
        except ValueError as exc:
            self.skipped.append(f"{path}: {exc}")
            log.warning("skipping %s: %s", path, exc)
            return None
        return Layer(name, path, kind, facts)

    def add_folder_scene(self, folder: Path, source: str = "folder") -> Scene | None:
        layers = {}
        for name in LAYER_ORDER:
            lay = self._layer(name, str(folder / f"{name}.tif"), "sar" if name == "sar" else "rgb")
            if lay is not None:
                layers[name] = lay
        if not layers:
            return None
        return self.add(Scene(scene_id(folder.name, str(folder)), folder.name, source, layers))

    def add_file_scene(self, path: Path) -> Scene | None:
        lay = self._layer("sar", str(path))
        if lay is None:
            return None
        if lay.kind == "rgb":
            lay.name = "translated" if "SAR2OPT_MODEL" in lay.facts.tags else "optical"
        return self.add(Scene(scene_id(path.stem, str(path)), path.name, "file", {lay.name: lay}))

    def scan(self, paths) -> None:
        """Add the scenes under ``paths`` (files or folders, searched recursively)."""
        for p in paths:
            p = Path(p)
            if p.is_file():
                self.add_file_scene(p)
                continue
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                names = {f.lower() for f in files}
                root_p = Path(root)
                grouped = set()
                if "sar.tif" in names:
                    self.add_folder_scene(root_p)
                    grouped = {f"{n}.tif" for n in LAYER_ORDER}
                for f in sorted(files):
                    if f.startswith(".") or ".partial" in f or f.lower() in grouped:
                        continue
                    if f.lower().endswith(RASTER_SUFFIXES):
                        self.add_file_scene(root_p / f)

    def add_job(self, spec) -> dict[str, str]:
        """One scene per scene of a job spec (input + output once written); returns ``{job key: id}``."""
        ids = {}
        for sc in spec.scenes():
            layers = {}
            if sc.options.input_scale != "auto":  # read as the job's translate reads it
                tiles.declare_scale(sc.input, sc.options.input_scale, sc.options.calibration_constant)
            sar = self._layer("sar", sc.input, "sar")
            if sar is not None:
                layers["sar"] = sar
            out = None
            if sc.output.lower().endswith(RASTER_SUFFIXES):  # a Zarr output cannot be tiled here
                out = self._layer("translated", sc.output, "rgb", must_exist=False)
            if out is not None:
                layers["translated"] = out
            scene = self.add(Scene(scene_id(Path(sc.key).stem, sc.output), sc.key, "job", layers))
            ids[sc.key] = scene.id
        return ids
