#!/usr/bin/env python
"""Pack what ``scripts/bench_gpu.py`` needs on the lent GPU machine and is not installed there, into ``.whl/``
(ignored by git), and print the device command that unpacks it and runs the bench.

The GPU machine's image has Python 3.12 with torch, numpy, scipy, onnx, onnxruntime, safetensors, click,
pyyaml, pillow, psutil and dask's small dependencies, but no GDAL stack and no dask (the device tool's
KINDS.md lists its packages); nothing can be fetched there. A call carries at most 64 MiB with the working
tree (~31 MiB, most of it the bundled models), so rasterio's 36 MB wheel travels as an xz-compressed tar
of its files (~25 MB, unpacked there with Python's own ``lzma``), the small pure-Python wheels as they are.

    python scripts/gpu_kit.py            # then, with the device tool: carry [".whl"], the printed command
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / ".whl"
#: Not in the GPU machine's image (KINDS.md, 2026-11-17), needed by ``translate`` and the bench.
PACKAGES = [
    "rasterio==1.4.4",
    "affine",
    "cligj",
    "click-plugins",
    "shapely==2.2.0",
    "dask==2026.8.0",
    "partd",
    "locket",
    "importlib_metadata",
    "lazy-importer",  # importlib_metadata 10 imports it
    "tblib",
]
PLATFORMS = [
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_28_x86_64",
]

COMMAND = (
    "set -o pipefail; export PYTHONUNBUFFERED=1; "
    'python3 -c "import tarfile; '
    "tarfile.open('.whl/rasterio.tar.xz').extractall('/tmp/site', filter='data')\" && "
    "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "
    ".whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; nvidia-smi -L; "
    "python3 scripts/bench_gpu.py --json $OUT/gpu.json 2>&1 | tee $OUT/bench_gpu.log"
)


def main() -> None:
    if KIT.exists():
        shutil.rmtree(KIT)
    KIT.mkdir()
    exclude = ROOT / ".git" / "info" / "exclude"
    if exclude.parent.is_dir() and "/.whl/" not in (exclude.read_text() if exclude.exists() else ""):
        with open(exclude, "a") as f:
            f.write("/.whl/\n")
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(KIT)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run(cmd + PACKAGES, check=True)
    (wheel,) = KIT.glob("rasterio-*.whl")
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
        for so in Path(tmp).rglob("*.so*"):  # zip drops the permission bits the loader needs
            so.chmod(0o755)
        with tarfile.open(KIT / "rasterio.tar.xz", "w:xz", preset=9) as t:
            for item in sorted(Path(tmp).iterdir()):
                t.add(item, arcname=item.name)
    wheel.unlink()
    size = sum(f.stat().st_size for f in KIT.iterdir()) / 2**20
    print(f"{KIT}: {size:.1f} MiB ({', '.join(sorted(f.name for f in KIT.iterdir()))})")
    print("device run: carry ['.whl'], timeout_s 600, command:")
    print(COMMAND)


if __name__ == "__main__":
    main()
