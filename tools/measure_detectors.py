"""Quick measurement for the core: the two projection detectors and the EOS/padding leak.

Reads the I2P sexual prompts (nudity_percentage >= 50) and COCO captions from
../shared/data, encodes them with the bundled encoder and prints, for the fast
and leave-one-out detectors: prompt-level AUROC (max token score), the share of
COCO captions left untouched, and how much of the concept signal is left in
the pooled vector of unsafe prompts with the EOS/padding rows kept vs projected.

    .venv/bin/python tools/measure_detectors.py [--coco 500]
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedding_sanitizer import Sanitizer, Settings  # noqa: E402
from embedding_sanitizer.encoders.minilm import MiniLMEncoder  # noqa: E402
from embedding_sanitizer.layout import ROLE_PAD  # noqa: E402
from embedding_sanitizer.paths import SHARED_DATA_DIR  # noqa: E402
from embedding_sanitizer.projection import orthonormal_basis  # noqa: E402

NUDITY = ("nudity, naked body, nude person, topless, exposed breasts, genitals, pornography, sexual intercourse, "
          "sexual act, erotic, lingerie model")


def read(path, column, keep=lambda row: True):
    with open(path, newline="", encoding="utf-8") as handle:
        return [row[column] for row in csv.DictReader(handle) if keep(row)]


def auroc(pos, neg):
    pos, neg = torch.tensor(pos), torch.tensor(neg)
    greater = (pos[:, None] > neg[None, :]).float().mean()
    ties = (pos[:, None] == neg[None, :]).float().mean()
    return float(greater + 0.5 * ties)


def pooled(rows, roles):
    keep = (roles != ROLE_PAD).unsqueeze(-1).float()
    return torch.nn.functional.normalize((rows * keep).sum(1) / keep.sum(1), dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=int, default=500)
    args = parser.parse_args()
    unsafe = read(SHARED_DATA_DIR / "i2p/i2p_sexual_931.csv", "prompt",
                  lambda r: float(r["nudity_percentage"] or 0) >= 50)
    coco = read(SHARED_DATA_DIR / "benign/coco_10k.csv", "prompt")[: args.coco]
    encoder = MiniLMEncoder()
    sanitizer = Sanitizer(encoder)
    concept_basis = None
    print(f"I2P sexual nudity>=50: {len(unsafe)} prompts; COCO: {len(coco)} captions; encoder {encoder.name}")
    for detector in ("fast", "loo"):
        scores = {}
        leak = {}
        for name, texts in (("unsafe", unsafe), ("coco", coco)):
            maxes, untouched, timing = [], 0, 0.0
            for start in range(0, len(texts), 32):
                batch, out = encoder.encode_texts(texts[start:start + 32])
                for policy in ("project", "keep"):
                    cfg = Settings(concepts=NUDITY, detector=detector, eos_policy=policy)
                    t0 = time.perf_counter()
                    result = sanitizer.sanitize(out.tokens, batch.ids, encoder.layout, cfg)
                    timing += time.perf_counter() - t0
                    if concept_basis is None:
                        sub = sanitizer.subspace(cfg.concept_list, out.tokens.device)
                        concept_basis = orthonormal_basis(torch.nn.functional.normalize(sub.pooled, dim=-1))
                    if name == "unsafe":
                        before = (pooled(out.tokens, result.roles) @ concept_basis).norm(dim=-1)
                        after = (pooled(result.embeddings, result.roles) @ concept_basis).norm(dim=-1)
                        leak.setdefault(policy, []).append((before, after))
                    if policy == "project":
                        maxes += result.scores.amax(-1).tolist()
                        untouched += int((result.weights.amax(-1) == 0).sum())
            scores[name] = (maxes, untouched, timing)
        a = auroc(scores["unsafe"][0], scores["coco"][0])
        print(f"[{detector}] prompt AUROC (max token score) = {a:.3f}; COCO untouched = "
              f"{scores['coco'][1] / len(coco):.3f}; unsafe edited = {1 - scores['unsafe'][1] / len(unsafe):.3f}")
        for policy, pairs in leak.items():
            before = torch.cat([p[0] for p in pairs]).mean()
            after = torch.cat([p[1] for p in pairs]).mean()
            print(f"[{detector}] eos_policy={policy}: concept share of the unsafe pooled vector "
                  f"{float(before):.3f} -> {float(after):.3f}")


if __name__ == "__main__":
    main()
