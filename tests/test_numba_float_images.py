"""The Numba backend against the NumPy reference on images given as scaled floats.

Float images take their own compiled specialisation of every kernel, about a
minute and a half of cold compiling per dtype; in a file of their own they
compile on a separate worker under ``pytest -n``. Bounds as in
:mod:`tests.test_numba_equivalence`.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastmnist import Model, get_backend
from fastmnist.backends import available_backends

from .test_numba_equivalence import _images, _labels, _perturbed, _sum_length, assert_close

pytestmark = pytest.mark.skipif(
    "numba" not in available_backends(), reason="numba is not installed"
)

numpy_backend = get_backend("numpy")
numba_backend = get_backend("numba") if "numba" in available_backends() else None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_images_match_the_reference(dtype):
    rng = np.random.default_rng(3)
    model = _perturbed(Model.initialize((40, 20), dtype=dtype, rng=3), rng)
    x = (_images(rng, 37, "mnist") / 255.0).astype(dtype)
    y = _labels(rng, 37, False)
    k = _sum_length(model, 37)
    assert_close("predict_proba", numba_backend.predict_proba(model, x),
                 numpy_backend.predict_proba(model, x), dtype, k)
    got, want = numba_backend.gradients(model, x, y), numpy_backend.gradients(model, x, y)
    for i, (g, w) in enumerate(zip(got.weights + got.biases, want.weights + want.biases)):
        assert_close(f"gradient {i}", g, w, dtype, k)
