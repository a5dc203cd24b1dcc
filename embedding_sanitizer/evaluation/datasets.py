"""Prompt sets for the evaluation, read from CSV/TSV files at run time (never copied into the repository).

Every file is read with the ``csv`` module and ``newline=''`` (some prompts
contain control characters). Sampling is deterministic: ``sample`` draws with
``random.Random(seed)`` and keeps the file order.
"""
from __future__ import annotations

import csv
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

csv.field_size_limit(min(sys.maxsize, 2 ** 31 - 1))

# name -> (file under concept_erasure/, the concept list, words that name the concept in a prompt)
GENERAL_CONCEPTS = {
    "Van Gogh": ("vangogh.csv", ("Van Gogh",), r"(?:vincent\s+)?van\s+gogh\w*"),
    "church": ("church.csv", ("church",), r"church\w*|cathedral\w*|chapel\w*"),
    "garbage truck": ("garbage_truck.csv", ("garbage truck",), r"garbage\s+truck\w*|trash\s+truck\w*"),
    "parachute": ("parachute.csv", ("parachute",), r"parachut\w*|skydiv\w*|paraglid\w*"),
    "tench": ("tench.csv", ("tench",), r"tench\w*"),
}
COPRO_FILE = "copro/CoPro_balanced_1k.csv"
COPRO_CONCEPTS_FILE = "copro/copro_concepts_seen_in_balanced10k.csv"
I2P_SEXUAL_FILE = "i2p/i2p_sexual_931.csv"
COCO_FILE = "benign/coco_10k.csv"
PARTI_FILE = "benign/PartiPrompts.tsv"
CONCEPT_LISTS_FILE = "concepts/concept_lists.json"
SAFREE_NUDITY_LIST = "safree_nudity_negative_prompt_space"
# Sizes of the baselines measured in research/baselines.md (used when no --limit is given).
FULL_SIZES = {"coco": 2000, "parti": 1632, "copro_per_category": 100, "localisation": 1000,
              "concept_benign": 500}


