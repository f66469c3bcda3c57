"""Where a training step's time goes: a short, measured breakdown of one config on this machine.

``python -m sar2opt_geo.training.throughput --data D --config configs/pretrain.yaml --set ngf=32 --steps 10``

Builds the run exactly as ``train pretrain`` does (:class:`~sar2opt_geo.training.trainer.Run`, in a temporary
folder) and times, each after warm-up steps that are not counted:

* ``data``: one batch read from the dataset in the main process, split into PNG/Zarr decoding
  (``read_uint8``) and the rest (grey → 3 channels, flip/rotation, uint8 → float);
* ``ceiling``: ``Run.train_step`` on one batch held in memory (the forward + backward ceiling of the same
  networks and optimisers: no data loading, no logging);
* ``phases``: the same step cut into G forward, D forward + backward + Adam, G's adversarial D forward,
  G backward + Adam (timed with ``perf_counter`` between phases);
* ``generator_only``: G forward + L1 backward + Adam, without any discriminator;
* ``variants``: ``Run.train_step`` of the same networks as pix2pix in fp32 (``lambda_gan`` 1,
  ``precision`` fp32), without the discriminator in fp32 (``lambda_gan`` 0) and without it in bf16 autocast
  (``lambda_gan`` 0, ``precision`` bf16; only where the CPU has native bf16), whatever the config says;
* ``loop[w]``: the trainer's loop (DataLoader from ``Run._loader`` with ``w`` worker processes, then
  ``train_step``) for each ``--workers`` value: the steps/s a run gets;

  all of these interleaved, one step of each per round, so that they see the same load;
* ``validation`` (one ``Run.validate()``, ``val_max_images`` images) and ``precise_bn`` (per batch).

Per-step times are reported as median and minimum (steps/s from the median): on a shared machine a mean swings
with other processes' load. Written by hand: ``torch.profiler`` gives per-operator tables but not these
per-phase and end-to-end figures in one short run. The load average is recorded with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sar2opt_geo.training.config import load_config
from sar2opt_geo.training.trainer import Run, batch_indices, cpu_has_native_bf16, usable_cores


def _stats(times: list[float]) -> dict:
    """Per-step seconds as median and minimum (robust on a shared machine, where a mean swings with other
    processes' load) and the steps/s of the median."""
    t = np.asarray(times, dtype=np.float64)
    return {"median_s": float(np.median(t)), "min_s": float(t.min()), "steps_per_s": float(1 / np.median(t))}


def _timed(fn, steps: int, warmup: int) -> dict:
    """:func:`_stats` of ``steps`` calls of ``fn`` after ``warmup`` uncounted ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return _stats(times)


def _say(name: str, value) -> None:
    """Each figure on stderr as soon as it is measured (a run cut short keeps what it measured)."""
    sys.stderr.write(f"{name}: {json.dumps(value, default=float)}  (load {os.getloadavg()[0]:.2f})\n")
    sys.stderr.flush()


def _data_times(run: Run, batches: int) -> dict:
    ds, cfg = run.train_ds, run.cfg
    dec = rest = 0.0
    for b in range(batches):
        for i, code in batch_indices(len(ds), cfg.batch_size, cfg.seed, b, cfg.augment, cfg.resample_augment):
            t0 = time.perf_counter()
            sar, opt = ds.read_uint8(i)
            t1 = time.perf_counter()
            ds.prepare(sar, opt, i, code)
            rest += time.perf_counter() - t1
            dec += t1 - t0
    return {"decode_s_per_batch": dec / batches, "augment_convert_s_per_batch": rest / batches}


_PHASES = ("G_forward", "D_fwd_bwd_adam", "G_adv_D_forward", "G_bwd_adam")


def _phase_step(run: Run, x, y) -> tuple[float, float, float, float]:
    """One training step (as ``Run.train_step`` without AMP and logging) timed phase by phase."""
    G, D, bce = run.G, run.D, run.bce
    t0 = time.perf_counter()
    fake = G(x)
    t1 = time.perf_counter()
    pr, pf = D(torch.cat([x, y], 1)), D(torch.cat([x, fake.detach()], 1))
    loss_d = 0.5 * (bce(pr, torch.ones_like(pr)) + bce(pf, torch.zeros_like(pf)))
    run.opt_D.zero_grad(set_to_none=True)
    loss_d.backward()
    run.opt_D.step()
    t2 = time.perf_counter()
    pf = D(torch.cat([x, fake], 1))
    loss_g = bce(pf, torch.ones_like(pf)) + run.cfg.lambda_l1 * (fake - y).abs().mean()
    t3 = time.perf_counter()
    run.opt_G.zero_grad(set_to_none=True)
    loss_g.backward()
    run.opt_G.step()
    t4 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, t4 - t3


def _generator_only(run: Run, x, y) -> None:
    fake = run.G(x)
    loss = (fake - y).abs().mean()
    run.opt_G.zero_grad(set_to_none=True)
    loss.backward()
    run.opt_G.step()


#: ``variants`` rows: (lambda_gan, autocast dtype) of ``Run.train_step``.
_VARIANTS = {
    "pix2pix_fp32": (1.0, None),
    "no_discriminator_fp32": (0.0, None),
    "no_discriminator_bf16": (0.0, torch.bfloat16),
}


def _variant_step(run: Run, x, y, lambda_gan: float, dtype) -> None:
    """``Run.train_step`` with ``lambda_gan`` and the autocast dtype set for this one step."""
    saved = run.cfg.lambda_gan, run.amp_dtype
    run.cfg.lambda_gan, run.amp_dtype = lambda_gan, dtype
    try:
        run.train_step(x, y)
    finally:
        run.cfg.lambda_gan, run.amp_dtype = saved


def _loop_iter(run: Run, workers: int, steps: int):
    """Batches of the trainer's own DataLoader (``Run._loader``) with ``workers`` processes."""
    run.cfg.num_workers = workers
    run.cfg.steps = run.step + steps
    loader, _ = run._loader(run.step)
    return iter(loader)


def measure(data, config=None, sets=(), steps: int = 10, warmup: int = 2, workers=(0, 1, 2)) -> dict:
    """Interleaved rounds: each round times one step of every variant (ceiling, phases, generator only, the
    trainer loop per worker count), so that all variants see the same load from other processes."""
    cfg = load_config(config, list(sets) + ["device=cpu", "precise_bn_batches=0"])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(data, Path(tmp) / "run", cfg)
        run.out.mkdir(parents=True)
        run.G.train()
        run.D.train()
        idx = batch_indices(len(run.train_ds), cfg.batch_size, cfg.seed, 0, cfg.augment, cfg.resample_augment)
        x = torch.stack([run.train_ds[i][0] for i in idx])
        y = torch.stack([run.train_ds[i][1] for i in idx])
        res = {
            "config": {k: getattr(cfg, k) for k in ("ngf", "ndf", "batch_size", "val_max_images")},
            "cores": usable_cores(),
            "threads": torch.get_num_threads(),
            "steps": steps,
        }

        def put(key, value):
            res[key] = value
            _say(key, value)

        put("data", _data_times(run, max(steps, 4)))
        loops = {w: _loop_iter(run, w, warmup + steps) for w in workers}
        variants = {k: v for k, v in _VARIANTS.items() if v[1] is None or cpu_has_native_bf16()}
        for _ in range(warmup):
            run.train_step(x, y)
            _generator_only(run, x, y)
            for v in variants.values():
                _variant_step(run, x, y, *v)
            for it in loops.values():
                run.train_step(*next(it))
        times: dict[str, list] = {"ceiling": [], "generator_only": [], **{f"loop[{w}]": [] for w in workers}}
        vtimes: dict[str, list] = {k: [] for k in variants}
        phases: dict[str, list] = {k: [] for k in _PHASES}
        for _ in range(steps):
            t = time.perf_counter()
            run.train_step(x, y)
            times["ceiling"].append(time.perf_counter() - t)
            for k, v in zip(_PHASES, _phase_step(run, x, y), strict=True):
                phases[k].append(v)
            t = time.perf_counter()
            _generator_only(run, x, y)
            times["generator_only"].append(time.perf_counter() - t)
            for k, v in variants.items():
                t = time.perf_counter()
                _variant_step(run, x, y, *v)
                vtimes[k].append(time.perf_counter() - t)
            for w, it in loops.items():  # a loop step's time includes waiting for its batch
                t = time.perf_counter()
                run.train_step(*next(it))
                times[f"loop[{w}]"].append(time.perf_counter() - t)
        del loops
        for k, v in times.items():
            put(k, _stats(v))
        if vtimes:
            vs = {k: _stats(v) for k, v in vtimes.items()}
            base = vs["pix2pix_fp32"]["median_s"]
            put(
                "variants", {k: {**v, "speedup_vs_pix2pix_fp32": base / v["median_s"]} for k, v in vs.items()}
            )
        med = {k: float(np.median(v)) for k, v in phases.items()}
        put(
            "phases", {"median_s": med, "share": {k: round(v / sum(med.values()), 3) for k, v in med.items()}}
        )
        t = time.perf_counter()
        run.validate()
        put("validation_s", time.perf_counter() - t)
        t = time.perf_counter()
        run.precise_bn(4)
        put("precise_bn_s_per_batch", (time.perf_counter() - t) / 4)
    res["loadavg_before"] = [round(v, 2) for v in load_before]
    res["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", default="0,1,2", help="loader worker counts to time, comma separated")
    a = ap.parse_args(argv)
    res = measure(a.data, a.config, a.sets, a.steps, a.warmup, [int(w) for w in a.workers.split(",")])
    json.dump(res, sys.stdout, indent=2, default=lambda v: float(np.asarray(v)))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
