"""The system panel: devices, GPU name and memory, library versions (torch, ONNX Runtime, GDAL, rio-tiler)."""

from __future__ import annotations

import functools
import os
import platform


@functools.lru_cache(maxsize=1)
def system_info() -> dict:
    import onnxruntime
    import rasterio
    import rio_tiler
    import torch

    from sar2opt_geo import __version__

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 1)})
    devices = ["cpu"] + [f"cuda:{g['index']}" for g in gpus]
    return {
        "tool": f"sar2opt-geo {__version__}",
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu_count": os.cpu_count(),
        "devices": devices,
        "default_device": "cuda" if gpus else "cpu",
        "gpus": gpus,
        "versions": {
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "onnxruntime": onnxruntime.__version__,
            "onnxruntime_providers": onnxruntime.get_available_providers(),
            "gdal": rasterio.__gdal_version__,
            "rasterio": rasterio.__version__,
            "rio_tiler": rio_tiler.__version__,
        },
    }
