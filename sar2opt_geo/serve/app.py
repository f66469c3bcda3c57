"""The Starlette application behind ``sar2opt-geo serve``.

Routes (all answers are JSON except tiles, images and the page):

- ``GET /`` the page; ``/static/...`` its vendored JS/CSS (Leaflet, leaflet-side-by-side) and own files;
- ``GET /api/scenes``; ``GET /api/scenes/{id}/stats`` ("auto" stretch); ``GET /api/scenes/{id}/point``;
- ``GET /tiles/{id}/{layer}/{z}/{x}/{y}.png`` (SAR options: ``stretch=db|auto``, ``min``, ``max``,
  ``cmap``, ``mode=b1|b2|false``);
- ``GET /api/models``, ``GET /api/samples``, ``GET /api/samples/{n}.png``;
  ``POST /api/translate`` (multipart: ``file`` or ``sample``, ``model``, ``lora``, ``preprocess``),
  ``GET /api/translate/{job}``, ``GET /api/translate/{job}/{input.png|result.png|result.tif}``;
- ``GET /api/jobs`` (``sar2opt-geo status`` of each job spec); ``GET /api/system``.

Scenes, layers, models, samples and results are addressed by identifiers the app made; a request never
supplies a path. Tile rendering runs in Starlette's thread pool, translations in their own worker thread
(:mod:`sar2opt_geo.serve.chips`), so neither blocks the other. Uploads and results live in a temporary
folder removed at shutdown. Requests whose ``Host`` is not the bound address are refused (DNS rebinding).
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import tempfile
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sar2opt_geo.serve import tiles
from sar2opt_geo.serve.catalog import Catalog, Layer, Scene, scene_id
from sar2opt_geo.serve.chips import MAX_UPLOAD_BYTES, ModelCatalog, Refused, TranslateService

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
#: Response headers of every answer: no third-party anything, no framing by other sites.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


#: Rasters without overviews (SAR inputs, optical truths) larger than this (px, longest side) get a COG copy
#: with overviews in the temporary folder at start-up (a background thread), so coarse zooms do not decimate
#: the full scene.
OVERVIEW_MIN_SIDE = 2048


class AppState:
    """What the routes share: the catalogue, the translate service, the job specs, the temp folder."""

    def __init__(
        self,
        paths=(),
        job_specs=(),
        models_dir=None,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        overview_min_side=OVERVIEW_MIN_SIDE,
    ):
        from sar2opt_geo.jobs import load_job

        self.tmp = Path(tempfile.mkdtemp(prefix="sar2opt-serve-"))
        try:
            self.catalog = Catalog()
            self.catalog.scan(paths)
            self.specs = [load_job(p) for p in job_specs]
            self.job_ids = [self.catalog.add_job(s) for s in self.specs]
            self.models = ModelCatalog(models_dir)
            self.translate = TranslateService(self.tmp, self.models, self._add_upload_scene, max_upload_bytes)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        self._stop = threading.Event()
        self.overviews_done = threading.Event()
        todo = [
            lay
            for s in self.catalog.all()
            for lay in s.layers.values()
            if lay.facts is not None
            and not lay.facts.overviews
            and not lay.facts.gcps  # GCP-only rasters are warped through a VRT anyway
            and max(lay.facts.width, lay.facts.height) > overview_min_side
        ]
        for lay in todo:
            lay.overviews = "building"
        self._overview_thread = threading.Thread(
            target=self._build_overviews, args=(todo,), name="sar2opt-overviews", daemon=True
        )
        self._overview_thread.start()

    def _build_overviews(self, layers) -> None:
        """COG copies (``io.staging_to_cog``: average overviews — of linear σ⁰ for SAR —, nodata and masks
        kept) of the rasters that have no overviews; each layer switches to its copy once it is complete."""
        from sar2opt_geo import io

        try:
            for n, lay in enumerate(layers):
                if self._stop.is_set():
                    return
                dst = self.tmp / "overviews" / f"{n}-{lay.name}.tif"
                part = dst.with_name(dst.stem + ".partial.tif")
                try:
                    dst.parent.mkdir(exist_ok=True)
                    io.staging_to_cog(lay.path, part)
                    part.replace(dst)
                    lay.tile_path, lay.overviews = str(dst), "ready"
                    log.info("overviews ready for %s", lay.path)
                except Exception as exc:  # tiles keep coming from the original file
                    lay.overviews = "failed"
                    log.warning("could not build overviews for %s: %s", lay.path, exc)
        finally:
            self.overviews_done.set()

    def _add_upload_scene(self, job, source: str, result: str) -> str:
        layers = {"sar": Layer("sar", source, "sar"), "translated": Layer("translated", result, "rgb")}
        for lay in layers.values():
            lay.refresh()
        sid = scene_id(f"upload-{job.name}", result)
        self.catalog.add(Scene(sid, f"upload: {job.name}", "upload", layers))
        return sid

    def close(self) -> None:
        self._stop.set()
        self._overview_thread.join(timeout=5)
        try:
            self.translate.shutdown()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _scene(request: Request) -> Scene:
    scene = request.app.state.s.catalog.get(request.path_params["sid"])
    if scene is None:
        raise Refused("no such scene", 404)
    return scene


def _layer(scene: Scene, name: str) -> Layer:
    lay = scene.layers.get(name)
    if lay is None or not lay.ready():
        raise Refused(f"scene {scene.id} has no {name!r} layer", 404)
    return lay


def _float(q, key: str, default: float | None = None) -> float | None:
    v = q.get(key)
    if v is None or v == "":
        return default
    try:
        f = float(v)
    except ValueError:
        raise Refused(f"{key} must be a number (got {v!r})") from None
    if not math.isfinite(f):
        raise Refused(f"{key} must be finite")
    return f


def sar_style(q, lay: Layer) -> tiles.SarStyle:
    """The SAR display style from query parameters (validated; unknown values are refused)."""
    stretch = q.get("stretch", "db")
    if stretch not in ("db", "auto"):
        raise Refused("stretch must be db or auto")
    cmap = q.get("cmap", "gray")
    if cmap not in tiles.COLORMAPS:
        raise Refused(f"cmap must be one of {', '.join(tiles.COLORMAPS)}")
    count = lay.facts.count
    mode = q.get("mode", "b1")
    valid_modes = {f"b{i + 1}" for i in range(count)} | ({"false"} if count >= 2 else set())
    if mode not in valid_modes:
        raise Refused(f"mode must be one of {', '.join(sorted(valid_modes))}")
    if stretch == "auto":
        ranges = tiles.auto_ranges(lay.path)
    else:
        lo = _float(q, "min", tiles.DB_STRETCH[0])
        hi = _float(q, "max", tiles.DB_STRETCH[1])
        if not lo < hi:
            raise Refused("min must be below max")
        ranges = ((lo, hi),) * count
    return tiles.SarStyle(mode=mode, ranges=tuple(ranges), colormap=cmap)


def _zxy(request: Request) -> tuple[int, int, int]:
    p = request.path_params
    z, x, y = p["z"], p["x"], p["y"]
    if not 0 <= z <= 24 or not (0 <= x < 2**z and 0 <= y < 2**z):
        raise Refused("no such tile", 404)
    return z, x, y


# ---------------------------------------------------------------------------------------------- routes


async def index(request: Request):
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def favicon(request: Request):
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


async def scenes(request: Request):
    return JSONResponse([s.describe() for s in await run_in_threadpool(request.app.state.s.catalog.all)])


async def scene_stats(request: Request):
    scene = _scene(request)
    lay = _layer(scene, "sar")
    ranges = await run_in_threadpool(tiles.auto_ranges, lay.path)
    scale = await run_in_threadpool(tiles.input_scale, lay.path)
    return JSONResponse(
        {
            "input_scale": scale,
            "auto": [list(r) for r in ranges],
            "percentiles": list(tiles.AUTO_PERCENTILES),
            "db": list(tiles.DB_STRETCH),
        }
    )


async def tile(request: Request):
    scene = _scene(request)
    lay = _layer(scene, request.path_params["layer"])
    z, x, y = _zxy(request)
    try:
        if lay.kind == "sar":
            style = sar_style(request.query_params, lay)
            png = await run_in_threadpool(tiles.sar_tile, lay.tiles_from, z, x, y, style, lay.path)
        else:
            png = await run_in_threadpool(tiles.rgb_tile, lay.tiles_from, z, x, y)
    except tiles.OutsideScene:
        # a tile inside the bounds the page was given (a corner of a rotated footprint) is empty, not missing
        if tiles.tile_touches(lay.facts.bounds_wgs84, z, x, y):
            return Response(
                tiles.empty_png(), media_type="image/png", headers={"Cache-Control": "max-age=300"}
            )
        return _error("tile outside the scene", 404)
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=300"})


async def point(request: Request):
    scene = _scene(request)
    lon = _float(request.query_params, "lon")
    lat = _float(request.query_params, "lat")
    if lon is None or lat is None or not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise Refused("lon and lat (WGS84 degrees) are required")
    out = {"lon": lon, "lat": lat, "layers": {}}
    for name, lay in scene.layers.items():
        if not lay.ready():
            continue
        try:
            values = await run_in_threadpool(tiles.point_values, lay.path, lon, lat)
        except tiles.OutsideScene:
            continue
        if values is None:
            out["layers"][name] = {"nodata": True}
        elif lay.kind == "sar":
            db = await run_in_threadpool(tiles.sar_point_db, lay.path, values)
            out["layers"][name] = (
                {"nodata": True}
                if db is None
                else {"db": {b: round(float(v), 2) for b, v in zip(lay.facts.band_names, db, strict=False)}}
            )
        else:
            out["layers"][name] = {"rgb": [int(round(v)) for v in values[:3]]}
    if not out["layers"]:
        return _error("point outside the scene", 404)
    return JSONResponse(out)


async def models(request: Request):
    m = request.app.state.s.models

    def row(e):
        return {"id": e.id, "label": e.label, "kind": e.kind, "meta": e.meta}

    return JSONResponse({"models": [row(e) for e in m.models()], "adapters": [row(e) for e in m.adapters()]})


async def samples(request: Request):
    paths = await run_in_threadpool(request.app.state.s.translate.samples)
    return JSONResponse([{"index": i, "url": f"/api/samples/{i}.png"} for i in range(len(paths))])


async def sample_png(request: Request):
    path = await run_in_threadpool(request.app.state.s.translate.sample_png, request.path_params["n"])
    return FileResponse(path, media_type="image/png")


async def translate_submit(request: Request):
    svc: TranslateService = request.app.state.s.translate
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > svc.max_bytes + 64 * 1024:
        raise Refused(
            f"the upload is larger than the app's {svc.max_bytes / 2**20:.0f} MB limit: translate large "
            "scenes with `sar2opt-geo translate INPUT OUTPUT`",
            413,
        )
    # read at most the limit (a body without Content-Length, e.g. chunked, is counted as it arrives), then
    # parse the form from memory
    limit, chunks, size = svc.max_bytes + 64 * 1024, [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(
                f"the upload is larger than the app's {svc.max_bytes / 2**20:.0f} MB limit: translate large "
                "scenes with `sar2opt-geo translate INPUT OUTPUT`",
                413,
            )
        chunks.append(chunk)
    body = b"".join(chunks)

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    request = Request(request.scope, replay)
    try:
        form = await request.form(max_files=1, max_fields=8, max_part_size=svc.max_bytes + 1)
    except Exception as exc:  # malformed multipart or a part over the limit
        raise Refused(
            f"could not read the form ({exc})", 413 if "size" in str(exc).lower() else 400
        ) from None
    try:
        upload = form.get("file")
        data = filename = sample = None
        if upload is not None and not isinstance(upload, str):
            data = await upload.read(svc.max_bytes + 1)
            filename = upload.filename
        elif form.get("sample") not in (None, ""):
            s = str(form.get("sample"))
            if not s.isdigit():
                raise Refused("sample must be a sample number")
            sample = int(s)
        job = await run_in_threadpool(
            lambda: svc.submit(
                data=data,
                filename=filename,
                sample=sample,
                model_id=str(form.get("model") or "bundled"),
                lora_id=str(form.get("lora") or "") or None,
                preprocess=str(form.get("preprocess") or "model"),
            )
        )
    finally:
        await form.close()
    return JSONResponse(job.describe(), status_code=202)


async def translate_status(request: Request):
    return JSONResponse(request.app.state.s.translate.get(request.path_params["job"]).describe())


async def translate_file(request: Request):
    svc = request.app.state.s.translate
    name = request.path_params["name"]
    path = svc.file(request.path_params["job"], name)
    job = svc.get(request.path_params["job"])
    media = "image/tiff" if name.endswith(".tif") else "image/png"
    stem = Path(job.name).stem
    download = f"{stem}_translated.tif" if name == "result.tif" else f"{stem}_{name}"
    return FileResponse(path, media_type=media, filename=download if name.startswith("result") else None)


async def jobs(request: Request):
    from sar2opt_geo.jobs import job_status

    st: AppState = request.app.state.s

    def rows():
        out = []
        for spec, ids in zip(st.specs, st.job_ids, strict=True):
            scenes_ = []
            for r in job_status(spec):
                sid = ids.get(r.key)
                scene = st.catalog.get(sid) if sid else None
                ready = (
                    scene is not None and "translated" in scene.layers and scene.layers["translated"].ready()
                )
                scenes_.append(
                    {
                        "key": r.key,
                        "output": r.output,
                        "state": r.state,
                        "progress": r.progress(),
                        "tiles_done": r.tiles_done,
                        "tiles_total": r.tiles_total,
                        "error": r.error,
                        "note": r.note,
                        "scene_id": sid if (ready and r.state == "done") else None,
                    }
                )
            out.append({"spec": spec.path, "scenes": scenes_})
        return out

    return JSONResponse(await run_in_threadpool(rows))


async def system(request: Request):
    from sar2opt_geo.serve.system import system_info

    st: AppState = request.app.state.s
    model_id = request.query_params.get("model") or "bundled"
    lora_id = request.query_params.get("lora") or None
    model, lora = st.models.resolve(model_id, lora_id)
    info = await run_in_threadpool(system_info)
    info["model"] = {"id": model.id, "label": model.label, "kind": model.kind, **model.meta}
    info["adapter"] = None if lora is None else {"id": lora.id, "label": lora.label, **lora.meta}
    info["skipped"] = st.catalog.skipped + st.models.skipped
    return JSONResponse(info)


async def refused(request: Request, exc: Refused):
    return _error(str(exc), exc.status)


async def not_found(request: Request, exc):
    status = getattr(exc, "status_code", 404)
    return _error("not found" if status == 404 else str(getattr(exc, "detail", "error")), status)


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every HTTP response (pure ASGI: no buffering of bodies)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def create_app(
    paths=(),
    job_specs=(),
    models_dir=None,
    *,
    host: str = "127.0.0.1",
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    state: AppState | None = None,
) -> Starlette:
    """The app for the scenes under ``paths`` and in ``job_specs`` (found now, once)."""
    st = state or AppState(paths, job_specs, models_dir, max_upload_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            st.close()

    allowed = {"127.0.0.1", "localhost", "::1", "[::1]"}
    if host not in ("0.0.0.0", "::"):
        allowed.add(host)
    else:
        allowed = {"*"}
    routes = [
        Route("/", index),
        Route("/favicon.ico", favicon),
        Route("/api/scenes", scenes),
        Route("/api/scenes/{sid}/stats", scene_stats),
        Route("/api/scenes/{sid}/point", point),
        Route("/tiles/{sid}/{layer}/{z:int}/{x:int}/{y:int}.png", tile),
        Route("/api/models", models),
        Route("/api/samples", samples),
        Route("/api/samples/{n:int}.png", sample_png),
        Route("/api/translate", translate_submit, methods=["POST"]),
        Route("/api/translate/{job}", translate_status),
        Route("/api/translate/{job}/{name}", translate_file),
        Route("/api/jobs", jobs),
        Route("/api/system", system),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=sorted(allowed)),
            Middleware(SecurityHeaders),
        ],
        exception_handlers={Refused: refused, 404: not_found, 405: not_found},
        lifespan=lifespan,
    )
    app.state.s = st
    return app
