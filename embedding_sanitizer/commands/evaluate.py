"""``python -m embedding_sanitizer evaluate``: every method side by side on real prompt sets.

Writes ``evaluation.json``, ``evaluation.md`` and plots into ``--out``; with
``--update-readme`` also rewrites the README's results section (between the
``<!-- results:start -->`` and ``<!-- results:end -->`` markers).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

QUICK_LIMIT = 40


def configure(parser) -> None:
    from ..paths import SHARED_DATA_DIR

    parser.add_argument("files", nargs="*", type=Path,
                        help="prompt files (CSV/TSV) that replace the default set of their kind (I2P, COCO, "
                             "PartiPrompts, CoPro pairs, concept_erasure/<concept>.csv)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA_DIR,
                        help="folder with the prompt sets (default: ../shared/data next to the repository)")
    parser.add_argument("--encoder", default="bundled",
                        help="'bundled' (all-MiniLM-L6-v2), a local SD checkpoint .safetensors (its text encoder), "
                             "or a local transformers folder")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a local SD checkpoint .safetensors: its text encoder is evaluated (same as --encoder); "
                             "image-level evaluation is not implemented yet")
    parser.add_argument("--component", default="auto", help="text encoder of an SDXL/SD3 checkpoint: clip_l or clip_g")
    parser.add_argument("--weights", default="",
                        help="ES weights .safetensors (default: the shipped weights for the encoder, if any)")
    parser.add_argument("--limit", type=int, default=None,
                        help="sample at most N prompts per set (CoPro: N/7 pairs per category) for a quick run")
    parser.add_argument("--quick", action="store_true", help=f"quick run: --limit {QUICK_LIMIT}, 200 bootstrap resamples")
    parser.add_argument("--presets", default="low,medium,high,max", help="presets of the intensity sweep")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for AUROC intervals (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("eval-results"), help="output folder")
    parser.add_argument("--update-readme", nargs="?", const=Path("README.md"), type=Path, default=None,
                        metavar="README", help="rewrite the results section of README (default README.md)")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="do not evaluate: rewrite the report, plots and README from an evaluation.json")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--previous-weights", default="auto",
                        help="earlier ES weights compared side by side as 'ES before' ('auto': the file for this "
                             "encoder under weights/previous/, if any; 'none': leave out)")


def _load_es(encoder, weights: str):
    from ..encoders.select import default_weights_path
    from ..weights_io import load_es

    path = Path(weights) if weights else default_weights_path(encoder)
    if path is None:
        return None, {}, "no weights"
    model, meta = load_es(path, encoder_name=encoder.name, encoder_fingerprint=encoder.fingerprint,
                          width=encoder.width, device=encoder.device)
    meta["file"] = path.name
    return model, meta, path.name


def _load_previous(encoder, spec: str):
    """(model, meta) of the earlier weights to compare against, or None."""
    from ..paths import WEIGHTS_DIR
    from ..weights_io import load_es

    if spec == "none":
        return None
    paths = sorted((WEIGHTS_DIR / "previous").glob("*.safetensors")) if spec == "auto" else [Path(spec)]
    for path in paths:
        try:
            model, meta = load_es(path, encoder_name=encoder.name, encoder_fingerprint=encoder.fingerprint,
                                  width=encoder.width, device=encoder.device)
        except Exception as exc:  # noqa: BLE001 - another encoder's file: not a baseline for this one
            if spec != "auto":
                raise
            print(f"note: {path.name} is not a baseline for {encoder.name} ({exc})", file=sys.stderr)
            continue
        meta["file"] = path.name
        return model, meta
    return None


def run(args) -> int:
    import torch

    from ..encoders.base import short_fingerprint
    from ..encoders.select import load_encoder
    from ..evaluation.datasets import load_data
    from ..evaluation.erasure_data import load_erasure_data
    from ..evaluation.report import public_command, write_outputs
    from ..evaluation.runner import Evaluation, environment

    if args.from_json:
        results = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        write_outputs(results, args.out, readme=args.update_readme)
        print(f"report rewritten in {args.out}")
        return 0
    limit = args.limit if args.limit is not None else (QUICK_LIMIT if args.quick else None)
    bootstrap = min(args.bootstrap, 200) if args.quick else args.bootstrap
    start = time.perf_counter()
    spec = str(args.checkpoint) if args.checkpoint else args.encoder
    encoder = load_encoder(spec, device=args.device, component=args.component)
    es_model, es_meta, es_file = _load_es(encoder, args.weights)
    data = load_data(args.data, limit=limit, files=args.files, seed=args.seed)
    presets = tuple(p.strip() for p in args.presets.split(",") if p.strip())
    if "medium" not in presets:
        presets = ("medium",) + presets
    erasure = load_erasure_data(args.data, data, limit=limit, seed=args.seed)
    previous = _load_previous(encoder, getattr(args, "previous_weights", "auto"))
    evaluation = Evaluation(encoder, data, es_model, es_meta, presets=presets, bootstrap=bootstrap,
                            progress=not args.no_progress, seed=args.seed, erasure=erasure, previous=previous)
    results = evaluation.run_all()
    results["meta"] = {
        **environment(),
        "threads": torch.get_num_threads(),
        "command": public_command(sys.argv),
        "encoder": encoder.name,
        "encoder_spec": "bundled" if spec in ("bundled", "") else Path(spec).name,
        "encoder_fingerprint": short_fingerprint(encoder.fingerprint),
        "width": encoder.width,
        "es_weights": es_file,
        "previous_es_weights": previous[1]["file"] if previous else "",
        "es_concepts": es_meta.get("concepts", []),
        "limit": limit,
        "quick": bool(args.quick),
        "bootstrap": bootstrap,
        "presets": list(presets),
        "data_sources": data.sources,
        "sizes": data.sizes(),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    paths = write_outputs(results, args.out, readme=args.update_readme)
    from ..evaluation.report import console_summary

    print(console_summary(results))
    print("written: " + ", ".join(str(p) for p in paths))
    return 0
