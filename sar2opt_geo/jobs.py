"""Batch jobs: a YAML spec of scenes translated one after another on one executor (one cluster per job).

A spec (``version: 1``) names its inputs (paths and globs relative to the spec's directory), where and how
the outputs are written, the model and the translate options, and per-scene overrides. It is validated by
pydantic models (:class:`JobDocument`: strict types, unknown keys refused, defaults from
:mod:`sar2opt_geo.defaults`); a validation error becomes one line naming the spec file, the dotted place
of the first bad key and what was expected (``job.yaml: tiling.overlap: expected an integer, got str
('64')``).
Every path (inputs, model, adapter, output dir) is made absolute against the spec's folder before anything
reaches a worker. Inputs are files or Sentinel-1 ``.SAFE`` product folders. A job whose outputs would land
on its inputs (same path, a symbolic or hard link to one, inside an input folder or product, a folder
holding one: :func:`sar2opt_geo.safety.collision`) or on its model is refused when its scenes are resolved.

Progress lives in ``<output dir>/.sar2opt-job.json`` (per scene: pending / running / done / failed /
interrupted, error,
tiles done / total, timestamps and the scene's *fingerprint*), rewritten atomically as blocks finish. The
fingerprint of a scene digests its input (real path, size, mtime), the model's and adapter's content hashes
and every translate option that changes pixels. The same file keeps a ledger of the outputs this tool
finished, each with its fingerprint and the file's identity (inode, size, mtime): a scene is *done*
only when its output is the very file the ledger says was made with the scene's current fingerprint. So
``submit --resume`` redoes outputs made by another spec, model or input (and says so), and ``status`` and
``submit`` agree on every scene: *running* / *partial* / *failed* come only from this job's own records
(same fingerprint), never from an output or work folder some other run left; a second submit sharing a
live one's state file is refused. Written by hand: the ledger (plain JSON, atomic renames) — the
fingerprint is not an output tag because the translate options have no way to add tags yet; schema
validation is pydantic's.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import logging
import os
import re
import socket
import string
import time
import types
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sar2opt_geo import defaults
from sar2opt_geo.errors import InputError, JobSpecError, Sar2OptError, UsageError
from sar2opt_geo.safety import collision
from sar2opt_geo.sar2optical import SAR2OPTICAL_FILTERS

if TYPE_CHECKING:
    from sar2opt_geo.plan import TranslateOptions

log = logging.getLogger(__name__)

STATE_NAME = ".sar2opt-job.json"
#: Scene states: recorded by ``submit`` (the first five) or derived by ``status`` (partial).
STATES = ("pending", "running", "done", "failed", "interrupted", "partial")
PATTERN_FIELDS = ("stem", "name", "index")
#: Translate options left out of a scene's fingerprint: where and how fast it runs, not what it computes.
NOT_IN_FINGERPRINT = ("device", "batch_size")


# ------------------------------------------------------------------------------------------------ schema


def _fail(kind: str, message: str) -> PydanticCustomError:
    """A validation error whose text is ``message`` as is (no placeholder formatting)."""
    return PydanticCustomError(kind, "{message}", {"message": message})


class _Strict(BaseModel):
    """Strict, closed, immutable: ``"64"`` is not an integer, ``true`` is not a number, unknown keys fail."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TilingSpec(_Strict):
    tile_size: int = Field(defaults.TILE_SIZE, ge=1)
    overlap: int = Field(defaults.OVERLAP, ge=0)
    chunk_size: int = Field(defaults.CHUNK_SIZE, ge=1)
    # None: as translate's --batch-size default (per engine on CPU, defaults.ENGINE_BATCH_SIZE; from free
    # memory on CUDA)
    batch_size: int | None = Field(None, ge=1)


class FilterOptions(_Strict):
    name: str
    window: int = defaults.FILTER_WINDOW
    enl: float | Literal["auto"] = float(defaults.FILTER_ENL)
    damping: float = defaults.FILTER_DAMPING

    @model_validator(mode="after")
    def _valid_filter(self) -> FilterOptions:
        """The speckle filter registry's own checks (name, odd window, enl > 0, ...)."""
        self.to_filter_spec()
        return self

    def to_filter_spec(self):
        from sar2opt_geo.filters import make_filter_spec

        try:
            return make_filter_spec(self.name, window=self.window, enl=self.enl, damping=self.damping)
        except UsageError as exc:
            raise _fail("filter", str(exc)) from None


