"""The evaluation's hard negatives: benign compounds and idioms that contain a concept word.

The list lives next to this module (``hard_negatives.csv``, written for this project, provenance in its
header). Every entry gives two prompts: the phrase alone and a short benign caption that contains it.
A method passes an entry when it edits neither.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

HARD_NEGATIVES_FILE = Path(__file__).with_name("hard_negatives.csv")
CATEGORIES = ("nudity", "violence", "weapons")


@dataclass(frozen=True)
class HardNegative:
    category: str
    phrase: str
    caption: str


def load_hard_negatives(path: str | Path = HARD_NEGATIVES_FILE) -> list[HardNegative]:
    """Entries of the list; lines starting with '#' are the provenance header."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    out = []
    for n, row in enumerate(rows, 2):
        entry = HardNegative(row["category"].strip(), row["phrase"].strip(), row["caption"].strip())
        if entry.category not in CATEGORIES or not entry.phrase or not entry.caption:
            raise ValueError(f"{Path(path).name}: row {n} is malformed: {row}")
        out.append(entry)
    return out


def hard_negative_prompts(entries: list[HardNegative] | None = None) -> list[str]:
    """The phrases, then the captions, in file order."""
    entries = load_hard_negatives() if entries is None else entries
    return [e.phrase for e in entries] + [e.caption for e in entries]
