"""Batch jobs: a YAML spec of scenes translated one after another on one executor (one cluster per job).

A spec (``version: 1``) names its inputs (paths and globs relative to the spec's directory), where and how
the outputs are written, the model and the translate options, and per-scene overrides. It is validated by
hand against :data:`SCHEMA` so every problem is reported with its path in the document (``tiling.overlap:
expected an integer, got str``; ``tilling: unknown key``).

Progress lives in ``<output dir>/.sar2opt-job.json`` (per scene: pending / running / done / failed, error,
tiles done / total, timestamps), rewritten atomically as blocks finish. A failing scene does not stop the
others. ``status`` reads that file and the scenes' own work state (``.OUTPUT.work/done/``) to report how far
each scene got, even after the submitting process died.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import logging
import os
import socket
import string
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from sar2opt_geo.errors import JobSpecError, Sar2OptError, UsageError

log = logging.getLogger(__name__)

STATE_NAME = ".sar2opt-job.json"
STATES = ("pending", "running", "done", "failed")
FORMATS = ("cog", "zarr")
INPUT_SCALES = ("auto", "linear", "db", "amplitude", "dn")
BACKENDS = ("torch", "onnx")
PATTERN_FIELDS = ("stem", "name", "index")

# ------------------------------------------------------------------------------------------------ schema

_INT, _NUM, _STR, _BOOL = "an integer", "a number", "a string", "true or false"


def _is(kind: str, v) -> bool:
    if kind == _INT:
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == _NUM:
        return isinstance(v, int | float) and not isinstance(v, bool)
    if kind == _STR:
        return isinstance(v, str)
    if kind == _BOOL:
        return isinstance(v, bool)
    raise AssertionError(kind)


TILING_KEYS = {"tile_size": _INT, "overlap": _INT, "chunk_size": _INT, "batch_size": _INT}
FILTER_KEYS = {"name": _STR, "window": _INT, "enl": (_NUM, "auto"), "damping": _NUM}
OUTPUT_KEYS = {"dir": _STR, "pattern": _STR, "format": FORMATS}
# keys a scene override may set (everything that is per scene; not inputs/output/version)
SCENE_KEYS = {
    "model": (_STR, None),
    "lora": (_STR, None),
    "filter": ("filter", None),
    "tiling": "tiling",
    "device": _STR,
    "backend": BACKENDS,
    "input_scale": INPUT_SCALES,
    "bands": (_STR, None),
}
TOP_KEYS = {"version": _INT, "inputs": "inputs", "output": "output", **SCENE_KEYS, "overrides": "overrides"}


def _tname(v) -> str:
    return "null" if v is None else type(v).__name__


def _where(path: str) -> str:
    return path or "(top level)"


def _mapping(doc, path: str, allowed: dict, src: str, required: tuple = ()) -> dict:
    if not isinstance(doc, dict):
        raise JobSpecError(f"{src}: {_where(path)}: expected a mapping, got {_tname(doc)}")
    for k in doc:
        if not isinstance(k, str) or k not in allowed:
            raise JobSpecError(
                f"{src}: {path + '.' if path else ''}{k}: unknown key (allowed: {', '.join(allowed)})"
            )
    for k in required:
        if k not in doc:
            raise JobSpecError(f"{src}: {path + '.' if path else ''}{k}: missing (required)")
    return doc


def _check_value(v, kind, path: str, src: str):
    """Check ``v`` against ``kind``: a type name, a tuple of choices (type names, literals or None)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    for k in kinds:
        if k is None and v is None:
            return v
        if isinstance(k, str) and k in (_INT, _NUM, _STR, _BOOL) and _is(k, v):
            return v
        if not isinstance(k, str) or k not in (_INT, _NUM, _STR, _BOOL):
            if k is not None and v == k and type(v) is type(k):
                return v
    want = " or ".join(
        "null" if k is None else (k if k in (_INT, _NUM, _STR, _BOOL) else repr(k)) for k in kinds
    )
    raise JobSpecError(f"{src}: {path}: expected {want}, got {_tname(v)} ({v!r})")


def _check_tiling(doc, path, src) -> dict:
    _mapping(doc, path, TILING_KEYS, src)
    for k, v in doc.items():
        _check_value(v, TILING_KEYS[k], f"{path}.{k}", src)
        if v < (0 if k == "overlap" else 1):
            raise JobSpecError(f"{src}: {path}.{k}: must be {'>= 0' if k == 'overlap' else '>= 1'} (got {v})")
    return dict(doc)


