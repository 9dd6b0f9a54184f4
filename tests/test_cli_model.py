"""evaluate, predict and show on the command line, with a model trained for the purpose."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .test_cli import run

pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, mnist_dir):
    path = tmp_path_factory.mktemp("model") / "m.npz"
    proc = run("train", "--backend", "numpy", "--hidden", "32", "--epochs", "1", "--quiet",
               "--data", str(mnist_dir), "--out", str(path))
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.mark.mnist
def test_evaluate_reports_metrics_and_json(model_file, mnist_dir):
    proc = run("evaluate", str(model_file), "--data", str(mnist_dir), "--backend", "numpy",
               "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    confusion = np.array(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10_000 == report["n"]
    assert report["accuracy"] == pytest.approx(np.trace(confusion) / 10_000)
    assert len(report["precision"]) == 10 and len(report["most_confused"]) == 5
    assert "confusion matrix" in proc.stderr


@pytest.mark.mnist
def test_predict_reads_images_and_reports_each_bad_file(model_file, mnist, tmp_path):
    from PIL import Image

    for i in range(3):
        digit = 255 - mnist.test.images[i].reshape(28, 28)  # black on white, like a drawing
        Image.fromarray(digit).resize((140, 140)).save(tmp_path / f"digit{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    proc = run("predict", str(model_file), str(tmp_path), "--backend", "numpy", "--json")
    assert proc.returncode == 2  # one file was bad
    out = json.loads(proc.stdout)
    assert out["failed"] == 1 and len(out["predictions"]) == 3
    for p in out["predictions"]:
        assert len(p["top3"]) == 3 and p["top3"][0]["digit"] == p["prediction"]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "broken.png" in errors[0]


@pytest.mark.mnist
def test_show_writes_the_figures(model_file, mnist_dir, tmp_path):
    proc = run("show", str(model_file), "--out", str(tmp_path / "figs"), "--data",
               str(mnist_dir), "--backend", "numpy")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert names == ["confident_mistakes.png", "confusion.png", "first_layer.png",
                     "predictions.png", "training_curves.png"]
    for name in names:
        assert (tmp_path / "figs" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_commands_refuse_a_bad_model_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    for command in (["evaluate", str(bad)], ["predict", str(bad), "x.png"],
                    ["show", str(bad), "--out", str(tmp_path)]):
        proc = run(*command)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error:") and "bad.npz" in proc.stderr
        assert "Traceback" not in proc.stderr
