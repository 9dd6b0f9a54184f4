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
from .train.config import TrainConfig
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
        raise argparse.ArgumentTypeError(f"expected integers like 256 or 256,128, got {text!r}")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"sizes must be integers >= 1, got {text!r}")
    return values


def _say(args: argparse.Namespace, text: str) -> None:
    # With --json, stdout carries exactly one JSON object; words go to stderr.
    print(text, file=sys.stderr if getattr(args, "json", False) else sys.stdout)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATASET_CHOICES, default="mnist")
    p.add_argument("--data", metavar="DIR", help="directory holding the four IDX files")


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    parser = _Parser(prog="fastmnist", description="Train MLPs on MNIST-shaped data, fast.")
    parser.add_argument("--version", action="version", version=f"fastmnist {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a network and report its accuracy")
    t.add_argument("--backend", choices=["auto", *known_backends()], default="auto")
    t.add_argument("--hidden", type=int_list, default=list(d.hidden), metavar="SIZES",
                   help=f"hidden widths, e.g. 256 or 256,128 (default {d.hidden[0]})")
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    t.add_argument("--momentum", type=float, default=d.momentum)
    t.add_argument("--nesterov", action="store_true")
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--schedule", choices=sorted(SCHEDULES), default=d.schedule)
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--dtype", choices=sorted(DTYPES), default=d.dtype)
    t.add_argument("--threads", type=int, default=None,
                   help="threads for the backend (default: all cores)")
    _add_data_args(t)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    dl = sub.add_parser("download", help="fetch a dataset into the cache or --data DIR")
    _add_data_args(dl)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .train import train

    config = TrainConfig(
        hidden=tuple(args.hidden), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay,
        schedule=args.schedule, seed=args.seed, dtype=args.dtype, backend=args.backend,
        threads=args.threads,
    )  # validates every setting before the data is read
    data = load_dataset(args.dataset, data_dir=args.data)
    model, history = train(data, progress=not args.quiet, **config.to_dict())
    last = history[-1]
    seconds = history.train_seconds
    n_seen = len(data.train) * len(history)
    summary: dict[str, Any] = {
        **model.config,
        "dataset": args.dataset,
        "epochs": len(history),
        "test_accuracy": last["test_accuracy"],
        "train_accuracy": last["train_accuracy"],
        "final_loss": last["loss"],
        "test_loss": last["test_loss"],
        "train_seconds": seconds,
        "samples_per_second": n_seen / seconds if seconds else None,
        "history": history.to_list(),
    }
    _say(args, f"{args.dataset}: test accuracy {last['test_accuracy']:.2%} "
               f"(train {last['train_accuracy']:.2%}, loss {last['loss']:.4f}) after "
               f"{len(history)} epochs, {seconds:.2f} s of training "
               f"({summary['samples_per_second']:,.0f} samples/s, backend {model.config['backend']})")
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .data import fetch_dataset

    path = fetch_dataset(args.dataset, data_dir=args.data)
    print(f"{args.dataset}: files ready in {path}")
    return 0


COMMANDS = {"train": cmd_train, "download": cmd_download}


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
