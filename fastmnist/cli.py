"""The ``fastmnist`` command: a thin shell over the library.

Every user mistake becomes one ``error:`` line on stderr and exit status 2;
other failures exit 1. Tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import __version__
from .backends import known_backends
from .errors import (
    BackendUnavailableError,
    ConfigError,
    DataError,
    DataNotFoundError,
    FastMnistError,
    InputError,
    ModelFileError,
)
from .numerics import DTYPES
from .optim import OPTIMIZERS
from .train.config import TrainConfig
from .train.presets import PRESETS, preset_settings
from .train.schedules import SCHEDULES

DATASET_CHOICES = ("mnist", "fashion-mnist", "kmnist")
USAGE_ERRORS = (ConfigError, InputError, ModelFileError, BackendUnavailableError)


class UsageError(Exception):
    """Raised instead of argparse's exit, so every error prints the same one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def int_list(text: str) -> list[int]:
    """Parse ``"256"`` or ``"256,128"`` into a list of positive ints."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        msg = f"expected integers like 256 or 256,128, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"sizes must be integers >= 1, got {text!r}")
    return values


def seed_list(text: str) -> list[int]:
    """Parse ``"0,1,2"`` into a list of integers >= 0."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0,1,2, got {text!r}") from None
    if any(v < 0 for v in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be >= 0, got {text!r}")
    return seeds


def name_list(text: str) -> list[str]:
    """Parse ``"numpy,numba"`` into a list of non-empty names."""
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return names


def hidden_list(text: str) -> list[tuple[int, ...]]:
    """Parse ``"10,128"`` (two networks) or ``"256:128"`` (one two-layer network)."""
    try:
        nets = [tuple(int(w) for w in net.split(":")) for net in text.split(",")]
    except ValueError:
        msg = f"--hidden: expected widths like 10,128 or 256:128, got {text!r}"
        raise UsageError(msg) from None
    if any(w < 1 for net in nets for w in net):
        raise UsageError(f"--hidden: widths must be >= 1, got {text!r}")
    return nets


def _say(args: argparse.Namespace, text: str) -> None:
    # With --json, stdout carries exactly one JSON object; words go to stderr.
    print(text, file=sys.stderr if getattr(args, "json", False) else sys.stdout)


def _add_data_args(p: argparse.ArgumentParser, default: str | None = "mnist") -> None:
    p.add_argument("--dataset", choices=DATASET_CHOICES, default=default,
                   help="default mnist")
    p.add_argument("--data", metavar="DIR", help="directory holding the four IDX files")


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    parser = _Parser(prog="fastmnist", description="Train MLPs on MNIST-shaped data, fast.")
    parser.add_argument("--version", action="version", version=f"fastmnist {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a network and report its accuracy")
    t.add_argument("--backend", choices=["auto", *known_backends()],
                   help=f"default {d.backend}: numba when installed, else numpy")
    t.add_argument("--hidden", type=int_list, metavar="SIZES",
                   help=f"hidden widths, e.g. 256 or 256,128 (default {d.hidden[0]})")
    t.add_argument("--epochs", type=int, help=f"default {d.epochs}")
    t.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    t.add_argument("--lr", type=float, help=f"peak learning rate (default {d.lr})")
    t.add_argument("--preset", choices=sorted(PRESETS),
                   help="a named recipe (fast98, fast985, best, notebook); other flags override it")
    t.add_argument("--optimizer", choices=list(OPTIMIZERS), help=f"default {d.optimizer}")
    t.add_argument("--momentum", type=float, help=f"default {d.momentum}")
    t.add_argument("--nesterov", action=argparse.BooleanOptionalAction,
                   help="Nesterov momentum (default off)")
    t.add_argument("--weight-decay", type=float, help=f"default {d.weight_decay}")
    t.add_argument("--schedule", choices=sorted(SCHEDULES), help=f"default {d.schedule}")
    t.add_argument("--warmup-epochs", type=float, help="linear warm-up length (default 0)")
    t.add_argument("--dropout", type=float, help="hidden-unit dropout rate (default 0)")
    t.add_argument("--label-smoothing", type=float, help="default 0")
    t.add_argument("--augment", type=int, metavar="PIXELS",
                   help="random translations of up to PIXELS (default 0: none)")
    t.add_argument("--validation", type=float, metavar="FRACTION",
                   help="hold out this fraction of the training set; keep the best epoch")
    t.add_argument("--patience", type=int, help="early stopping after N epochs w/o improvement")
    t.add_argument("--seed", type=int, help=f"default {d.seed}")
    t.add_argument("--dtype", choices=sorted(DTYPES), help=f"default {d.dtype}")
    t.add_argument("--threads", type=int, help="threads for the backend (default: all cores)")
    _add_data_args(t, default=None)
    t.add_argument("--out", metavar="MODEL.npz",
                   help="save the model and its training state (atomically; also on Ctrl-C)")
    t.add_argument("--resume", metavar="MODEL.npz",
                   help="continue from a file written by --out (same settings unless given)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    b = sub.add_parser("bench", help="measure backends side by side")
    b.add_argument("--backends", type=name_list, default=None, metavar="NAMES",
                   help="comma list (default: every installed backend)")
    b.add_argument("--hidden", type=str, default=None, metavar="WIDTHS",
                   help="one-hidden-layer widths to try, comma list (e.g. 10,128,512); "
                        "use ':' between layers of one network (256:128)")
    b.add_argument("--batch-size", type=int_list, default=None, metavar="SIZES")
    b.add_argument("--dtype", type=name_list, default=["float32"], metavar="DTYPES")
    b.add_argument("--threads", type=int, default=None,
                   help="threads every backend gets (default: each backend's own default)")
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--train-samples", type=int, default=None, metavar="N",
                   help="time epochs of N samples instead of the whole training set")
    b.add_argument("--baseline", default=None, help="backend the ratio column divides by")
    b.add_argument("--to-accuracy", type=float, metavar="ACC",
                   help="instead: time each backend's training to this test accuracy")
    b.add_argument("--preset", choices=sorted(PRESETS), default="fast98",
                   help="with --to-accuracy: the recipe every backend trains with")
    b.add_argument("--seeds", type=seed_list, default=[0, 1, 2],
                   help="with --to-accuracy: one run per seed (default 0,1,2)")
    _add_data_args(b)
    b.add_argument("--no-zeros", action="store_true",
                   help="replace every pixel by a random value in 1-255 (dense inputs)")
    b.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    b.add_argument("--plot", metavar="PNG", help="write a bar chart (needs the plot extra)")
    b.add_argument("--quiet", action="store_true", help="no progress on stderr")

    e = sub.add_parser("evaluate", help="accuracy, per-class metrics and confusions of a model")
    e.add_argument("model", metavar="MODEL.npz")
    _add_data_args(e, default=None)
    e.add_argument("--backend", choices=["auto", *known_backends()], default="auto")
    e.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    pr = sub.add_parser("predict", help="predict the digit in your own images")
    pr.add_argument("model", metavar="MODEL.npz")
    pr.add_argument("images", nargs="+", metavar="IMAGE",
                    help="PNG/JPEG/BMP files, directories of them, or - for stdin")
    pr.add_argument("--backend", choices=["auto", *known_backends()], default="auto")
    pr.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    sh = sub.add_parser("show", help="write PNG figures about a model")
    sh.add_argument("model", metavar="MODEL.npz")
    sh.add_argument("--out", metavar="DIR", required=True, help="directory for the PNGs")
    _add_data_args(sh, default=None)
    sh.add_argument("--backend", choices=["auto", *known_backends()], default="auto")

    dl = sub.add_parser("download", help="fetch a dataset into the cache or --data DIR")
    _add_data_args(dl)
    return parser


#: ``fastmnist train`` flags that are training settings (argparse dest -> TrainConfig field).
TRAIN_SETTINGS = ("hidden", "epochs", "batch_size", "lr", "optimizer", "momentum", "nesterov",
                  "weight_decay", "schedule", "warmup_epochs", "dropout", "label_smoothing",
                  "augment", "validation", "patience", "seed", "dtype", "backend", "threads")


def _given_settings(args: argparse.Namespace) -> dict[str, Any]:
    given = {k: getattr(args, k) for k in TRAIN_SETTINGS if getattr(args, k) is not None}
    if "hidden" in given:
        given["hidden"] = tuple(given["hidden"])
    return given


def cmd_train(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .train import Trainer, load_checkpoint, save_checkpoint

    settings = _given_settings(args)
    if args.preset:
        settings = {**preset_settings(args.preset), **settings}
    # Every setting is validated before the data is read.
    if args.resume:
        trainer = load_checkpoint(args.resume, progress=not args.quiet, **settings)
        dataset = args.dataset or trainer.model.dataset or "mnist"
    else:
        trainer = Trainer(TrainConfig(**settings), progress=not args.quiet)
        dataset = args.dataset or "mnist"
    if trainer.epoch >= trainer.config.epochs:
        raise ConfigError(f"nothing to train: {args.resume} already has {trainer.epoch} epochs "
                          f"(give a larger --epochs)")
    out = args.out or args.resume
    data = load_dataset(dataset, data_dir=args.data)
    trainer.model.dataset = dataset
    try:
        history = trainer.fit(
            data.train.images, data.train.labels, (data.test.images, data.test.labels)
        )
    except KeyboardInterrupt:
        where = f"after epoch {trainer.epoch} of {trainer.config.epochs}"
        if out:
            save_checkpoint(trainer, out)
            print(f"error: interrupted {where}; checkpoint written to {out} "
                  f"(continue with: fastmnist train --resume {out})", file=sys.stderr)
        else:
            print(f"error: interrupted {where}; nothing saved (use --out to keep progress)",
                  file=sys.stderr)
        return 130
    model, last, seconds = trainer.model, history[-1], history.train_seconds
    n_seen = len(data.train) * len(history)
    summary: dict[str, Any] = {
        **model.config,
        "preset": args.preset,
        "best_epoch": trainer.best_epoch,
        "dataset": dataset,
        "epochs": len(history),
        "test_accuracy": last["test_accuracy"],
        "train_accuracy": last["train_accuracy"],
        "final_loss": last["loss"],
        "test_loss": last["test_loss"],
        "train_seconds": seconds,
        "compile_seconds": trainer.compile_seconds,
        "samples_per_second": n_seen / seconds if seconds else None,
        "history": history.to_list(),
    }
    _say(args, f"{dataset}: test accuracy {last['test_accuracy']:.2%} "
               f"(train {last['train_accuracy']:.2%}, loss {last['loss']:.4f}) after "
               f"{len(history)} epochs, {seconds:.2f} s of training "
               f"({summary['samples_per_second']:,.0f} samples/s, "
               f"backend {model.config['backend']})")
    if out:
        save_checkpoint(trainer, out)
        summary["out"] = str(out)
        _say(args, f"model saved to {out}")
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .data import fetch_dataset

    path = fetch_dataset(args.dataset, data_dir=args.data)
    print(f"{args.dataset}: files ready in {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .backends import available_backends
    from .bench import (
        DEFAULT_CONFIGS,
        BenchConfig,
        format_table,
        plot_result,
        run_benchmark,
        without_zeros,
    )
    from .data import load_dataset

    if args.hidden is None and args.batch_size is None:
        shapes = list(DEFAULT_CONFIGS)
    else:
        nets = hidden_list(args.hidden) if args.hidden else [(128,)]
        shapes = [(h, b) for h in nets for b in (args.batch_size or [128])]
    for dt in args.dtype:
        if dt not in DTYPES:
            raise ConfigError(f"unknown dtype {dt!r}; choose from {sorted(DTYPES)}")
    configs = [BenchConfig(h, b, dt) for dt in args.dtype for h, b in shapes]
    if args.plot:
        _require_plotting()
    if args.no_zeros and args.to_accuracy is not None:
        raise ConfigError("--no-zeros measures throughput; it cannot go with --to-accuracy")
    data = load_dataset(args.dataset, data_dir=args.data)
    if args.no_zeros:
        data = without_zeros(data)

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"bench: {message}", file=sys.stderr, flush=True)

    if args.to_accuracy is not None:
        from .bench import format_time_to_accuracy, time_to_accuracy

        result = time_to_accuracy(
            data, target=args.to_accuracy, backends=args.backends or available_backends(),
            recipe=preset_settings(args.preset), seeds=args.seeds, threads=args.threads,
            on_progress=progress,
        )
        _say(args, format_time_to_accuracy(result))
        if args.json:
            print(json.dumps(result.to_dict()))
        return 0

    result = run_benchmark(
        data, backends=args.backends or available_backends(), configs=configs,
        threads=args.threads, repeats=args.repeats, train_samples=args.train_samples,
        baseline=args.baseline, on_progress=progress,
    )
    _say(args, format_table(result))
    if args.plot:
        plot_result(result, args.plot)
        _say(args, f"plot written to {args.plot}")
    if args.json:
        print(json.dumps(result.to_dict()))
    return 0


def _require_plotting() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("plotting needs matplotlib: pip install 'fastmnist[plot]'")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .metrics import confusion_matrix, most_confused_pairs, per_class_precision_recall
    from .modelfile import load_model
    from .train import evaluate

    model = load_model(args.model)
    dataset = args.dataset or model.dataset or "mnist"
    test = load_dataset(dataset, data_dir=args.data).test
    accuracy, loss = evaluate(model, test.images, test.labels, backend=args.backend)
    predicted = model.predict(test.images, backend=args.backend)
    confusion = confusion_matrix(test.labels, predicted)
    precision, recall = per_class_precision_recall(confusion)
    pairs = most_confused_pairs(confusion, k=5)
    report = {
        "model": str(args.model), "dataset": dataset, "n": int(len(test)),
        "accuracy": accuracy, "loss": loss,
        "precision": [float(v) for v in precision], "recall": [float(v) for v in recall],
        "confusion": confusion.tolist(),
        "most_confused": [{"label": int(t), "predicted": int(p), "count": int(c)}
                          for t, p, c in pairs],
    }
    lines = [f"{dataset} test set ({len(test)} images): accuracy {accuracy:.2%}, loss {loss:.4f}",
             "", "class  precision  recall"]
    lines += [f"{c:>5}  {precision[c]:>9.2%}  {recall[c]:>6.2%}" for c in range(len(precision))]
    lines += ["", "confusion matrix (rows: label, columns: prediction)",
              "      " + "".join(f"{c:>6}" for c in range(confusion.shape[1]))]
    lines += [f"{t:>6}" + "".join(f"{v:>6}" for v in row) for t, row in enumerate(confusion)]
    lines += ["", "most confused: " + ", ".join(
        f"{t} taken for {p} ({c}x)" for t, p, c in pairs)]
    _say(args, "\n".join(lines))
    if args.json:
        print(json.dumps(report))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .images import iter_image_paths, load_image
    from .modelfile import load_model

    model = load_model(args.model)
    results, failed = [], 0
    for source in iter_image_paths(args.images):
        try:
            image = load_image(sys.stdin.buffer if source == "-" else source)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        probs = model.predict_proba(image[None, :], backend=args.backend)[0]
        top = np.argsort(-probs, kind="stable")[:3]
        results.append({"image": str(source), "prediction": int(top[0]),
                        "top3": [{"digit": int(d), "probability": float(probs[d])} for d in top]})
        _say(args, f"{source}: {int(top[0])}  (" + ", ".join(
            f"{int(d)}: {probs[d]:.1%}" for d in top) + ")")
    if args.json:
        print(json.dumps({"model": str(args.model), "predictions": results, "failed": failed}))
    return 2 if failed else 0


def cmd_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    _require_plotting()
    from . import plots
    from .data import load_dataset
    from .metrics import confusion_matrix
    from .modelfile import load_model

    model = load_model(args.model)
    dataset = args.dataset or model.dataset or "mnist"
    test = load_dataset(dataset, data_dir=args.data).test
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {out}: {exc.strerror}") from None
    predicted = model.predict(test.images, backend=args.backend)
    figures = {
        "predictions.png": plots.prediction_grid(model, test.images, test.labels,
                                                 backend=args.backend),
        "confusion.png": plots.confusion_heatmap(confusion_matrix(test.labels, predicted)),
        "first_layer.png": plots.first_layer_tiles(model),
        "confident_mistakes.png": plots.confident_mistakes(model, test.images, test.labels,
                                                           backend=args.backend),
    }
    if model.history:
        figures["training_curves.png"] = plots.training_curves(model.history)
    for name, fig in figures.items():
        plots.save_figure(fig, out / name)
        print(out / name)
    return 0


COMMANDS = {
    "train": cmd_train, "bench": cmd_bench, "evaluate": cmd_evaluate, "predict": cmd_predict,
    "show": cmd_show, "download": cmd_download,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DataNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (*USAGE_ERRORS, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FastMnistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
