"""Job specs: validation (errors name the key and its path), scene resolution, submit (a failing scene does
not stop the others; the job state file), status, and the example specs in jobs/."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from sar2opt_geo import defaults, io
from sar2opt_geo.errors import JobSpecError
from sar2opt_geo.jobs import STATE_NAME, JobState, job_status, load_job, run_job, scene_fingerprint

JOBS_DIR = Path(__file__).resolve().parent.parent / "jobs"


def write_spec(tmp_path, doc, name="job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return path


def base_doc(**kw):
    doc = {"version": 1, "inputs": ["scenes/*.tif"], "output": {"dir": "out"}}
    doc.update(kw)
    return doc


@pytest.fixture
def scenes_dir(tmp_path):
    d = tmp_path / "scenes"
    d.mkdir()
    for n in ("a.tif", "b.tif", "special.tif"):
        (d / n).write_bytes(b"")
    return d


@pytest.mark.parametrize("spec", sorted(JOBS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_example_specs_validate(spec):
    job = load_job(spec)
    assert job.inputs and job.fmt in ("cog", "zarr")


def test_example_specs_exist():
    names = {p.name for p in JOBS_DIR.glob("*.yaml")}
    assert {"demo.yaml", "cluster_gpu.yaml"} <= names


@pytest.mark.parametrize(
    "doc, message",
    [
        (base_doc(tilling={"overlap": 64}), "tilling: unknown key"),
        (base_doc(tiling={"overlap": 64, "tile_sise": 256}), "tiling.tile_sise: unknown key"),
        (base_doc(tiling={"overlap": "64"}), "tiling.overlap: expected an integer, got str"),
        (base_doc(tiling={"overlap": True}), "tiling.overlap: expected an integer, got bool"),
        (base_doc(tiling={"overlap": 63}), "tiling: overlap must be even"),
        (base_doc(output={"dir": "out", "format": "png"}), "output.format: expected 'cog' or 'zarr'"),
        (base_doc(output={"pattern": "{stem}.tif"}), "output.dir: missing"),
        (base_doc(output={"dir": "o", "pattern": "{date}.tif"}), "output.pattern: unknown field {date}"),
        (base_doc(output={"dir": "o", "pattern": "fixed.tif"}), "output.pattern: must be a file name"),
        (
            base_doc(output={"dir": "o", "pattern": "{stem:03d}.tif"}),
            "output.pattern: '{stem:03d}.tif': Unknown",
        ),
        (base_doc(output={"dir": "o", "pattern": "{stem"}), "output.pattern: expected '}' before end"),
        (base_doc(tiling={"tile_size": 256.0}), "tiling.tile_size: expected an integer, got float (256.0)"),
        (base_doc(tiling={"chunk_size": 0}), "tiling.chunk_size: must be >= 1 (got 0)"),
        (
            base_doc(filter={"name": "lee", "enl": "x"}),
            "filter.enl: expected a number or 'auto', got str ('x')",
        ),
        (base_doc(backend="tf"), "backend: expected 'auto' or 'torch' or 'onnx' or null, got str ('tf')"),
        (base_doc(precision="fp64"), "precision: expected 'fp32' or 'fp16' or 'bf16' or 'int8', got str"),
        (base_doc(precision=None), "precision: expected 'fp32' or 'fp16' or 'bf16' or 'int8', got null"),
        (base_doc(nodata_fill="zero"), "nodata_fill: expected 'reflect' or 'constant', got 'zero'"),
        (base_doc(preprocess={"name": "sar2optical", "window": 4}), "preprocess: SAR2Optical filter window"),
        (base_doc(preprocess={"name": "none", "gamma": 2.0}), "preprocess: gamma: only valid with name"),
        (base_doc(preprocess={"window": 5}), "preprocess.name: missing"),
        (base_doc(preprocess={"name": "sar2optical", "filter": "lee2"}), "preprocess.filter: expected 'lee'"),
        (base_doc(allow_ungeoreferenced="yes"), "allow_ungeoreferenced: expected true or false, got str"),
        (base_doc(tiling={"batch_size": 0}), "tiling.batch_size: must be >= 1 (got 0)"),
        (base_doc(overrides=[]), "overrides: expected a mapping or null, got list"),
        (base_doc(inputs={"a": 1}), "inputs: expected a list of strings, got dict"),
        (base_doc(warp="EPSG:nope"), "warp: 'EPSG:nope' is not auto, none or a CRS"),
        (base_doc(resolution=0), "resolution: must be > 0 (got 0)"),
        (base_doc(calibration="sigma"), "calibration: expected 'sigma0' or 'beta0' or 'gamma0', got str"),
        (base_doc(denoise="no"), "denoise: expected true or false, got str ('no')"),
        (base_doc(overrides={5: {"device": "cpu"}}), "overrides: keys must be strings, got int (5)"),
        (base_doc(resampling="cubic"), "resampling: expected 'bilinear' or 'nearest', got str ('cubic')"),
        (base_doc(filter={"window": 7}), "filter.name: missing"),
        (base_doc(filter={"name": "lee", "window": "7"}), "filter.window: expected an integer, got str"),
        (base_doc(filter={"name": "nosuch"}), "filter:"),
        (base_doc(device="tpu"), "device: expected auto, cpu or cuda"),
        (base_doc(input_scale="log"), "input_scale: expected"),
        (base_doc(model=3), "model: expected a string or null, got int"),
        (base_doc(version=2), "version: only version 1"),
        (base_doc(inputs=[]), "inputs: expected a non-empty list"),
        (base_doc(inputs=["a.tif", 5]), "inputs[1]: expected a string, got int"),
        (base_doc(overrides={"scenes/x.tif": {"output": {}}}), "overrides.scenes/x.tif.output: unknown key"),
        (base_doc(overrides={"scenes/a.tif": {"tiling": {"ovrlap": 1}}}), "tiling.ovrlap: unknown key"),
        (base_doc(overrides={"other/a.tif": {"device": "cpu"}}), "overrides.other/a.tif: matches none"),
        ({"version": 1, "output": {"dir": "o"}}, "inputs: missing"),
        ("version: 1\ninputs: [a\n", "not valid YAML"),
        ("", "the job spec is empty"),
        ("- 1\n- 2\n", "expected a mapping, got list"),
    ],
)
def test_invalid_specs_name_the_problem(tmp_path, doc, message):
    path = write_spec(tmp_path, doc)
    with pytest.raises(JobSpecError) as exc:
        load_job(path)
    assert message in str(exc.value)
    assert str(path) in str(exc.value)


def test_scenes_resolve_globs_overrides_and_outputs(tmp_path, scenes_dir):
    doc = base_doc(
        tiling={"tile_size": 256, "overlap": 64, "chunk_size": 1024},
        device="cpu",
        overrides={"scenes/special.tif": {"tiling": {"overlap": 128}, "device": "auto"}},
    )
    scenes = load_job(write_spec(tmp_path, doc)).scenes()
    assert [s.key for s in scenes] == ["scenes/a.tif", "scenes/b.tif", "scenes/special.tif"]
    assert [Path(s.output).name for s in scenes] == ["a_optical.tif", "b_optical.tif", "special_optical.tif"]
    assert all(Path(s.output).parent == tmp_path / "out" for s in scenes)
    a, special = scenes[0].options, scenes[2].options
    assert (a.overlap, a.chunk_size, a.device) == (64, 1024, "cpu")
    # an override merges into the job's tiling (chunk size kept) and replaces other keys
    assert (special.overlap, special.chunk_size, special.device) == (128, 1024, "auto")


def test_glob_matching_nothing_is_named(tmp_path, scenes_dir):
    job = load_job(write_spec(tmp_path, base_doc(inputs=["scenes/*.tif", "missing/*.tif"])))
    with pytest.raises(JobSpecError, match=r"'missing/\*\.tif' matches no file"):
        job.scenes()
    job = load_job(write_spec(tmp_path, base_doc(inputs=["scenes/nope.tif"])))
    with pytest.raises(JobSpecError, match="'scenes/nope.tif' does not exist"):
        job.scenes()


def test_two_scenes_one_output_names_both(tmp_path, scenes_dir):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.tif").write_bytes(b"")
    job = load_job(write_spec(tmp_path, base_doc(inputs=["scenes/a.tif", "other/a.tif"])))
    with pytest.raises(JobSpecError) as exc:
        job.scenes()
    assert "scenes/a.tif" in str(exc.value) and "other/a.tif" in str(exc.value)
    # the same file matched twice is one scene
    job = load_job(write_spec(tmp_path, base_doc(inputs=["scenes/a.tif", "scenes/*.tif"])))
    assert len(job.scenes()) == 3


def test_override_key_must_match_a_scene(tmp_path, scenes_dir):
    job = load_job(write_spec(tmp_path, base_doc(overrides={"scenes/zzz.tif": {"device": "cpu"}})))
    with pytest.raises(JobSpecError, match="overrides.scenes/zzz.tif: matches none of the job's scenes"):
        job.scenes()


@pytest.fixture(scope="module")
def job_scenes(tmp_path_factory):
    from sar2opt_geo.synth import SceneSpec, write_scene

    d = tmp_path_factory.mktemp("jobscenes")
    for name, seed in (("s1", 11), ("s2", 12)):
        sar, _ = write_scene(d / name, SceneSpec(width=300, height=260, seed=seed))
        os.replace(sar, d / f"{name}.tif")
    (d / "broken.tif").write_bytes(b"not a tiff")
    return d


def test_submit_failing_scene_does_not_stop_others(job_scenes, tiny_model_path, tmp_path, capsys):
    doc = {
        "version": 1,
        "inputs": [str(job_scenes / "*.tif")],
        "output": {"dir": "out"},
        "model": tiny_model_path,
        "device": "cpu",
        "tiling": {"chunk_size": 192},
    }
    spec = write_spec(tmp_path, doc)
    code, out, err = run_cli(["submit", spec, "-q"], capsys)
    assert code == 1
    assert "2 of 3 scenes done" in out
    assert "failed: " in out and "broken.tif" in out
    assert "1 of 3 scenes failed" in err
    for n in ("s1", "s2"):
        assert io.validate_cog(tmp_path / "out" / f"{n}_optical.tif")[0]
    state = json.loads((tmp_path / "out" / STATE_NAME).read_text())
    by_name = {Path(k).name: v for k, v in state["scenes"].items()}
    assert by_name["broken.tif"]["state"] == "failed" and by_name["broken.tif"]["error"]
    for n in ("s1.tif", "s2.tif"):
        s = by_name[n]
        assert s["state"] == "done" and s["tiles_done"] == s["tiles_total"] > 0
        assert s["started"] <= s["finished"]
    assert not list((tmp_path / "out").glob(".*.tmp-*"))

    # status: the finished scenes are done, the broken one failed with its reason
    code, out, _ = run_cli(["status", spec], capsys)
    assert code == 0
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:-1]}
    assert " done " in lines[str(job_scenes / "s1.tif")]
    assert " failed " in lines[str(job_scenes / "broken.tif")]

    # --resume skips the finished scenes (their outputs exist) and retries the failed one
    mtime = (tmp_path / "out" / "s1_optical.tif").stat().st_mtime_ns
    code, out, err = run_cli(["submit", spec, "--resume"], capsys)
    assert code == 1 and "already exists" in err
    assert (tmp_path / "out" / "s1_optical.tif").stat().st_mtime_ns == mtime
    # without --resume or --overwrite an existing output fails its scene
    code, out, err = run_cli(["submit", spec, "-q"], capsys)
    assert code == 1 and "3 of 3 scenes failed" in err


def _record(job, sc, pid: int, **fields) -> None:
    """The job state file as a run of this job (same fingerprints) leaves it, from process ``pid``."""
    state = JobState(job.state_path, str(job.path), [sc], {sc.key: scene_fingerprint(sc)})
    state.doc["pid"] = pid
    state.update(sc.key, **fields)


def test_status_counts_work_dir_records(job_scenes, tiny_model_path, tmp_path, capsys):
    """A scene this job left unfinished shows the tiles of its finished blocks; a work folder that this job
    did not leave (no record with this scene's fingerprint) is not this job's progress."""
    from sar2opt_geo.tiling import TileGrid
    from sar2opt_geo.workstate import WorkState

    doc = {"version": 1, "inputs": [str(job_scenes / "s1.tif")], "output": {"dir": "out"}}
    doc.update(model=tiny_model_path, tiling={"chunk_size": 192})
    spec = write_spec(tmp_path, doc)
    job = load_job(spec)
    (sc,) = job.scenes()
    ws = WorkState(sc.output)
    ws.begin({"x": 1}, resume=False)
    ws.mark_done("0-0", {"n_tiles": 1, "n_eval": 1})
    ws.mark_done("0-1", {"n_tiles": 1, "n_eval": 1})
    assert job_status(job)[0].state == "pending"  # no record of this job: someone else's work folder
    dead = 2**22 + 12345
    _record(job, sc, dead, state="running")
    (st,) = job_status(job)
    assert st.state == "partial"
    assert (st.tiles_done, st.tiles_total) == (2, TileGrid(260, 300).count)
    code, out, _ = run_cli(["status", spec], capsys)
    assert code == 0 and "partial" in out and f"2/{TileGrid(260, 300).count} tiles" in out
    _record(job, sc, os.getpid(), state="running")  # a live submitting process: running
    assert job_status(job)[0].state == "running"
    # the same record made with other options is another job's: pending
    other = load_job(write_spec(tmp_path, {**doc, "tiling": {"chunk_size": 384}}, name="other.yaml"))
    assert job_status(other)[0].state == "pending"
    _record(job, sc, dead, state="running")
    ws.discard()
    assert job_status(job)[0].state == "interrupted"


def test_submit_unreachable_scheduler_fails_fast(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "a.tif").write_bytes(b"")
    spec = write_spec(tmp_path, base_doc())
    t0 = time.monotonic()
    code, out, err = run_cli(["submit", spec, "--scheduler", f"tcp://127.0.0.1:{port}"], capsys)
    assert time.monotonic() - t0 < 15
    assert code == 1
    assert (
        err.startswith("Error: cannot reach the Dask scheduler at tcp://127.0.0.1:") and err.count("\n") == 1
    )
    code, _, err = run_cli(["submit", spec, "--scheduler", f"tls://127.0.0.1:{port}"], capsys)
    assert code == 1 and "TLS is not configured" in err and err.count("\n") == 1


def test_submit_dry_run_lists_scenes(tmp_path, scenes_dir, capsys):
    spec = write_spec(tmp_path, base_doc(output={"dir": "o", "pattern": "{index:03d}_{name}"}))
    code, out, _ = run_cli(["submit", spec, "--dry-run"], capsys)
    assert code == 0
    assert "000_a.tif" in out and "002_special.tif" in out


# --------------------------------------------------------------------------- defaults, errors, paths


def test_defaults_come_from_the_defaults_module(tmp_path, scenes_dir):
    (sc, *_) = load_job(write_spec(tmp_path, base_doc(filter={"name": "lee"}))).scenes()
    o = sc.options
    assert (o.tile_size, o.overlap) == (defaults.TILE_SIZE, defaults.OVERLAP)
    assert o.chunk_size == defaults.CHUNK_SIZE
    assert o.batch_size is None  # as translate: per engine (defaults.ENGINE_BATCH_SIZE), from memory on CUDA
    assert (o.backend, o.precision) == (defaults.BACKEND, defaults.PRECISION)
    assert o.chunk_size == 1024 and o.model == str(defaults.BUNDLED_MODEL) and o.device == "auto"
    assert (o.filter.window, float(o.filter.enl), o.filter.damping) == (
        defaults.FILTER_WINDOW,
        float(defaults.FILTER_ENL),
        defaults.FILTER_DAMPING,
    )


def test_several_errors_report_the_first_and_count_the_rest(tmp_path):
    path = write_spec(tmp_path, base_doc(tiling={"tile_size": 0, "overlap": "x"}, device="tpu"))
    with pytest.raises(JobSpecError) as exc:
        load_job(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: tiling.tile_size: must be >= 1 (got 0)") and msg.endswith("(and 2 more)")
    assert "\n" not in msg


def test_cli_reports_a_bad_spec_in_one_line(tmp_path, capsys):
    spec = write_spec(tmp_path, base_doc(tiling={"overlap": "64"}))
    for cmd in (["submit", spec, "--dry-run"], ["status", spec]):
        code, out, err = run_cli(cmd, capsys)
        assert code == 1 and out == ""
        assert err == f"Error: {spec}: tiling.overlap: expected an integer, got str ('64')\n"


def test_relative_paths_are_absolute_from_the_spec_folder(tmp_path, scenes_dir, monkeypatch):
    """Workers have another working directory: every path leaves load_job absolute, taken from the
    spec's folder, whatever the current directory and however the spec itself was named."""
    (tmp_path / "models").mkdir()
    doc = base_doc(model="models/m.safetensors", lora="models/a.safetensors", inputs=["scenes/a.tif"])
    write_spec(tmp_path, doc)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (sc,) = load_job(Path("..") / "job.yaml").scenes()
    assert sc.input == str(tmp_path / "scenes" / "a.tif")
    assert sc.output == str(tmp_path / "out" / "a_optical.tif")
    assert sc.options.model == str(tmp_path / "models" / "m.safetensors")
    assert sc.options.lora == str(tmp_path / "models" / "a.safetensors")
    assert all(os.path.isabs(p) for p in (sc.input, sc.output, sc.options.model, sc.options.lora))


# ------------------------------------------------------------------------------- the input is sacred


def _collides(tmp_path, doc, *names):
    spec = write_spec(tmp_path, doc)
    with pytest.raises(JobSpecError) as exc:
        load_job(spec).scenes()
    msg = str(exc.value)
    assert "\n" not in msg and "would destroy" in msg and all(n in msg for n in names), msg
    return msg


def test_outputs_landing_on_inputs_are_refused(tmp_path, scenes_dir, capsys):
    # the same path: output dir = the inputs' folder, pattern = the input's name
    doc = base_doc(output={"dir": "scenes", "pattern": "{name}"})
    msg = _collides(tmp_path, doc, str(scenes_dir / "a.tif"), "input 'scenes/a.tif'")
    assert " is input " in msg
    code, out, err = run_cli(["submit", write_spec(tmp_path, doc), "--dry-run"], capsys)
    assert code == 1 and "->" not in out and err.startswith("Error: ") and err.count("\n") == 1
    # through a symbolic link to the inputs' folder
    (tmp_path / "linked").symlink_to(scenes_dir)
    msg = _collides(tmp_path, base_doc(output={"dir": "linked", "pattern": "{name}"}), "linked/a.tif")
    assert "symbolic link" in msg
    # a hard link of an input where an output goes
    (tmp_path / "out").mkdir()
    os.link(scenes_dir / "b.tif", tmp_path / "out" / "b.tif")
    doc = base_doc(output={"dir": "out", "pattern": "{name}"})
    assert "hard link" in _collides(tmp_path, doc, "input 'scenes/b.tif'")


def test_outputs_inside_an_input_product_folder_are_refused(tmp_path):
    safe = tmp_path / "S1A_IW_GRDH_1SDV_20240101T000000.SAFE"
    (safe / "measurement").mkdir(parents=True)
    (safe / "measurement" / "s1a-iw-grd-vv.tiff").write_bytes(b"")
    doc = {"version": 1, "inputs": [f"{safe.name}/measurement/*.tiff"], "output": {"dir": safe.name}}
    msg = _collides(tmp_path, doc, "product folder", str(safe))
    assert "s1a-iw-grd-vv_optical.tif" in msg


def test_output_onto_the_model_is_refused(tmp_path, scenes_dir):
    (tmp_path / "out").mkdir()
    doc = base_doc(model="out/a_optical.tif", inputs=["scenes/a.tif"])
    _collides(tmp_path, doc, "model", str(tmp_path / "out" / "a_optical.tif"))
    # distinct paths do not collide
    assert load_job(write_spec(tmp_path, base_doc(output={"dir": "scenes", "pattern": "{stem}_rgb.tif"})))


# ------------------------------------------------------------------ fingerprints: resume and status


def _states(job) -> list[str]:
    return [s.state for s in job_status(job)]


def test_resume_redoes_stale_outputs_and_status_agrees(tmp_path, tiny_model_path, capsys):
    """Issue 12: an interrupted `submit --overwrite` with a changed spec, then `submit --resume`: the scenes
    the interrupted run did not reach hold the old spec's outputs and must be redone; `status` calls them
    pending (not done) all along, and the running scene running."""
    from sar2opt_geo.distributed import make_executor
    from sar2opt_geo.synth import SceneSpec, write_scene

    scenes = tmp_path / "scenes"
    for i, name in enumerate(("a", "b", "c")):
        sar, _ = write_scene(tmp_path / f"synth{i}", SceneSpec(width=200, height=180, seed=20 + i))
        scenes.mkdir(exist_ok=True)
        os.replace(sar, scenes / f"{name}.tif")
    doc = base_doc(model=tiny_model_path, device="cpu", tiling={"chunk_size": 192})
    spec = write_spec(tmp_path, doc)
    code, out, _ = run_cli(["submit", spec, "-q"], capsys)
    assert code == 0 and "3 of 3 scenes done" in out
    outs = [tmp_path / "out" / f"{n}_optical.tif" for n in "abc"]
    assert _states(load_job(spec)) == ["done"] * 3

    # the spec changes (a speckle filter): the existing outputs are not this spec's
    write_spec(tmp_path, {**doc, "filter": {"name": "boxcar", "window": 3}})
    job = load_job(spec)
    code, out, _ = run_cli(["status", spec], capsys)
    assert _states(job) == ["pending"] * 3 and "will be redone" in out
    seen = {}

    def progress_factory(sc):
        def progress(done, total):
            seen.setdefault(sc.key, _states(job))

        return progress

    def on_scene(res):  # Ctrl-C once the first scene is finished
        seen["after " + res.scene.key] = _states(job)
        raise KeyboardInterrupt

    with make_executor() as ex, pytest.raises(KeyboardInterrupt):
        run_job(job, ex, overwrite=True, on_scene=on_scene, progress_factory=progress_factory)
    assert seen["scenes/a.tif"] == ["running", "pending", "pending"]
    assert seen["after scenes/a.tif"] == ["done", "pending", "pending"]
    assert _states(job) == ["done", "pending", "pending"]
    mtimes = [p.stat().st_mtime_ns for p in outs]

    code, out, err = run_cli(["submit", spec, "--resume"], capsys)
    assert code == 0 and "3 of 3 scenes done" in out
    assert "skipped scenes/a.tif" in err and "made with this job's model, options and input" in err
    assert err.count("redone: the existing output was not made with this job's") == 2
    assert outs[0].stat().st_mtime_ns == mtimes[0]
    assert all(p.stat().st_mtime_ns != m for p, m in zip(outs[1:], mtimes[1:], strict=True))
    for p in outs:  # every output now made with the filter
        assert "boxcar" in io.read_raster(p)[1]["tags"]["SAR2OPT_FILTER"]
    assert _states(job) == ["done"] * 3

    # a changed input (newer file) makes its output stale too; an output replaced by hand is not done
    os.utime(scenes / "c.tif", ns=(time.time_ns(), time.time_ns()))
    outs[0].write_bytes(outs[0].read_bytes())
    assert _states(job) == ["pending", "done", "pending"]
    code, out, err = run_cli(["submit", spec, "--resume"], capsys)
    assert code == 0 and "skipped scenes/b.tif" in err and err.count("redone:") == 2
    assert _states(job) == ["done"] * 3

    # a live `submit --overwrite` of the same spec: the scenes it has not reached are pending (it will
    # replace them), although their outputs carry the fingerprint; once its process is gone they are done
    seen.clear()
    with make_executor() as ex, pytest.raises(KeyboardInterrupt):
        run_job(job, ex, overwrite=True, on_scene=on_scene, progress_factory=progress_factory)
    assert seen["scenes/a.tif"] == ["running", "pending", "pending"]
    assert seen["after scenes/a.tif"] == ["done", "pending", "pending"]
    doc = json.loads((tmp_path / "out" / STATE_NAME).read_text())
    (tmp_path / "out" / STATE_NAME).write_text(json.dumps({**doc, "pid": 2**22 + 12345}))
    assert _states(job) == ["done"] * 3
    code, out, err = run_cli(["submit", spec, "--resume"], capsys)
    assert code == 0 and err.count("skipped") == 3


def test_resume_continues_only_this_jobs_work_state(tmp_path, tiny_model_path, capsys):
    """A scene interrupted mid-way continues from its finished blocks under `--resume`; after a spec change
    the same work folder is another job's: the scene starts over instead of failing on it."""
    from sar2opt_geo.distributed import make_executor
    from sar2opt_geo.synth import SceneSpec, write_scene
    from sar2opt_geo.workstate import WorkState

    sar, _ = write_scene(tmp_path / "synth", SceneSpec(width=300, height=260, seed=31))
    (tmp_path / "scenes").mkdir()
    os.replace(sar, tmp_path / "scenes" / "a.tif")
    doc = base_doc(model=tiny_model_path, device="cpu", tiling={"chunk_size": 192})
    spec = write_spec(tmp_path, doc)

    def interrupt_after_first_block(sc):
        def progress(done, total):
            if 0 < done < total:
                raise KeyboardInterrupt

        return progress

    def interrupted_run():
        with make_executor() as ex, pytest.raises(KeyboardInterrupt):
            run_job(load_job(spec), ex, progress_factory=interrupt_after_first_block)
        (sc,) = load_job(spec).scenes()
        assert WorkState(sc.output).done_records()
        assert job_status(load_job(spec))[0].state == "partial"  # Ctrl-C'd, its finished blocks kept

    interrupted_run()
    code, out, err = run_cli(["submit", spec, "--resume"], capsys)
    assert code == 0, err
    evaluated, tiles = map(int, re.search(r"(\d+) of (\d+) tiles evaluated", err).groups())
    assert 0 < evaluated < tiles  # the finished blocks' tiles were not evaluated again

    (tmp_path / "out" / "a_optical.tif").unlink()
    interrupted_run()
    write_spec(tmp_path, {**doc, "filter": {"name": "boxcar", "window": 3}})
    assert job_status(load_job(spec))[0].state == "pending"  # the work folder is the old spec's
    code, out, err = run_cli(["submit", spec, "--resume"], capsys)
    assert code == 0, err
    evaluated, tiles = map(int, re.search(r"(\d+) of (\d+) tiles evaluated", err).groups())
    assert evaluated == tiles
    assert "boxcar" in io.read_raster(tmp_path / "out" / "a_optical.tif")[1]["tags"]["SAR2OPT_FILTER"]


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path, tiny_model_path, capsys, monkeypatch):
    from sar2opt_geo.synth import SceneSpec, write_scene

    sar, _ = write_scene(tmp_path / "synth", SceneSpec(width=300, height=260, seed=32))
    (tmp_path / "scenes").mkdir()
    os.replace(sar, tmp_path / "scenes" / "a.tif")
    spec = write_spec(tmp_path, base_doc(model=tiny_model_path, device="cpu", tiling={"chunk_size": 192}))

    class CtrlC:  # the progress display; Ctrl-C arrives after the first finished block
        def __init__(self, label, quiet):
            pass

        def __call__(self, done, total):
            if 0 < done < total:
                raise KeyboardInterrupt

    monkeypatch.setattr("sar2opt_geo.cli.jobs.Progress", CtrlC)
    code, _, err = run_cli(["submit", spec, "--workers", "1"], capsys)
    work = tmp_path / "out" / ".a_optical.tif.work"
    assert code == 130 and work.is_dir()
    again = f"sar2opt-geo submit {spec} --resume --workers 1"
    assert f"Interrupted during scenes/a.tif: its finished blocks are kept in {work}; " in err
    assert f"continue with `{again}` or discard them with `rm -r {work}`" in err
    assert "Traceback" not in err and err.count("Interrupted") == 1
    monkeypatch.undo()
    code, _, err = run_cli(again.split()[1:], capsys)
    assert code == 0, err
    evaluated, tiles = map(int, re.search(r"(\d+) of (\d+) tiles evaluated", err).groups())
    assert code == 0 and evaluated < tiles and not work.exists()  # finished blocks not evaluated again


