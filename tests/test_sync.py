"""The hand-over intrinsics of ``_sync``: each task runs once, a phase sees the
whole previous phase, and a region that gets only one thread finishes (it runs every task)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit, prange

from fastmnist.backends import get_backend
from fastmnist.backends._sync import arrive, claim, wait_until

N_TASKS = 2


@njit(parallel=True, cache=False)
def _phases(n_phases, claims, done, ran, seen):
    """Each task of phase ``p`` records that it ran and what it saw of phase ``p - 1``."""
    for t in prange(N_TASKS):
        for phase in range(n_phases):
            for k in range(N_TASKS):
                task = (t + k) % N_TASKS
                if not claim(claims, phase * N_TASKS + task):
                    continue
                ran[phase, task] += 1
                if phase > 0:  # the previous phase must be complete and visible
                    seen[phase, task] = ran[phase - 1, 0] + ran[phase - 1, 1]
                arrive(done, 0)
            wait_until(done, 0, N_TASKS * (phase + 1))


@pytest.mark.parametrize("threads", [1, 2])
def test_each_task_runs_once_after_the_whole_previous_phase(threads):
    n_phases = 2000
    claims = np.zeros(N_TASKS * n_phases, np.int64)
    done = np.zeros(1, np.int64)
    ran = np.zeros((n_phases, N_TASKS), np.int64)
    seen = np.zeros((n_phases, N_TASKS), np.int64)
    with get_backend("numba").limit_threads(threads):
        _phases(n_phases, claims, done, ran, seen)
    np.testing.assert_array_equal(ran, 1)
    np.testing.assert_array_equal(seen[1:], N_TASKS)
    np.testing.assert_array_equal(claims, 1)
    assert done[0] == N_TASKS * n_phases


@njit(cache=False)
def _claim_twice(flags):
    return claim(flags, 3), claim(flags, 3), claim(flags, 4)


def test_claim_is_true_once():
    flags = np.zeros(8, np.int64)
    assert _claim_twice(flags) == (True, False, True)
    np.testing.assert_array_equal(flags, [0, 0, 0, 1, 1, 0, 0, 0])