def _check_filter(doc, path, src) -> dict:
    _mapping(doc, path, FILTER_KEYS, src, required=("name",))
    for k, v in doc.items():
        _check_value(v, FILTER_KEYS[k], f"{path}.{k}", src)
    return dict(doc)


def _check_scene_opts(doc: dict, prefix: str, src: str) -> dict:
    """Per-scene options (top level or an override), each checked; returns the keys present."""
    out = {}
    for k, kind in SCENE_KEYS.items():
        if k not in doc:
            continue
        v, path = doc[k], f"{prefix}{k}"
        if kind == "tiling":
            out[k] = _check_tiling(v, path, src)
        elif kind == ("filter", None):
            out[k] = None if v is None else _check_filter(v, path, src)
        else:
            out[k] = _check_value(v, kind, path, src)
        if k == "device" and not (v in ("auto", "cpu", "cuda") or v.startswith("cuda:")):
            raise JobSpecError(f"{src}: {path}: expected auto, cpu or cuda[:N], got {v!r}")
    return out


# ---------------------------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class Scene:
    index: int
    key: str  # how the spec names it (relative to the spec directory when possible)
    input: str  # absolute
    output: str  # absolute
    options: object  # pipeline.TranslateOptions

    @property
    def label(self) -> str:
        return self.key


@dataclass
class JobSpec:
    path: str
    base: Path
    inputs: list[str]
    output_dir: Path
    pattern: str
    fmt: str
    options: dict  # the top-level per-scene options (SCENE_KEYS), already checked
    overrides: dict[str, dict] = field(default_factory=dict)

    @property
    def state_path(self) -> Path:
        return self.output_dir / STATE_NAME

    def scenes(self) -> list[Scene]:
        """Resolve the inputs (globs sorted), outputs and overrides into scenes. Errors name the culprit:
        a glob or path matching nothing, two scenes writing one output, an override matching no scene."""
        seen: dict[str, str] = {}
        for entry in self.inputs:
            full = entry if os.path.isabs(entry) else str(self.base / entry)
            if glob.has_magic(entry):
                matches = sorted(p for p in glob.glob(full, recursive=True) if os.path.isfile(p))
                if not matches:
                    raise JobSpecError(f"{self.path}: inputs: {entry!r} matches no file")
            else:
                if not os.path.isfile(full):
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
            opts = dict(self.options)
            for okey, ov in self.overrides.items():
                if self._override_matches(okey, path, seen[path]):
                    used_overrides.add(okey)
                    for k, v in ov.items():
                        opts[k] = {**opts.get("tiling", {}), **v} if k == "tiling" else v
            scenes.append(Scene(index, key, path, out, self._translate_options(opts, f"{key}: ")))
        unused = [k for k in self.overrides if k not in used_overrides]
        if unused:
            raise JobSpecError(f"{self.path}: overrides.{unused[0]}: matches none of the job's scenes")
        return scenes

    def _key(self, path: str, entry: str) -> str:
        """The scene's name: as the spec wrote it (absolute entries stay absolute, relative ones are
        relative to the spec's directory)."""
        if os.path.isabs(entry):
            return path
        try:
            return os.path.relpath(path, self.base)
        except ValueError:
            return path

    def _override_matches(self, okey: str, path: str, entry: str) -> bool:
        full = okey if os.path.isabs(okey) else str(self.base / okey)
        if glob.has_magic(okey):
            return fnmatch.fnmatch(path, os.path.abspath(full))
        return os.path.abspath(full) == path or okey == entry

    def _translate_options(self, o: dict, prefix: str = ""):
        from sar2opt_geo.cli.base import DEFAULT_MODEL
        from sar2opt_geo.plan import TranslateOptions

        def rel(p):
            return None if p is None else str(p if os.path.isabs(p) else self.base / p)

        t = o.get("tiling", {})
        return TranslateOptions(
            model=rel(o.get("model")) or str(DEFAULT_MODEL),
            lora=rel(o.get("lora")),
            tile_size=t.get("tile_size", 256),
            overlap=t.get("overlap", 64),
            chunk_size=t.get("chunk_size", 2048),
            batch_size=t.get("batch_size", 8),
            device=o.get("device", "auto"),
            backend=o.get("backend"),
            input_scale=o.get("input_scale", "auto"),
            bands=o.get("bands"),
            filter=_filter_spec(o.get("filter"), f"{self.path}: {prefix}filter"),
            fmt=self.fmt,
        )


