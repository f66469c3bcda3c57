"""Against a real cluster: a scheduler and two worker processes on 127.0.0.1, started by these tests as
separate processes (as an operator would) and stopped at the end.

- a worker killed mid-job while it holds partial sums that unfinished blocks still need: those tiles are
  evaluated again elsewhere (seen in the probe model's own evaluation log), the job completes, output
  identical to a clean run;
- the client killed mid-job: ``--resume`` finishes it, identical output, finished blocks not recomputed;
- the final path never holds a partial file;
- model tasks submitted with ``resources={"GPU": 1}`` keep that restriction on the scheduler and run only
  on the worker that has the resource.
"""

from __future__ import annotations

import contextlib
import operator
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sar2opt_geo import io
from sar2opt_geo.distributed import ClientExecutor, make_executor
from sar2opt_geo.plan import TranslateOptions
from sar2opt_geo.run import run_translate
from sar2opt_geo.workstate import WorkState

TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CHUNK = 192  # 700 × 600 px, tile 256 / stride 192: 4 × 4 blocks of one tile each


def wait_for(cond, timeout: float, what: str, step: float = 0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class Cluster:
    """``dask scheduler`` + ``dask worker`` processes (own process groups, so teardown reaches the nanny's
    worker child too)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            OMP_NUM_THREADS="1",
        )
        sched_file = tmp / "scheduler.json"
        self._spawn(
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
            + ["--scheduler-file", str(sched_file)],
            "scheduler",
        )
        wait_for(sched_file.exists, 60, "the scheduler to start", step=0.1)

        self.address = wait_for(lambda: _read_json(sched_file).get("address"), 30, "the scheduler address")

    def _spawn(self, args, name):
        log = open(self.tmp / f"{name}-{len(self.procs)}.log", "wb")
        p = subprocess.Popen(
            [str(BIN / "dask"), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        self.procs.append(p)
        return p

    def add_worker(self, *extra: str):
        return self._spawn(
            ["worker", self.address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"]
            # the probe architecture is registered in every worker process, restarted ones too
            + ["--host", "127.0.0.1", "--preload", "probe_models", *extra],
            "worker",
        )

    def close(self):
        for p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)


def _read_json(path):
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from distributed import Client

    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.add_worker()
        c.add_worker("--resources", "GPU=1")
        with Client(c.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
            # import torch and the pipeline on the workers now, so the tests time their own work
            client.run(__import__, "sar2opt_geo.run")
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def ft_scene(tmp_path_factory):
    from sar2opt_geo.synth import SceneSpec, write_scene

    sar, _ = write_scene(tmp_path_factory.mktemp("ft"), SceneSpec(width=700, height=600, seed=21))
    return str(sar)


def opts(model):
    return TranslateOptions(model=model, device="cpu", chunk_size=CHUNK)


@pytest.fixture(scope="module")
def clean_run(cluster, ft_scene, tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "clean.tif"
    with make_executor(scheduler=cluster.address) as ex:
        summary = run_translate(ft_scene, str(out), opts(tiny_model_path), ex)
    assert summary.blocks >= 12
    data, _ = io.read_raster(out)
    return data, summary


def worker_pids(client) -> dict[str, int]:
    return client.run(os.getpid)


def test_gpu_resource_restriction_reaches_the_scheduler(cluster):
    """``ClientExecutor.run`` with resources: the acc tasks keep ``{"GPU": 1}`` through graph optimisation
    (checked on the scheduler) and run only on the GPU worker; the others are unrestricted."""
    from distributed import Client

    with Client(cluster.address, timeout=30, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        info = client.scheduler_info(n_workers=-1)["workers"]
        gpu = {a for a, w in info.items() if w.get("resources", {}).get("GPU")}
        assert len(gpu) == 1 and len(info) >= 2
        pids = worker_pids(client)
        n = 12
        dsk = {}
        for i in range(n):
            dsk[("acc-t", i)] = (os.getpid,)
            dsk[("out-t", i)] = (operator.add, ("acc-t", i), 0)
        resources = {("acc-t", i): {"GPU": 1} for i in range(n)}
        keys = [("acc-t", i) for i in range(n)] + [("out-t", i) for i in range(n)]
        seen = {}

        def restrictions(dask_scheduler=None):
            return {
                repr(k): dict(ts.resource_restrictions or {})
                for k, ts in dask_scheduler.tasks.items()
                if isinstance(k, tuple) and str(k[0]).endswith("-t")
            }

        def on_result(key, value):
            if not seen:  # every key is held by the client until run() returns
                seen.update(client.run_on_scheduler(restrictions))

        res = ClientExecutor(client).run(dsk, keys, on_result, resources=resources)
        for i in range(n):
            assert seen[repr(("acc-t", i))] == {"GPU": 1}
            assert seen[repr(("out-t", i))] == {}
            assert res[("acc-t", i)] == pids[next(iter(gpu))]


def test_gpu_job_layout_prep_anywhere_model_on_the_gpu_worker(
    cluster, ft_scene, tiny_model_path, clean_run, tmp_path, monkeypatch
):
    """The graph a GPU job gets (blocks' inputs prepared by ``prep`` tasks that any worker runs, the model's
    ``acc`` tasks restricted to the worker with ``GPU=1``) on a real scheduler, the model on CPU: every acc
    task runs on the GPU worker, every block's input came from a prep task, and the output is the clean
    run's, byte for byte."""
    from distributed import Client, get_task_stream

    from sar2opt_geo import tasks

    class GpuRestricted(ClientExecutor):
        def run(self, dsk, keys, on_result=None, resources=None):
            acc = {k: {"GPU": 1} for k in dsk if isinstance(k, tuple) and str(k[0]).startswith("acc-")}
            return super().run(dsk, keys, on_result, resources={**(resources or {}), **acc})

    monkeypatch.setattr(tasks, "prepares_apart", lambda job: True)  # as for a model on CUDA
    out = tmp_path / "gpu-layout.tif"
    with Client(cluster.address, timeout=30, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        info = client.scheduler_info(n_workers=-1)["workers"]
        (gpu,) = [a for a, w in info.items() if w.get("resources", {}).get("GPU")]
        with get_task_stream(client) as ts:
            run_translate(ft_scene, str(out), opts(tiny_model_path), GpuRestricted(client))
    ran = {}
    for rec in ts.data:
        ran.setdefault(str(rec["key"]), set()).add(rec["worker"])
    acc = {k: w for k, w in ran.items() if "acc-" in k}
    prep = {k: w for k, w in ran.items() if "prep-" in k}
    assert len(acc) >= 12 and len(prep) == len(acc)
    assert all(w == {gpu} for w in acc.values())
    assert np.array_equal(io.read_raster(out)[0], clean_run[0])


def test_device_resolution_uses_the_workers_gpus(cluster):
    """Submitting from a machine without a GPU: ``auto`` becomes cuda because a worker advertises GPU=1,
    and ``cuda`` is accepted although the client has none."""
    from sar2opt_geo.translate import resolve_device

    with make_executor(scheduler=cluster.address) as ex:
        assert ex.gpu_workers() == 1
        assert resolve_device("auto", ex) == "cuda"
        assert resolve_device("cuda", ex) == "cuda"
        assert resolve_device("cpu", ex) == "cpu"


@pytest.fixture(scope="module")
def probe_scene(tmp_path_factory):
    from probe_models import write_position_scene

    return write_position_scene(tmp_path_factory.mktemp("probe") / "pos.tif", 600, 700)


def held_partials(dask_scheduler=None):
    """``acc`` results in memory: ``(bi, bj, state of the block's own out task, workers holding it)``."""
    rows = []
    for key, ts in dask_scheduler.tasks.items():
        if isinstance(key, tuple) and str(key[0]).startswith("acc-") and ts.state == "memory":
            own = dask_scheduler.tasks.get(("out-" + str(key[0])[4:],) + tuple(key[1:]))
            rows.append((key[1], key[2], own.state if own else None, sorted(w.address for w in ts.who_has)))
    return rows


def test_worker_killed_mid_job(cluster, probe_scene, tmp_path):
    """Kill a worker that holds, alone, the partial sums of a block whose own output is not computed yet:
    that work is lost, so the block's tile must be evaluated again on another worker (the probe model logs
    every evaluation with its process id), and the output still equals a clean run."""
    from distributed import Client
    from probe_models import read_log, save_probe

    clean_out, out = tmp_path / "clean.tif", tmp_path / "killed.tif"
    log = tmp_path / "evals.log"
    model = save_probe(tmp_path / "probe.safetensors", "field", log=log)
    probe_opts = TranslateOptions(model=model, device="cpu", chunk_size=CHUNK, input_scale="linear")
    killed = {}
    with Client(cluster.address, timeout=30, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        clean = run_translate(probe_scene, str(clean_out), probe_opts, ClientExecutor(client))
        assert clean.evaluations == clean.tiles == 12  # no nodata; chunk = stride: one tile per block
        log.unlink()
        pids = worker_pids(client)

        def progress(done, total):
            if done == 0 or killed:
                return
            for bi, bj, own_state, holders in client.run_on_scheduler(held_partials):
                if own_state in ("waiting", "queued", "no-worker") and len(holders) == 1:
                    os.kill(pids[holders[0]], signal.SIGKILL)  # the worker process (its nanny restarts it)
                    killed.update(at=done, block=(bi, bj), pid=pids[holders[0]])
                    return

        s = run_translate(probe_scene, str(out), probe_opts, ClientExecutor(client), progress=progress)
        assert killed and killed["at"] < s.tiles
        # the nanny brings the worker back for the next tests (it imports torch again: allow for a busy host)
        client.wait_for_workers(2, timeout=180)
    evals = read_log(log)
    bi, bj = killed["block"]
    lost = [pid for pid, r0, c0, _ in evals if (r0, c0) == (bi * CHUNK, bj * CHUNK)]
    assert lost[0] == killed["pid"] and len(lost) >= 2 and killed["pid"] not in lost[1:]
    assert len(evals) > s.tiles  # some work was done twice
    assert len({(r0, c0) for _, r0, c0, _ in evals}) == s.tiles
    assert (io.read_raster(out)[0] == io.read_raster(clean_out)[0]).all()
    assert io.validate_cog(out)[0]
    assert not WorkState(out).root.exists()


def test_client_killed_then_resume(cluster, ft_scene, tiny_model_path, clean_run, tmp_path):
    from distributed import Client

    clean, clean_summary = clean_run
    out = tmp_path / "resumed.tif"
    ws = WorkState(out)
    cmd = [str(BIN / "sar2opt-geo"), "translate", ft_scene, str(out), "--scheduler", cluster.address]
    cmd += ["--model", tiny_model_path, "--device", "cpu", "--chunk-size", str(CHUNK), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(lambda: len(list((ws.root / "done").glob("*.json"))) >= 2, 90, "finished blocks", 0.005)
    finally:
        proc.kill()
        proc.wait(10)
    with Client(cluster.address, timeout=30, set_as_default=False) as client:
        # tasks already running on workers when the client died still finish: wait until all are idle

        def busy(dask_worker=None):
            return dask_worker.state.executing_count

        wait_for(lambda: not any(client.run(busy).values()), 30, "the workers to go idle", 0.1)
        assert not out.exists(), "the killed run must not leave an output"
        records = ws.done_records()
        assert 2 <= len(records) < clean_summary.blocks
        prior = sum(r["n_eval"] for r in records.values())
        s = run_translate(ft_scene, str(out), opts(tiny_model_path), ClientExecutor(client), resume=True)
    assert s.evaluations == clean_summary.evaluations - prior
    data, _ = io.read_raster(out)
    assert (data == clean).all()
    assert not ws.root.exists()


def test_final_path_never_partial(cluster, ft_scene, tiny_model_path, clean_run, tmp_path):
    clean, _ = clean_run
    out = tmp_path / "watched.tif"
    seen = {"sizes": set(), "valid": None, "mtime": set()}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                st = out.stat()
            except FileNotFoundError:
                time.sleep(0.002)
                continue
            seen["sizes"].add(st.st_size)
            seen["mtime"].add(st.st_mtime_ns)
            if seen["valid"] is None:
                seen["valid"] = io.validate_cog(out)[0]
            time.sleep(0.002)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        with make_executor(scheduler=cluster.address) as ex:
            run_translate(ft_scene, str(out), opts(tiny_model_path), ex)
        time.sleep(0.05)
    finally:
        stop.set()
        t.join(10)
    assert seen["valid"] is True
    assert seen["sizes"] == {out.stat().st_size} and len(seen["mtime"]) == 1
    data, _ = io.read_raster(out)
    assert (data == clean).all()
    # nothing but the output is left beside it (no temporaries, no work dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["watched.tif"]


def test_cli_summary_counts_evaluations(cluster, ft_scene, tiny_model_path, clean_run, tmp_path):
    """The CLI on the cluster: one-line summary with the evaluation count."""
    _, clean_summary = clean_run
    out = tmp_path / "cli.tif"
    cmd = [str(BIN / "sar2opt-geo"), "translate", ft_scene, str(out), "--scheduler", cluster.address]
    cmd += ["--model", tiny_model_path, "--device", "cpu", "--chunk-size", str(CHUNK)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = re.search(r"(\d+) of (\d+) tiles evaluated", r.stderr)
    assert m and int(m.group(1)) == clean_summary.evaluations and int(m.group(2)) == clean_summary.tiles
    assert np.array_equal(io.read_raster(out)[0], clean_run[0])


class ReplayingExecutor:
    """Threads, then every task run once more — as the scheduler does when a worker dies holding
    results: finished ``out`` tasks and the ``acc`` tasks they need are executed again."""

    def __init__(self):
        from sar2opt_geo.distributed import ThreadedExecutor

        self.inner = ThreadedExecutor(2)
        self.replayed = 0

    def run(self, dsk, keys, on_result=None, resources=None):
        import dask.threaded

        res = self.inner.run(dsk, keys, on_result, resources)
        if any(isinstance(k, tuple) and str(k[0]).startswith("out-") for k in keys):
            dask.threaded.get(dsk, list(keys), num_workers=2)
            self.replayed += 1
        return res


def test_reexecuted_block_tasks_do_not_overwrite(ft_scene, tiny_model_path, tmp_path):
    """Without a cluster: re-running finished blocks' tasks (their acc now read back spill-only partials)
    leaves the output unchanged."""
    from sar2opt_geo.distributed import ThreadedExecutor

    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    run_translate(ft_scene, str(a), opts(tiny_model_path), ThreadedExecutor(2))
    ex = ReplayingExecutor()
    run_translate(ft_scene, str(b), opts(tiny_model_path), ex)
    assert ex.replayed == 1
    assert (io.read_raster(a)[0] == io.read_raster(b)[0]).all()
