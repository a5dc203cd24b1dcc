"""Quick path to the erasure yardsticks of issue 12 for ONE method (the full side-by-side run is `evaluate`).

    python tools/measure_erasure.py --weights weights/es-all-minilm-l6-v2.safetensors --mode es+safree --limit 100
    python tools/measure_erasure.py --mode safree-loo --limit 60 --json out.json
    for p in 0.2 0.05 0.02 0.01 0.002; do python tools/measure_erasure.py --limit 60 --target-probability $p; done

Prints, for the chosen method at the default preset (medium, intensity 1; I2P nudity re-detection also at
preset high): detection AUROC (I2P nudity vs COCO), COCO untouched share and mean token cosine,
re-detection by the independent max-cos and probe detectors (share of detected prompts still above
threshold), gap to the clean caption on inserted phrases (pooled and aligned rows), minimal-edit figures,
heatmap figures, the benign-gibberish control, then the issue-12 marks with pass/fail and their reference
(the style-matched floor of a re-detection, the concept-word deletion of a gap: see the evaluate report).
``--target-probability`` replaces the whole-prompt probability that the pooled-erasure stage lowers an ES-edited
chunk to (``pooled_erasure.PROMPT_TARGET_PROBABILITY``), for the sweep of that trade-off. Same code as
`python -m embedding_sanitizer evaluate` (embedding_sanitizer/evaluation/erasure_eval.py); the sets are
sampled with --limit, the probes keep their full training pools (300 prompts per pool). About 70 s of CPU
time on the bundled encoder at --limit 30 (user time; wall time depends on how busy the cores are).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = {"off": "none", "none": "none", "blacklist": "blacklist", "maxcos": "maxcos", "safree-loo": "safree",
         "safree": "fast", "es": "es", "es+safree": "es+fast"}


def fmt(x, digits=3):
    return "–" if x is None or (isinstance(x, float) and x != x) else (f"{x:.{digits}f}" if isinstance(x, float)
                                                                       else str(x))


def summary_lines(results: dict, key: str) -> list[str]:
    lines = []
    y = results["yardsticks"]
    for name, s in y["redetection"]["sets"].items():
        cell = s["rows"].get(key)
        if not cell:
            continue
        parts = [f"{d}: {fmt(c['remaining'])} of {c['n_detected']} detected remain"
                 f" ({fmt(c.get('remaining_among_edited'))} of {c.get('n_detected_edited')} edited)"
                 for d, c in cell.items() if isinstance(c, dict)]
        lines.append(f"  re-detection {name} (n {s['n']}, edited {fmt(cell['edited_share'])}): " + "; ".join(parts))
    for name, probe in y["redetection"]["probes"].items():
        lines.append(f"  probe {name}: held-out AUROC vs COCO {fmt(probe.get('auroc_vs_coco'))}, vs other I2P "
                     f"{fmt(probe.get('auroc_vs_i2p_other'))}, threshold {fmt(probe.get('threshold'))}")
    for concept, g in y["gap"].items():
        c = g["rows"].get(key, {})
        h = c.get("heatmap", {})
        line = (f"  inserted {concept} (n {g['n_prompts']}): heatmap caption-word mean {fmt(h.get('caption_mean'))}, "
                f"token AUROC {fmt(h.get('token_auroc'))}")
        if "gap_pooled" in c:
            two = c.get("two_chunk_unflagged_edited", {})
            deletion = (g.get("oracle_gap_pooled") or {}).get("aggregate")
            line += (f"; pooled gap closed {fmt(c['gap_pooled']['aggregate'])} (concept words deleted {fmt(deletion)}), rows "
                     f"{fmt(c['gap_rows']['aggregate'])}"
                     f"; phrase-row concept cos {fmt(c['phrase_rows']['concept_cos_before'])} -> "
                     f"{fmt(c['phrase_rows']['concept_cos_after'])}; caption rows rel. change "
                     f"{fmt(c['caption_rows_change']['mean'], 4)}; unflagged chunks edited "
                     f"{fmt(c['unflagged_chunks_edited']['edited_share'])} (two-chunk {fmt(two.get('edited_share'))})")
        lines.append(line)
    for src, variants in y["gibberish"]["sources"].items():
        parts = []
        for v, cell in variants.items():
            r = cell["rows"].get(key, {})
            parts.append(f"{v} flagged {fmt(r.get('prompt_flagged'))} / word {fmt(r.get('word_flagged'))} / "
                         f"edited {fmt(r.get('edited'))}")
        lines.append(f"  gibberish {src}: " + "; ".join(parts))
    return lines


def main() -> int:
    import embedding_sanitizer.sanitize as sanitize_module
    from embedding_sanitizer.commands.evaluate import _load_es
    from embedding_sanitizer.encoders.select import load_encoder
    from embedding_sanitizer.evaluation import metrics as M
    from embedding_sanitizer.evaluation.datasets import load_data
    from embedding_sanitizer.evaluation.erasure_data import load_erasure_data
    from embedding_sanitizer.evaluation.erasure_eval import ErasureYardsticks
    from embedding_sanitizer.evaluation.report_erasure import issue12_marks
    from embedding_sanitizer.evaluation.runner import Evaluation, _r

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="", help="ES weights (default: the shipped weights of the encoder)")
    ap.add_argument("--encoder", default="bundled")
    ap.add_argument("--mode", default="es+safree", choices=sorted(MODES),
                    help="method: es+safree (ES then projection), es, safree (fast projection), safree-loo "
                         "(SAFREE as released), blacklist, maxcos (detection only), off")
    ap.add_argument("--limit", type=int, default=100, help="prompts per set (default 100)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--target-probability", type=float,
                    help="pooled-erasure target probability of the whole-prompt detector (default: the shipped one)")
    args = ap.parse_args()
    if args.target_probability is not None:
        if not 0.0 < args.target_probability < 1.0:
            raise SystemExit("--target-probability must be between 0 and 1")
        sanitize_module.PROMPT_TARGET_PROBABILITY = args.target_probability
    start = time.perf_counter()
    torch.manual_seed(0)
    encoder = load_encoder(args.encoder)
    es_model, es_meta, es_file = _load_es(encoder, args.weights)
    data = load_data(args.data, limit=args.limit, seed=args.seed)
    extra = load_erasure_data(args.data, data, limit=args.limit, seed=args.seed)
    key = MODES[args.mode]
    ev = Evaluation(encoder, data, es_model, es_meta, presets=("medium", "high"), bootstrap=0, progress=False,
                    seed=args.seed, erasure=extra, only=(key,))
    if not ev.active:
        raise SystemExit(f"method {key!r} is not available: {ev.available.get(key, (False, 'unknown'))[1]}")
    m = ev.active[0]
    harm = ev.harm_task()
    unsafe, coco = ev.encoded("nudity", data.nudity_unsafe), ev.encoded("coco", data.coco)
    pos, neg = ev.run(m, "nudity", unsafe, harm).prompt_scores, ev.run(m, "coco", coco, harm).prompt_scores
    results = {"method": key, "weights": es_file, "encoder": encoder.name, "limit": args.limit,
               "detection_auroc": M.auroc(pos, neg), "tpr_at_1pct_fpr": M.tpr_at_fpr(pos, neg)[0]}
    if m.sanitizes:
        results["coco_preservation"] = ev.preservation(ev.run(m, "coco", coco, harm), coco)
    results["yardsticks"] = ErasureYardsticks(ev, extra).run_all()
    results["seconds"] = round(time.perf_counter() - start, 1)
    results = _r(results)
    print(f"{m.label} ({key}), weights {es_file}, encoder {encoder.name}, --limit {args.limit}, "
          f"pooled target probability {sanitize_module.PROMPT_TARGET_PROBABILITY:g}, {results['seconds']} s")
    print(f"  detection AUROC I2P nudity vs COCO {fmt(results['detection_auroc'])}, "
          f"TPR@1%FPR {fmt(results['tpr_at_1pct_fpr'])}")
    if "coco_preservation" in results:
        p = results["coco_preservation"]
        print(f"  COCO untouched {fmt(p['untouched'])}, mean token cos {fmt(p['token_cos'], 4)}, "
              f"<=0.05 edit {fmt(p['within_tolerance'])}")
    print("\n".join(summary_lines(results, key)))
    shaped = {"yardsticks": results["yardsticks"], "methods": [{"key": key, "label": m.label}],
              "preservation": {"coco": {key: {"medium": results.get("coco_preservation", {})}}},
              "detection": {"nudity": {"rows": {key: {"auroc": results["detection_auroc"]}}}}}
    print("issue 12 marks:")
    for t in issue12_marks(shaped, key):
        ref = "" if t.get("reference") is None else f", reference {fmt(t['reference'], 4)}"
        print(f"  [{t['status'].upper():>4}] {t['target']}: {fmt(t['value'], 4)} (goal {t['goal']}{ref})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
