"""How much of the whole-prompt detector's score is "unusual text": the detector of a weights file with and
without the junk nuisance directions that calibration can project out (``train --detector-junk-directions``,
``train.junk_nuisance``).

    python tools/measure_detector_junk.py [--weights W] [--pairs 400] [--directions 1,2,4]

Scores pooled vectors (first chunk, as the detector pools them) of I2P nudity prompts (>= 50% nudity), the first
2,000 COCO captions (the 1%-FPR threshold), and 300 COCO captions and 300 Parti prompts not used for the
threshold, clean and with the evaluation's gibberish (``evaluation/gibberish.py``: 6 or 12 junk tokens, or
decorations), and prints detection AUROC, TPR at 1% COCO FPR and the share of each gibberish variant above that
threshold. The nuisance comes from the calibration corpus's own junk generator, not the evaluation's. The
direction only changes; the network and word scores are the file's. Raw text is tokenized as the hosts do.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from embedding_sanitizer.commands.evaluate import _load_es
    from embedding_sanitizer.encoders.select import load_encoder
    from embedding_sanitizer.evaluation import gibberish as G
    from embedding_sanitizer.evaluation import metrics as M
    from embedding_sanitizer.evaluation.datasets import load_data
    from embedding_sanitizer.prompt_detector import nuisance_directions
    from embedding_sanitizer.train import encode_first_chunks, junk_pair_vectors

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="", help="ES weights (default: the shipped weights of the encoder)")
    ap.add_argument("--encoder", default="bundled")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--pairs", type=int, default=400, help="junk pairs for the nuisance direction")
    ap.add_argument("--directions", default="1,2,4", help="numbers of nuisance directions to remove")
    args = ap.parse_args()
    start = time.perf_counter()
    encoder = load_encoder(args.encoder)
    model, meta, name = _load_es(encoder, args.weights)
    if model is None or not model.has_prompt_detector:
        raise SystemExit("these weights have no whole-prompt detector")
    pooling = model.config.prompt_pooling

    def vectors(texts, batch=64):
        return encode_first_chunks(encoder, texts, pooling, "evaluation prompts", batch_size=batch)[0]

    data = load_data(args.data, limit=None)
    coco, i2p = vectors(data.coco[:2000]), vectors(data.nudity_unsafe)
    sets = {}
    for src, prompts in (("COCO", data.localisation_captions[:300]), ("Parti", data.parti[:300])):
        sets[f"{src} clean"] = vectors(prompts)
        for v in G.VARIANTS:
            sets[f"{src} {v}"] = vectors(G.variant(prompts, v, 0))
    concepts = list(meta.get("concepts") or ["nudity", "violence"])
    training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
    pairs = junk_pair_vectors(encoder, concepts, int(training.get("seed", 0)), pooling, args.pairs)
    if pairs is None:
        raise SystemExit("no junk pair encoded")
    print(f"weights {name}, encoder {encoder.name}, {len(pairs[0])} junk pairs, I2P nudity n {len(i2p)}, "
          f"COCO n {len(coco)}")

    def report(label, direction):
        score = lambda x: x @ direction  # noqa: E731 - a monotone map of the probability
        threshold = M.threshold_at_fpr(score(coco), 0.01)
        cells = ", ".join(f"{k} {M.rate_above(score(v), threshold):.3f}" for k, v in sets.items())
        print(f"{label}: AUROC {M.auroc(score(i2p), score(coco)):.4f}, TPR@1%FPR "
              f"{M.rate_above(score(i2p), threshold):.3f}; flagged: {cells}")

    direction = model.prompt_direction.double()
    report("file's detector", direction.float())
    counts = sorted({int(k) for k in args.directions.split(",")})
    basis = nuisance_directions(*pairs, max(counts)).double()
    for k in counts:  # calibration removes JUNK_DIRECTIONS (1)
        b = basis[:k]
        report(f"minus {k} junk direction(s)", (direction - b.T @ (b @ direction)).float())
    print(f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
