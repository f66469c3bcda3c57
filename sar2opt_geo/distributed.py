"""Executing task graphs: dask's local threaded scheduler, a local ``distributed`` cluster of worker
processes bound to loopback, or an existing cluster given by its scheduler address.

The pipelines build plain Dask task graphs (``{key: (func, *args)}``) of module-level, picklable functions,
ask for a set of small final results, and receive each one as it completes (for progress bars) while
intermediate results stay on the workers and are released as soon as their dependents have run.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator

from sar2opt_geo.errors import ClusterError, UsageError

log = logging.getLogger(__name__)

OnResult = Callable[[object, object], None]


class ThreadedExecutor:
    """Dask's local threaded scheduler (the default on a laptop: no processes, no serialisation)."""

    name = "threads"

    def __init__(self, num_workers: int | None = None):
        self.num_workers = num_workers or max(2, os.cpu_count() or 1)

    def run(
        self, dsk: dict, keys: list, on_result: OnResult | None = None, resources: dict | None = None
    ) -> dict:
        import dask.threaded
        from dask.callbacks import Callback

        wanted = set(keys)

        def posttask(key, result, dsk_, state, worker_id):
            if on_result is not None and key in wanted:
                on_result(key, result)

        with Callback(posttask=posttask):
            values = dask.threaded.get(dsk, list(keys), num_workers=self.num_workers)
        return dict(zip(keys, values, strict=True))


class ClientExecutor:
    """A ``distributed.Client`` (local cluster or remote scheduler)."""

    name = "distributed"

    def __init__(self, client, remote: bool = False):
        self.client = client
        self.remote = remote  # True for --scheduler: the workers' hardware is not the client's

    def gpu_workers(self) -> int:
        """How many workers advertise a ``GPU`` resource (``dask worker --resources GPU=1``)."""
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        return sum(1 for w in workers.values() if (w.get("resources") or {}).get("GPU", 0) > 0)

    def _satisfiable(self, resources: dict) -> dict:
        """``resources`` without the ones no worker advertises. A local cluster (``--workers N``) starts
        its workers without resources: on a machine with a GPU, tasks restricted to ``GPU=1`` would wait
        forever; there every worker process may run the model instead (each loads it on the GPU)."""
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        have = {r for w in workers.values() for r, n in (w.get("resources") or {}).items() if n > 0}
        missing = sorted({r for spec in resources.values() for r in spec} - have)
        if not missing:
            return resources
        log.info("no local worker advertises %s: tasks that need it run on any worker", ", ".join(missing))
        kept = {k: {r: n for r, n in spec.items() if r in have} for k, spec in resources.items()}
        return {k: spec for k, spec in kept.items() if spec}

    def run(
        self, dsk: dict, keys: list, on_result: OnResult | None = None, resources: dict | None = None
    ) -> dict:
        """``resources`` maps keys to worker resources they need (e.g. ``{"GPU": 1}``); they travel as
        layer annotations of a HighLevelGraph, which graph optimisation keeps. On a local cluster,
        resources no worker has are dropped (:meth:`_satisfiable`); a remote cluster's are kept (the
        device was resolved from its workers' resources)."""
        from concurrent.futures import CancelledError

        from distributed import as_completed
        from distributed.comm.core import CommClosedError
        from distributed.scheduler import KilledWorker

        if resources and not self.remote:
            resources = self._satisfiable(resources)
        graph = _annotated_graph(dsk, resources) if resources else dsk
        futures = self.client.get(graph, list(keys), sync=False)
        results = {}
        try:
            for fut, value in as_completed(futures, loop=self.client.loop, with_results=True):
                results[fut.key] = value
                if on_result is not None:
                    on_result(fut.key, value)
        except KilledWorker as exc:  # one line, not distributed's wall of text
            raise ClusterError(
                f"Dask workers died running task {_task_name(exc)} ({_tries(exc)} tries; out of memory? see "
                "the worker logs; fewer --workers or a smaller --chunk-size need less memory)"
            ) from None
        except (CommClosedError, CancelledError) as exc:
            raise ClusterError(f"lost the Dask cluster while running ({type(exc).__name__}: {exc})") from None
        finally:
            for f in futures:
                f.release()
        return results


def _tries(exc: BaseException) -> int:
    import dask

    allowed = getattr(exc, "allowed_failures", None)
    if allowed is None:
        allowed = dask.config.get("distributed.scheduler.allowed-failures", 3)
    return int(allowed) + 1


