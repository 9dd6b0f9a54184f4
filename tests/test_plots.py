"""The figures: what each one contains, and writing them to disk atomically.

The models here are built by hand so their predictions are known exactly: one
always answers 7, another answers 7 with a confidence that grows with the ink.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import fastmnist  # noqa: E402
from fastmnist import Model  # noqa: E402
from fastmnist.errors import ConfigError, InputError  # noqa: E402
from fastmnist.plots import (  # noqa: E402
    MAX_TILES,
    confident_mistakes,
    confusion_heatmap,
    first_layer_tiles,
    prediction_grid,
    save_figure,
    training_curves,
)

from .synthetic import tiny_dataset  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_red(color) -> bool:
    r, g, b = to_rgb(color)
    return r > 0.6 and g < 0.35 and b < 0.35


def titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


@pytest.fixture
def always_seven() -> Model:
    """A model whose answer is 7 whatever the image."""
    model = Model.initialize(hidden=(4,), rng=0)
    model.weights[1][:] = 0
    model.biases[1][:] = 0
    model.biases[1][7] = 5.0
    return model


@pytest.fixture
def ink_means_seven() -> Model:
    """A model that answers 7, more confidently the more ink an image has."""
    model = Model.initialize(hidden=(1,), rng=0)
    model.weights[0][:] = 1.0 / 784  # the hidden unit is the mean pixel, in [0, 1]
    model.biases[0][:] = 0
    model.weights[1][:] = 0
    model.weights[1][0, 7] = 8.0
    model.biases[1][:] = 0
    model.biases[1][7] = 0.5  # a blank image is still called 7
    return model


def flat_images(levels) -> np.ndarray:
    return np.repeat(np.asarray(levels, dtype=np.uint8)[:, None], 784, axis=1)


# ------------------------------------------------------------------ prediction_grid


def test_prediction_grid_titles_and_marks_mistakes(always_seven):
    images, labels = flat_images([0, 40, 80, 120, 160]), np.array([7, 3, 7, 7, 0])
    fig = prediction_grid(always_seven, images, labels, backend="numpy")
    assert isinstance(fig, Figure)
    assert titles(fig) == [
        "Prediction: 7 / Label: 7",
        "Prediction: 7 / Label: 3",
        "Prediction: 7 / Label: 7",
        "Prediction: 7 / Label: 7",
        "Prediction: 7 / Label: 0",
    ]
    wrong = [not is_red(ax.title.get_color()) for ax in fig.axes]
    assert wrong == [True, False, True, True, False]
    for ax, label in zip(fig.axes, labels):
        assert is_red(ax.spines["left"].get_edgecolor()) == (label != 7)
    assert "3 of 5 predicted correctly" in fig.get_suptitle()


def test_prediction_grid_shows_at_most_n_images(always_seven):
    images = flat_images(np.arange(20) * 10)
    labels = np.full(20, 7)
    assert len(prediction_grid(always_seven, images, labels, backend="numpy").axes) == 16
    assert len(prediction_grid(always_seven, images, labels, n=6, backend="numpy").axes) == 6
    few = prediction_grid(always_seven, images[:3], labels[:3], n=16, backend="numpy")
    assert len(few.axes) == 3


def test_prediction_grid_without_labels_and_with_28x28_float_images(always_seven):
    images = np.zeros((2, 28, 28))
    images[1, 10:20, 12:16] = 1.0
    fig = prediction_grid(always_seven, images, None, backend="numpy")
    assert titles(fig) == ["Prediction: 7", "Prediction: 7"]
    assert not any(is_red(ax.title.get_color()) for ax in fig.axes)


def test_prediction_grid_rejects_bad_arguments(always_seven):
    images = flat_images([0, 1])
    with pytest.raises(InputError):
        prediction_grid(always_seven, images, [7], backend="numpy")
    with pytest.raises(ConfigError):
        prediction_grid(always_seven, images, [7, 7], n=0, backend="numpy")
    with pytest.raises(InputError):
        prediction_grid(always_seven, np.zeros((2, 10)), [7, 7], backend="numpy")


# --------------------------------------------------------------- confident_mistakes


def test_confident_mistakes_most_confident_first(ink_means_seven):
    levels = [10, 250, 7, 130, 200, 60]
    labels = [1, 2, 7, 3, 7, 4]  # the 7s are right; the others are mistakes
    images = flat_images(levels)
    proba = ink_means_seven.predict_proba(images, backend="numpy")
    fig = confident_mistakes(ink_means_seven, images, labels, backend="numpy")
    expected = [  # the brightest mistake is the most confident one
        f"Prediction: 7 ({proba[i, 7]:.1%})\nLabel: {labels[i]}" for i in (1, 3, 5, 0)
    ]
    assert titles(fig) == expected
    assert all(is_red(ax.title.get_color()) for ax in fig.axes)
    assert "4 most confident of 4 mistakes in 6 images" in fig.get_suptitle()
    two = confident_mistakes(ink_means_seven, images, labels, n=2, backend="numpy")
    assert titles(two) == expected[:2]


def test_confident_mistakes_when_there_are_none(always_seven):
    fig = confident_mistakes(always_seven, flat_images([0, 9]), [7, 7], backend="numpy")
    assert len(fig.axes) == 1
    assert "No mistakes" in fig.axes[0].texts[0].get_text()


def test_confident_mistakes_needs_labels(always_seven):
    with pytest.raises(InputError):
        confident_mistakes(always_seven, flat_images([0, 9]), [7, 7, 7], backend="numpy")


# ----------------------------------------------------------------- training_curves


HISTORY = [
    {"epoch": 1, "loss": 0.5, "train_accuracy": 0.85, "test_accuracy": 0.9, "test_loss": 0.3},
    {"epoch": 2, "loss": 0.3, "train_accuracy": 0.91, "test_accuracy": 0.95, "test_loss": 0.2},
    {"epoch": 3, "loss": 0.2, "train_accuracy": 0.94, "test_accuracy": 0.97, "test_loss": 0.15},
]


def test_training_curves_plots_loss_and_accuracy():
    fig = training_curves(HISTORY)
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_title() == "Loss"
    assert acc_ax.get_title() == "Accuracy (final test 97.00%)"
    assert [line.get_label() for line in loss_ax.lines] == ["training (during epoch)", "test"]
    np.testing.assert_allclose(loss_ax.lines[1].get_ydata(), [0.3, 0.2, 0.15])
    np.testing.assert_allclose(acc_ax.lines[1].get_ydata(), [90.0, 95.0, 97.0])
    np.testing.assert_array_equal(acc_ax.lines[0].get_xdata(), [1, 2, 3])


def test_training_curves_without_a_test_set():
    history = [dict(h, test_accuracy=None, test_loss=None) for h in HISTORY]
    loss_ax, acc_ax = training_curves(history).axes
    assert len(loss_ax.lines) == 1 and len(acc_ax.lines) == 1
    assert acc_ax.get_title() == "Accuracy"


def test_training_curves_from_a_real_training_run():
    model, history = fastmnist.train(
        tiny_dataset(), hidden=(8,), epochs=2, backend="numpy", progress=False
    )
    for h in (history, model.history):
        fig = training_curves(h)
        assert len(fig.axes) == 2
        assert all(len(ax.lines) == 2 for ax in fig.axes)


@pytest.mark.parametrize("bad", [[], [1, 2], None])
def test_training_curves_rejects_non_histories(bad):
    with pytest.raises(InputError):
        training_curves(bad)


# --------------------------------------------------------------- confusion_heatmap


def test_confusion_heatmap_annotates_every_count():
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 4]])
    fig = confusion_heatmap(cm, class_names=["cat", "dog", "emu"])
    heat = fig.axes[0]
    assert len(fig.axes) == 2  # the heat map and its colour bar
    assert [t.get_text() for t in heat.texts] == ["5", "1", "0", "2", "3", "0", "0", "0", "4"]
    assert [t.get_text() for t in heat.get_xticklabels()] == ["cat", "dog", "emu"]
    assert [t.get_text() for t in heat.get_yticklabels()] == ["cat", "dog", "emu"]
    assert heat.get_xlabel() == "predicted" and heat.get_ylabel() == "true"
    assert heat.get_title() == "Confusion matrix: 15 samples, accuracy 80.00%"
    # Colour is the fraction of the row: the 5 of 6 cat cell, the 1 of 6, and so on.
    np.testing.assert_allclose(heat.images[0].get_array()[0], [5 / 6, 1 / 6, 0])


def test_confusion_heatmap_ten_classes_and_an_empty_matrix():
    fig = confusion_heatmap(np.diag(np.arange(10)))
    assert len(fig.axes[0].texts) == 100
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [str(i) for i in range(10)]
    assert confusion_heatmap(np.zeros((3, 3), int)).axes[0].get_title() == "Confusion matrix"


def test_confusion_heatmap_rejects_bad_input():
    with pytest.raises(InputError):
        confusion_heatmap(np.zeros((2, 3)))
    with pytest.raises(InputError):
        confusion_heatmap(np.array([[1, -1], [0, 1]]))
    with pytest.raises(InputError, match="class_names"):
        confusion_heatmap(np.eye(3, dtype=int), class_names=["a", "b"])


# --------------------------------------------------------------- first_layer_tiles


@pytest.mark.parametrize(
    "hidden, n, tiles", [(100, None, 64), (10, None, 10), (10, 4, 4), (10, 50, 10)]
)
def test_first_layer_tiles_count(hidden, n, tiles):
    model = Model.initialize(hidden=(hidden,), rng=1)
    fig = first_layer_tiles(model, n=n)
    assert len(fig.axes) == tiles + 1  # plus the shared colour bar
    assert titles(fig)[:tiles] == [f"unit {i}" for i in range(tiles)]
    assert MAX_TILES == 64


def test_first_layer_tiles_shows_each_units_weights_on_a_symmetric_scale():
    model = Model.initialize(hidden=(6,), rng=2)
    model.weights[0][:, 3] = np.linspace(-0.2, 0.9, 784)
    fig = first_layer_tiles(model)
    limit = np.abs(model.weights[0]).max()
    for i, ax in enumerate(fig.axes[:6]):
        image = ax.images[0]
        np.testing.assert_allclose(image.get_clim(), (-limit, limit))
        np.testing.assert_allclose(image.get_array(), model.weights[0][:, i].reshape(28, 28))
    assert "all 6 hidden units" in fig.get_suptitle()


def test_first_layer_tiles_rejects_bad_n():
    with pytest.raises(ConfigError):
        first_layer_tiles(Model.initialize(hidden=(3,)), n=0)


# --------------------------------------------------------------------- save_figure


def test_save_figure_writes_a_png(tmp_path, always_seven):
    fig = prediction_grid(always_seven, flat_images([0, 90]), [7, 1], backend="numpy")
    path = save_figure(fig, tmp_path / "grid.png", dpi=50)
    assert path == tmp_path / "grid.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    from PIL import Image

    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        width, height = fig.get_size_inches() * 50
        assert abs(img.size[0] - width) <= 1 and abs(img.size[1] - height) <= 1
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_save_figure_other_formats_and_no_extension(tmp_path):
    fig = training_curves(HISTORY)
    assert save_figure(fig, tmp_path / "c.svg").read_text()[:200].lstrip().startswith("<?xml")
    assert save_figure(fig, tmp_path / "c.pdf").read_bytes()[:5] == b"%PDF-"
    assert save_figure(fig, tmp_path / "curves").read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ConfigError, match="jpg"):
        save_figure(fig, tmp_path / "c.jpg")
    assert not (tmp_path / "c.jpg").exists()


def test_save_figure_leaves_nothing_behind_on_failure(tmp_path, monkeypatch):
    fig = training_curves(HISTORY)
    old = tmp_path / "old.png"
    old.write_bytes(b"the previous figure")

    def broken_savefig(fname, **kwargs):
        Path(fname).write_bytes(PNG_SIGNATURE + b"half a figure")
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(fig, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        save_figure(fig, tmp_path / "new.png")
    with pytest.raises(RuntimeError, match="renderer crashed"):
        save_figure(fig, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.png"]
    assert old.read_bytes() == b"the previous figure"


# -------------------------------------------------------------------- dependencies


def test_missing_matplotlib_is_a_config_error(monkeypatch, always_seven):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=r"pip install 'fastmnist\[plot\]'"):
        training_curves(HISTORY)
    with pytest.raises(ConfigError, match=r"pip install 'fastmnist\[plot\]'"):
        confusion_heatmap(np.eye(2, dtype=int))
    with pytest.raises(ConfigError, match=r"pip install 'fastmnist\[plot\]'"):
        prediction_grid(always_seven, flat_images([0]), [7], backend="numpy")


def test_import_needs_no_plotting_packages_and_figures_need_no_pyplot(tmp_path):
    # In a fresh interpreter: importing fastmnist and these modules loads neither
    # matplotlib nor Pillow, and drawing and saving a figure never touches pyplot
    # (which would pick a GUI backend and keep a global list of figures).
    script = textwrap.dedent(
        f"""
        import sys
        import fastmnist, fastmnist.images, fastmnist.metrics, fastmnist.plots
        loaded = [m for m in ("matplotlib", "PIL") if m in sys.modules]
        assert not loaded, loaded
        fig = fastmnist.plots.confusion_heatmap([[3, 1], [0, 2]])
        fastmnist.plots.save_figure(fig, {str(tmp_path / "cm.png")!r})
        assert "matplotlib.pyplot" not in sys.modules
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cm.png").read_bytes()[:8] == PNG_SIGNATURE
