"""blend.normalise in place (the translate path) gives the quotients of the copying version, bit for bit,
zero where no tile covered a pixel, without floating-point warnings (issue #15: it divides every pixel
and overwrites the uncovered ones instead of numpy's slower masked division)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sar2opt_geo.blend import normalise


@pytest.mark.parametrize("uncovered", [0.0, 0.3, 1.0])
def test_in_place_equals_the_copy(uncovered):
    rng = np.random.default_rng(15)
    sum_w = rng.uniform(0.05, 4.0, (70, 90)).astype(np.float32)
    sum_w[rng.random((70, 90)) < uncovered] = 0
    sum_wy = (rng.normal(size=(3, 70, 90)) * sum_w).astype(np.float32)
    sum_wy[0, 5, 5] = -0.0  # signs of zero kept too
    want, want_cov = normalise(sum_wy.copy(), sum_w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero / invalid-value warning escapes
        got, cov = normalise(sum_wy, sum_w, in_place=True)
    assert got is sum_wy
    assert np.array_equal(cov, want_cov) and np.array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))
    assert not got[:, ~cov].any() and np.isfinite(got).all()
