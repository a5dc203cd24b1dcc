"""``python -m embedding_sanitizer bench``: what each method adds to the text-encoder pass.

Times the bundled encoder and a random-weight CLIP ViT-L/14-shaped text model
(SD1.x's encoder cost) at batch 1, 8 and 32, on CPU and, when available, on
the GPU; prints the ratios and the targets and writes ``bench.json`` and
``bench.md``.
"""
from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path


def configure(parser) -> None:
    parser.add_argument("--encoder", default="bundled",
                        help="the first encoder to time: 'bundled', a local SD checkpoint .safetensors or a "
                             "transformers folder (the ViT-L/14-shaped random model is always timed too)")
    parser.add_argument("--weights", default="", help="ES weights for --encoder (default: the shipped ones, if any)")
    parser.add_argument("--batches", default="1,8,32", help="batch sizes")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per cell (median; default 9, 3 with --quick or --concepts-only)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up repeats per cell")
    parser.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up, leave-one-out up to batch 8, small calibration corpus")
    parser.add_argument("--no-vit", action="store_true", help="skip the ViT-L/14-shaped model")
    parser.add_argument("--no-gpu", action="store_true", help="CPU only even when CUDA is available")
    parser.add_argument("--no-calibration", action="store_true", help="skip the calibration throughput")
    parser.add_argument("--calibration-prompts", type=int, default=None,
                        help="corpus prompts for the calibration throughput (default 200, quick 100)")
    parser.add_argument("--out", type=Path, default=Path("eval-results"), help="output folder")
    parser.add_argument("--loo-max-batch", type=int, default=None,
                        help="time the leave-one-out detector only up to this batch size (quick: 8)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--concepts-only", type=int, default=None, metavar="N",
                        help="only time building the concept subspace for N concepts on the ViT-L/14-shaped "
                             "model (median of --repeats, default 3 here); prints one JSON line")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")


def run(args) -> int:
    import torch

    from ..encoders.select import default_weights_path, load_encoder
    from ..evaluation.bench import console, markdown, run_bench, vit_l14_text_encoder
    from ..evaluation.report import public_command

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.concepts_only is not None:
        return concepts_only(args)
    repeats = args.repeats or (3 if args.quick else 9)
    warmup = 1 if args.quick else args.warmup
    batches = tuple(int(b) for b in args.batches.split(",") if b.strip())
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.no_gpu else [])
    encoders = []
    for device in devices:
        first = load_encoder(args.encoder, device=device)
        weights = Path(args.weights) if args.weights else default_weights_path(first)
        encoders.append((f"{first.name} ({device})", first, weights))
        if not args.no_vit:
            encoders.append((f"CLIP ViT-L/14 text, random weights ({device})", vit_l14_text_encoder(device=device),
                             None))
    prompts = args.calibration_prompts or (100 if args.quick else 200)
    results = run_bench(encoders, repeats=repeats, warmup=warmup, batches=batches,
                        calibration=not args.no_calibration, calibration_prompts=prompts,
                        calibration_encoders=1 if args.quick else None,
                        loo_max_batch=args.loo_max_batch or (8 if args.quick else None),
                        show_progress=not args.no_progress)
    command = public_command(sys.argv)
    date = _dt.date.today().isoformat()
    results["meta"] = {"date": date, "command": command, "repeats": repeats, "warmup": warmup}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (args.out / "bench.md").write_text(markdown(results, command, date), encoding="utf-8")
    print(console(results))
    print(f"written: {args.out / 'bench.json'}, {args.out / 'bench.md'}")
    return 0


def concepts_only(args) -> int:
    from ..evaluation.bench import vit_l14_text_encoder
    from ..evaluation.concept_bench import time_concepts
    from ..settings import MAX_CONCEPT_LIST

    if not 1 <= args.concepts_only <= MAX_CONCEPT_LIST:
        raise ValueError(f"--concepts-only takes 1 to {MAX_CONCEPT_LIST} concepts, got {args.concepts_only}")
    result = time_concepts(vit_l14_text_encoder(), args.concepts_only, repeats=args.repeats or 3)
    print(json.dumps(result))
    return 0
