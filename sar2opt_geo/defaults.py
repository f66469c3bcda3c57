"""Defaults and named constants shared by the CLI, job specs, scripts and docs (one place for each value).

Every command and job spec takes its defaults from here, so the same option means the same thing with the same
default everywhere. Nothing here imports anything heavier than the standard library.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The bundled demo generator (SAR2Optical U-Net, ngf 16, trained on synthetic Sentinel-1-like pairs).
BUNDLED_MODEL = Path(__file__).resolve().parent / "weights" / "default.safetensors"
#: Its dual-pol sibling (the same network reading the VV, VH, VV/VH composite): what the bundled model means
#: for a scene with bands named VV and VH (Sentinel-1 IW GRD products, dual-pol σ⁰ GeoTIFFs).
BUNDLED_DUAL_POL_MODEL = BUNDLED_MODEL.with_name("default-dualpol.safetensors")

#: Model tile side in pixels (the SAR2Optical / pix2pix training size).
TILE_SIZE = 256
#: Overlap between neighbouring tiles in pixels (stride = TILE_SIZE - OVERLAP).
OVERLAP = 64
#: Dask block side in pixels (rounded to a multiple of the tile stride).
CHUNK_SIZE = 1024
#: Tiles per forward pass.
BATCH_SIZE = 8

#: With the model on a GPU, how many blocks' inputs ``prep`` tasks may prepare ahead of the GPU worker
#: (``tasks.translate_graph``): enough to keep a node's CPU workers busy, few enough that the prepared
#: inputs held (6.5 MB a default 960² block of 25 single-band tiles) stay small.
PREPARE_AHEAD = 32

#: Inference engines.
BACKENDS = ("torch", "onnx")
#: What ``--backend`` takes: an engine, or "auto" (the default: ONNX Runtime on CPU when the model exports
#: and its outputs match torch within 1 DN on a probe batch, else torch; torch on CUDA).
BACKEND_CHOICES = ("auto", *BACKENDS)
BACKEND = "auto"
#: Tiles per forward pass per engine on CPU when --batch-size is not given (measured with the bundled model
#: on 2 loaded cores, 16 tiles per run, engines and batches interleaved, median of 3 runs, tiles/s at batch
#: 1/2/4/8: ONNX Runtime 10.2/12.4/11.4/9.9, torch 1.3/4.2/2.4/5.4). On CUDA the batch comes from free memory.
ENGINE_BATCH_SIZE = {"torch": 8, "onnx": 2}
#: Numeric precision of the model: fp32 everywhere; bf16 (torch autocast, CPU or CUDA); fp16 (torch
#: autocast, CUDA only); int8 (ONNX Runtime static quantisation calibrated on the scene, CPU).
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
PRECISION = "fp32"
#: Devices a command accepts; "auto" takes CUDA when present.
DEVICES = ("auto", "cpu", "cuda")
#: How input values are read: "auto" decides from dtype, values and metadata; "levels": the 8-bit levels
#: of the model's radiometry (SEN1-2 / QXSLAB PNG chips).
INPUT_SCALES = ("auto", "linear", "db", "amplitude", "dn", "levels")
#: Sentinel-1 products: calibration choices (σ⁰ default) and the map projection before the model.
CALIBRATIONS = ("sigma0", "beta0", "gamma0")
CALIBRATION = "sigma0"
WARP = "auto"
#: Resampling when warping (bilinear on linear intensity, or nearest).
RESAMPLINGS = ("bilinear", "nearest")
RESAMPLING = "bilinear"
#: Output formats of translate / filter.
OUTPUT_FORMATS = ("cog", "zarr")

#: What the model sees at nodata pixels (``--nodata-fill``).
NODATA_FILLS = ("reflect", "constant")

#: Speckle filter defaults.
FILTER_WINDOW = 7
FILTER_ENL = "4.4"
FILTER_DAMPING = 2.0

#: Seed used by `synth` and `demo` unless told otherwise.
SEED = 0

#: Scene statistics: up to SAMPLE_LATTICE² windows of SAMPLE_WINDOW² px read for the input-scale check
#: and the scene-level percentiles (≤ 1.6 Mpx, independent of the chunking).
SAMPLE_WINDOW = 128
SAMPLE_LATTICE = 10


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a Slurm or cgroup cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
