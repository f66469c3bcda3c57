"""Translate a chip or a small scene from the web app: uploads, samples, models, a worker thread.

An upload (PNG/JPEG/TIFF SAR chip or a small GeoTIFF) or a shipped sample goes through the same machinery as
``sar2opt-geo translate`` (:func:`sar2opt_geo.run.run_translate`), in a single worker thread of its own
so tile requests keep being answered while a translation runs. Files live in the app's temporary folder,
under names the app chooses (the uploaded file name is only displayed, never used as a path).

8-bit chips (PNG/JPEG, or an ungeoreferenced 8-bit TIFF) are translated, in pixel space, as the single-band
8-bit image of their grey levels shown as ``input.png`` (the upload's own pixels for a single-band chip or a
grey picture saved as RGB; a colour picture, which ``translate`` refuses as probably not SAR, is averaged).
Other TIFFs are translated as they are. Either way the input scale is decided by ``translate``'s own code
(``--input-scale auto``, :func:`sar2opt_geo.source.decide_input_scale`): an 8-bit chip holds the 8-bit levels
of the model's radiometry (``levels``), so a chip gives the pixels of ``sar2opt-geo translate CHIP OUT.tif``.

Written by hand here: only the upload checks (size, magic bytes) and the job bookkeeping.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sar2opt_geo import io
from sar2opt_geo.defaults import BUNDLED_DUAL_POL_MODEL, BUNDLED_MODEL, FILTER_WINDOW, SEED
from sar2opt_geo.errors import Sar2OptError
from sar2opt_geo.serve import MAX_UPLOAD_MB

log = logging.getLogger(__name__)

#: Largest upload accepted (bytes).
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 2**20
#: Largest chip side (PNG/JPEG or 8-bit TIFF) in pixels.
MAX_CHIP_SIDE = 1024
#: Largest GeoTIFF translated in the app (pixels); beyond that, use `sar2opt-geo translate`.
MAX_SCENE_PIXELS = 2048 * 2048
#: Shipped sample chips (synthetic Sentinel-1-like, made by :func:`sar2opt_geo.synth.write_pairs`).
SAMPLE_COUNT = 4
#: "model": what the checkpoint declares; "none": nothing; "filter": a Lee 7×7 speckle filter (plus what the
#: checkpoint declares); "sar2optical": the SAR2Optical profile.
PREPROCESSING = ("model", "none", "filter", "sar2optical")


class Refused(Exception):
    """A request the app refuses: ``status`` (400, 404, 413) and a one-line message for the page."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def sniff(data: bytes) -> str:
    """``png``, ``jpeg`` or ``tiff`` from the magic bytes; :class:`Refused` otherwise."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    raise Refused("the upload is not a PNG, JPEG or TIFF image (SAR chip or GeoTIFF expected)")


def _display_name(name: str | None) -> str:
    base = os.path.basename((name or "upload").replace("\\", "/"))
    return re.sub(r"[^\w.\- ]+", "_", base)[:80] or "upload"


# ------------------------------------------------------------------------------------------------ models


@dataclass
class ModelEntry:
    id: str
    label: str
    path: str
    kind: str  # checkpoint | onnx | lora
    meta: dict


class ModelCatalog:
    """The bundled model plus the checkpoints, ONNX exports and LoRA adapters found in ``--models``."""

    def __init__(self, models_dir: str | None = None):
        from sar2opt_geo.plan import read_model_metadata

        self.entries: dict[str, ModelEntry] = {}
        self.skipped: list[str] = []
        if BUNDLED_MODEL.exists():
            meta = read_model_metadata(BUNDLED_MODEL).to_dict()
            label = f"bundled ({meta.get('name')})"
            if BUNDLED_DUAL_POL_MODEL.exists():  # translate swaps it in for scenes with VV and VH bands
                label = "bundled (VV; its dual-pol twin for VV + VH scenes)"
            self.entries["bundled"] = ModelEntry("bundled", label, str(BUNDLED_MODEL), "checkpoint", meta)
        if models_dir:
            for p in sorted(Path(models_dir).rglob("*")):
                if p.suffix.lower() in (".safetensors", ".onnx") and not p.name.startswith("."):
                    self._add(p)

    def _add(self, p: Path) -> None:
        from sar2opt_geo.models.lora import read_adapter_metadata
        from sar2opt_geo.plan import read_model_metadata

        slug = re.sub(r"[^a-z0-9]+", "-", p.stem.lower())[:30]
        mid = f"{slug}-{hashlib.sha1(str(p).encode()).hexdigest()[:6]}"
        try:
            if p.suffix.lower() == ".onnx":
                entry = ModelEntry(mid, p.name, str(p), "onnx", read_model_metadata(p).to_dict())
            else:
                try:
                    entry = ModelEntry(mid, p.name, str(p), "lora", read_adapter_metadata(p))
                except Sar2OptError:
                    entry = ModelEntry(mid, p.name, str(p), "checkpoint", read_model_metadata(p).to_dict())
        except Sar2OptError as exc:
            self.skipped.append(f"{p}: {exc}")
            log.warning("skipping model %s: %s", p, exc)
            return
        self.entries[mid] = entry

    def models(self) -> list[ModelEntry]:
        return [e for e in self.entries.values() if e.kind != "lora"]

    def adapters(self) -> list[ModelEntry]:
        return [e for e in self.entries.values() if e.kind == "lora"]

    def resolve(self, model_id: str | None, lora_id: str | None) -> tuple[ModelEntry, ModelEntry | None]:
        model = self.entries.get(model_id or "bundled")
        if model is None or model.kind == "lora":
            raise Refused(f"unknown model {model_id!r}", 404)
        lora = None
        if lora_id:
            lora = self.entries.get(lora_id)
            if lora is None or lora.kind != "lora":
                raise Refused(f"unknown LoRA adapter {lora_id!r}", 404)
        return model, lora


# -------------------------------------------------------------------------------------------------- jobs


@dataclass
class ChipJob:
    id: str
    name: str
    kind: str  # chip | geotiff
    model: str
    lora: str | None
    preprocess: str
    state: str = "queued"  # queued | running | done | failed
    error: str | None = None
    seconds: float | None = None
    scene_id: str | None = None  # a georeferenced result is added to the map
    files: dict[str, str] = field(default_factory=dict)  # name -> path (input.png, result.png, result.tif)
    width: int = 0
    height: int = 0

    def describe(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "model": self.model,
            "lora": self.lora,
            "preprocess": self.preprocess,
            "state": self.state,
            "error": self.error,
            "seconds": None if self.seconds is None else round(self.seconds, 2),
            "scene_id": self.scene_id,
            "width": self.width,
            "height": self.height,
            "files": {k: f"/api/translate/{self.id}/{k}" for k in sorted(self.files) if k != "source"},
            "download": f"/api/translate/{self.id}/"
            + ("result.tif" if self.kind == "geotiff" else "result.png"),
        }


class TranslateService:
    """Validates requests in the caller's thread, translates in one worker thread."""

    def __init__(
        self, workdir: Path, models: ModelCatalog, on_georeferenced=None, max_bytes=MAX_UPLOAD_BYTES
    ):
        self.workdir = Path(workdir)
        self.models = models
        self.max_bytes = max_bytes
        self.on_georeferenced = on_georeferenced  # callback(job, input_path, output_path) -> scene id
        self.jobs: dict[str, ChipJob] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sar2opt-translate")
        self._samples: list[Path] | None = None

    # -------------------------------------------------------------------------------------- samples
    def samples(self) -> list[Path]:
        """Synthetic sample chips, written once into the temporary folder."""
        with self._lock:
            if self._samples is None:
                from sar2opt_geo.synth import write_pairs

                pairs = write_pairs(self.workdir / "samples", SAMPLE_COUNT, domain="s1", seed=SEED)
                self._samples = [sar for sar, _ in pairs]
            return list(self._samples)

    def sample_png(self, index: int) -> Path:
        paths = self.samples()
        if not 0 <= index < len(paths):
            raise Refused(f"no sample {index}", 404)
        return paths[index]

    # --------------------------------------------------------------------------------------- submit
    def submit(
        self,
        *,
        data: bytes | None = None,
        filename: str | None = None,
        sample: int | None = None,
        model_id: str | None = None,
        lora_id: str | None = None,
        preprocess: str = "model",
    ) -> ChipJob:
        model, lora = self.models.resolve(model_id, lora_id)
        if preprocess not in PREPROCESSING:
            raise Refused(f"preprocessing must be one of {', '.join(PREPROCESSING)} (got {preprocess!r})")
        if sample is not None:
            src = self.sample_png(sample)
            data, filename = src.read_bytes(), f"sample-{sample}.png"
        if not data:
            raise Refused("empty upload: choose a file or a sample")
        if len(data) > self.max_bytes:
            raise Refused(
                f"the upload is {len(data) / 2**20:.1f} MB, more than the app's "
                f"{self.max_bytes / 2**20:.0f} MB limit: translate large scenes with "
                "`sar2opt-geo translate INPUT OUTPUT`",
                413,
            )
        fmt = sniff(data)
        jid = uuid.uuid4().hex[:12]
        jdir = self.workdir / "jobs" / jid
        jdir.mkdir(parents=True)
        job = ChipJob(
            jid, _display_name(filename), "chip", model.label, lora.label if lora else None, preprocess
        )
        try:
            self._prepare(job, jdir, data, fmt)
        except Sar2OptError as exc:
            shutil.rmtree(jdir, ignore_errors=True)
            raise Refused(str(exc).replace(str(jdir) + os.sep, "")) from None
        except Refused:
            shutil.rmtree(jdir, ignore_errors=True)
            raise
        with self._lock:
            self.jobs[jid] = job
        self._pool.submit(self._run, job, jdir, model, lora)
        return job

    def _prepare(self, job: ChipJob, jdir: Path, data: bytes, fmt: str) -> None:
        """Check the content, note the model input (``files["source"]``: the uploaded TIFF, or ``input.png``
        for a chip) and write ``input.png``."""
        raw = jdir / f"upload.{'tif' if fmt == 'tiff' else fmt}"
        raw.write_bytes(data)
        chip = None
        if fmt in ("png", "jpeg"):
            chip = io.read_png(raw)
        else:
            scene = io.open_scene(raw, allow_ungeoreferenced=True)
            job.width, job.height = scene.width, scene.height
            if scene.width * scene.height > MAX_SCENE_PIXELS:
                raise Refused(
                    f"the GeoTIFF is {scene.width}x{scene.height} px, more than the app translates "
                    f"({MAX_SCENE_PIXELS // 2**20} Mpx): use `sar2opt-geo translate INPUT OUTPUT`",
                    413,
                )
            if scene.dtype == "uint8" and not scene.georeferenced:
                chip, _ = io.read_raster(raw)
            else:
                job.kind = "geotiff" if scene.georeferenced else "chip"
                job.files["source"] = str(raw)
                from sar2opt_geo.serve.tiles import SarStyle, render_sar
                from sar2opt_geo.source import decide_input_scale

                pixels, mask = io.read_overview(raw, 512)
                valid = mask > 0
                # translate's decision (refuses what translate refuses, e.g. bare uint16 DN, right away)
                scale = decide_input_scale(scene, None, pixels[:, valid]).scale
                img, valid = render_sar(pixels, valid, scale, SarStyle())
                img = np.where(valid[None], img, 0).astype(np.uint8)
                io.write_png(jdir / "input.png", img)
                job.files["input.png"] = str(jdir / "input.png")
                return
        job.height, job.width = chip.shape[1:]
        if max(job.width, job.height) > MAX_CHIP_SIDE:
            raise Refused(
                f"the chip is {job.width}x{job.height} px, larger than {MAX_CHIP_SIDE} px a side: "
                "use `sar2opt-geo translate INPUT OUTPUT` for scenes",
                413,
            )
        # the grey levels (of a grey picture saved as RGB: its first band, as translate takes it) are the
        # model input: a PNG chip, read by translate's own code with its own scale decision (levels)
        grey = chip[:3].mean(axis=0).round().astype(np.uint8) if chip.shape[0] >= 3 else chip[0]
        io.write_png(jdir / "input.png", grey)
        job.files["input.png"] = str(jdir / "input.png")
        job.files["source"] = job.files["input.png"]

    # ------------------------------------------------------------------------------------------ run
    def _run(self, job: ChipJob, jdir: Path, model: ModelEntry, lora: ModelEntry | None) -> None:
        from sar2opt_geo.distributed import ThreadedExecutor
        from sar2opt_geo.plan import TranslateOptions
        from sar2opt_geo.run import run_translate

        job.state = "running"
        t0 = time.perf_counter()
        try:
            filt = prep = None
            if job.preprocess == "filter":
                from sar2opt_geo.filters import make_filter_spec

                filt = make_filter_spec("lee", window=FILTER_WINDOW)
            elif job.preprocess == "sar2optical":
                from sar2opt_geo.sar2optical import Sar2OpticalProfile

                prep = Sar2OpticalProfile()
            opts = TranslateOptions(
                model=model.path,
                lora=lora.path if lora else None,
                filter=filt,
                preprocess=prep,
                checkpoint_preprocess=job.preprocess != "none",
                allow_ungeoreferenced=job.kind == "chip",
            )
            out = jdir / "result.tif"
            run_translate(job.files["source"], str(out), opts, ThreadedExecutor(), overwrite=True)
            job.files["result.tif"] = str(out)
            rgb, meta = io.read_raster(out, masked=True)
            rgb = rgb[:3].copy()
            rgb[:, meta["mask"] == 0] = 0
            io.write_png(jdir / "result.png", rgb)
            job.files["result.png"] = str(jdir / "result.png")
            if job.kind == "geotiff" and self.on_georeferenced is not None:
                job.scene_id = self.on_georeferenced(job, job.files["source"], str(out))
            job.state = "done"
        except Sar2OptError as exc:
            job.state, job.error = "failed", str(exc)
        except Exception as exc:  # a bug must not kill the worker thread; the page shows it
            log.exception("translate job %s failed", job.id)
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.seconds = time.perf_counter() - t0

    def get(self, jid: str) -> ChipJob:
        with self._lock:
            job = self.jobs.get(jid)
        if job is None:
            raise Refused(f"no translate job {jid!r}", 404)
        return job

    def file(self, jid: str, name: str) -> Path:
        job = self.get(jid)
        if name not in ("input.png", "result.png", "result.tif") or name not in job.files:
            raise Refused(f"job {jid} has no {name!r}", 404)
        return Path(job.files[name])

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
