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