def test_a_second_submit_of_a_running_job_is_refused(tmp_path, scenes_dir, capsys):
    import subprocess
    import sys

    spec = write_spec(tmp_path, base_doc())
    job = load_job(spec)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = JobState(job.state_path, str(spec), job.scenes(), {})
        state.doc["pid"] = other.pid
        state.write()
        code, out, err = run_cli(["submit", spec], capsys)
        assert code == 2 and err.count("\n") == 1
        assert f"another submit (process {other.pid}" in err and str(job.state_path) in err
        # once it says it has finished, or its process is gone, the job is free again
        state.doc["finished"] = "2026-01-01T00:00:00+00:00"
        state.write()
        code, _, err = run_cli(["submit", spec, "-q"], capsys)
        assert "another submit" not in err
    finally:
        other.kill()
        other.wait()


def test_sentinel1_products_as_inputs(tmp_path, tiny_model_path, capsys):
    """SAFE product folders are scenes (with translate's product options); an output inside one is refused."""
    from sar2opt_geo.sentinel1.synth import ProductSpec, write_product

    safe = Path(
        write_product(tmp_path / "products", ProductSpec(width=300, height=260, seed=5), truth=False).safe
    )
    doc = {"version": 1, "inputs": ["products/*.SAFE"], "output": {"dir": "out"}, "model": tiny_model_path}
    doc.update(bands="VV", device="cpu", calibration="gamma0", warp="none", tiling={"chunk_size": 192})
    spec = write_spec(tmp_path, doc)
    (sc,) = load_job(spec).scenes()
    assert sc.input == str(safe) and Path(sc.output).name == f"{safe.stem}_optical.tif"
    assert (sc.options.calibration, sc.options.warp, sc.options.denoise) == ("gamma0", "none", True)
    code, out, err = run_cli(["submit", spec, "-q"], capsys)
    assert code == 0, err
    assert io.validate_cog(sc.output)[0] and job_status(load_job(spec))[0].state == "done"
    # the product folder is an input: no output may go inside it
    msg = _collides(
        tmp_path, {**doc, "output": {"dir": f"products/{safe.name}"}}, "is inside the folder input"
    )
    assert str(safe) in msg


