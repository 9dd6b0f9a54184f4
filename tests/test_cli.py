"""The command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastmnist.train.presets import PRESETS


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastmnist", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def assert_one_error_line(proc: subprocess.CompletedProcess, status: int, *words: str) -> None:
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "--epochs", "0"], ["epochs"]),
        (["train", "--hidden", "abc"], ["--hidden"]),
        (["train", "--hidden", "0"], ["--hidden"]),
        (["train", "--lr", "-1"], ["learning rate"]),
        (["train", "--batch-size", "0"], ["batch_size"]),
        (["train", "--dataset", "cifar"], ["--dataset"]),
        (["train", "--backend", "cuda"], ["--backend"]),
        (["train", "--threads", "100000"], ["threads"]),
        (["bogus-command"], []),
        ([], []),
    ],
)
def test_usage_errors_print_one_line_and_exit_2(args, words):
    assert_one_error_line(run(*args), 2, *words)


def test_missing_data_directory_is_one_error_line(tmp_path):
    proc = run("train", "--epochs", "1", "--data", str(tmp_path / "nowhere"))
    assert proc.returncode in (1, 2)
    assert_one_error_line(proc, proc.returncode, "nowhere")


@pytest.mark.mnist
def test_train_json_reports_every_documented_key(mnist_dir):
    proc = run(
        "train", "--epochs", "1", "--hidden", "32", "--batch-size", "128",
        "--backend", "numpy", "--json", "--quiet", "--data", str(mnist_dir),
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # stdout is exactly one JSON object
    for key in (
        "backend", "dataset", "hidden", "dtype", "epochs", "batch_size", "seed", "threads",
        "test_accuracy", "train_accuracy", "final_loss", "train_seconds",
        "samples_per_second", "history",
    ):
        assert key in out, key
    assert out["hidden"] == [32] and out["backend"] == "numpy" and out["epochs"] == 1
    assert out["test_accuracy"] > 0.85 and len(out["history"]) == 1
    assert "test accuracy" in proc.stderr  # the human line moved to stderr


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_settings_are_resolved_and_flags_override_them(preset, fake_mnist_dir):
    proc = run(
        "train", "--preset", preset, "--epochs", "1", "--lr", "0.01", "--backend", "numpy",
        "--json", "--quiet", "--data", str(fake_mnist_dir),
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["preset"] == preset
    expected = {**PRESETS[preset], "epochs": 1, "lr": 0.01, "backend": "numpy"}
    for key, value in expected.items():
        want = list(value) if isinstance(value, tuple) else value
        assert out[key] == want, key
    # Settings the preset leaves alone are reported too, at their defaults.
    for key in ("weight_decay", "seed", "dtype", "validation", "warmup_epochs"):
        assert key in out, key
