#!/usr/bin/env python
"""Domain shift s1 → gf3: how much of the gap do preprocessing, full fine-tuning and LoRA recover?

    python scripts/domain_shift.py [--base sar2opt_geo/weights/default.safetensors] [--work DIR] [--steps N]
                                   [--set lambda_l1=1000 ...]

The base model (default: the bundled model, pretrained on synthetic s1 pairs) is evaluated on held-out
synthetic gf3 pairs (Gaofen-3-like: amplitude stretch instead of dB, other speckle and calibration) for

(a) no fine-tuning;
(b) preprocessing only: a 256-entry look-up table mapping gf3 8-bit SAR values onto the s1 encoding by
    quantile (histogram) matching, fitted on the gf3 fine-tuning tiles against s1 tiles — no training;
(c) full fine-tuning on ``--train`` gf3 pairs (all parameters, BatchNorm re-estimated at the end);
(d) LoRA fine-tuning on the same pairs and steps (rank ``--rank`` on every conv, base and BatchNorm frozen).

Prints a Markdown table (PSNR, SSIM, L1, trainable parameters, wall time) and the share of full
fine-tuning's PSNR gain that LoRA recovers; writes WORK/results.json and WORK/domain_shift.png (three held-out
tiles: SAR | (a) | (b) | (c) | (d) | optical truth).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sar2opt_geo.defaults import BUNDLED_MODEL  # noqa: E402
from sar2opt_geo.io import read_png, write_png  # noqa: E402
from sar2opt_geo.models.checkpoint import count_parameters, load_generator  # noqa: E402
from sar2opt_geo.synth import write_pairs  # noqa: E402
from sar2opt_geo.training.config import load_config  # noqa: E402
from sar2opt_geo.training.datasets import QX_OPT, QX_SAR  # noqa: E402
from sar2opt_geo.training.evaluate import evaluate  # noqa: E402
from sar2opt_geo.training.trainer import Run  # noqa: E402


def _gen(path: Path, n: int, domain: str, seed: int) -> Path:
    if not (path / QX_OPT / f"{n - 1:05d}.png").exists():
        write_pairs(path, n, domain=domain, seed=seed)
    return path


def quantile_lut(src_dir: Path, ref_dir: Path, max_tiles: int = 64) -> np.ndarray:
    """uint8 LUT mapping the value distribution of ``src_dir``'s SAR tiles onto ``ref_dir``'s."""

    def hist(d):
        h = np.zeros(256)
        for p in sorted((d / QX_SAR).glob("*.png"))[:max_tiles]:
            h += np.bincount(read_png(p)[0].ravel(), minlength=256)
        return np.cumsum(h) / h.sum()

    cs, cr = hist(src_dir), hist(ref_dir)
    return np.clip(np.round(np.interp(cs, cr, np.arange(256))), 0, 255).astype(np.uint8)


def remap(src: Path, dst: Path, lut: np.ndarray) -> Path:
    (dst / QX_SAR).mkdir(parents=True, exist_ok=True)
    (dst / QX_OPT).mkdir(parents=True, exist_ok=True)
    for p in sorted((src / QX_SAR).glob("*.png")):
        write_png(dst / QX_SAR / p.name, lut[read_png(p)[0]])
        o = dst / QX_OPT / p.name
        if not o.exists():
            o.write_bytes((src / QX_OPT / p.name).read_bytes())
    return dst


def picture(models: dict, gf3_test: Path, pre_test: Path, out: Path, n: int = 3) -> Path:
    """PNG grid of ``n`` held-out gf3 tiles: SAR | one column per setting | optical truth. ``models`` maps a
    setting name to its checkpoint; the "(b)" setting is run on the quantile-mapped SAR."""
    from sar2opt_geo.training.datasets import open_dataset
    from sar2opt_geo.training.evaluate import load_model, predict_metrics, sample_grid

    rows = None
    for name, ckpt in models.items():
        ds = open_dataset(pre_test if name.startswith("(b)") else gf3_test, "all")
        _, kept = predict_metrics(load_model(ckpt)[0], ds, range(n), "cpu", n, keep=n)
        if rows is None:
            rows = [[sar] for sar, _, _ in kept]
            truths = [truth for _, _, truth in kept]
        for row, (_, gen, _) in zip(rows, kept, strict=True):
            row.append(gen)
    return sample_grid(out, [(*row, t) for row, t in zip(rows, truths, strict=True)])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=str(BUNDLED_MODEL))
    ap.add_argument("--work", default="/tmp/sar2opt_shift")
    ap.add_argument("--train", type=int, default=200, help="gf3 fine-tuning pairs")
    ap.add_argument("--test", type=int, default=48, help="held-out gf3 pairs")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--full-lr", type=float, default=1e-4)
    ap.add_argument("--lora-lr", type=float, default=1e-3)
    ap.add_argument("--rank", type=int, default=2)
    ap.add_argument("--alpha", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--set", dest="overrides", action="append", default=[], help="training config key=value for (c), (d)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    t0 = time.time()
    gf3_train = _gen(work / "gf3_train", args.train, "gf3", 101)
    gf3_test = _gen(work / "gf3_test", args.test, "gf3", 202)
    s1_ref = _gen(work / "s1_ref", 64, "s1", 303)
    print(f"data ready in {time.time() - t0:.0f} s", flush=True)
    base_model, _ = load_generator(args.base)
    n_params = count_parameters(base_model)
    rows = {}

    def ev(name, model, data, trainable, wall, baseline=gf3_train):
        r = evaluate(model, data, split="all", baseline_data=baseline)
        rows[name] = {
            **r["metrics"],
            "trainable": trainable,
            "wall_s": round(wall, 1),
            "baselines": r["baselines"],
        }
        print(f"{name}: PSNR {r['metrics']['psnr']:.2f} SSIM {r['metrics']['ssim']:.4f}", flush=True)

    t = time.time()
    ev("(a) no fine-tuning", args.base, gf3_test, 0, 0.0)
    t = time.time()
    lut = quantile_lut(gf3_train, s1_ref)
    pre_test = remap(gf3_test, work / "gf3_test_pre", lut)
    ev("(b) preprocessing only", args.base, pre_test, 0, time.time() - t)
    common = [
        f"steps={args.steps}",
        f"batch_size={args.batch_size}",
        "val_fraction=0.0",
        "test_fraction=0.0",
        "checkpoint_every=100000",
        "val_every=100000",
        "log_every=50",
        "ndf=16",
        "seed=0",
        *args.overrides,
    ]
    for name, sets in (
        ("(c) full fine-tuning", [f"finetune_lr={args.full_lr}", "precise_bn_batches=20"]),
        (
            "(d) LoRA",
            [
                "lora=true",
                f"lora_rank={args.rank}",
                f"lora_alpha={args.alpha}",
                "lora_dropout=0.0",
                f"lora_lr={args.lora_lr}",
            ],
        ),
    ):
        out = work / name.split()[0].strip("()")
        if out.exists():
            import shutil

            shutil.rmtree(out)
        t = time.time()
        run = Run(
            gf3_train, out, load_config(overrides=common + sets), mode="finetune", base=args.base, quiet=False
        )
        summary = run.fit()
        ev(name, out / "generator.safetensors", gf3_test, summary["trainable_parameters"], time.time() - t)
    a = rows["(a) no fine-tuning"]["psnr"]
    gain_full = rows["(c) full fine-tuning"]["psnr"] - a
    gain_lora = rows["(d) LoRA"]["psnr"] - a
    share = gain_lora / gain_full if gain_full > 0 else float("nan")
    lines = [
        f"Base {Path(args.base).name} ({n_params:,} parameters) on {args.test} held-out gf3 pairs; "
        f"fine-tuning on {args.train} gf3 pairs, {args.steps} steps of batch {args.batch_size}"
        + (f" ({', '.join(args.overrides)})" if args.overrides else ""),
        "",
        "| setting | PSNR (dB) | SSIM | L1 | trainable parameters | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        frac = f"{r['trainable']:,} ({100 * r['trainable'] / n_params:.2f} %)"
        lines.append(
            f"| {name} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['l1']:.2f} | {frac} | {r['wall_s']:.0f} |"
        )
    b = rows["(a) no fine-tuning"]["baselines"]
    for bn, m in b.items():
        lines.append(f"| baseline {bn} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['l1']:.2f} | – | – |")
    lines += [
        "",
        f"LoRA recovers {100 * share:.0f} % of full fine-tuning's PSNR gain "
        f"({gain_lora:.2f} / {gain_full:.2f} dB).",
    ]
    text = "\n".join(lines)
    print(text)
    (work / "results.json").write_text(
        json.dumps({"rows": rows, "lora_share_of_gain": share, "table": text}, indent=2)
    )
    models = {k: args.base for k in ("(a)", "(b)")}
    models.update({k: work / k.strip("()") / "generator.safetensors" for k in ("(c)", "(d)")})
    png = picture(models, gf3_test, pre_test, work / "domain_shift.png")
    print(f"picture (SAR | a | b | c | d | truth): {png}")


if __name__ == "__main__":
    main()