def _filter_spec(d: dict | None, where: str):
    if d is None:
        return None
    try:
        from sar2opt_geo.filters import make_filter_spec
    except ImportError:
        raise JobSpecError(f"{where}: speckle filters are not available in this installation") from None
    try:
        return make_filter_spec(
            d["name"], window=d.get("window", 7), enl=d.get("enl", 4.4), damping=d.get("damping", 2.0)
        )
    except UsageError as exc:
        raise JobSpecError(f"{where}: {exc}") from None


def load_job(path: str | os.PathLike) -> JobSpec:
    """Parse and validate a job spec (schema, option values, pattern fields). Inputs are not resolved
    here (see :meth:`JobSpec.scenes`), so a spec can be checked anywhere."""
    import yaml

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
    _mapping(doc, "", TOP_KEYS, src, required=("version", "inputs", "output"))
    if _check_value(doc["version"], _INT, "version", src) != 1:
        raise JobSpecError(f"{src}: version: only version 1 is supported (got {doc['version']})")
    inputs = doc["inputs"]
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise JobSpecError(
            f"{src}: inputs: expected a non-empty list of paths or globs, got {_tname(inputs)}"
        )
    for i, v in enumerate(inputs):
        _check_value(v, _STR, f"inputs[{i}]", src)
    out = _mapping(doc["output"], "output", OUTPUT_KEYS, src, required=("dir",))
    _check_value(out["dir"], _STR, "output.dir", src)
    fmt = _check_value(out.get("format", "cog"), FORMATS, "output.format", src)
    pattern = out.get("pattern", "{stem}_optical.tif" if fmt == "cog" else "{stem}_optical.zarr")
    _check_value(pattern, _STR, "output.pattern", src)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        raise JobSpecError(f"{src}: output.pattern: {exc}") from None
    bad = [f for f in fields if f not in PATTERN_FIELDS]
    if bad:
        raise JobSpecError(
            f"{src}: output.pattern: unknown field {{{bad[0]}}} (fields: {', '.join(PATTERN_FIELDS)})"
        )
    if not fields or "/" in pattern or os.sep in pattern:
        raise JobSpecError(
            f"{src}: output.pattern: must be a file name using {{stem}}, {{name}} or {{index}}"
        )

    options = _check_scene_opts(doc, "", src)
    overrides = doc.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise JobSpecError(
            f"{src}: overrides: expected a mapping of scene -> options, got {_tname(overrides)}"
        )
    checked = {}
    for key, ov in overrides.items():
        p = f"overrides.{key}"
        if not isinstance(key, str):
            raise JobSpecError(f"{src}: {p}: scene keys must be strings")
        _mapping(ov, p, SCENE_KEYS, src)
        checked[key] = _check_scene_opts(ov, p + ".", src)
        if not any(key == e or fnmatch.fnmatch(key, e) or fnmatch.fnmatch(e, key) for e in inputs):
            raise JobSpecError(f"{src}: {p}: matches none of the inputs ({', '.join(inputs)})")
    base = Path(path).resolve().parent
    spec = JobSpec(
        path=src,
        base=base,
        inputs=list(inputs),
        output_dir=base / out["dir"],
        pattern=pattern,
        fmt=fmt,
        options=options,
        overrides=checked,
    )
    # option values the pipeline would refuse later: refuse them now, with their place in the spec
    for where, o in [("", options)] + [(f"overrides.{k}.", {**options, **v}) for k, v in checked.items()]:
        t = {**options.get("tiling", {}), **o.get("tiling", {})}
        try:
            from sar2opt_geo.tiling import TileGrid

            TileGrid(1, 1, t.get("tile_size", 256), t.get("overlap", 64))
        except UsageError as exc:
            raise JobSpecError(
                f"{src}: {where}tiling: {str(exc).replace('--', '').replace('-', '_')}"
            ) from None
        _filter_spec(o.get("filter"), f"{src}: {where}filter")
    return spec


# ------------------------------------------------------------------------------------------- job state


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class JobState:
    """``<output dir>/.sar2opt-job.json``, rewritten atomically (temporary file + rename)."""

    def __init__(self, path: Path, spec_path: str, scenes: list[Scene]):
        self.path = Path(path)
        self.doc = {
            "spec": os.path.abspath(spec_path),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": _now(),
            "updated": _now(),
            "scenes": {
                s.key: {
                    "index": s.index,
                    "input": s.input,
                    "output": s.output,
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
        }
        self._last = 0.0

    def scene(self, key: str) -> dict:
        return self.doc["scenes"][key]

    def update(self, key: str, force: bool = True, **fields) -> None:
        self.scene(key).update(fields)
        now = time.monotonic()
        if force or now - self._last >= 0.5:  # progress ticks: at most two writes a second
            self.write()

    def write(self) -> None:
        self._last = time.monotonic()
        self.doc["updated"] = _now()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.doc, indent=1))
        os.replace(tmp, self.path)