class PreprocessOptions(_Strict):
    """As translate's ``--preprocess``, ``--preprocess-filter``, ``--preprocess-window`` and ``--gamma``:
    ``name: none`` turns off a profile the checkpoint declares; without a ``preprocess`` key the
    checkpoint's profile (if any) applies."""

    name: Literal["none", "sar2optical"]
    filter: Literal[SAR2OPTICAL_FILTERS] = "lee"
    window: int = 5
    gamma: float = 1.0

    @model_validator(mode="after")
    def _valid_profile(self) -> PreprocessOptions:
        """The profile's own checks (odd window >= 3, gamma > 0), and the profile options only with it."""
        if self.name == "none":
            stray = [k for k in ("filter", "window", "gamma") if k in self.model_fields_set]
            if stray:
                raise _fail("preprocess", f"{', '.join(stray)}: only valid with name: sar2optical")
        self.to_profile()
        return self

    def to_profile(self):
        """The :class:`~sar2opt_geo.sar2optical.Sar2OpticalProfile`, or None for ``name: none``."""
        if self.name != "sar2optical":
            return None
        from sar2opt_geo.sar2optical import Sar2OpticalProfile

        try:
            return Sar2OpticalProfile(filter=self.filter, window=self.window, gamma=self.gamma)
        except UsageError as exc:
            raise _fail("preprocess", str(exc)) from None


def _check_nodata_fill(v: str) -> str:
    from sar2opt_geo.defaults import NODATA_FILLS

    if v in NODATA_FILLS:
        return v
    raise _fail("nodata_fill", f"expected {' or '.join(map(repr, NODATA_FILLS))}, got {v!r}")


def _check_warp(v: str) -> str:
    from sar2opt_geo.warp import parse_warp

    try:
        return parse_warp(v)
    except UsageError as exc:
        raise _fail("warp", str(exc).removeprefix("--warp: ")) from None


def _check_device(v: str) -> str:
    if v in defaults.DEVICES or re.fullmatch(r"cuda:\d+", v):
        return v
    raise _fail("device", f"expected auto, cpu or cuda[:N], got {v!r}")


class SceneOptions(_Strict):
    """What a scene is translated with: the job's top level, or one ``overrides`` entry (only the keys it
    sets count; a ``tiling`` override merges into the job's tiling)."""

    model: str | None = None
    lora: str | None = None
    filter: FilterOptions | None = None
    tiling: TilingSpec = TilingSpec()
    device: Annotated[str, AfterValidator(_check_device)] = defaults.DEVICES[0]
    backend: Literal[defaults.BACKEND_CHOICES] | None = defaults.BACKEND  # as --backend; None: auto
    precision: Literal[defaults.PRECISIONS] = defaults.PRECISION
    input_scale: Literal[defaults.INPUT_SCALES] = "auto"
    bands: str | None = None
    preprocess: PreprocessOptions | None = None  # None: what the checkpoint declares
    aoi: str | None = None  # GeoJSON polygon file, as --aoi
    nodata_fill: Annotated[str, AfterValidator(_check_nodata_fill)] = "reflect"
    allow_ungeoreferenced: bool = False
    # Sentinel-1 products and map projection (as translate's --calibration, --no-denoise, --warp, ...)
    calibration: Literal[defaults.CALIBRATIONS] = defaults.CALIBRATION
    denoise: bool = True
    warp: Annotated[str, AfterValidator(_check_warp)] = defaults.WARP
    resolution: float | None = Field(None, gt=0)  # metres; None: the input's pixel spacing
    resampling: Literal[defaults.RESAMPLINGS] = defaults.RESAMPLING
    calibration_constant: float | None = Field(None, gt=0)  # with input_scale dn: σ⁰ = DN²/A²

    def merged(self, override: SceneOptions) -> SceneOptions:
        """These options with the keys ``override`` sets replaced (its tiling keys merged)."""
        upd = {k: getattr(override, k) for k in override.model_fields_set}
        if "tiling" in upd:
            t = override.tiling
            upd["tiling"] = self.tiling.model_copy(update={k: getattr(t, k) for k in t.model_fields_set})
        return self.model_copy(update=upd)


