"""How much of the CoPro unsafe->safe distance can any concept edit close? (issue 3, erasure target)

    python tools/copro_bound.py [--data ../shared/data] [--encoder bundled]

The erasure target asks that sanitizing an unsafe CoPro prompt closes 70% of its
pooled cosine distance to the safe counterpart. CoPro's safe prompts are rewrites
(other words, other sentence), so this script measures what edits of the unsafe
prompt's pooled vector could achieve at best, each with the step size chosen per
pair by an oracle that knows the safe prompt (so every figure is an upper bound
for its kind of edit):

* along one shared direction (mean of the normalised unsafe->safe differences,
  cross-fitted: each half of the pairs uses the direction of the other half);
* away from the pair's own concept vector (the concept encoded alone);
* projecting the concept vector out completely (no oracle step);
* along the pair's true difference (sanity check: 100%).

Pairs whose unsafe and safe text are identical are left out, as in evaluate.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedding_sanitizer.encoders.select import load_encoder  # noqa: E402


def closure(base: torch.Tensor, after: torch.Tensor) -> float:
    """Aggregate share of the distance closed: (sum base - sum after) / sum base."""
    return float((base.sum() - after.sum()) / base.sum())


def best_step(unsafe: torch.Tensor, safe: torch.Tensor, directions: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Per pair, the smallest distance to ``safe`` over steps t in [-3, 3] along ``directions``."""
    best = base.clone()
    for t in torch.linspace(-3, 3, 601):
        moved = F.normalize(unsafe + t * directions, dim=-1)
        best = torch.minimum(best, 1 - (moved * safe).sum(-1))
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--encoder", default="bundled")
    args = ap.parse_args()
    with open(args.data / "copro/CoPro_balanced_1k.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["unsafe_prompt"].strip() != r["safe_prompt"].strip()]
    encoder = load_encoder(args.encoder)
    pooled = lambda texts: F.normalize(encoder.pooled_texts(texts).float(), dim=-1)  # noqa: E731
    unsafe = pooled([r["unsafe_prompt"] for r in rows])
    safe = pooled([r["safe_prompt"] for r in rows])
    concept = pooled([r["concept"] for r in rows])
    base = 1 - (unsafe * safe).sum(-1)

    diff = F.normalize(safe - unsafe, dim=-1)
    half = torch.arange(len(rows)) % 2 == 0
    shared_a, shared_b = F.normalize(diff[half].mean(0), dim=0), F.normalize(diff[~half].mean(0), dim=0)
    shared = torch.where(half.unsqueeze(1), shared_b.expand_as(unsafe), shared_a.expand_as(unsafe))
    projected = F.normalize(unsafe - (unsafe * concept).sum(-1, keepdim=True) * concept, dim=-1)
    report = {
        "encoder": encoder.name, "pairs": len(rows), "mean_base_distance": round(float(base.mean()), 4),
        "shared_direction_oracle_step": round(closure(base, best_step(unsafe, safe, shared, base)), 4),
        "away_from_concept_oracle_step": round(closure(base, best_step(unsafe, safe, -concept, base)), 4),
        "concept_projected_out": round(closure(base, 1 - (projected * safe).sum(-1)), 4),
        "true_difference_oracle_step": round(closure(base, best_step(unsafe, safe, diff, base)), 4),
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
