"""Dual-pol (VV + VH) models: the Sentinel-1 composite radiometry (R = VV, G = VH, B = VV/VH), the training
pairs that store it, its resampling augmentation, and translate feeding a scene's VV and VH bands to it."""

from __future__ import annotations

import numpy as np
import pytest

from sar2opt_geo.radiometry import (
    DUAL_POL_COMPOSITE,
    Radiometry,
    composite_levels,
    normalize,
    resolve_stats,
)
from tests.conftest import make_small_generator, run_cli

COMPOSITE = Radiometry.from_dict(DUAL_POL_COMPOSITE)


def _window(n: int = 128, seed: int = 0):
    from sar2opt_geo.synth import pair_windows, render_window

    spec, r0, c0 = next(pair_windows(1, seed=seed, bands=("VV", "VH")))
    sar, opt, _ = render_window(spec, r0, c0, n, n)
    return sar, opt


def test_composite_channels_are_vv_vh_and_their_ratio_in_db():
    vv_db = np.array([[-25.0, -12.5, 0.0, -30.0, -10.0]], np.float32)
    vh_db = np.array([[-32.0, -19.5, -7.0, -40.5, -30.0]], np.float32)
    lin = np.power(10, np.stack([vv_db, vh_db]) / 10).astype(np.float32)
    valid = np.ones(vv_db.shape, bool)
    x = normalize(lin, valid, COMPOSITE, resolve_stats(COMPOSITE, None, 2))
    assert x.shape == (3, 1, 5)
    levels = np.rint((x + 1) * 127.5).astype(int)
    # VV [-25, 0] dB, VH [-32, -7] dB, VV - VH [-2, 18] dB, each floor-quantised to 0..255
    assert levels[0, 0].tolist() == [0, 127, 255, 0, 153]
    assert levels[1, 0].tolist() == [0, 127, 255, 0, 20]
    # VV - VH = 7, 7, 7, 10.5, 20 dB: floor((r + 2) / 20 * 255), clipped
    assert levels[2, 0].tolist() == [114, 114, 114, 159, 255]
    # nodata: the low end of every channel
    x = normalize(lin, np.zeros_like(valid), COMPOSITE, resolve_stats(COMPOSITE, None, 2))
    assert np.all(x == -1.0)
    # the checkpoint form survives a round trip, and says what it is
    again = Radiometry.from_dict(COMPOSITE.to_dict())
    assert (again.band_clips, again.ratio_clip) == (((-25.0, 0.0), (-32.0, -7.0)), (-2.0, 18.0))
    assert "VV/VH ratio" in COMPOSITE.describe()


def test_composite_radiometry_is_refused_where_it_cannot_apply():
    from sar2opt_geo.errors import InputError, UsageError

    with pytest.raises(UsageError, match="ratio_clip"):
        Radiometry.from_dict({**DUAL_POL_COMPOSITE, "scale": "linear"})
    with pytest.raises(UsageError, match="ratio_clip"):
        Radiometry.from_dict({**DUAL_POL_COMPOSITE, "ratio_clip": [5, 5]})
    with pytest.raises(InputError, match="two bands"):
        normalize(
            np.ones((1, 2, 2), np.float32),
            np.ones((2, 2), bool),
            COMPOSITE,
            resolve_stats(COMPOSITE, None, 2),
        )
    with pytest.raises(InputError, match="clips 2 band"):
        resolve_stats(COMPOSITE, None, 3)


def test_training_levels_feed_the_model_what_inference_feeds_it():
    """A dual-pol training tile stored as 8-bit levels and the same pixels normalised at inference are the
    same model input (to float rounding), so a model trained on the pairs sees no shift on scenes."""
    from sar2opt_geo.training.datasets import to_model_range

    sar, _ = _window()
    levels = composite_levels(sar, COMPOSITE)
    assert levels.shape == (3, 128, 128) and levels.dtype == np.uint8
    x = normalize(sar, np.ones(sar.shape[1:], bool), COMPOSITE, resolve_stats(COMPOSITE, None, 2))
    np.testing.assert_allclose(to_model_range(levels), x, atol=1e-6)
    # all three channels carry information, and the ratio is not a copy of either band
    assert all(len(np.unique(levels[c])) > 50 for c in range(3))
    assert abs(np.corrcoef(levels[2].ravel(), levels[0].ravel())[0, 1]) < 0.9


