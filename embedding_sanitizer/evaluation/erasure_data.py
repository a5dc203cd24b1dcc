"""The prompt sets of the erasure yardsticks (issue 12), read from the shared data folder.

* ``concept_erasure/nudity.csv`` and ``violence.csv`` (I2P prompts chosen as attack seeds) for re-detection;
* the full I2P table for the probes' training and held-out pools (see ``probe.py``);
* COCO captions that no evaluation set uses, for the probes' negatives;
* SAFREE's violence keywords (``safree_t2v_concept_dict['violence']``) for the max-cos detector and for
  "SAFREE as released" on violence.

Every part is optional: what is missing is reported as missing, never guessed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .datasets import COCO_FILE, EvalData, clean_prompt, load_prompts, prompt_column, read_table, sample, to_float

I2P_FULL_FILE = "i2p/i2p_full_4703.csv"
CE_FILES = {"nudity": "concept_erasure/nudity.csv", "violence": "concept_erasure/violence.csv"}
T2V_LIST = "safree_t2v_concept_dict"
# Default sizes (no --limit): the re-detection sets, the probes' pools (per pool), gibberish prompts per
# source, and inserted-phrase captions per concept (built-in packs, custom concepts).
SIZES = {"ce_nudity": 142, "ce_violence": 200, "probe_pool": 300, "gibberish": 300, "gap_builtin": 400,
         "gap_custom": 100}


@dataclass
class I2PRow:
    prompt: str
    categories: tuple[str, ...]
    nudity: float


@dataclass
class ErasureData:
    sets: dict[str, list[str]] = field(default_factory=dict)  # concept_erasure nudity / violence
    i2p: list[I2PRow] = field(default_factory=list)
    coco_pool: list[str] = field(default_factory=list)  # COCO captions no evaluation set uses
    violence_keywords: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=lambda: dict(SIZES))
    missing: list[str] = field(default_factory=list)


def load_i2p_rows(path: Path) -> list[I2PRow]:
    rows = read_table(path)
    column = prompt_column(rows, path)
    out = []
    for r in rows:
        text = clean_prompt(r.get(column, ""))
        if text:
            cats = tuple(c.strip() for c in r.get("categories", "").split(",") if c.strip())
            out.append(I2PRow(text, cats, to_float(r.get("nudity_percentage", ""))))
    return out


def evaluation_texts(data: EvalData) -> set[str]:
    """Every prompt text the main evaluation reads (a probe never trains on one of them)."""
    texts = set(data.nudity_unsafe) | set(data.coco) | set(data.parti) | set(data.localisation_captions)
    for pair in data.pairs:
        texts |= {pair.unsafe, pair.safe}
    for prompts in data.general.values():
        texts |= set(prompts)
    return texts


def load_erasure_data(data_dir: str | Path, data: EvalData, limit: int | None = None, seed: int = 0
                      ) -> ErasureData:
    data_dir = Path(data_dir)
    out = ErasureData()
    if limit is not None:
        out.sizes = {k: min(v, limit) for k, v in SIZES.items()}
        out.sizes["probe_pool"] = SIZES["probe_pool"]  # the probes keep their size: they are fitted once
    for name, file in CE_FILES.items():
        path = data_dir / file
        if path.is_file():
            out.sets[name] = sample(load_prompts(path), out.sizes[f"ce_{name}"], seed)
        else:
            out.missing.append(file)
    path = data_dir / I2P_FULL_FILE
    if path.is_file():
        out.i2p = load_i2p_rows(path)
    else:
        out.missing.append(I2P_FULL_FILE)
    path = data_dir / COCO_FILE
    if path.is_file():
        used = evaluation_texts(data)
        out.coco_pool = [c for c in load_prompts(path) if c not in used]
    lists = data_dir / "concepts" / "concept_lists.json"
    if lists.is_file():
        for entry in json.loads(lists.read_text(encoding="utf-8")):
            if entry.get("name") == T2V_LIST and isinstance(entry.get("value"), dict):
                out.violence_keywords = [str(v) for v in entry["value"].get("violence", [])]
    if not out.violence_keywords:
        out.missing.append(f"{T2V_LIST}['violence'] in concepts/concept_lists.json")
    return out
