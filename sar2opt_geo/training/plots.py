"""Loss and validation curves as small PNG line plots drawn with PIL (no matplotlib dependency)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def _smooth(v: np.ndarray, n: int) -> np.ndarray:
    if n <= 1 or v.size < n:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    s = (c[n:] - c[:-n]) / n
    return np.concatenate([v[: n - 1] * 0 + s[0], s])


def line_plot(
    path, x: np.ndarray, series: dict[str, np.ndarray], title: str, xlabel: str, ylabel: str, size=(640, 400)
) -> Path:
    """Write a simple line plot (axes, ticks with values, legend) to ``path``."""
    from PIL import Image, ImageDraw

    w, h = size
    left, right, top, bottom = 70, 20, 30, 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    vals = np.concatenate([v[np.isfinite(v)] for v in series.values()]) if series else np.array([0.0, 1.0])
    if vals.size == 0:
        vals = np.array([0.0, 1.0])
    y0, y1 = float(vals.min()), float(vals.max())
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 1, y1 + 1
    x0, x1 = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    if x1 - x0 < 1e-12:
        x1 = x0 + 1

    def px(xv, yv):
        return (
            left + (xv - x0) / (x1 - x0) * (w - left - right),
            top + (y1 - yv) / (y1 - y0) * (h - top - bottom),
        )

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        _, yp = px(x0, yv)
        d.line([left - 4, yp, left, yp], fill="black")
        d.text((4, yp - 6), f"{yv:.3g}", fill="black")
        xv = x0 + (x1 - x0) * i / 4
        xp, _ = px(xv, y0)
        d.line([xp, h - bottom, xp, h - bottom + 4], fill="black")
        d.text((xp - 12, h - bottom + 6), f"{xv:.0f}", fill="black")
    d.text((w // 2 - 20, h - 20), xlabel, fill="black")
    d.text((4, 4), f"{title}   [{ylabel}]", fill="black")
    for k, (name, v) in enumerate(series.items()):
        col = COLORS[k % len(COLORS)]
        pts = [px(a, b) for a, b in zip(x, v, strict=False) if np.isfinite(b)]
        if len(pts) > 1:
            d.line(pts, fill=col, width=2)
        elif pts:
            d.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=col)
        d.line([w - right - 150, top + 10 + 14 * k, w - right - 130, top + 10 + 14 * k], fill=col, width=2)
        d.text((w - right - 125, top + 4 + 14 * k), name, fill="black")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    img.save(p)
    return p


def plot_run(run_dir) -> list[Path]:
    """``RUN/plots/losses.png`` (G adversarial, G L1 (×λ-free), D; smoothed) and ``RUN/plots/val.png``."""
    run = Path(run_dir)
    written = []
    if (run / "losses.csv").exists():
        L = _read_csv(run / "losses.csv")
        if L:
            n = max(1, len(L["step"]) // 100)
            written.append(
                line_plot(
                    run / "plots" / "losses.png",
                    L["step"],
                    {"G adversarial": _smooth(L["g_adv"], n), "D": _smooth(L["d"], n)},
                    "GAN losses",
                    "step",
                    "BCE",
                )
            )
            written.append(
                line_plot(
                    run / "plots" / "l1.png",
                    L["step"],
                    {"G L1": _smooth(L["g_l1"], n)},
                    "generator L1",
                    "step",
                    "L1 in [-1,1] units",
                )
            )
    if (run / "metrics.csv").exists():
        M = _read_csv(run / "metrics.csv")
        if M:
            written.append(
                line_plot(
                    run / "plots" / "val.png", M["step"], {"PSNR": M["psnr"]}, "validation PSNR", "step", "dB"
                )
            )
    return written