def test_dual_pol_pairs_share_windows_and_optical_with_single_pol_pairs(tmp_path):
    import json

    from sar2opt_geo.io import read_png
    from sar2opt_geo.synth import OPT_DIR, SAR_DIR, pair_windows, render_window, write_pairs

    write_pairs(tmp_path / "vv", 3, seed=5, tile=64)
    write_pairs(tmp_path / "dp", 3, seed=5, tile=64, dual_pol=True)
    assert json.loads((tmp_path / "dp" / "pairs.json").read_text())["sar"] == "VV,VH,VV/VH composite"
    for i, (spec, r0, c0) in enumerate(pair_windows(3, seed=5, tile=64, bands=("VV", "VH"))):
        name = f"{i:05d}.png"
        assert np.array_equal(
            read_png(tmp_path / "vv" / OPT_DIR / name), read_png(tmp_path / "dp" / OPT_DIR / name)
        )
        dp = read_png(tmp_path / "dp" / SAR_DIR / name)
        assert dp.shape == (3, 64, 64)
        sar, _, _ = render_window(spec, r0, c0, 64, 64)
        assert np.array_equal(dp, composite_levels(sar, COMPOSITE))
        assert read_png(tmp_path / "vv" / SAR_DIR / name).shape == (1, 64, 64)


def test_synth_pairs_cli_writes_dual_pol_pairs(tmp_path, capsys):
    from sar2opt_geo.io import read_png
    from sar2opt_geo.synth import SAR_DIR

    code, _, err = run_cli(
        ["synth", "pairs", tmp_path / "p", "--count", 2, "--tile-size", 32, "--dual-pol"], capsys
    )
    assert code == 0 and "dual-pol" in err
    assert read_png(tmp_path / "p" / SAR_DIR / "00001.png").shape == (3, 32, 32)
    code, _, err = run_cli(
        ["synth", "pairs", tmp_path / "g", "--count", 1, "--domain", "gf3", "--dual-pol"], capsys
    )
    assert code == 2 and "s1" in err and not (tmp_path / "g").exists()


def test_resampling_augmentation_of_a_composite():
    """The augmentation resamples VV and VH on linear intensity and forms the composite again: at zero offset
    the bands come back unchanged and the ratio within a level (its rounding); a flat scene stays flat; a
    half-pixel shift is the bilinear mean of the linear intensities."""
    from sar2opt_geo.training.datasets import resample_composite

    sar, _ = _window()
    u = composite_levels(sar, COMPOSITE)
    z = resample_composite(u, 0.0, 0.0, COMPOSITE).astype(int)
    assert np.array_equal(z[:2], u[:2].astype(int))
    assert np.abs(z[2] - u[2]).max() <= 255 and np.mean(np.abs(z[2] - u[2]) <= 1) > 0.99
    flat = composite_levels(np.full((2, 16, 16), [[[0.05]], [[0.005]]], np.float32), COMPOSITE)
    assert np.array_equal(resample_composite(flat, -0.5, 0.25, COMPOSITE), flat)
    # two columns of different intensity: the half-pixel shift lands between them in linear intensity
    lin = np.empty((2, 4, 2), np.float32)
    lin[:, :, 0], lin[:, :, 1] = [[0.1], [0.01]], [[0.01], [0.001]]
    shifted = resample_composite(composite_levels(lin, COMPOSITE), 0.0, -0.5, COMPOSITE)
    expect = composite_levels(np.stack([lin[:, :, 0], (lin[:, :, 0] + lin[:, :, 1]) / 2], -1), COMPOSITE)
    assert np.abs(shifted.astype(int) - expect).max() <= 1


def test_model_channels_of_a_composite_model():
    from sar2opt_geo.errors import ModelError
    from sar2opt_geo.models.checkpoint import CheckpointMeta
    from sar2opt_geo.plan import model_channels

    meta = CheckpointMeta(
        "m", arch_args={"in_channels": 3, "out_channels": 3, "ngf": 8}, input_bands=["VV", "VH"]
    )
    assert model_channels(COMPOSITE, meta) == 2
    with pytest.raises(ModelError, match="declares 1 input band"):
        model_channels(COMPOSITE, CheckpointMeta("m", arch_args={"in_channels": 3}, input_bands=["VV"]))
    with pytest.raises(ModelError, match="leave 3 band"):
        model_channels(COMPOSITE, CheckpointMeta("m", arch_args={"in_channels": 4}, input_bands=[]))


