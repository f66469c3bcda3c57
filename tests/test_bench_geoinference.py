"""scripts/bench_geoinference.py: the pure helpers (geo-inference itself lives in its own venv, not here).

The point of the TorchScript wrapper is that geo-inference runs the same work as sar2opt-geo: the wrapper's
radiometry must equal :func:`sar2opt_geo.radiometry.normalize`, and the TorchScript must equal the
checkpoint's network on that input.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sar2opt_geo.models.checkpoint import load_generator, read_metadata
from sar2opt_geo.radiometry import Radiometry, normalize, resolve_stats

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "bench_geoinference.py"
_SPEC = importlib.util.spec_from_file_location("bench_geoinference", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)

# geo-inference loads TorchScript (torch.jit.load); torch 2.13 marks the jit API deprecated
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

RAD = Radiometry(scale="db", clip=(-25.0, 0.0), out_range=(-1.0, 1.0), quantize=True)


def _scene(shape, seed=0):
    """Linear σ⁰ spanning the clip and beyond, with nodata zeros."""
    gen = np.random.default_rng(seed)
    x = (10.0 ** gen.uniform(-3.5, 0.5, size=shape)).astype(np.float32)
    x[..., :7, :] = 0.0
    x[..., 40, 3:90] = 0.0
    return x


def test_peer_radiometry_equals_normalize():
    peer = torch.jit.script(bench.PeerModel(torch.nn.Identity(), 64, -25.0, 0.0, -1.0, 1.0, True, 0.0, 1))
    x = _scene((1, 64, 64))
    ours = normalize(x, x[0] != 0, RAD, resolve_stats(RAD, None, 1))
    with torch.no_grad():
        got = peer(torch.from_numpy(x[None])).numpy()[0]
    assert got.shape == ours.shape
    # same float32 operations; a value on a level boundary may land one 8-bit level apart (log10 ulps)
    step = 2.0 / 255.0
    assert np.abs(got - ours).max() <= step + 1e-6
    assert np.mean(np.abs(got - ours) > 1e-6) < 1e-3
    assert (got[0][x[0] == 0] == -1.0).all()


def test_peer_skips_partial_chunks_without_running_the_network():
    class Boom(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("network ran")

    peer = torch.jit.script(bench.PeerModel(Boom(), 64, -25.0, 0.0, -1.0, 1.0, True, 0.0, 3))
    out = peer(torch.ones(1, 1, 32, 64))
    assert out.shape == (1, 3, 32, 64) and not out.any()
    with pytest.raises(Exception, match="network ran"):
        peer(torch.ones(1, 1, 64, 64))


def test_peer_torchscript_is_the_checkpoint_network(tmp_path):
    ckpt = bench.make_checkpoint(tmp_path / "m.safetensors", ngf=2, seed=3)
    meta = read_metadata(ckpt)
    assert meta.arch_args["in_channels"] == 1 and meta.arch_args["ngf"] == 2
    assert not meta.radiometry.get("replicate_to")
    ts = torch.jit.load(str(bench.peer_torchscript(ckpt, tmp_path / "peer.pt")))
    net, _ = load_generator(ckpt)
    x = _scene((1, bench.TILE_SIZE, bench.TILE_SIZE), seed=5)
    rad = Radiometry.from_dict(meta.radiometry)
    with torch.no_grad():
        want = net(torch.from_numpy(normalize(x, x[0] != 0, rad, resolve_stats(rad, None, 1))[None])).numpy()
        got = ts(torch.from_numpy(x[None])).numpy()
    assert got.shape == want.shape == (1, 3, bench.TILE_SIZE, bench.TILE_SIZE)
    assert np.mean(np.abs(got - want) < 1e-5) > 0.999  # rare level flips aside (see the radiometry test)


def test_far_from_nodata_is_a_chebyshev_margin_of_tile_minus_one():
    valid = np.ones((40, 40), dtype=bool)
    valid[20, 20] = False
    far = bench.far_from_nodata(valid, 4)
    yy, xx = np.mgrid[0:40, 0:40]
    cheb = np.maximum(abs(yy - 20), abs(xx - 20))
    assert (far == (cheb > 3)).all()


def test_psnr_and_correlation():
    a = np.zeros((4, 4), dtype=np.uint8)
    b = a.copy()
    b[0, 0] = 16
    mask = np.ones_like(a, dtype=bool)
    assert bench.psnr(a, b, mask) == pytest.approx(10 * np.log10(255.0**2 / (256 / 16)))
    assert bench.psnr(a, a, mask) == float("inf")
    assert np.isnan(bench.psnr(a, b, np.zeros_like(mask)))
    g = np.random.default_rng(0).integers(0, 255, size=(8, 8))
    assert bench.correlation(g, g + 3, np.ones_like(g, dtype=bool)) == pytest.approx(1.0)
    assert bench.correlation(g, -g, np.ones_like(g, dtype=bool)) == pytest.approx(-1.0)


def test_argmax_agreement_counts_only_clear_leaders():
    rgb = np.zeros((3, 1, 4), dtype=np.uint8)
    rgb[:, 0, 0] = (10, 5, 5)  # clear leader R
    rgb[:, 0, 1] = (5, 10, 5)  # clear leader G
    rgb[:, 0, 2] = (10, 9, 5)  # R leads by 1 DN: not clear
    rgb[:, 0, 3] = (5, 5, 10)  # clear leader B
    classes = np.array([[0, 2, 1, 2]])
    share, agree = bench.argmax_agreement(rgb, classes, np.ones((1, 4), dtype=bool), margin=2)
    assert share == pytest.approx(0.75) and agree == pytest.approx(2 / 3)


def test_peer_configs_and_thread_environment():
    assert bench.peer_configs("2,2:1, 1") == [(2, None), (2, 1), (1, None)]
    assert bench.peer_name((2, 1)) == "2 Dask thread(s), 1 torch thread(s)"
    env = bench.venv_env(1)
    assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "1" and "PYTHONPATH" not in env
    assert bench.venv_env().get("OMP_NUM_THREADS") == os.environ.get("OMP_NUM_THREADS")  # default: untouched
