"""Feeding a GPU (issue #15): with the model on a GPU, every block's input is prepared by a ``prep`` task of
its own that any worker runs (read, radiometry, filter, nodata fill), and the ``acc`` task on the GPU worker
only runs the model, blends and finishes the block. Checked without a GPU: the graph a CUDA job gets, and the
pixels of the split pipeline against the fused one (the CPU default) through a whole translate."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import translate_torch

from sar2opt_geo import tasks
from sar2opt_geo.distributed import ThreadedExecutor
from sar2opt_geo.plan import TranslateOptions, prepare_translate
from sar2opt_geo.sampling import measure_scene


@pytest.fixture(scope="module")
def cuda_job(small_scene, tiny_model_path):
    """A small scene's job in 4 × 3 blocks, its model marked as on CUDA (nothing runs it here)."""
    ex = ThreadedExecutor(1)
    prep = prepare_translate(
        small_scene, TranslateOptions(model=tiny_model_path, device="cpu", chunk_size=256), ex
    )
    job = measure_scene(ex, prep)
    assert job.plan.n_blocks >= 9
    return replace(job, model=replace(job.model, device="cuda"))


def test_a_cuda_job_prepares_every_unfinished_block_apart_and_only_acc_needs_the_gpu(cuda_job):
    done = {cuda_job.plan.blocks[0].key}
    dsk, finals, resources = tasks.translate_graph(cuda_job, "/nowhere", done, prepare_ahead=3)
    acc = sorted(k for k in dsk if k[0].startswith("acc-"))
    prep = {k[1:] for k in dsk if k[0].startswith("prep-")}
    assert set(resources) == set(acc) and all(r == {"GPU": 1} for r in resources.values())
    # every acc task of an unfinished block takes a prep task's output; the finished block reads its spill
    for k in acc:
        task = dsk[k]
        key = f"{k[1]}-{k[2]}"
        if key in done:
            assert k[1:] not in prep and len(task) == 5
        else:
            assert task[-1] == (k[0].replace("acc-", "prep-"), k[1], k[2])
    # prep task n waits for acc task n - 3: never more than 3 blocks prepared ahead of the GPU
    fed = [k for k in dsk if k[0].startswith("acc-") and len(dsk[k]) == 6]
    for n, k in enumerate(fed):
        p = dsk[k][-1]
        after = dsk[p][4:]
        if n < 3:
            assert after == ()
        else:
            (r,) = after
            assert dsk[r] == (tasks.ready, fed[n - 3])


def test_a_cpu_job_keeps_the_fused_acc_task(cuda_job):
    job = replace(cuda_job, model=replace(cuda_job.model, device="cpu"))
    dsk, _, resources = tasks.translate_graph(job, "/nowhere")
    assert not resources
    assert not [k for k in dsk if k[0].startswith(("prep-", "ready-"))]


def test_prepared_blocks_give_the_pixels_of_the_fused_pipeline(
    small_scene, tiny_model_path, tmp_path, capsys, monkeypatch
):
    """The same translate (torch, 4 × 3 blocks, a nodata collar) with the inputs prepared apart, as a CUDA
    job's are, and fused: the same bytes and mask; and every block's acc task did take a prepared input."""

    def run(name):
        return translate_torch(small_scene, tmp_path / name, tiny_model_path, capsys, "--chunk-size", "256")

    fused, mf = run("fused.tif")
    seen = []
    real = tasks.accumulate_block

    def spy(job, bi, bj, prepared=None):
        seen.append(prepared is not None and prepared.key == f"{bi}-{bj}")
        return real(job, bi, bj, prepared)

    monkeypatch.setattr(tasks, "prepares_apart", lambda job: True)
    monkeypatch.setattr(tasks, "accumulate_block", spy)
    apart, ma = run("apart.tif")
    assert seen and all(seen)
    assert (mf["mask"] > 0).any() and not (mf["mask"] > 0).all()
    assert np.array_equal(ma["mask"], mf["mask"])
    assert np.array_equal(apart, fused)


def test_prepare_block_fills_the_tiles_the_fused_task_feeds_the_model(cuda_job):
    """prepare_block's tiles are the batch slots accumulate_block fills itself (before the broadcast of
    the single band to the model's channels)."""
    job = replace(cuda_job, model=replace(cuda_job.model, device="cpu"))
    for b in job.plan.blocks[:4]:
        prepared = tasks.prepare_block(job, b.bi, b.bj)
        r0, r1, c0, c1 = b.acc_bounds
        x, valid = tasks.model_input(job, r0, r1, c0, c1, replicate=False)
        assert np.array_equal(prepared.valid, valid)
        assert prepared.todo == tasks.tiles_to_run(job, b, valid)
        T = job.grid.tile
        for tile, (_, _, lr, lc) in zip(prepared.tiles, prepared.todo, strict=True):
            assert np.array_equal(tile, tasks.model_tile(x, valid, lr, lc, T, job.nodata_fill))
