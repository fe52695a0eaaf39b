"""The published table optbench reproduces (shipped with the package), matched to comparison rows."""

from __future__ import annotations

import csv
import io
from importlib import resources

from .cells import Comparison, base_label

# Our optimizer names → the seed table's row names.
SEED_NAMES = {
    "sgd": "SGD",
    "sgd_momentum": "SGD with momentum",
    "adagrad": "Adagrad",
    "rmsprop": "RMSprop",
    "adadelta": "Adadelta",
    "adam": "Adam",
}


def load_seed_reference() -> dict[str, dict[str, float]]:
    """The seed article's table: optimizer → column → value."""
    text = resources.files("optbench.reference").joinpath("seed_table.csv").read_text()
    table = {}
    for rec in csv.DictReader(io.StringIO(text)):
        minutes, seconds = rec["total_time"].split(":")
        values = {"total_time_s": int(minutes) * 60 + int(seconds)}
        for epoch in (1, 5, 10):
            values[f"val_acc@{epoch}"] = float(rec[f"epoch{epoch}_val_acc"])
            values[f"val_loss@{epoch}"] = float(rec[f"epoch{epoch}_val_loss"])
        table[rec["optimizer"]] = values
    return table


def attach_reference(comparison: Comparison) -> None:
    seed = load_seed_reference()
    for row in comparison.rows:
        name = SEED_NAMES.get(base_label(row))
        if name in seed and row.data == "mnist":
            row.reference = seed[name]