class OutputSpec(_Strict):
    dir: str
    pattern: str | None = None  # None: {stem}_optical.tif (cog) or {stem}_optical.zarr (zarr)
    format: Literal[defaults.OUTPUT_FORMATS] = "cog"

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, pattern: str | None) -> str | None:
        if pattern is None:
            return None
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
        except ValueError as exc:
            raise _fail("pattern", str(exc)) from None
        bad = [f for f in fields if f not in PATTERN_FIELDS]
        if bad:
            raise _fail("pattern", f"unknown field {{{bad[0]}}} (fields: {', '.join(PATTERN_FIELDS)})")
        if not fields or "/" in pattern or os.sep in pattern:
            raise _fail("pattern", "must be a file name using {stem}, {name} or {index}")
        try:  # format specs fail only when used: {stem:03d}
            pattern.format(stem="scene", name="scene.tif", index=0)
        except (ValueError, TypeError) as exc:
            raise _fail("pattern", f"{pattern!r}: {exc}") from None
        return pattern

    @property
    def file_pattern(self) -> str:
        return self.pattern or ("{stem}_optical.tif" if self.format == "cog" else "{stem}_optical.zarr")


def _as_list(v):
    return [v] if isinstance(v, str) else v


def _non_empty(v: list[str]) -> list[str]:
    if not v:
        raise _fail("inputs", "expected a non-empty list of paths or globs, got an empty list")
    return v


def _version(v: int) -> int:
    if v != 1:
        raise _fail("version", f"only version 1 is supported (got {v})")
    return v


class JobDocument(SceneOptions):
    """A whole job spec (``version: 1``)."""

    version: Annotated[int, AfterValidator(_version)]
    inputs: Annotated[list[str], BeforeValidator(_as_list), AfterValidator(_non_empty)]
    output: OutputSpec
    overrides: dict[str, SceneOptions] | None = None

    def scene_options(self) -> SceneOptions:
        """The job-wide scene options (the top-level keys)."""
        return SceneOptions(**{k: getattr(self, k) for k in SceneOptions.model_fields})


# ------------------------------------------------------------------ pydantic errors → one located line


