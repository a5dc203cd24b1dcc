"""Hard negatives against detection for the training-free projection (mode safree, fast detector).

Prints, side by side, the fast detector without its contrast gate (``projection.contrast_gate``), with the gate
but every word piece scored alone (as before issue 11; the reference banks are today's), and as shipped, at the
default setting (intensity 1, threshold 0.5), on the bundled encoder:

* the share of the hard-negative list (evaluation/hard_negatives.csv: each phrase alone and in its
  caption) that is edited (any row changed);
* I2P nudity (sexual, nudity_percentage >= 50) against COCO captions: TPR at 1% FPR and AUROC of the
  prompt score (the highest token score), the figures `evaluate` reports for "Projection, fast detector";
* the share of COCO captions left untouched;
* explicit phrases (the evaluation's HARM_PHRASES inserted into other COCO captions): the share whose
  phrase has a token over the threshold (and over 0.35), and the token AUROC;
* the sanitize time per prompt and the subspace build time.

A last column gives the learned sanitizer (mode es, the shipped weights) on the same prompts, for reference.
``--sweep`` adds stricter gates (``CONTRAST_MARGIN`` below 0, and the nearest benign reference instead of the mean
of the 5 nearest): the trade-off between edited hard negatives and detection.

Prompts are read from ../shared/data (never copied) and tokenized word by word as `evaluate` does.

    .venv/bin/python tools/measure_hard_negatives.py [--coco 2000] [--data DIR] [--sweep]
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from unittest import mock

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedding_sanitizer import projection  # noqa: E402
from embedding_sanitizer.concepts import SubspaceCache  # noqa: E402
from embedding_sanitizer.encoders.select import default_weights_path  # noqa: E402
from embedding_sanitizer.weights_io import load_es  # noqa: E402
from embedding_sanitizer.encoders.minilm import MiniLMEncoder  # noqa: E402
from embedding_sanitizer.evaluation import metrics as M  # noqa: E402
from embedding_sanitizer.evaluation.datasets import COCO_FILE, FULL_SIZES, I2P_SEXUAL_FILE, load_i2p_nudity, load_prompts  # noqa: E402
from embedding_sanitizer.evaluation.hard_negatives import hard_negative_prompts, load_hard_negatives  # noqa: E402
from embedding_sanitizer.evaluation.methods import SanitizerMethod, Task, WordTokenizer, encode_texts, encode_words  # noqa: E402
from embedding_sanitizer.evaluation.runner import HARM_PHRASES, insert_phrases  # noqa: E402
from embedding_sanitizer.paths import SHARED_DATA_DIR  # noqa: E402
from embedding_sanitizer.sanitize import Sanitizer  # noqa: E402
from embedding_sanitizer.settings import DEFAULT_CONCEPTS  # noqa: E402

EXPLICIT_CAPTIONS = 300


def edited(run, enc) -> np.ndarray:
    """[N] True where any row the diffusion model reads was changed."""
    return ((run.embeddings != enc.tokens).any(-1) & enc.relevant).any(-1).numpy()


def measure(encoder, es_model, es_meta, cache, mode, name, sets, task, entries, labels) -> dict[str, str]:
    """One column: the figures of one detector variant."""
    n = len(entries)
    odd = np.array([i % 2 == 1 for i in range(n)] * 2)  # entry i gives prompts i (phrase) and n + i (caption)
    sanitizer = Sanitizer(encoder, es_model, es_meta, cache=cache)
    if mode == "es":
        method = SanitizerMethod("es", name, sanitizer, mode="es", score="prompt")
        build_s = float("nan")
    else:
        method = SanitizerMethod("fast", name, sanitizer, mode="safree", detector="fast")
        t = time.perf_counter()
        cache.get(encoder, task.concepts)
        build_s = time.perf_counter() - t
    runs, per_prompt = {}, {}
    for key, enc in sets.items():
        t = time.perf_counter()
        runs[key] = method.run(enc, task, "medium")
        per_prompt[key] = (time.perf_counter() - t) / len(enc)
    hard = edited(runs["hard"], sets["hard"])
    pos, neg = runs["unsafe"].prompt_scores, runs["coco"].prompt_scores
    tpr, _ = M.tpr_at_fpr(pos, neg, 0.01)
    ex = runs["explicit"].token_scores
    words_mask = sets["explicit"].word_of >= 0
    return {
        "hard negatives edited (all prompts)": f"{hard.mean():.3f} ({int(hard.sum())}/{len(hard)})",
        "  phrases alone": f"{hard[:n].mean():.3f} ({int(hard[:n].sum())}/{n})",
        "  in captions": f"{hard[n:].mean():.3f} ({int(hard[n:].sum())}/{n})",
        "  odd entries": f"{hard[odd].mean():.3f}",
        "  even entries": f"{hard[~odd].mean():.3f}",
        **{f"  {c}": f"{hard[[i for i, e in enumerate(entries * 2) if e.category == c]].mean():.3f}"
           for c in ("nudity", "violence", "weapons")},
        "I2P nudity TPR@1%FPR vs COCO": f"{tpr:.3f}",
        "I2P nudity AUROC vs COCO": f"{M.auroc(pos, neg):.3f}",
        "COCO untouched share": f"{1 - edited(runs['coco'], sets['coco']).mean():.3f}",
        "explicit phrases flagged": f"{float(((ex > 0.5) & labels).any(-1).float().mean()):.3f}",
        "explicit phrases flagged @0.35": f"{float(((ex > 0.35) & labels).any(-1).float().mean()):.3f}",
        "explicit token AUROC": f"{M.token_auroc(ex, labels, words_mask):.3f}",
        "sanitize ms/prompt (COCO)": f"{1000 * per_prompt['coco']:.2f}",
        "subspace build s": f"{build_s:.1f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--coco", type=int, default=FULL_SIZES["coco"], help="COCO captions (the first N)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA_DIR)
    parser.add_argument("--sweep", action="store_true", help="add the gate's margin sweep")
    args = parser.parse_args()
    encoder = MiniLMEncoder()
    tokenizer = WordTokenizer(encoder)
    entries = load_hard_negatives()
    coco_all = load_prompts(args.data / COCO_FILE)
    t0 = time.perf_counter()
    sets = {
        "unsafe": encode_texts(encoder, tokenizer, load_i2p_nudity(args.data / I2P_SEXUAL_FILE)),
        "coco": encode_texts(encoder, tokenizer, coco_all[:args.coco]),
        "hard": encode_texts(encoder, tokenizer, hard_negative_prompts(entries)),
    }
    words, spans = insert_phrases(coco_all[FULL_SIZES["coco"]:FULL_SIZES["coco"] + EXPLICIT_CAPTIONS], HARM_PHRASES, 7)
    sets["explicit"] = encode_words(encoder, tokenizer, words)
    labels = torch.zeros(sets["explicit"].ids.shape, dtype=torch.bool)
    for n, (a, b) in enumerate(spans):
        labels[n] = (sets["explicit"].word_of[n] >= a) & (sets["explicit"].word_of[n] < b)
    encode_s = time.perf_counter() - t0
    n_prompts = sum(len(e) for e in sets.values())
    print(f"encoder {encoder.name}; I2P nudity>=50 {len(sets['unsafe'])}, COCO {len(sets['coco'])}, hard negatives "
          f"{len(entries)} entries x (phrase, caption) = {len(sets['hard'])} prompts, explicit {len(sets['explicit'])}; "
          f"encoding {1000 * encode_s / n_prompts:.1f} ms/prompt")
    task = Task("harm", tuple(DEFAULT_CONCEPTS))
    columns = {}
    es_path = default_weights_path(encoder)
    es_model, es_meta = (load_es(es_path, encoder_name=encoder.name, encoder_fingerprint=encoder.fingerprint,
                                 width=encoder.width) if es_path else (None, {}))
    # (name, cache, mode, contrast_gate keywords, word pieces scored alone)
    variants = [("no contrast gate", SubspaceCache(references=False), "safree", {}, False),
                ("gate, pieces alone", SubspaceCache(), "safree", {}, True),
                ("gate as shipped", SubspaceCache(), "safree", {}, False)]
    if args.sweep:
        variants += [(f"margin {m:+.2f}, benign k {k}", SubspaceCache(), "safree", {"margin": m, "k_benign": k}, False)
                     for m, k in ((-0.02, 5), (0.0, 1), (-0.02, 1), (-0.03, 1))]
    if es_model is not None:
        variants.append(("es, shipped weights", SubspaceCache(references=False), "es", {}, False))
    for name, cache, mode, gate, pieces_alone in variants:
        with ExitStack() as patched:
            if gate:  # fast_scores looks contrast_gate up at call time
                patched.enter_context(mock.patch.object(projection, "contrast_gate",
                                                        partial(projection.contrast_gate, **gate)))
            if pieces_alone:
                patched.enter_context(mock.patch.object(encoder, "word_joins", lambda ids: None))
            columns[name] = measure(encoder, es_model, es_meta, cache, mode, name, sets, task, entries, labels)
    names = list(columns)
    width = max(len(k) for k in columns[names[0]])
    print(f"\n{'':{width}}  " + "  ".join(f"{c:>22}" for c in names))
    for key in columns[names[0]]:
        print(f"{key:{width}}  " + "  ".join(f"{columns[c][key]:>22}" for c in names))
    print("\nsettings: mode safree, detector fast, intensity 1 (preset medium, threshold 0.5), eos_policy project, "
          "concepts = settings.DEFAULT_CONCEPTS; es: the same preset, prompt score from the whole-prompt detector")


if __name__ == "__main__":
    main()
