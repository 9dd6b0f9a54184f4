"""Figures of a model and its training, as matplotlib ``Figure`` objects.

Every function builds a :class:`matplotlib.figure.Figure` directly instead of going
through ``pyplot``: no global figure registry, no GUI backend, nothing to close,
and it works on a headless server. Save one with :func:`save_figure`, or show it
in a notebook by leaving it as the cell's value.

matplotlib is part of the optional ``plot`` extra and is imported only when a
function here runs, so ``import fastmnist`` never needs it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, InputError
from .fileio import atomic_path
from .metrics import _check_confusion
from .validation import check_images, check_labels, check_positive_int

if TYPE_CHECKING:  # matplotlib is optional; only type checkers need the name here
    from matplotlib.figure import Figure

    from .model import Model

#: At most this many weight tiles are drawn: beyond 8x8 they become too small to read.
MAX_TILES = 64

#: Formats :func:`save_figure` writes, by file name extension.
FIGURE_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}

_WRONG = "#c62828"  # a red that reads on white and for most colour-blind viewers
_RIGHT_FRAME = "#b0b0b0"


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ConfigError("plotting needs matplotlib: pip install 'fastmnist[plot]'") from exc


def _new_figure(**kwargs: Any) -> Figure:
    _require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def _grid_shape(k: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(k))
    return math.ceil(k / cols), cols


def _image_grid(
    images: np.ndarray, titles: Sequence[str], wrong: Sequence[bool], suptitle: str
) -> Figure:
    """A grid of 28x28 digits, dark ink on white, wrong ones framed and titled in red."""
    k = len(images)
    rows, cols = _grid_shape(k)
    lines = max(t.count("\n") + 1 for t in titles)
    fig = _new_figure(figsize=(1.9 * cols, (1.75 + 0.2 * lines) * rows + 0.4))
    # uint8 pixels span 0-255, already-scaled floats 0-1; fix the range so a faint
    # digit looks faint instead of being stretched to full contrast.
    vmax = 255 if images.dtype == np.uint8 else 1.0
    for i in range(k):
        ax = fig.add_subplot(rows, cols, i + 1)
        # gray_r draws ink dark on white, which reads as handwriting on paper.
        ax.imshow(images[i].reshape(28, 28), cmap="gray_r", vmin=0, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
        color = _WRONG if wrong[i] else "black"
        ax.set_title(titles[i], fontsize=9, color=color)
        for spine in ax.spines.values():
            spine.set_color(_WRONG if wrong[i] else _RIGHT_FRAME)
            spine.set_linewidth(2.5 if wrong[i] else 0.8)
    fig.suptitle(suptitle, fontsize=11)
    return fig


def prediction_grid(
    model: Model,
    images: Any,
    labels: Any | None,
    n: int = 16,
    backend: str = "auto",
) -> Figure:
    """The first ``n`` images with the model's prediction and the true label.

    Parameters
    ----------
    model : Model
        The model whose predictions are shown.
    images : array_like
        ``(m, 784)`` or ``(m, 28, 28)``, uint8 pixels or floats in [0, 1].
    labels : array_like or None
        ``(m,)`` true digits; None to show predictions only.
    n : int
        How many images to show (at most ``m``).
    backend : str
        Backend for the predictions.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per image, titled ``"Prediction: 7 / Label: 7"``; misclassified
        images get a red title and a red frame.
    """
    imgs = check_images(images)
    labs = None if labels is None else check_labels(labels, len(imgs))
    k = min(check_positive_int(n, "n"), len(imgs))
    pred = model.predict(imgs[:k], backend=backend)
    if labs is None:
        titles = [f"Prediction: {p}" for p in pred]
        wrong = [False] * k
        suptitle = f"Predictions for {k} images"
    else:
        titles = [f"Prediction: {p} / Label: {y}" for p, y in zip(pred, labs[:k])]
        wrong = list(pred != labs[:k])
        suptitle = f"{k - sum(wrong)} of {k} predicted correctly"
    return _image_grid(imgs[:k], titles, wrong, suptitle)


def confident_mistakes(
    model: Model,
    images: Any,
    labels: Any,
    n: int = 16,
    backend: str = "auto",
) -> Figure:
    """The misclassified images the model was most sure about.

    Parameters
    ----------
    model : Model
        The model whose mistakes are shown.
    images : array_like
        ``(m, 784)`` or ``(m, 28, 28)``, uint8 pixels or floats in [0, 1].
    labels : array_like
        ``(m,)`` true digits.
    n : int
        How many mistakes to show at most.
    backend : str
        Backend for the predictions.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per mistake, most confident first, titled with the prediction,
        its probability and the label. When every image is classified correctly,
        a single blank axes saying so.
    """
    imgs = check_images(images)
    labs = check_labels(labels, len(imgs))
    n = check_positive_int(n, "n")
    proba = model.predict_proba(imgs, backend=backend)
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != labs)
    if len(wrong) == 0:
        fig = _new_figure(figsize=(5, 1.5))
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(
            0.5, 0.5, f"No mistakes: all {len(imgs)} images classified correctly",
            ha="center", va="center", fontsize=11,
        )
        return fig
    confidence = proba[wrong, pred[wrong]]
    # A stable sort keeps equally confident mistakes in their original order.
    chosen = wrong[np.argsort(-confidence, kind="stable")[:n]]
    titles = [
        f"Prediction: {pred[i]} ({proba[i, pred[i]]:.1%})\nLabel: {labs[i]}" for i in chosen
    ]
    suptitle = (
        f"{len(chosen)} most confident of {len(wrong)} mistakes in {len(imgs)} images"
    )
    return _image_grid(imgs[chosen], titles, [True] * len(chosen), suptitle)


def _history_records(history: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    try:
        records = list(history)
    except TypeError as exc:
        raise InputError("history must be a list of per-epoch dicts or a History") from exc
    if not records:
        raise InputError("history is empty: there is no epoch to plot")
    if not all(isinstance(r, Mapping) for r in records):
        raise InputError("history must be a list of per-epoch dicts or a History")
    return records


def _column(records: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    # Missing or None values (no test set, an interrupted epoch) become gaps.
    return np.array(
        [np.nan if r.get(key) is None else float(r[key]) for r in records], dtype=np.float64
    )


def training_curves(history: Iterable[Mapping[str, Any]]) -> Figure:
    """Loss and accuracy per epoch.

    Parameters
    ----------
    history : History or list of dict
        Per-epoch records as in :attr:`fastmnist.Model.history`: ``epoch``, ``loss``,
        ``train_accuracy`` and, when there was a test set, ``test_loss`` and
        ``test_accuracy``.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes: the loss (training and test) and the accuracy in percent
        (training and test). Series with no values are left out.

    Notes
    -----
    The training loss and accuracy are measured during the epoch, each batch before
    its update, so early epochs look worse on the training set than the test set.
    """
    records = _history_records(history)
    epochs = _column(records, "epoch")
    if np.isnan(epochs).any():
        epochs = np.arange(1, len(records) + 1, dtype=np.float64)

    _require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    series = [
        (ax_loss, "loss", "training (during epoch)", 1.0),
        (ax_loss, "test_loss", "test", 1.0),
        (ax_acc, "train_accuracy", "training (during epoch)", 100.0),
        (ax_acc, "test_accuracy", "test", 100.0),
    ]
    for ax, key, label, scale in series:
        values = _column(records, key) * scale
        if np.isnan(values).all():
            continue
        ax.plot(epochs, values, marker="o", markersize=4, label=label)

    final_test = _column(records, "test_accuracy")[-1]
    ax_loss.set_title("Loss")
    ax_loss.set_ylabel("cross-entropy")
    ax_acc.set_title(
        "Accuracy" if np.isnan(final_test) else f"Accuracy (final test {final_test:.2%})"
    )
    ax_acc.set_ylabel("accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=9)
    return fig


def confusion_heatmap(confusion: Any, class_names: Sequence[str] | None = None) -> Figure:
    """A confusion matrix as a heat map with the count written in every cell.

    Parameters
    ----------
    confusion : array_like
        Square matrix, rows true classes and columns predicted ones, as made by
        :func:`fastmnist.metrics.confusion_matrix`.
    class_names : sequence of str, optional
        Tick labels; the class ids by default.

    Returns
    -------
    matplotlib.figure.Figure
        The heat map axes and its colour bar. Colour is the fraction of the true
        class (the row), on a square-root scale so that the few mistakes show next
        to the large diagonal.
    """
    c = _check_confusion(confusion)
    k = c.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else [str(s) for s in class_names]
    if len(names) != k:
        raise InputError(f"class_names has {len(names)} names for a {k}x{k} confusion matrix")

    _require_matplotlib()
    from matplotlib.colors import PowerNorm

    row_sums = c.sum(axis=1, keepdims=True).astype(np.float64)
    fraction = np.divide(c, row_sums, out=np.zeros((k, k)), where=row_sums > 0)
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)

    side = max(4.5, 0.55 * k + 2.0)
    fig = _new_figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot()
    image = ax.imshow(fraction, cmap="Blues", norm=norm)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")

    integral = np.issubdtype(c.dtype, np.integer) or bool((c == np.round(c)).all())
    fontsize = 9 if k <= 10 else max(5, 9 - (k - 10) // 4)
    for i in range(k):
        for j in range(k):
            count = c[i, j]
            text = f"{int(count)}" if integral else f"{count:.3g}"
            if count == 0:
                color = "#9e9e9e"
            else:
                # White on the dark cells, black on the light ones, for contrast.
                color = "white" if norm(fraction[i, j]) > 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=color)

    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = c.sum()
    title = "Confusion matrix"
    if total > 0:
        accuracy = np.trace(c) / total
        count = f"{int(total)}" if integral else f"{total:.3g}"
        title += f": {count} samples, accuracy {accuracy:.2%}"
    ax.set_title(title)
    return fig


def first_layer_tiles(model: Model, n: int | None = None) -> Figure:
    """The first layer's weights, one 28x28 tile per hidden unit.

    Parameters
    ----------
    model : Model
        A model; its ``weights[0]`` is ``(784, h)``.
    n : int, optional
        How many units to draw, the first ``n``; by default all of them. At most
        ``h`` and at most :data:`MAX_TILES` are drawn.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per unit and a shared colour bar. The colour map diverges around
        zero (red positive, blue negative) with limits symmetric around zero and
        common to every tile, so tiles compare directly.
    """
    weights = np.asarray(model.weights[0])
    if weights.ndim != 2 or weights.shape[0] != 784:
        raise InputError(f"the first weight matrix must be (784, h), got {weights.shape}")
    h = weights.shape[1]
    wanted = MAX_TILES if n is None else check_positive_int(n, "n")
    k = min(wanted, h, MAX_TILES)
    tiles = weights[:, :k].T.reshape(k, 28, 28).astype(np.float64)
    limit = float(np.abs(tiles).max()) or 1.0

    rows, cols = _grid_shape(k)
    tile_side = 1.2 if k > 16 else 1.6
    fig = _new_figure(figsize=(tile_side * cols + 1.2, tile_side * rows + 0.6))
    axes = []
    image = None
    for i in range(k):
        ax = fig.add_subplot(rows, cols, i + 1)
        image = ax.imshow(tiles[i], cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"unit {i}", fontsize=7, pad=2)
        axes.append(ax)
    fig.colorbar(image, ax=axes, shrink=0.6, label="weight")
    shown = f"all {h}" if k == h else f"the first {k} of {h}"
    fig.suptitle(f"First-layer weights: {shown} hidden units", fontsize=11)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Write a figure to a file atomically.

    A reader of ``path`` sees the old file or the complete new one, never part of
    one; if drawing fails, ``path`` is left as it was and nothing else is left
    behind.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or path-like
        Where to write. The extension picks the format: ``.png`` (also used when
        there is no extension), ``.svg`` or ``.pdf``.
    dpi : int
        Resolution of a PNG, in dots per inch.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix and suffix not in FIGURE_FORMATS:
        known = ", ".join(FIGURE_FORMATS)
        raise ConfigError(f"cannot save a figure as {path.name!r}: use one of {known}")
    dpi = check_positive_int(dpi, "dpi")
    fmt = FIGURE_FORMATS.get(suffix, "png")
    with atomic_path(path) as tmp:
        # The temporary name ends in .tmp, so the format must be given explicitly.
        fig.savefig(tmp, format=fmt, dpi=dpi, facecolor="white")
    return path
