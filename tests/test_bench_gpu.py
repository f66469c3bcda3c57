"""scripts/bench_gpu.py, the GPU rows of issue #15, run on CPU in its tiny --quick mode: every row is measured
and printed (model only, end to end, the ratio and the CPU cores), so the script runs as it is the first time
a GPU machine is lent (no device time is spent debugging it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"
_SPEC = importlib.util.spec_from_file_location("bench_gpu", _PATH)
bench_gpu = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_gpu)


def test_every_gpu_row_is_measured_on_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SAR2OPT_GEO_CACHE_DIR", raising=False)
    out = bench_gpu.main(["--device", "cpu", "--quick", "--json", str(tmp_path / "gpu.json")])
    printed = capsys.readouterr().out
    assert set(out["model_only"]) == {"seed U-Net ngf 8, fp32", "bundled, fp32"}
    for key, mo in out["model_only"].items():
        assert mo["tiles_per_s"] > 0 and mo["tiles"] == 4
        e = out["end_to_end"][key]
        # 512² and 256² scenes at tile 256, stride 192: 3 × 3 tiles and 1 tile, all evaluated. The marginal
        # seconds of 8 tiles are within the noise of two process starts: their values are not checked here
        assert e["tiles"] == 8 and np.isfinite(e["cpu_s_per_tile"]) and np.isfinite(e["wall_s"])
        assert abs(e["efficiency"] - e["tiles_per_s"] / mo["tiles_per_s"]) < 1e-9
        assert abs(e["cores_to_feed"] - mo["tiles_per_s"] * e["cpu_s_per_tile"]) < 1e-9
        assert f"| {key} | {mo['tiles_per_s']:.1f} |" in printed
    assert out["pipeline_alone"]["tiles"] == 8 and "pipeline alone (identity model" in printed
    product = out["pipeline_alone_product"]  # warped products: more tiles than the small one's
    assert product["tiles"] > 0 and np.isfinite(product["cpu_s_per_tile"]) and "Sentinel-1 GRD" in printed
    assert json.loads((tmp_path / "gpu.json").read_text())["machine"]["cpu_cores"] > 0
