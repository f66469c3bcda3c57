#!/usr/bin/env python
"""What reading VH costs: translate one synthetic VV + VH scene with the bundled single-pol model (``--bands
VV``) and with the bundled dual-pol model (the default for such a scene), alternated, in one run.

    python scripts/bench_dual_pol.py [--size 3072] [--repeat 2]

The two models are the same network (ngf 16, 3 input channels); the dual-pol run reads two bands and computes
the composite (VV, VH, VV/VH) where the single-pol run reads one band and broadcasts it. Default translate
options otherwise (``--backend auto``: ONNX Runtime on CPU). Prints each run's wall time and the ratio of the
medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sar2opt_geo.defaults import BUNDLED_MODEL  # noqa: E402
from sar2opt_geo.distributed import ThreadedExecutor  # noqa: E402
from sar2opt_geo.plan import TranslateOptions  # noqa: E402
from sar2opt_geo.run import run_translate  # noqa: E402
from sar2opt_geo.synth import SceneSpec, write_scene  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=3072, help="scene side in pixels")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="Dask threads")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sar, _ = write_scene(tmp / "scene", SceneSpec(args.size, args.size, ("VV", "VH"), seed=21))
        runs = {"single-pol (--bands VV)": "VV", "dual-pol (default)": None}
        warm = tmp / "warm.tif"  # exports both models to ONNX and warms the caches before timing
        for bands in runs.values():
            run_translate(
                sar,
                str(warm),
                TranslateOptions(model=str(BUNDLED_MODEL), bands=bands),
                ThreadedExecutor(args.workers),
                overwrite=True,
            )
        times = {name: [] for name in runs}
        for _ in range(args.repeat):
            for name, bands in runs.items():
                t = time.perf_counter()
                s = run_translate(
                    sar,
                    str(tmp / "out.tif"),
                    TranslateOptions(model=str(BUNDLED_MODEL), bands=bands),
                    ThreadedExecutor(args.workers),
                    overwrite=True,
                )
                times[name].append(time.perf_counter() - t)
                print(f"{name}: {times[name][-1]:.2f} s ({s.evaluations} tiles)", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    a, b = med.values()
    print(
        f"{args.size}² scene, median of {args.repeat}: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in med.items())
        + f"; dual-pol ÷ single-pol {b / a:.2f}"
    )


if __name__ == "__main__":
    main()
