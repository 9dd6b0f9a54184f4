"""asv benchmarks: training and inference throughput of every backend.

Each benchmark is parameterised over backend x hidden width x batch size x dtype.
Compilation happens in ``setup`` so it never counts as run time; the whole-epoch
measurements come from :mod:`fastmnist.bench`'s way of driving backends (same
initial weights, same permutation, same thread count).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from fastmnist import Model
from fastmnist.optim import SGD

from ._common import ALL_BACKENDS, SMOKE, backend_or_skip, mnist

THREADS = 2


class TrainingSuite:
    params = (
        ALL_BACKENDS,
        [10] if SMOKE else [10, 128, 512],
        [128] if SMOKE else [32, 128],
        ["float32"] if SMOKE else ["float32", "float64"],
    )
    param_names = ["backend", "hidden", "batch_size", "dtype"]
    timeout = 600
    number = 1
    repeat = (1, 3 if SMOKE else 5, 60.0)
    warmup_time = 0
    epoch_samples = 2048 if SMOKE else None  # None: the whole training set

    def setup(self, backend, hidden, batch_size, dtype):
        # float64 only where it tells something new, to keep a full run to minutes.
        if dtype == "float64" and (hidden, batch_size) != (128, 128):
            raise NotImplementedError("float64 is measured at 784-128-10 b128 only")
        self.backend = backend_or_skip(backend)
        self.data = mnist()
        rng = np.random.default_rng(0)
        self.model0 = Model.initialize((hidden,), dtype=dtype, rng=rng)
        n = len(self.data.train.images)
        self.order = rng.permutation(n)[: self.epoch_samples]
        self.batch_size = batch_size
        self.lrs = np.full(-(-len(self.order) // batch_size), 0.05)
        self.threads = self.backend.limit_threads(THREADS)
        self.threads.__enter__()
        self.backend.warmup(self.model0.copy(), SGD(0.9), batch_size)
        self._epoch(self.order[:batch_size])  # first-call costs go here, not into timings
        self.backend.predict_proba(self.model0, self.data.test.images[:8])

    def teardown(self, *params):
        if hasattr(self, "threads"):
            self.threads.__exit__(None, None, None)

    def _epoch(self, order):
        model, opt = self.model0.copy(), SGD(0.9)
        steps = -(-len(order) // self.batch_size)
        self.backend.train_epoch(
            model, opt, self.data.train.images, self.data.train.labels, order,
            self.batch_size, self.lrs[:steps],
        )

    def time_train_epoch(self, *params):
        self._epoch(self.order)

    def time_train_step(self, *params):
        self._epoch(self.order[: self.batch_size])

    def peakmem_train_epoch(self, *params):
        self._epoch(self.order)

    def track_train_samples_per_second(self, *params):
        import time

        t0 = time.perf_counter()
        self._epoch(self.order)
        return len(self.order) / (time.perf_counter() - t0)

    track_train_samples_per_second.unit = "samples/s"

    def track_predict_samples_per_second(self, *params):
        import time

        images = self.data.test.images
        t0 = time.perf_counter()
        self.backend.predict_proba(self.model0, images)
        return len(images) / (time.perf_counter() - t0)

    track_predict_samples_per_second.unit = "samples/s"


def time_import():
    """Importing fastmnist must stay cheap: it compiles nothing and imports no backend."""
    subprocess.run([sys.executable, "-c", "import fastmnist"], check=True)


time_import.timeout = 60