def _task_name(exc: BaseException) -> str:
    key = getattr(exc, "task", None) or (exc.args[0] if exc.args else "?")
    return str(key)


def _annotated_graph(dsk: dict, resources: dict):
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

    groups: dict[str, dict] = {}
    layers, deps = {}, {}
    for key, task in dsk.items():
        res = resources.get(key)
        name = "plain" if res is None else "res-" + "-".join(f"{k}{v}" for k, v in sorted(res.items()))
        groups.setdefault(name, {})[key] = task
    for name, sub in groups.items():
        res = resources.get(next(iter(sub)))
        layers[name] = MaterializedLayer(sub, annotations={"resources": res} if res else None)
    # resource-annotated layers hold the leaf tasks (model runs); the plain layer consumes them
    deps = {name: ({o for o in layers if o != name} if name == "plain" else set()) for name in layers}
    return HighLevelGraph(layers, deps)


def _probe_scheduler(address: str, timeout: float) -> None:
    """Fail fast and cleanly (ClusterError) when the scheduler cannot be reached: one comm opened and
    closed with distributed's own security settings (from its config), before any Client exists — a Client
    whose constructor failed would block interpreter exit while it tries to close."""
    import asyncio

    from distributed.comm import connect
    from distributed.security import Security

    args = Security().get_connection_args("client")
    if address.startswith(("tls://", "wss://")) and args.get("ssl_context") is None:
        raise ClusterError(
            f"{address}: TLS is not configured; set distributed.comm.tls.ca-file, "
            "distributed.comm.tls.client.cert and distributed.comm.tls.client.key in the Dask config"
        )

    async def probe():
        comm = await connect(address, timeout=timeout, **args)
        await comm.close()

    try:
        asyncio.run(probe())
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s ({exc})"
        ) from None


def _connect(scheduler: str, timeout: float):
    """A ``distributed.Client`` on an existing scheduler (ClusterError when it cannot be reached)."""
    from distributed import Client

    if (
        not scheduler.startswith(("tcp://", "tls://", "inproc://", "ws://", "wss://"))
        and ":" not in scheduler
    ):
        raise UsageError(f"--scheduler must be an address such as tcp://host:8786 (got {scheduler!r})")
    _probe_scheduler(scheduler, timeout)
    try:
        return Client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {scheduler} within {timeout:g} s ({exc})"
        ) from None


def _local_cluster(workers: int, tpw: int, verbose: bool):
    """A local cluster of ``workers`` processes on 127.0.0.1, ``tpw`` threads (and torch threads) each."""
    import dask
    from distributed import LocalCluster

    # The nanny sets OMP_NUM_THREADS=1 before it spawns a worker (distributed.nanny.pre-spawn-environ, where
    # the client's own environment wins), and torch reads it once, at import: give each worker's torch as
    # many threads as the worker has.
    threads_env = {k: str(tpw) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    saved_env = {k: os.environ.get(k) for k in threads_env}
    os.environ.update(threads_env)
    # The nanny also sets MALLOC_TRIM_THRESHOLD_=65536 by default, which makes glibc hand every freed block
    # array back to the OS and fault it in again for the next block: measured +60 % time per scene on a
    # local cluster (scripts/bench_distributed.py). Local clusters run one job and exit, so leave it unset.
    no_trim = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    try:
        with dask.config.set(no_trim):
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=tpw,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0" if verbose else None,
                silence_logs=logging.ERROR,
                env=threads_env,
            )
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if verbose and cluster.dashboard_link:
        log.info("Dask dashboard: %s", cluster.dashboard_link)
    return cluster


@contextlib.contextmanager
def make_executor(
    workers: int | None = None,
    scheduler: str | None = None,
    *,
    threads_per_worker: int | None = None,
    timeout: float = 10.0,
    verbose: bool = False,
) -> Iterator[ThreadedExecutor | ClientExecutor]:
    """The executor for the CLI options ``--workers N`` / ``--scheduler ADDRESS`` (neither: threads)."""
    if workers is not None and scheduler is not None:
        raise UsageError("--workers and --scheduler are mutually exclusive")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be >= 1 (got {workers})")
    if scheduler is None and workers is None:
        yield ThreadedExecutor()
        return
    if scheduler is not None:
        with _connect(scheduler, timeout) as client:
            yield ClientExecutor(client, remote=True)
        return
    from distributed import Client

    tpw = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    cluster = _local_cluster(workers, tpw, verbose)
    try:
        with Client(cluster, set_as_default=False) as client:
            yield ClientExecutor(client)
    finally:
        cluster.close()
