"""Evaluate a generator (optionally with a LoRA adapter) on a split of a paired-tile dataset.

Per test image: PSNR, SSIM and L1 on RGB 0..255 (:mod:`sar2opt_geo.training.metrics`; the model output
``y`` is mapped by ``(y + 1) / 2 · 255``), then averaged. Beside the model, two trivial baselines:

* ``mean_colour``: every pixel is the mean RGB colour of the *training* split's optical tiles (up to
  ``baseline_tiles`` of them, evenly spaced);
* ``sar_gray``: the 8-bit SAR tile replicated to RGB.

``--samples N`` writes a PNG grid, one row per sample: SAR | generated | truth.

The result holds the means, the per-image values (``per_image``: name, PSNR, SSIM, L1) and a 95 % confidence
interval of the mean PSNR: Student's t-interval ``mean ± t(0.975, n − 1) · s / √n`` over the per-image PSNRs
(``scipy.stats.t``; images taken as independent draws; PSNRs of identical images are capped at 100 dB).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from sar2opt_geo.errors import ModelError
from sar2opt_geo.training.datasets import PairedTileDataset, check_tiles_fit, open_dataset
from sar2opt_geo.training.metrics import image_metrics, to_255


@torch.no_grad()
def predict_metrics(G, ds: PairedTileDataset, indices, device="cpu", batch_size: int = 4, keep: int = 0):
    """Per-image metrics of ``G`` (eval mode is the caller's business) on items ``indices`` of ``ds``.

    With ``keep > 0`` also returns the first ``keep`` (sar, generated, truth) uint8 triples.
    """
    indices = list(indices)
    out = {"psnr": [], "ssim": [], "l1": []}
    kept = []
    dev = torch.device(device)
    for i in range(0, len(indices), batch_size):
        chunk = indices[i : i + batch_size]
        x = torch.stack([ds[j][0] for j in chunk])
        y = torch.stack([ds[j][1] for j in chunk])
        pred = G(x.to(dev)).float().cpu()
        m = image_metrics(to_255(pred), to_255(y))
        for k in out:
            out[k].extend(m[k].tolist())
        if len(kept) < keep:
            for a, b, c in zip(to_255(x), to_255(pred), to_255(y), strict=True):
                kept.append(tuple(np.round(t.numpy()).astype(np.uint8) for t in (a, b, c)))
    res = {k: np.asarray(v) for k, v in out.items()}
    return (res, kept[:keep]) if keep else res


def mean_colour(ds: PairedTileDataset, max_tiles: int = 256) -> np.ndarray:
    """Mean RGB (0..255) of up to ``max_tiles`` evenly spaced optical tiles of ``ds``."""
    n = len(ds)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_tiles)).round().astype(int)) if n else []
    acc, cnt = np.zeros(3), 0
    for i in idx:
        _, opt = ds.read_uint8(int(i))
        opt = opt[:3] if opt.shape[0] >= 3 else np.repeat(opt[:1], 3, 0)
        acc += opt.reshape(3, -1).mean(1)
        cnt += 1
    return acc / max(cnt, 1)


def baseline_metrics(ds: PairedTileDataset, colour: np.ndarray) -> dict[str, dict[str, float]]:
    res = {"mean_colour": {"psnr": [], "ssim": [], "l1": []}, "sar_gray": {"psnr": [], "ssim": [], "l1": []}}
    for i in range(len(ds)):
        x, y = ds[i]
        truth = to_255(y[None])
        mc = torch.as_tensor(colour, dtype=torch.float64).view(1, 3, 1, 1).expand_as(truth)
        for name, pred in (("mean_colour", mc), ("sar_gray", to_255(x[None]))):
            m = image_metrics(pred, truth)
            for k in m:
                res[name][k].append(float(m[k][0]))
    return {n: {k: float(np.mean(v)) for k, v in d.items()} for n, d in res.items()}


def mean_interval(values, level: float = 0.95) -> list[float] | None:
    """Student's t-interval ``[lo, hi]`` of the mean of ``values`` (None for fewer than 2 values)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return [float(v.mean() - half), float(v.mean() + half)]


def load_model(model: str | os.PathLike, lora: str | os.PathLike | None = None, device="cpu"):
    from sar2opt_geo.models.checkpoint import checkpoint_hash, load_generator, read_metadata
    from sar2opt_geo.models.lora import apply_adapter, merge_lora
    from sar2opt_geo.models.registry import GENERATOR_ARCHITECTURES

    meta = read_metadata(model)
    if meta.architecture not in GENERATOR_ARCHITECTURES:
        raise ModelError(f"{Path(model).name} is not a generator checkpoint ({meta.architecture})")
    G, meta = load_generator(model, device="cpu")
    if lora is not None:
        apply_adapter(G, lora, expected_base_hash=checkpoint_hash(model))
        merge_lora(G)
    G.to(device).eval()
    return G, meta


def sample_grid(path, triples) -> Path:
    """PNG grid: one row per sample, columns SAR | generated | truth (2-pixel white gutters); rows of any
    equal length work (e.g. SAR | several models | truth)."""
    from sar2opt_geo.io import write_png

    h, w = triples[0][0].shape[1:]
    gap, cols = 2, len(triples[0])
    grid = np.full((3, len(triples) * (h + gap) - gap, cols * (w + gap) - gap), 255, np.uint8)
    for r, row in enumerate(triples):
        for c, img in enumerate(row):
            grid[:, r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = img
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_png(p, grid)
    return p


def evaluate(
    model,
    data,
    *,
    lora=None,
    split: str = "test",
    split_file=None,
    samples: int = 0,
    samples_path=None,
    device: str = "cpu",
    batch_size: int = 4,
    baseline_tiles: int = 256,
    max_images: int | None = None,
    baseline_data=None,
) -> dict:
    """Metrics of the model and of the baselines on ``split`` of ``data`` (averages of per-image values)."""
    G, meta = load_model(model, lora, device)
    ds = open_dataset(data, split, split_file)
    check_tiles_fit(meta.radiometry, ds, Path(model).name)
    try:
        train_ds = open_dataset(baseline_data or data, "train", None if baseline_data else split_file)
    except Exception:  # noqa: BLE001 - e.g. a test-only dataset: fall back to the evaluated split
        train_ds = None
    res = evaluate_generator(
        G,
        ds,
        train_ds,
        device=device,
        batch_size=batch_size,
        baseline_tiles=baseline_tiles,
        max_images=max_images,
        samples=samples,
        samples_path=samples_path,
    )
    head = {
        "model": str(model),
        "model_name": meta.name,
        "lora": None if lora is None else str(lora),
        "data": str(data),
        "split": split,
    }
    return {**head, **res}


def evaluate_generator(
    G,
    ds: PairedTileDataset,
    train_ds: PairedTileDataset | None = None,
    *,
    device: str = "cpu",
    batch_size: int = 4,
    baseline_tiles: int = 256,
    max_images: int | None = None,
    samples: int = 0,
    samples_path=None,
) -> dict:
    """Metrics of the generator ``G`` (in eval mode) on ``ds``, beside the baselines; the mean colour comes
    from ``train_ds`` (else from ``ds`` itself)."""
    n = len(ds) if max_images is None else min(len(ds), max_images)
    if n < len(ds):
        ds.items = ds.items[:n]
    keep = max(int(samples or 0), 0)
    res = predict_metrics(G, ds, range(n), device, batch_size, keep=keep)
    if keep:
        res, kept = res
    colour = mean_colour(train_ds if train_ds is not None else ds, baseline_tiles)
    names = ds.names()
    out = {
        "n_images": n,
        "metrics": {k: float(np.mean(v)) for k, v in res.items()},
        "psnr_ci95": mean_interval(res["psnr"]),
        "psnr_ci95_method": "Student t-interval over per-image PSNR",
        "baselines": baseline_metrics(ds, colour),
        "train_mean_colour": [round(float(c), 2) for c in colour],
        "per_image": [
            {"name": names[i], **{k: float(res[k][i]) for k in ("psnr", "ssim", "l1")}} for i in range(n)
        ],
    }
    best = max(v["psnr"] for v in out["baselines"].values())
    out["psnr_gain_over_best_baseline_db"] = out["metrics"]["psnr"] - best
    if keep and kept:
        out["samples"] = str(sample_grid(samples_path or "samples.png", kept))
    return out


def format_table(res: dict) -> str:
    rows = [("model", res["metrics"])] + list(res["baselines"].items())
    lines = [
        f"{res['n_images']} {res['split']} images of {res['data']}",
        "",
        "| | PSNR (dB) | SSIM | L1 |",
        "|---|---|---|---|",
    ]
    for name, m in rows:
        lines.append(f"| {name} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['l1']:.2f} |")
    ci = res.get("psnr_ci95")
    if ci:
        lines += ["", f"model mean PSNR, 95 % t-interval: {ci[0]:.2f} .. {ci[1]:.2f} dB"]
    return "\n".join(lines)