# ------------------------------------------------------------- every translate option in a job spec


#: TranslateOptions fields a spec sets under another name or key (everything else has its own top-level key)
SPEC_ELSEWHERE = {
    "tile_size": "tiling",
    "overlap": "tiling",
    "chunk_size": "tiling",
    "batch_size": "tiling",
    "fmt": "output.format",
    "checkpoint_preprocess": "preprocess: {name: none}",
}


def test_every_translate_option_is_a_job_key():
    """What translate takes, a job spec takes: a TranslateOptions field added later without a spec key
    fails here."""
    from dataclasses import fields

    from sar2opt_geo.jobs import SceneOptions, TilingSpec
    from sar2opt_geo.plan import TranslateOptions

    missing = [
        f.name
        for f in fields(TranslateOptions)
        if f.name not in SceneOptions.model_fields and f.name not in SPEC_ELSEWHERE
    ]
    assert missing == []
    assert {k for k, v in SPEC_ELSEWHERE.items() if v == "tiling"} == set(TilingSpec.model_fields)


def test_precision_and_other_translate_options_reach_the_scenes(tmp_path, scenes_dir):
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}))
    doc = base_doc(
        precision="int8",
        backend="auto",
        nodata_fill="constant",
        allow_ungeoreferenced=True,
        aoi="aoi.geojson",
        preprocess={"name": "sar2optical", "filter": "median", "window": 7, "gamma": 1.5},
        tiling={"batch_size": 4},
        overrides={
            "scenes/b.tif": {"precision": "bf16", "preprocess": {"name": "none"}},
            "scenes/special.tif": {"backend": "torch", "tiling": {"chunk_size": 384}},
        },
    )
    scenes = {Path(sc.input).name: sc for sc in load_job(write_spec(tmp_path, doc)).scenes()}
    a, b, special = scenes["a.tif"].options, scenes["b.tif"].options, scenes["special.tif"].options
    assert (a.precision, a.backend, a.nodata_fill) == ("int8", "auto", "constant")
    assert a.allow_ungeoreferenced
    assert a.aoi == str(tmp_path / "aoi.geojson") and a.batch_size == 4
    assert (a.preprocess.filter, a.preprocess.window, a.preprocess.gamma) == ("median", 7, 1.5)
    assert a.checkpoint_preprocess
    assert b.precision == "bf16" and b.preprocess is None and not b.checkpoint_preprocess
    assert (special.precision, special.backend) == ("int8", "torch")
    assert (special.chunk_size, special.batch_size) == (384, 4)
    # precision changes pixels: it is part of the scene's fingerprint (a bf16 output is not an int8 one)
    for n in ("a.tif", "b.tif", "special.tif"):
        (scenes_dir / n).write_bytes(b"x")
    fp = {n: scene_fingerprint(sc) for n, sc in scenes.items()}
    doc["precision"] = "fp32"
    again = {Path(sc.input).name: sc for sc in load_job(write_spec(tmp_path, doc, "fp32.yaml")).scenes()}
    assert scene_fingerprint(again["a.tif"]) != fp["a.tif"]
    assert scene_fingerprint(again["b.tif"]) == fp["b.tif"]  # its override keeps bf16
    # the AOI's content counts, not only its path
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [2, 2], [0, 0]]]}))
    assert scene_fingerprint(again["b.tif"]) != fp["b.tif"]


def test_an_output_onto_the_jobs_aoi_is_refused(tmp_path, scenes_dir):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_optical.tif").write_text("{}")
    spec = write_spec(tmp_path, base_doc(aoi="out/a_optical.tif"))
    with pytest.raises(JobSpecError, match="is AOI"):
        load_job(spec).scenes()


def test_submit_runs_the_precision_the_spec_asks_for(job_scenes, tiny_model_path, tmp_path, capsys):
    doc = base_doc(inputs=[str(job_scenes / "s1.tif")], model=tiny_model_path, device="cpu", precision="bf16")
    doc["tiling"] = {"chunk_size": 192}
    code, out, err = run_cli(["submit", write_spec(tmp_path, doc), "-q"], capsys)
    assert code == 0, err
    _, meta = io.read_raster(tmp_path / "out" / "s1_optical.tif")
    assert meta["tags"]["SAR2OPT_BACKEND"] == "torch bf16"  # auto picks torch for bf16 on CPU
