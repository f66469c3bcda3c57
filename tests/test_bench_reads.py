"""scripts/bench_reads.py (issue #15), tiny: every input and every way of reading is timed and printed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "bench_reads.py"
_SPEC = importlib.util.spec_from_file_location("bench_reads", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_every_input_and_mode_is_timed(tmp_path, capsys):
    # 2100 wide: DEFLATE strips are copied into tiled form from io.TILED_COPY_MIN_WIDTH (2048) on
    args = "--width 2100 --height 300 --window 120 --step 100 --windows 3 --geotiff-height 200".split()
    rows = bench.main([*args, "--workdir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert [r["input"] for r in rows][:3] == [
        "TIFF (SAFE folder)",
        "zip, member stored",
        "zip, member deflated",
    ]
    assert [r["input"] for r in rows][3:] == [
        "σ⁰ GeoTIFF input, float32, uncompressed strips",
        "σ⁰ GeoTIFF input, float32, DEFLATE strips",
    ]
    assert "kept ÷ now" in printed and "DEFLATE strips copied once" in printed and rows[4]["copy"][0] > 0
    for r in rows:
        assert all(r[m][0] > 0 and r[m][1] >= 0 for m in bench.MODES)
        assert f"| {r['input']} |" in printed
    deflated = rows[2]
    assert deflated["unpack"][0] > 0 and deflated["unpacked"][0] > 0 and deflated["unpack2"][0] > 0
    assert (
        "deflated member unpacked once" in printed
        and "pays for itself after" in printed
        and "unpacked together" in printed
    )
    assert (tmp_path / "measurement_2100x300.tiff").exists() and not (tmp_path / "unpacked").exists()