def read_state(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------- submit


@dataclass
class SceneResult:
    scene: Scene
    state: str
    error: str | None = None
    evaluations: int | None = None
    tiles: int | None = None
    seconds: float = 0.0


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, Sar2OptError):
        return str(exc)
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _client_lost(executor) -> bool:
    client = getattr(executor, "client", None)
    return client is not None and client.status not in ("running", "connecting")


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

    With ``resume``, scenes whose output exists are done, and unfinished ones continue from their work
    state; without it an existing output fails its scene (unless ``overwrite``)."""
    from sar2opt_geo.run import run_translate

    scenes = spec.scenes()
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    state = JobState(spec.state_path, spec.path, scenes)
    state.write()
    results = []
    lost = None
    for sc in scenes:
        if lost is not None:
            res = SceneResult(sc, "failed", lost)
            state.update(sc.key, state="failed", error=lost, finished=_now())
        elif resume and not overwrite and os.path.exists(sc.output):
            res = SceneResult(sc, "done", None)
            state.update(sc.key, state="done", error=None, finished=_now(), note="output already existed")
        else:
            res = _run_scene(sc, executor, state, run_translate, resume, overwrite, progress_factory)
            if res.state == "failed" and _client_lost(executor):
                lost = f"not run: the cluster connection was lost (during {sc.key})"
        results.append(res)
        if on_scene is not None:
            on_scene(res)
    return results


def _run_scene(sc, executor, state, run_translate, resume, overwrite, progress_factory) -> SceneResult:
    t0 = time.perf_counter()
    state.update(sc.key, state="running", error=None, started=_now(), finished=None)
    cb = progress_factory(sc) if progress_factory else None

    def progress(done: int, total: int) -> None:
        state.update(sc.key, force=done >= total, tiles_done=done, tiles_total=total)
        if cb is not None:
            cb(done, total)

    try:
        if not os.path.exists(sc.options.model):
            raise UsageError(f"model {sc.options.model} does not exist")
        summary = run_translate(
            sc.input, sc.output, sc.options, executor, overwrite=overwrite, resume=resume, progress=progress
        )
    except KeyboardInterrupt:
        state.update(sc.key, state="failed", error="interrupted", finished=_now())
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
    state.update(
        sc.key,
        state="done",
        error=None,
        finished=_now(),
        tiles_done=summary.tiles,
        tiles_total=summary.tiles,
        evaluations=summary.evaluations,
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
    """Each scene's state: the job state file's word, corrected by what is on disk — an existing output
    is done; a work directory (``.OUTPUT.work/done/``) gives the tiles finished so far; a scene recorded as
    running by a process that no longer exists (same host) is reported as interrupted."""
    from sar2opt_geo.workstate import WorkState

    doc = read_state(spec.state_path) or {}
    recorded = doc.get("scenes", {})
    dead = (
        doc.get("host") == socket.gethostname()
        and isinstance(doc.get("pid"), int)
        and not _pid_alive(doc["pid"])
    )
    out = []
    for sc in spec.scenes():
        r = recorded.get(sc.key, {})
        st = SceneStatus(
            sc.key, sc.output, r.get("state", "pending"), r.get("tiles_done"), r.get("tiles_total")
        )
        st.error = r.get("error")
        ws = WorkState(sc.output)
        if os.path.exists(sc.output) and not ws.root.exists():
            st.state, st.error = "done", None
            if st.tiles_total:
                st.tiles_done = st.tiles_total
        elif ws.root.exists():
            st.tiles_done = sum(int(v.get("n_tiles", 0)) for v in ws.done_records().values())
            st.tiles_total = st.tiles_total or _tile_total(sc)
            if st.state != "failed" and (st.state != "running" or dead):
                st.state = "partial"
        elif st.state == "running" and dead:
            st.state = "interrupted"
        out.append(st)
    return out


def _tile_total(sc: Scene) -> int | None:
    try:
        import rasterio

        from sar2opt_geo.tiling import TileGrid

        with rasterio.open(sc.input) as src:
            return TileGrid(src.height, src.width, sc.options.tile_size, sc.options.overlap).count
    except Exception:  # status is best effort: an unreadable input just shows no total
        return None


def replace_options(scene: Scene, **kw) -> Scene:
    """A copy of ``scene`` with some translate options changed (tests, tools)."""
    return replace(scene, options=replace(scene.options, **kw))
