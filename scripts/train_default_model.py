#!/usr/bin/env python
"""Train the bundled default model (sar2opt_geo/weights/default.safetensors) on synthetic s1 pairs.

    nohup nice -n 5 python scripts/train_default_model.py > /tmp/train_default.log 2>&1 &

Generates ``--pairs`` 256² pairs with :func:`sar2opt_geo.synth.write_pairs` (domain s1, seed 0), trains with
``configs/default_model.yaml`` (fixed seed; 11000 steps, λ = 1000, no dropout, LR decayed linearly to 0 over
the last 4500 steps), resumes for the ``--phase`` override sets (default: one phase to 13000 steps at LR 5e-5
decayed to 0, λ = 10000, i.e. the adversarial term all but off), re-saves the generator with the bundled
model's metadata and provenance, and evaluates it against the trivial baselines on two sets of held-out pairs
(results in RUN/heldout_eval.json). 3460 s on 2 CPU cores.

Validation and test pairs. Every choice so far (recipe, λ, width, steps, and the simulator changes made in the
same steps) was made by looking at the 64 pairs of seed :data:`VALIDATION_SEED` (1234), so their score is a
validation figure, not a held-out one. The figure to report is on the 64 pairs of :data:`TEST_SEED`, which no
choice has looked at; look at it once per released model, never to choose between trials
(``scripts/recipe_trials.py`` scores on the validation pairs only). The simulator and the model were
developed together: both figures measure the model on the simulator it was tuned with.

    python scripts/train_default_model.py --evaluate-only     # score the bundled model on both sets

History: the previous bundled model used λ = 100 with dropout for 2000 steps, then resumed phases with
λ = 300 and λ = 1000 (3300 steps, +5.55 dB over the best baseline). Every rise of λ gained PSNR; at equal
compute ngf 32 (1000 steps) and ngf 16 (2200 steps) scored the same, so the recipe is one long L1-heavy run
of the small model: +5.95 dB after the 11000-step phase, +6.55 dB after the final λ = 10000 phase.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sar2opt_geo.models.checkpoint import CheckpointMeta, count_parameters, load_generator  # noqa: E402
from sar2opt_geo.synth import write_pairs  # noqa: E402
from sar2opt_geo.training.config import load_config, parse_overrides  # noqa: E402
from sar2opt_geo.training.evaluate import evaluate, format_table  # noqa: E402
from sar2opt_geo.training.trainer import Run, save_generator, train  # noqa: E402

#: Seed of the validation pairs: every recipe choice so far was scored on these.
VALIDATION_SEED = 1234
#: Seed of the test pairs: never used for a choice; reported once per released model.
TEST_SEED = 20261130
#: Held-out pairs per set.
HELDOUT_PAIRS = 64

RADIOMETRY = {"scale": "db", "clip": [-25, 0], "out_range": [-1, 1], "quantize": True, "replicate_to": 3}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/sar2opt_default", help="data and run folder")
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--heldout", type=int, default=HELDOUT_PAIRS, help="pairs per held-out set")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--val-seed", type=int, default=VALIDATION_SEED, help="validation pairs (for choices)")
    ap.add_argument("--test-seed", type=int, default=TEST_SEED, help="test pairs (never for choices)")
    ap.add_argument(
        "--evaluate-only",
        action="store_true",
        help="train nothing: score --output (default: the bundled model) on the validation and test pairs",
    )
    ap.add_argument("--config", default=str(ROOT / "configs" / "default_model.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--output", default=str(ROOT / "sar2opt_geo" / "weights" / "default.safetensors"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true", help="continue WORK/run instead of starting afresh")
    ap.add_argument(
        "--phase",
        dest="phases",
        action="append",
        default=None,
        help="comma-separated overrides of a further phase resumed after the config's run (repeatable; "
        "default: 'steps=13000,lr_decay_steps=2000,lr=0.00005,lambda_l1=10000'; '' for none)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    data, run = work / "train_pairs", work / "run"
    t0 = time.time()
    ensure_pairs(data, args.pairs, args.data_seed)
    sets = {
        "validation": ensure_pairs(work / f"heldout_pairs_seed{args.val_seed}", args.heldout, args.val_seed),
        "test": ensure_pairs(work / f"heldout_pairs_seed{args.test_seed}", args.heldout, args.test_seed),
    }
    print(f"data ready in {time.time() - t0:.0f} s", flush=True)
    if args.evaluate_only:
        out = Path(args.output)
        res = evaluate_sets(out, sets, data)
        out_json = work / f"eval_{out.stem}.json"
        out_json.write_text(json.dumps(res, indent=2))
        print(f"results in {out_json}", flush=True)
        return
    if args.resume:
        # continue the run in WORK/run (e.g. with --set lr_decay_steps=N --set steps=M), then package it
        run_obj = Run(None, run, resume=True, quiet=False, overrides=parse_overrides(args.overrides))
        cfg = run_obj.cfg
        summary = run_obj.fit()
    else:
        cfg = load_config(args.config, args.overrides)
        if run.exists():
            shutil.rmtree(run)
        summary = train(data, run, cfg, quiet=False)
        phases = (
            ["steps=13000,lr_decay_steps=2000,lr=0.00005,lambda_l1=10000"]
            if args.phases is None
            else args.phases
        )
        for phase in phases:
            if not phase:
                continue
            sets = [kv.strip() for kv in phase.split(",") if kv.strip()]
            run_obj = Run(None, run, resume=True, quiet=False, overrides=parse_overrides(sets))
            cfg = run_obj.cfg
            summary = run_obj.fit()
    wall = summary["wall_time_s"]
    G, meta = load_generator(run / "generator.safetensors")
    meta = CheckpointMeta(
        name=cfg.name,
        architecture=meta.architecture,
        arch_args=meta.arch_args,
        input_bands=["VV"],
        radiometry=dict(RADIOMETRY),
        provenance={
            "trained_on": "synthetic s1 scenes (sar2opt_geo.synth)",
            "note": "trained on synthetic scenes; fine-tune on real pairs for real Sentinel-1 use",
            "script": "scripts/train_default_model.py",
            "config": "configs/default_model.yaml",
            "seed": cfg.seed,
            "data_seed": args.data_seed,
            "pairs": args.pairs,
            "steps": summary["steps"],
            "lambda_l1": cfg.lambda_l1,
            "dropout": cfg.dropout,
            "lr_decay_steps": cfg.lr_decay_steps,
            "batch_size": cfg.batch_size,
            "wall_time_s": round(wall, 1),
            "parameters": count_parameters(G),
            "hardware": "2 shared CPU cores",
        },
    )
    out = Path(args.output)
    save_generator(out, G, meta)
    res = evaluate_sets(out, sets, data)
    (run / "heldout_eval.json").write_text(json.dumps(res, indent=2))
    print(
        f"saved {out} ({out.stat().st_size / 1e6:.1f} MB, {count_parameters(G):,} parameters, "
        f"{summary['steps']} steps, {wall:.0f} s)",
        flush=True,
    )


def ensure_pairs(folder: Path, count: int, seed: int) -> Path:
    """``count`` synthetic s1 pairs of ``seed`` in ``folder`` (generated unless already there)."""
    if not (folder / "opt_256_oc_0.2" / f"{count - 1:05d}.png").exists():
        write_pairs(folder, count, domain="s1", seed=seed)
    return folder


def evaluate_sets(model: Path, sets: dict[str, Path], train_data: Path) -> dict:
    """The model and the trivial baselines (mean colour of ``train_data``) on each held-out set; prints a
    table and the gain over the best baseline per set."""
    res = {}
    for name, folder in sets.items():
        r = evaluate(model, folder, split="all", baseline_data=train_data)
        res[name] = r
        print(f"[{name}] " + format_table(r), flush=True)
        print(f"[{name}] PSNR gain over the best baseline {r['psnr_gain_over_best_baseline_db']:.2f} dB")
    return res


if __name__ == "__main__":
    main()
