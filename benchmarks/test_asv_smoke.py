"""The asv suite, run once in smoke mode so the benchmarks cannot silently rot.

``FASTMNIST_ASV_SMOKE=1`` shrinks every parameter grid to one point per backend
and an epoch to 2048 samples; ``--quick`` runs each benchmark once, in this
environment (``--python=same``), without saving results (``--dry-run``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _asv(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asv", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
def test_asv_suite_runs_in_smoke_mode(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("asv needs the git checkout")
    pytest.importorskip("asv")
    env = {**os.environ, "FASTMNIST_ASV_SMOKE": "1", "HOME": str(tmp_path)}
    machine = _asv("machine", "--yes", env=env)
    assert machine.returncode == 0, machine.stdout + machine.stderr
    check = _asv("check", "--python=same", env=env)
    assert check.returncode == 0 and "No problems found" in check.stdout, check.stdout
    run = _asv("run", "--python=same", "--quick", "--dry-run", "--show-stderr", env=env)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "failed" not in out.lower(), out
    for name in ("time_train_epoch", "track_train_samples_per_second",
                 "track_predict_samples_per_second", "time_train_step",
                 "peakmem_train_epoch", "time_import"):
        assert name in out, name
