"""Metrics against hand-computed values, evaluation with baselines and sample grids."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import run_cli

from sar2opt_geo.training.metrics import l1, psnr, ssim, to_255


def test_psnr_of_known_mse():
    a = np.zeros((3, 16, 16))
    b = np.full((3, 16, 16), 10.0)
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(255**2 / 100.0))
    assert l1(a, b).item() == pytest.approx(10.0)
    assert psnr(a, a).item() == 100.0


def test_ssim_identical_and_constant():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (2, 3, 24, 24))
    assert np.allclose(ssim(a, a).numpy(), 1.0)
    # constant images: SSIM = (2 m1 m2 + C1) / (m1² + m2² + C1)
    c1 = (0.01 * 255) ** 2
    x, y = np.full((1, 1, 16, 16), 100.0), np.full((1, 1, 16, 16), 50.0)
    assert ssim(x, y).item() == pytest.approx((2 * 100 * 50 + c1) / (100**2 + 50**2 + c1))
    assert (ssim(a, 255 - a) < 0.2).all()
    assert torch.allclose(
        to_255(torch.tensor([-1.0, 0.0, 1.0])), torch.tensor([0.0, 127.5, 255.0], dtype=torch.float64)
    )


@pytest.fixture(scope="module")
def pairs4(tmp_path_factory):
    from sar2opt_geo.synth import write_pairs

    root = tmp_path_factory.mktemp("eval_pairs")
    write_pairs(root, 4, seed=3)
    return root


def test_evaluate_with_baselines_and_samples(tiny_model_path, pairs4, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    code, out, err = run_cli(
        [
            "evaluate",
            "--model",
            tiny_model_path,
            "--data",
            pairs4,
            "--split",
            "all",
            "--json",
            "--samples",
            2,
            "--samples-out",
            grid,
        ],
        capsys,
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["n_images"] == 4
    assert set(res["baselines"]) == {"mean_colour", "sar_gray"}
    for m in [res["metrics"], *res["baselines"].values()]:
        assert set(m) == {"psnr", "ssim", "l1"} and all(math.isfinite(v) for v in m.values())
    per = res["per_image"]
    assert len(per) == 4 and len({p["name"] for p in per}) == 4
    for k in ("psnr", "ssim", "l1"):  # the means are the means of the per-image values
        assert res["metrics"][k] == pytest.approx(np.mean([p[k] for p in per]))
    lo, hi = res["psnr_ci95"]
    assert lo < res["metrics"]["psnr"] < hi
    assert res["psnr_gain_over_best_baseline_db"] == pytest.approx(
        res["metrics"]["psnr"] - max(b["psnr"] for b in res["baselines"].values())
    )
    from PIL import Image

    with Image.open(grid) as im:
        assert im.size == (3 * 256 + 4, 2 * 256 + 2)
    code, out, err = run_cli(
        ["evaluate", "--model", tiny_model_path, "--data", pairs4, "--split", "all"], capsys
    )
    assert code == 0 and "mean_colour" in out and "sar_gray" in out


def test_evaluate_errors_one_line(tmp_path, pairs4, capsys):
    code, out, err = run_cli(["evaluate", "--model", tmp_path / "nope.safetensors", "--data", pairs4], capsys)
    assert code == 1 and err.strip().count("\n") == 0 and "not found" in err


def _gray_pairs(root, n=3, seed=0):
    """QXSLAB-layout pairs whose optical tile is the SAR tile as grey RGB (identity is the perfect model)."""
    from sar2opt_geo.io import write_png

    rng = np.random.default_rng(seed)
    (root / "sar_256_oc_0.2").mkdir(parents=True)
    (root / "opt_256_oc_0.2").mkdir(parents=True)
    tiles = []
    for i in range(n):
        t = rng.integers(0, 256, (1, 256, 256), dtype=np.uint8)
        write_png(root / "sar_256_oc_0.2" / f"{i:05d}.png", t)
        write_png(root / "opt_256_oc_0.2" / f"{i:05d}.png", np.repeat(t, 3, 0))
        tiles.append(np.repeat(t, 3, 0).astype(np.float64))
    return tiles


def test_perfect_model_and_mean_colour_baseline_by_hand(tmp_path):
    from sar2opt_geo.training.datasets import open_dataset
    from sar2opt_geo.training.evaluate import evaluate_generator

    tiles = _gray_pairs(tmp_path / "d")
    ds = open_dataset(tmp_path / "d", "all")
    res = evaluate_generator(torch.nn.Identity(), ds, ds)  # outputs the truth (SAR grey = optical here)
    assert res["metrics"]["l1"] == 0 and res["metrics"]["ssim"] == pytest.approx(1.0)
    assert res["metrics"]["psnr"] == 100.0  # identical images: capped at 100 dB
    assert res["baselines"]["sar_gray"]["l1"] == 0
    # mean colour of the 3 tiles, then per-image PSNR / L1 of that constant image, by hand
    colour = np.mean([t.reshape(3, -1).mean(1) for t in tiles], axis=0)
    assert res["train_mean_colour"] == pytest.approx(colour, abs=0.006)
    psnr = [10 * math.log10(255**2 / np.mean((t - colour[:, None, None]) ** 2)) for t in tiles]
    l1 = [np.mean(np.abs(t - colour[:, None, None])) for t in tiles]
    assert res["baselines"]["mean_colour"]["psnr"] == pytest.approx(np.mean(psnr), abs=1e-5)  # float32 tiles
    assert res["baselines"]["mean_colour"]["l1"] == pytest.approx(np.mean(l1), abs=1e-4)
    assert res["psnr_gain_over_best_baseline_db"] == 0.0
    assert res["psnr_ci95"] == [100.0, 100.0]


def test_mean_psnr_t_interval_by_hand():
    from sar2opt_geo.training.evaluate import mean_interval

    v = [20.0, 22.0, 27.0]  # mean 23, s = sqrt(13), t(0.975, 2) = 4.302652729911275
    half = 4.302652729911275 * math.sqrt(13) / math.sqrt(3)
    assert mean_interval(v) == pytest.approx([23 - half, 23 + half])
    assert mean_interval([5.0]) is None


def test_evaluate_defaults_to_bundled_model_and_refuses_to_overwrite_samples(pairs4, tmp_path, capsys):
    from sar2opt_geo.defaults import BUNDLED_MODEL

    grid = tmp_path / "samples.png"
    grid.write_bytes(b"keep me")
    args = ["evaluate", "--data", pairs4, "--split", "all", "--json", "--samples", 1, "--samples-out", grid]
    code, out, err = run_cli(args, capsys)
    assert code == 1 and err.strip().count("\n") == 0 and "--overwrite" in err and out == ""
    assert grid.read_bytes() == b"keep me"
    code, out, err = run_cli([*args, "--overwrite", "-q"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["model"] == str(BUNDLED_MODEL) and res["model_name"].startswith("sar2opt-geo-default")
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_help_defaults(capsys):
    code, out, _ = run_cli(["evaluate", "--help"], capsys)
    out = " ".join(out.split())
    assert code == 0 and "[default: auto]" in out and "-v, --verbose" in out and "-q, --quiet" in out
    assert "--overwrite" in out and "bundled model" in out