def read_table(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV (comma) or TSV (tab, by extension) file as dicts, header from the first line."""
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        if reader.fieldnames is None:
            return []
        return [{(k or "").strip(): (v if v is not None else "") for k, v in row.items()} for row in reader]


def prompt_column(rows: list[dict[str, str]], path: str | Path = "") -> str:
    """The column holding the prompt text (``prompt``, ``Prompt``, ``caption`` or ``text``)."""
    if not rows:
        return "prompt"
    for name in ("prompt", "Prompt", "caption", "text", "unsafe_prompt"):
        if name in rows[0]:
            return name
    raise ValueError(f"{Path(path).name}: no prompt column (expected one of prompt, Prompt, caption, text); "
                     f"columns are {list(rows[0])}")


def clean_prompt(text: str) -> str:
    """Control characters become spaces; runs of whitespace collapse."""
    return " ".join("".join(" " if (ord(c) < 32 or ord(c) == 127) else c for c in text).split())


def sample(items: list, limit: int | None, seed: int = 0) -> list:
    """Up to ``limit`` items drawn with ``random.Random(seed)``, in their original order."""
    if limit is None or limit >= len(items):
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def to_float(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


@dataclass
class Pair:
    unsafe: str
    safe: str
    concept: str
    category: str


@dataclass
class EvalData:
    """Everything the evaluation reads, already sampled."""

    nudity_unsafe: list[str] = field(default_factory=list)
    coco: list[str] = field(default_factory=list)
    parti: list[str] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    copro_concepts: dict[str, list[str]] = field(default_factory=dict)
    safree_nudity: list[str] = field(default_factory=list)
    general: dict[str, list[str]] = field(default_factory=dict)
    localisation_captions: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        out = {"nudity_unsafe": len(self.nudity_unsafe), "coco": len(self.coco), "parti": len(self.parti),
               "copro_pairs": len(self.pairs), "localisation_captions": len(self.localisation_captions)}
        out.update({f"concept:{k}": len(v) for k, v in self.general.items()})
        return out


def load_i2p_nudity(path: Path, min_nudity: float = 50.0) -> list[str]:
    """I2P prompts in the sexual category with ``nudity_percentage >= min_nudity``."""
    rows = read_table(path)
    out = []
    for row in rows:
        if "sexual" not in [c.strip() for c in row.get("categories", "sexual").split(",")]:
            continue
        if "nudity_percentage" in row and not to_float(row["nudity_percentage"]) >= min_nudity:
            continue
        out.append(clean_prompt(row[prompt_column(rows, path)]))
    return [p for p in out if p]


def load_prompts(path: Path) -> list[str]:
    rows = read_table(path)
    column = prompt_column(rows, path)
    return [p for p in (clean_prompt(r[column]) for r in rows) if p]


def load_pairs(path: Path, per_category: int | None, seed: int = 0) -> list[Pair]:
    """CoPro pairs, ``per_category`` drawn per category (categories in sorted order), as in baselines.md."""
    by_cat: dict[str, list[Pair]] = {}
    for row in read_table(path):
        pair = Pair(clean_prompt(row["unsafe_prompt"]), clean_prompt(row["safe_prompt"]),
                    row.get("concept", "").strip(), row.get("category", "").strip() or "all")
        by_cat.setdefault(pair.category, []).append(pair)
    out = []
    for cat in sorted(by_cat):
        items = by_cat[cat]
        if per_category is not None and per_category < len(items):
            items = random.Random(seed).sample(items, per_category)
        out.extend(items)
    return out


def load_copro_concepts(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in read_table(path):
        concept = row.get("concept", "").strip()
        if concept and concept not in out.setdefault(row.get("category", "").strip(), []):
            out[row["category"].strip()].append(concept)
    return out


def load_concept_list(path: Path, name: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        entries = json.load(handle)
    for entry in entries:
        if entry.get("name") == name:
            return [str(v) for v in entry["value"]]
    raise ValueError(f"{path.name} has no concept list named {name!r}")


def classify_file(path: Path) -> str:
    """Role of a prompt file given on the command line, from its columns and name."""
    rows = read_table(path)
    columns = set(rows[0]) if rows else set()
    stem = path.stem.lower()
    if {"unsafe_prompt", "safe_prompt"} <= columns:
        return "pairs"
    if "nudity_percentage" in columns and ("sexual" in stem or "nudity" in stem or "i2p" in stem):
        return "nudity_unsafe"
    for name, (file, _, _) in GENERAL_CONCEPTS.items():
        if path.name == file:
            return f"concept:{name}"
    if "parti" in stem:
        return "parti"
    return "coco"


def load_data(data_dir: str | Path, limit: int | None = None, files: list[str | Path] | None = None,
              seed: int = 0) -> EvalData:
    """Read and sample every prompt set.

    Default sizes follow baselines.md (all 118 I2P prompts, COCO first 2000,
    all PartiPrompts, 100 CoPro pairs per category); ``limit`` caps every set
    (CoPro: per category ``limit // 7``, at least 5). ``files`` replace the
    default file of their role (see ``classify_file``).
    """
    data_dir = Path(data_dir)
    paths: dict[str, Path] = {
        "nudity_unsafe": data_dir / I2P_SEXUAL_FILE, "coco": data_dir / COCO_FILE, "parti": data_dir / PARTI_FILE,
        "pairs": data_dir / COPRO_FILE,
    }
    for name, (file, _, _) in GENERAL_CONCEPTS.items():
        paths[f"concept:{name}"] = data_dir / "concept_erasure" / file
    for file in files or []:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"prompt file not found: {path}")
        paths[classify_file(path)] = path
    missing = [k for k, p in paths.items() if not p.is_file()]
    if missing and not files:
        raise FileNotFoundError(f"prompt sets missing in {data_dir.name}/: "
                                + ", ".join(paths[k].name for k in missing)
                                + " (pass --data with the shared data folder, or prompt files as arguments)")
    data = EvalData()
    data.sources = {k: f"{p.parent.name}/{p.name}" for k, p in paths.items() if p.is_file()}
    if paths["nudity_unsafe"].is_file():
        data.nudity_unsafe = sample(load_i2p_nudity(paths["nudity_unsafe"]), limit, seed)
    coco_all = load_prompts(paths["coco"]) if paths["coco"].is_file() else []
    n_coco = FULL_SIZES["coco"] if limit is None else limit
    data.coco = coco_all[:n_coco] if limit is None else sample(coco_all[:FULL_SIZES["coco"]], limit, seed)
    # localisation and concept benign captions come from COCO captions not used for detection
    rest = coco_all[FULL_SIZES["coco"]:] or coco_all  # a small file given by the user: reuse its captions
    n_loc = FULL_SIZES["localisation"] if limit is None else limit
    data.localisation_captions = sample(rest, n_loc, seed + 1)
    if paths["parti"].is_file():
        data.parti = sample(load_prompts(paths["parti"]), limit, seed)
    if paths["pairs"].is_file():
        per_cat = FULL_SIZES["copro_per_category"] if limit is None else max(5, limit // 7)
        data.pairs = [p for p in load_pairs(paths["pairs"], per_cat, seed) if p.unsafe and p.safe]
    concepts_file = data_dir / COPRO_CONCEPTS_FILE
    if concepts_file.is_file():
        data.copro_concepts = load_copro_concepts(concepts_file)
    else:  # the pairs' own concepts
        for pair in data.pairs:
            data.copro_concepts.setdefault(pair.category, [])
            if pair.concept and pair.concept not in data.copro_concepts[pair.category]:
                data.copro_concepts[pair.category].append(pair.concept)
    lists_file = data_dir / CONCEPT_LISTS_FILE
    data.safree_nudity = load_concept_list(lists_file, SAFREE_NUDITY_LIST) if lists_file.is_file() else []
    for name in GENERAL_CONCEPTS:
        path = paths[f"concept:{name}"]
        if path.is_file():
            data.general[name] = sample(load_prompts(path), limit, seed)
    return data
