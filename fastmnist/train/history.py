"""The per-epoch record of a training run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class History:
    """Per-epoch records, each a dict with the keys in :attr:`KEYS`.

    ``val_accuracy`` is present only when a validation fraction is set.

    ``history["test_accuracy"]`` gives one column as a list; ``history[-1]``
    the last epoch's record.
    """

    KEYS = (
        "epoch",
        "loss",
        "train_accuracy",
        "test_accuracy",
        "test_loss",
        "val_accuracy",
        "lr",
        "seconds",
        "eval_seconds",
        "samples_per_second",
    )

    def __init__(self, records: list[dict[str, Any]] | None = None) -> None:
        self.records: list[dict[str, Any]] = list(records or [])

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return [r.get(key) for r in self.records]
        return self.records[key]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    @property
    def train_seconds(self) -> float:
        """Seconds spent training, evaluation excluded."""
        return float(sum(r["seconds"] for r in self.records))

    def to_list(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.records]

    def __repr__(self) -> str:
        return f"History({len(self)} epochs)"