@pytest.fixture(scope="module")
def dual_pol_model(tmp_path_factory):
    from sar2opt_geo.models.checkpoint import CheckpointMeta, save_checkpoint

    path = tmp_path_factory.mktemp("dp") / "dualpol.safetensors"
    meta = CheckpointMeta(
        name="tiny-dual-pol",
        architecture="unet_sar2optical",
        arch_args={"in_channels": 3, "out_channels": 3, "ngf": 8},
        input_bands=["VV", "VH"],
        radiometry=dict(DUAL_POL_COMPOSITE),
    )
    save_checkpoint(path, make_small_generator(), meta)
    return str(path)


def test_translate_feeds_the_composite_of_the_scene_bands(dual_pol_model, tmp_path, capsys):
    """translate picks the scene's VV and VH by name and the model sees the composite: the output equals the
    model applied to the composite of the scene (one tile), and a VV-only scene is refused in one line."""
    import torch

    from sar2opt_geo.io import read_raster
    from sar2opt_geo.models.checkpoint import load_generator
    from sar2opt_geo.radiometry import output_to_uint8
    from sar2opt_geo.synth import SceneSpec, write_scene

    sar_path, _ = write_scene(tmp_path / "s", SceneSpec(256, 256, ("VH", "VV"), seed=4, footprint=False))
    out = tmp_path / "out.tif"
    args = ["translate", sar_path, out, "--model", dual_pol_model, "--backend", "torch", "-q"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    rgb = read_raster(out)[0]
    lin = read_raster(sar_path)[0].astype(np.float32)[::-1]  # the scene stores VH first
    x = normalize(lin, lin[0] > 0, COMPOSITE, resolve_stats(COMPOSITE, None, 2))
    net, _ = load_generator(dual_pol_model, "cpu")
    with torch.no_grad():
        want = output_to_uint8(net.eval()(torch.from_numpy(x[None]))[0].numpy())
    assert np.abs(rgb[:3].astype(int) - want).max() <= 1

    vv_only, _ = write_scene(tmp_path / "v", SceneSpec(256, 256, ("VV",), seed=4, footprint=False))
    code, _, err = run_cli(
        ["translate", vv_only, tmp_path / "x.tif", "--model", dual_pol_model, "-q"], capsys
    )
    assert code == 1 and "VH" in err and "Traceback" not in err
    assert not (tmp_path / "x.tif").exists()
    code, _, err = run_cli([*args[:2], tmp_path / "y.tif", *args[3:], "--preprocess", "sar2optical"], capsys)
    assert code == 2 and "composite" in err


def test_the_bundled_model_reads_vh_when_the_scene_has_it(
    dual_pol_model, tiny_model_path, tmp_path, monkeypatch
):
    """Without --model, a scene with VV and VH bands gets the bundled dual-pol model, a VV scene the
    single-pol one; --bands VV and --preprocess sar2optical keep the single-pol one."""
    from dataclasses import replace
    from pathlib import Path

    from sar2opt_geo import defaults
    from sar2opt_geo.plan import TranslateOptions, choose_bundled_model
    from sar2opt_geo.sar2optical import Sar2OpticalProfile
    from sar2opt_geo.source import open_source
    from sar2opt_geo.synth import SceneSpec, write_scene

    monkeypatch.setattr(defaults, "BUNDLED_MODEL", Path(tiny_model_path))
    monkeypatch.setattr(defaults, "BUNDLED_DUAL_POL_MODEL", Path(dual_pol_model))
    dual, _ = write_scene(tmp_path / "d", SceneSpec(64, 64, ("VV", "VH"), seed=1))
    single, _ = write_scene(tmp_path / "s", SceneSpec(64, 64, ("VV",), seed=1))
    opts = TranslateOptions(model=tiny_model_path)
    assert choose_bundled_model(opts, open_source(dual)).model == dual_pol_model
    assert choose_bundled_model(opts, open_source(single)).model == tiny_model_path
    assert choose_bundled_model(replace(opts, bands="VV"), open_source(dual)).model == tiny_model_path
    with_chain = replace(opts, preprocess=Sar2OpticalProfile())  # SAR2Optical's chain takes one grey band
    assert choose_bundled_model(with_chain, open_source(dual)).model == tiny_model_path
    other = TranslateOptions(model=str(tmp_path / "other.safetensors"))
    assert choose_bundled_model(other, open_source(dual)).model == other.model
    monkeypatch.setattr(defaults, "BUNDLED_DUAL_POL_MODEL", tmp_path / "absent.safetensors")
    assert choose_bundled_model(opts, open_source(dual)).model == tiny_model_path


@pytest.fixture(scope="module")
def dual_pairs(tmp_path_factory):
    from sar2opt_geo.synth import write_pairs

    root = tmp_path_factory.mktemp("dp_pairs")
    write_pairs(root, 4, seed=11, dual_pol=True)
    return root


def test_evaluate_and_finetune_refuse_tiles_the_model_does_not_read(
    dual_pol_model, dual_pairs, tiny_model_path, tmp_path
):
    """A dual-pol model scored or fine-tuned on grey tiles (or a grey model on composite tiles) would read
    the wrong channels silently: a DatasetError instead. A dual-pol fine-tune with the resampling
    augmentation reads its tiles as the base model does and keeps its radiometry and bands."""
    from sar2opt_geo.errors import DatasetError
    from sar2opt_geo.models.checkpoint import read_metadata
    from sar2opt_geo.synth import write_pairs
    from sar2opt_geo.training.config import load_config
    from sar2opt_geo.training.evaluate import evaluate
    from sar2opt_geo.training.trainer import Run

    grey = tmp_path / "grey"
    write_pairs(grey, 3, seed=11)
    with pytest.raises(DatasetError, match="dual-pol composite"):
        evaluate(dual_pol_model, grey, split="all")
    with pytest.raises(DatasetError, match="three different channels"):
        evaluate(tiny_model_path, dual_pairs, split="all")
    assert evaluate(dual_pol_model, dual_pairs, split="all")["n_images"] == 4

    small = ["ngf=8", "ndf=8", "batch_size=2", "val_every=1000", "checkpoint_every=1000", "steps=1"]
    cfg = load_config(overrides=small + ["resample_augment=1.0"])
    with pytest.raises(DatasetError, match="dual-pol composite"):
        Run(grey, tmp_path / "bad", cfg, mode="finetune", base=dual_pol_model).fit()
    run = Run(
        dual_pairs,
        tmp_path / "ft",
        load_config(overrides=small + ["resample_augment=1.0"]),
        mode="finetune",
        base=dual_pol_model,
    )
    assert run.train_ds.resample_clip_db.ratio_clip == (-2.0, 18.0)
    run.fit()
    meta = read_metadata(tmp_path / "ft" / "generator.safetensors")
    assert meta.input_bands == ["VV", "VH"] and meta.radiometry["ratio_clip"] == [-2.0, 18.0]


def test_evaluate_without_model_scores_the_bundled_model_that_reads_the_tiles(dual_pairs, tmp_path, capsys):
    import json

    from sar2opt_geo.defaults import BUNDLED_DUAL_POL_MODEL, BUNDLED_MODEL
    from sar2opt_geo.synth import write_pairs

    if not (BUNDLED_MODEL.exists() and BUNDLED_DUAL_POL_MODEL.exists()):
        pytest.skip("the bundled models are not installed")
    write_pairs(tmp_path / "grey", 2, seed=11)
    for data, want in ((dual_pairs, BUNDLED_DUAL_POL_MODEL), (tmp_path / "grey", BUNDLED_MODEL)):
        code, out, err = run_cli(["evaluate", "--data", data, "--split", "all", "--json", "-q"], capsys)
        assert code == 0, err
        assert json.loads(out)["model"] == str(want)


def test_pretraining_on_composite_tiles_gives_a_dual_pol_model(dual_pairs, tmp_path, caplog):
    """The default (single-pol) radiometry meeting composite tiles: the model reads what its tiles are."""
    from sar2opt_geo.models.checkpoint import read_metadata
    from sar2opt_geo.training.config import load_config
    from sar2opt_geo.training.trainer import train

    small = ["ngf=8", "ndf=8", "batch_size=2", "val_every=1000", "checkpoint_every=1000", "steps=1"]
    train(dual_pairs, tmp_path / "run", load_config(overrides=small + ["resample_augment=0.5"]))
    meta = read_metadata(tmp_path / "run" / "generator.safetensors")
    assert meta.input_bands == ["VV", "VH"] and meta.radiometry["ratio_clip"] == [-2.0, 18.0]
    assert "dual-pol composite" in caplog.text