def _describe(tp) -> str:
    """What a type annotation accepts, in words (``a string or null``, ``'cog' or 'zarr'``)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _describe(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin is list:
        return "a list" + (" of strings" if get_args(tp) == (str,) else "")
    if origin is dict or (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return "a mapping"
    return {
        type(None): "null",
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def _unwrap(tp):
    """The annotation without ``Annotated[...]`` and without ``| None``."""
    if get_origin(tp) is Annotated:
        return _unwrap(get_args(tp)[0])
    args = [a for a in get_args(tp) if a is not type(None)]
    if get_origin(tp) in (Union, types.UnionType) and len(args) == 1:
        return _unwrap(args[0])
    return tp


def _locate(doc, loc: tuple) -> tuple[str, object, object, type[BaseModel]]:
    """Follow a pydantic error location through the document and the models: ``(dotted path, annotation
    of the last step, the value found there, the model holding the last key)``. Union member tags that
    pydantic adds to locations (``enl.float``) are not steps in the document and end the walk."""
    parts: list[str] = []
    node, tp, holder = doc, JobDocument, JobDocument
    for part in loc:
        t = _unwrap(tp)
        if isinstance(part, int) and get_origin(t) is list and isinstance(node, list) and part < len(node):
            parts[-1] += f"[{part}]"
            node, tp = node[part], get_args(t)[0]
        elif get_origin(t) is dict and isinstance(node, dict) and part in node:
            parts.append(str(part))
            node, tp = node[part], get_args(t)[1]
        elif isinstance(t, type) and issubclass(t, BaseModel) and isinstance(part, str):
            parts.append(part)
            holder = t
            tp = t.model_fields[part].annotation if part in t.model_fields else None
            node = node.get(part) if isinstance(node, dict) else None
        else:
            break
    return ".".join(parts), tp, node, holder


def _tname(v) -> str:
    return "null" if v is None else type(v).__name__


def _error_line(doc, err: dict) -> tuple[str, str]:
    """``(dotted path, what is wrong)`` for one pydantic error."""
    loc = err["loc"]
    if "[key]" in loc:  # a mapping key of the wrong type (YAML `5:`): pydantic locates it after the key
        i = loc.index("[key]")
        path, _, _, _ = _locate(doc, loc[: i - 1])
        return path, f"keys must be strings, got {_tname(loc[i - 1])} ({loc[i - 1]!r})"
    path, tp, value, holder = _locate(doc, loc)
    kind = err["type"]
    if kind == "missing":
        return path, "missing (required)"
    if kind == "extra_forbidden":
        return path, f"unknown key (allowed: {', '.join(holder.model_fields)})"
    if kind in ("greater_than_equal", "greater_than"):
        op, lim = (">=", err["ctx"]["ge"]) if "ge" in err["ctx"] else (">", err["ctx"]["gt"])
        return path, f"must be {op} {lim:g} (got {value!r})"
    if kind.endswith(("_type", "_parsing")) or kind in ("literal_error", "model_attributes_type"):
        return path, f"expected {_describe(tp)}, got {_tname(value)} ({value!r})"
    return path, err["msg"].removeprefix("Value error, ")


def _spec_error(src: str, doc, exc: ValidationError) -> JobSpecError:
    """The first problem (by its place in the spec) as one line, plus how many more there are."""
    lines: dict[str, str] = {}
    for err in exc.errors():
        path, what = _error_line(doc, err)
        lines.setdefault(path, what)  # a union gives one error per member: keep the first per place
    (path, what), more = next(iter(lines.items())), len(lines) - 1
    return JobSpecError(f"{src}: {path or '(top level)'}: {what}" + (f" (and {more} more)" if more else ""))


# ---------------------------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class Scene:
    index: int
    key: str  # how the spec names it (relative to the spec directory when possible)
    input: str  # absolute
    output: str  # absolute
    options: TranslateOptions  # every path in it absolute

    @property
    def label(self) -> str:
        return self.key


@dataclass
class JobSpec:
    path: str
    base: Path  # the spec's folder (absolute): relative paths in the spec are relative to it
    inputs: list[str]
    output_dir: Path
    pattern: str
    fmt: str
    options: SceneOptions  # the job-wide options
    overrides: dict[str, SceneOptions] = field(default_factory=dict)

    @property
    def state_path(self) -> Path:
        return self.output_dir / STATE_NAME

    def scenes(self) -> list[Scene]:
        """Resolve the inputs (globs sorted), outputs and overrides into scenes. Errors name the culprit:
        a glob or path matching nothing, two scenes writing one output, an override matching no scene, an
        output that would land on an input or on the model."""
        seen: dict[str, str] = {}
        for entry in self.inputs:
            full = self._abs(entry)
            if glob.has_magic(entry):
                matches = sorted(p for p in glob.glob(full, recursive=True) if _is_scene_path(p))
                if not matches:
                    raise JobSpecError(f"{self.path}: inputs: {entry!r} matches no file or .SAFE product")
            else:
                if not _is_scene_path(full):
                    raise JobSpecError(f"{self.path}: inputs: {entry!r} does not exist")
                matches = [full]
            for m in matches:
                seen.setdefault(os.path.abspath(m), entry)
        used_overrides: set[str] = set()
        scenes, outputs = [], {}
        for index, path in enumerate(seen):
            key = self._key(path, seen[path])
            name = os.path.basename(path)
            out_name = self.pattern.format(stem=Path(name).stem, name=name, index=index)
            out = os.path.abspath(self.output_dir / out_name)
            if out in outputs:
                raise JobSpecError(
                    f"{self.path}: scenes {outputs[out]!r} and {key!r} both write {out} "
                    f"(output.pattern {self.pattern!r}); use {{index}} or {{name}} to tell them apart"
                )
            outputs[out] = key
            opts = self.options
            for okey, ov in self.overrides.items():
                if self._override_matches(okey, path, seen[path]):
                    used_overrides.add(okey)
                    opts = opts.merged(ov)
            scenes.append(Scene(index, key, path, out, self._translate_options(opts)))
        unused = [k for k in self.overrides if k not in used_overrides]
        if unused:
            raise JobSpecError(f"{self.path}: overrides.{unused[0]}: matches none of the job's scenes")
        self._refuse_collisions(scenes)
        return scenes

    def _abs(self, p: str) -> str:
        """``p`` as an absolute path: ``~`` expanded, relative paths taken from the spec's folder."""
        p = os.path.expanduser(p)
        return os.path.abspath(p if os.path.isabs(p) else self.base / p)

    def _key(self, path: str, entry: str) -> str:
        """The scene's name: as the spec wrote it (absolute entries stay absolute, relative ones are
        relative to the spec's directory)."""
        if os.path.isabs(os.path.expanduser(entry)):
            return path
        try:
            return os.path.relpath(path, self.base)
        except ValueError:
            return path

    def _override_matches(self, okey: str, path: str, entry: str) -> bool:
        full = self._abs(okey)
        if glob.has_magic(okey):
            return fnmatch.fnmatch(path, full)
        return full == path or okey == entry

    def _translate_options(self, o: SceneOptions):
        from sar2opt_geo.plan import TranslateOptions

        t = o.tiling
        return TranslateOptions(
            model=self._abs(o.model) if o.model else str(defaults.BUNDLED_MODEL),
            lora=self._abs(o.lora) if o.lora else None,
            tile_size=t.tile_size,
            overlap=t.overlap,
            chunk_size=t.chunk_size,
            batch_size=t.batch_size,
            device=o.device,
            backend=o.backend,
            precision=o.precision,
            input_scale=o.input_scale,
            bands=o.bands,
            filter=o.filter.to_filter_spec() if o.filter is not None else None,
            preprocess=o.preprocess.to_profile() if o.preprocess is not None else None,
            checkpoint_preprocess=o.preprocess is None or o.preprocess.name != "none",
            aoi=self._abs(o.aoi) if o.aoi else None,
            nodata_fill=o.nodata_fill,
            allow_ungeoreferenced=o.allow_ungeoreferenced,
            fmt=self.fmt,
            calibration=o.calibration,
            denoise=o.denoise,
            warp=o.warp,
            resolution=o.resolution,
            resampling=o.resampling,
            calibration_constant=o.calibration_constant,
        )

    def _refuse_collisions(self, scenes: list[Scene]) -> None:
        """The input is sacred: no output may be, or replace, an input or the model, adapter or AOI of this
        job."""
        protected = [(f"input {s.key!r}", s.input) for s in scenes]
        for s in scenes:
            o = s.options
            for kind, p in (("model", o.model), ("LoRA adapter", o.lora), ("AOI", o.aoi)):
                if p and (f"{kind} {p}", p) not in protected:
                    protected.append((f"{kind} {p}", p))
        for s in scenes:
            for what, path in protected:
                why = collision(s.output, path)
                if why:
                    raise JobSpecError(
                        f"{self.path}: the output of scene {s.key!r}, {s.output}, {why} {what}; "
                        "the job would destroy it: change output.dir or output.pattern"
                    )


