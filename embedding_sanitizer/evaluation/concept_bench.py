"""Time to build the concept subspace for a long concept list (``bench --concepts-only N``).

The neutral reference rows are built once per encoder and cached (``concepts.SubspaceCache``), so two
figures are reported: the first list on an encoder (neutral rows included) and every later list on
it (the concepts alone). Each is a median over ``repeats`` fresh caches.
"""
from __future__ import annotations

import os
import statistics
import time

import torch

from ..concepts import SubspaceCache
from ..corpus.wordlists import BUILTIN, HARD_NEGATIVES, OBJECTS, PEOPLE, PLACES


def concept_list(n: int) -> tuple[str, ...]:
    """``n`` distinct concept phrases of one to three words, the kind pasted into a concept list."""
    terms = [term for entries in BUILTIN.values() for term, _anchor, _kind in entries]
    words = list(dict.fromkeys(terms + [w for group in (PEOPLE, OBJECTS, PLACES, HARD_NEGATIVES) for w in group]))
    out: list[str] = []
    seen: set[str] = set()
    for phrase in words + [f"{a} {b}" for a in words[:40] for b in words[40:]]:
        if phrase.lower() not in seen:
            seen.add(phrase.lower())
            out.append(phrase)
        if len(out) == n:
            return tuple(out)
    raise ValueError(f"at most {len(out)} distinct bench concepts can be made")


def time_concepts(encoder, n: int, repeats: int = 3) -> dict:
    """Medians, in seconds, of building the subspace of ``n`` concepts on ``encoder``: on a fresh cache
    (the neutral rows included) and, on the same cache, for the same concepts in another order (a new list:
    the concepts alone)."""
    concepts = concept_list(n)
    first, later = [], []
    for _ in range(repeats):
        cache = SubspaceCache()
        start = time.perf_counter()
        cache.get(encoder, concepts)
        mid = time.perf_counter()
        cache.get(encoder, tuple(reversed(concepts)))
        first.append(mid - start)
        later.append(time.perf_counter() - mid)
    return {"encoder": encoder.name, "concepts": n, "repeats": repeats, "threads": torch.get_num_threads(),
            "load_average_1min": round(os.getloadavg()[0], 2), "first_list_s": round(statistics.median(first), 2),
            "later_list_s": round(statistics.median(later), 2)}