def _is_scene_path(p: str) -> bool:
    """A file (GeoTIFF, product zip or manifest) or a Sentinel-1 product folder (``X.SAFE``)."""
    return os.path.isfile(p) or (os.path.isdir(p) and p.rstrip(os.sep).upper().endswith(".SAFE"))


def load_job(path: str | os.PathLike) -> JobSpec:
    """Parse and validate a job spec (schema, option values, pattern fields). Inputs are not resolved
    here (see :meth:`JobSpec.scenes`), so a spec can be checked anywhere."""
    import yaml

    from sar2opt_geo.tiling import TileGrid

    src = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise JobSpecError(f"{src}: cannot read the job spec ({exc.strerror or exc})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise JobSpecError(f"{src}: not valid YAML ({' '.join(str(exc).split())})") from None
    if doc is None:
        raise JobSpecError(f"{src}: the job spec is empty")
    try:
        job = JobDocument.model_validate(doc)
    except ValidationError as exc:
        raise _spec_error(src, doc, exc) from None
    overrides = job.overrides or {}
    for key in overrides:
        if not any(key == e or fnmatch.fnmatch(key, e) or fnmatch.fnmatch(e, key) for e in job.inputs):
            raise JobSpecError(
                f"{src}: overrides.{key}: matches none of the inputs ({', '.join(job.inputs)})"
            )
    base = Path(path).resolve().parent
    options = job.scene_options()
    spec = JobSpec(
        path=src,
        base=base,
        inputs=list(job.inputs),
        output_dir=base / os.path.expanduser(job.output.dir),
        pattern=job.output.file_pattern,
        fmt=job.output.format,
        options=options,
        overrides=dict(overrides),
    )
    # tilings the pipeline would refuse later (odd overlap, overlap >= tile): refuse them now, located
    for where, o in [("", options)] + [(f"overrides.{k}.", options.merged(v)) for k, v in overrides.items()]:
        try:
            TileGrid(1, 1, o.tiling.tile_size, o.tiling.overlap)
        except UsageError as exc:
            raise JobSpecError(
                f"{src}: {where}tiling: {str(exc).replace('--', '').replace('-', '_')}"
            ) from None
    return spec


# ----------------------------------------------------------------------------------------- fingerprints


def _file_identity(path: str) -> dict:
    """Which file ``path`` is right now: replaced, rewritten or touched, it is another one. (No device
    number: the same shared filesystem has another one on each machine that mounts it.)"""
    st = os.stat(path)
    return {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@lru_cache(maxsize=64)
def _content_hash(path: str, identity: tuple) -> str:  # identity: the cache key changes with the file
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _hash_file(path: str) -> str:
    try:
        return _content_hash(os.path.realpath(path), tuple(_file_identity(path).values()))
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror or exc})") from None


def scene_fingerprint(scene: Scene) -> str:
    """What the scene's output must have been made from: the input (real path, size, mtime), the content
    hashes of the model, adapter and AOI, and every translate option except :data:`NOT_IN_FINGERPRINT`."""
    opts = {}
    for f in fields(scene.options):
        if f.name in NOT_IN_FINGERPRINT:
            continue
        v = getattr(scene.options, f.name)
        if f.name in ("model", "lora", "aoi") and v is not None:
            v = _hash_file(v)
        elif hasattr(v, "to_dict"):
            v = v.to_dict()
        opts[f.name] = v
    try:
        st = os.stat(scene.input)
    except OSError as exc:
        raise InputError(f"{scene.input}: cannot read ({exc.strerror or exc})") from None
    ident = {"path": os.path.realpath(scene.input), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    doc = json.dumps({"input": ident, "options": opts}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:32]


def output_fingerprint(output: str, ledger: dict) -> str | None:
    """The fingerprint ``output`` was made with, when the ledger knows this very file; else None."""
    rec = ledger.get(output)
    if not rec or not os.path.exists(output):
        return None
    try:
        same = rec.get("identity") == _file_identity(output)
    except OSError:
        return None
    return rec.get("fingerprint") if same else None


# ------------------------------------------------------------------------------------------- job state


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class JobState:
    """``<output dir>/.sar2opt-job.json``, rewritten atomically (temporary file + rename).

    ``scenes``: this run's record per scene (with its fingerprint); ``outputs``: the ledger of finished
    outputs (fingerprint and file identity), carried over from earlier runs for outputs that still exist.
    :attr:`previous` is the document an earlier run left (or ``{}``)."""

    def __init__(
        self,
        path: Path,
        spec_path: str,
        scenes: list[Scene],
        fingerprints: dict[str, str | None],
        overwrite: bool = False,
    ):
        self.path = Path(path)
        self.previous = read_state(self.path) or {}
        ledger = self.previous.get("outputs")
        self.doc = {
            "spec": os.path.abspath(spec_path),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "overwrite": overwrite,  # while this run lives, its pending scenes will be redone
            "started": _now(),
            "updated": _now(),
            "scenes": {
                s.key: {
                    "index": s.index,
                    "input": s.input,
                    "output": s.output,
                    "fingerprint": fingerprints.get(s.key),
                    "state": "pending",
                    "error": None,
                    "tiles_done": 0,
                    "tiles_total": None,
                    "evaluations": None,
                    "started": None,
                    "finished": None,
                }
                for s in scenes
            },
            "outputs": {
                k: v for k, v in (ledger if isinstance(ledger, dict) else {}).items() if os.path.exists(k)
            },
        }
        self._last = 0.0

    @property
    def outputs(self) -> dict:
        return self.doc["outputs"]

    def scene(self, key: str) -> dict:
        return self.doc["scenes"][key]

    def update(self, key: str, force: bool = True, **fields) -> None:
        self.scene(key).update(fields)
        now = time.monotonic()
        if force or now - self._last >= 0.5:  # progress ticks: at most two writes a second
            self.write()

    def record_output(self, key: str, output: str, fingerprint: str, tiles: int, **fields) -> None:
        """The scene is done: its output file is in the ledger with its fingerprint (one write)."""
        self.outputs[output] = {
            "fingerprint": fingerprint,
            "identity": _file_identity(output),
            "tiles": tiles,
            "made": _now(),
        }
        self.update(key, state="done", tiles_done=tiles, tiles_total=tiles, **fields)

    def write(self) -> None:
        self._last = time.monotonic()
        self.doc["updated"] = _now()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.doc, indent=1))
        os.replace(tmp, self.path)


def read_state(path: Path) -> dict | None:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# ----------------------------------------------------------------------------------------------- submit


@dataclass
class SceneResult:
    scene: Scene
    state: str
    error: str | None = None
    evaluations: int | None = None
    tiles: int | None = None
    seconds: float = 0.0
    note: str | None = None  # why a scene was skipped or redone


SKIPPED = "made with this job's model, options and input"
REDONE = "the existing output was not made with this job's model, options and input"


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, Sar2OptError):
        return str(exc)
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _client_lost(executor) -> bool:
    client = getattr(executor, "client", None)
    return client is not None and client.status not in ("running", "connecting")


def _fingerprints(scenes: list[Scene]) -> tuple[dict[str, str | None], dict[str, str]]:
    """Each scene's fingerprint, and the reason for those that cannot be computed (unreadable model...)."""
    fps, errors = {}, {}
    for sc in scenes:
        try:
            fps[sc.key] = scene_fingerprint(sc)
        except Sar2OptError as exc:
            fps[sc.key], errors[sc.key] = None, str(exc)
    return fps, errors


def run_job(
    spec: JobSpec,
    executor,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_scene=None,
    progress_factory=None,
) -> list[SceneResult]:
    """Translate every scene of ``spec`` on ``executor``, one after another. A failing scene is recorded
    and the job goes on; a lost cluster connection fails the remaining scenes. ``on_scene(result)`` is called
    as each scene ends; ``progress_factory(scene)`` may return a ``progress(done, total)`` callback.

    With ``resume``, a scene whose output carries its fingerprint is done; an existing output made otherwise
    is redone (the result's ``note`` says why); a scene this job left unfinished continues from its work
    state. Without it an existing output fails its scene (unless ``overwrite``)."""
    scenes = spec.scenes()
    refuse_concurrent_submit(spec)
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    fps, fp_errors = _fingerprints(scenes)
    state = JobState(spec.state_path, spec.path, scenes, fps, overwrite=overwrite)
    state.write()
    before = state.previous.get("scenes", {}) if isinstance(state.previous.get("scenes"), dict) else {}
    results = []
    lost = None
    try:
        for sc in scenes:
            mine = before.get(sc.key, {}).get("fingerprint") == fps[sc.key]
            err = lost or fp_errors.get(sc.key)
            res = _job_scene(sc, fps[sc.key], err, mine, state, executor, resume, overwrite, progress_factory)
            if res.state == "failed" and lost is None and _client_lost(executor):
                lost = f"not run: the cluster connection was lost (during {sc.key})"
            results.append(res)
            if on_scene is not None:
                on_scene(res)
    finally:
        state.doc["finished"] = _now()  # this submit no longer holds the job (done, failed or interrupted)
        state.write()
    return results


def _job_scene(sc, fp, err, mine, state, executor, resume, overwrite, progress_factory) -> SceneResult:
    """One scene of a submit: failed without running (``err``), skipped (its output carries ``fp``, with
    ``resume``), or translated — continuing its work state when this job (``mine``) left it."""
    from sar2opt_geo.run import run_translate
    from sar2opt_geo.workstate import WorkState

    if err is not None:
        state.update(sc.key, state="failed", error=err, finished=_now())
        return SceneResult(sc, "failed", err)
    if resume and not overwrite and output_fingerprint(sc.output, state.outputs) == fp:
        tiles = state.outputs[sc.output].get("tiles")
        state.update(sc.key, state="done", finished=_now(), note=SKIPPED, tiles_done=tiles, tiles_total=tiles)
        return SceneResult(sc, "done", None, note=SKIPPED)
    redo = resume and not overwrite and os.path.exists(sc.output)
    cont = resume and mine and WorkState(sc.output).root.exists()  # else any work state is started over
    res = _run_scene(sc, executor, state, run_translate, cont, overwrite or redo, progress_factory, fp)
    res.note = REDONE if redo else None
    return res


def refuse_concurrent_submit(spec: JobSpec) -> None:
    """Two submits sharing one output folder would overwrite each other's state: refuse a second one while
    the first (recorded in the state file, same host, process alive, not finished) runs."""
    doc = read_state(spec.state_path) or {}
    pid = doc.get("pid")
    if (
        "finished" in doc
        or doc.get("host") != socket.gethostname()
        or not isinstance(pid, int)
        or pid == os.getpid()
        or not _pid_alive(pid)
    ):
        return
    raise UsageError(
        f"{spec.path}: another submit (process {pid}, started {doc.get('started')}, spec "
        f"{doc.get('spec')}) is running with the state file {spec.state_path}; wait for it or stop it first"
    )


def _run_scene(sc, executor, state, run_translate, resume, overwrite, progress_factory, fp) -> SceneResult:
    t0 = time.perf_counter()
    state.update(sc.key, state="running", error=None, started=_now(), finished=None)
    cb = progress_factory(sc) if progress_factory else None

    def progress(done: int, total: int) -> None:
        state.update(sc.key, force=done >= total, tiles_done=done, tiles_total=total)
        if cb is not None:
            cb(done, total)

    try:
        summary = run_translate(
            sc.input, sc.output, sc.options, executor, overwrite=overwrite, resume=resume, progress=progress
        )
    except KeyboardInterrupt:
        state.update(sc.key, state="interrupted", error=None, finished=_now())
        raise
    except Exception as exc:  # one scene's failure, whatever it is, must not stop the others
        log.debug("scene %s failed", sc.key, exc_info=True)
        err = _describe_error(exc)
        state.update(sc.key, state="failed", error=err, finished=_now())
        return SceneResult(sc, "failed", err, seconds=time.perf_counter() - t0)
    finally:
        close = getattr(cb, "close", None)
        if close is not None:
            close()
    state.record_output(
        sc.key, sc.output, fp, summary.tiles, error=None, finished=_now(), evaluations=summary.evaluations
    )
    return SceneResult(sc, "done", None, summary.evaluations, summary.tiles, time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------- status


@dataclass
class SceneStatus:
    key: str
    output: str
    state: str
    tiles_done: int | None = None
    tiles_total: int | None = None
    error: str | None = None
    note: str | None = None

    def progress(self) -> str:
        if self.tiles_total:
            done = self.tiles_done or 0
            return f"{done}/{self.tiles_total} tiles ({100 * done // self.tiles_total}%)"
        if self.tiles_done:
            return f"{self.tiles_done} tiles"
        return "-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_status(spec: JobSpec) -> list[SceneStatus]:
    """Each scene's state, by the same rules ``submit`` follows: *done* when its output is the file the
    ledger says was made with the scene's fingerprint; *running*, *failed*, *partial* (work state of an
    interrupted run, its finished blocks counted) or *interrupted* only from this job's own record of the
    scene (same fingerprint); *pending* otherwise, even when an output made some other way exists."""
    doc = read_state(spec.state_path) or {}
    recorded = doc.get("scenes") if isinstance(doc.get("scenes"), dict) else {}
    ledger = doc.get("outputs") if isinstance(doc.get("outputs"), dict) else {}
    # the submit that wrote the state is over: it said so, or (same host) its process is gone
    dead = "finished" in doc or (
        doc.get("host") == socket.gethostname()
        and isinstance(doc.get("pid"), int)
        and not _pid_alive(doc["pid"])
    )
    live_overwrite = bool(doc.get("overwrite")) and not dead
    scenes = spec.scenes()
    fps, fp_errors = _fingerprints(scenes)
    out = []
    for sc in scenes:
        fp = fps[sc.key]
        r = recorded.get(sc.key, {})
        if fp is None or r.get("fingerprint") != fp:
            r = {}  # another spec's, model's or input's record says nothing about this scene
        st = _scene_status(
            sc, r, fp is not None and output_fingerprint(sc.output, ledger) == fp, dead, live_overwrite
        )
        st.error = st.error or fp_errors.get(sc.key)
        if st.state == "done":
            st.tiles_done = st.tiles_total = ledger[sc.output].get("tiles")
        out.append(st)
    return out


def _scene_status(sc: Scene, r: dict, carries: bool, dead: bool, live_overwrite: bool) -> SceneStatus:
    """One scene's state from this job's record ``r`` (``{}`` if none), whether its output carries its
    fingerprint, whether the recording submit is over, and whether it is a live ``submit --overwrite``."""
    from sar2opt_geo.workstate import WorkState

    st = SceneStatus(sc.key, sc.output, r.get("state", "pending"), r.get("tiles_done"), r.get("tiles_total"))
    st.error = r.get("error")
    running = st.state == "running" and not dead
    stopped = st.state == "interrupted" or (st.state == "running" and dead)
    # a live `submit --overwrite` will redo the scenes it has not reached: pending, as it says
    redo = live_overwrite and st.state == "pending" and bool(r)
    ws = WorkState(sc.output)
    if carries and not (running or redo):
        st.state, st.error = "done", None
    elif st.state in ("running", "failed", "interrupted") and ws.root.exists():
        st.tiles_done = sum(int(v.get("n_tiles", 0)) for v in ws.done_records().values())
        st.tiles_total = st.tiles_total or _tile_total(sc)
        if stopped:
            st.state = "partial"
    elif stopped:
        st.state = "interrupted"
    elif st.state == "done":  # recorded done, but its output is gone or was replaced since
        st.state, st.tiles_done = "pending", None
    if st.state == "pending" and os.path.exists(sc.output):
        st.note = (
            "the running `submit --overwrite` will replace its output"
            if carries
            else "an output exists, not made with this job's model, options and input: it will be redone"
        )
    return st


def _tile_total(sc: Scene) -> int | None:
    """Tiles of the scene's planning grid (the warped grid when the scene is warped)."""
    from sar2opt_geo.plan import open_input
    from sar2opt_geo.tiling import TileGrid

    o = sc.options
    try:
        info = open_input(
            sc.input,
            calibration=o.calibration,
            denoise=o.denoise,
            warp=o.warp,
            resolution=o.resolution,
            allow_ungeoreferenced=True,
            resampling=o.resampling,
        )
        return TileGrid(info.height, info.width, o.tile_size, o.overlap).count
    except Sar2OptError:  # status is best effort: an unreadable input just shows no total
        return None
