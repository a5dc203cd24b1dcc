"""``python -m embedding_sanitizer train``: calibrate ES weights for a text encoder.

    python -m embedding_sanitizer train --encoder bundled --concepts nudity,violence \
        --out weights/es-all-minilm-l6-v2.safetensors
    python -m embedding_sanitizer train --encoder path/to/sd15.safetensors \
        --concepts "nudity,violence,Van Gogh=an unknown painter" --out weights/es-sd15.safetensors
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..settings import DEFAULT_CONCEPTS, parse_concepts


def configure(parser) -> None:
    parser.add_argument("--encoder", default="bundled",
                        help="'bundled' (all-MiniLM-L6-v2), a local SD checkpoint .safetensors, or a local "
                             "transformers folder holding a CLIP text model")
    parser.add_argument("--component", default="auto", help="SDXL: clip_l or clip_g (default: auto)")
    parser.add_argument("--concepts", default=",".join(DEFAULT_CONCEPTS),
                        help="comma-separated concepts: built-in packs (nudity, violence and aliases such as nsfw, "
                             "gore) and any custom concept; 'concept=anchor' sets a custom concept's safe replacement")
    parser.add_argument("--concepts-file", type=Path,
                        help="read more concepts from a text or CSV file (one per line; a CSV's 'concept' column)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the weights (.safetensors)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds for the whole run; training stops early and keeps the best state")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--unsafe-prompts", type=int, default=None, help="corpus size (default: by concept count)")
    parser.add_argument("--benign-prompts", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--vocab-words", type=int, default=0,
                        help="benign filler words drawn from the encoder's tokenizer vocabulary (default 0: off)")
    parser.add_argument("--hidden", type=int, default=128, help="width of the sanitizer network")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--cache-dir", default="default",
                        help="where encoded corpora are cached ('none' disables; default ~/.cache/embedding-sanitizer)")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from earlier weights for the same encoder and architecture (fewer epochs needed)")
    parser.add_argument("--detector-junk-directions", type=int, default=0,
                        help="project this many junk directions out of the whole-prompt detector (default 0: "
                             "off; 1 makes it ignore adversarial-style junk at some cost in detection, see README)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out even when it holds a calibration for this encoder and concept list "
                             "that validated better (by default that file is kept and nothing is written)")
    parser.add_argument("--json", action="store_true", help="print the full summary as JSON")


def read_concepts(args) -> list[str]:
    concepts = list(parse_concepts(args.concepts)) if args.concepts else []
    if args.concepts_file:
        import csv

        path = Path(args.concepts_file)
        with open(path, newline="", encoding="utf-8") as handle:
            if path.suffix.lower() == ".csv":
                concepts += [row["concept"].strip() for row in csv.DictReader(handle) if row.get("concept")]
            else:
                concepts += [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    concepts = list(parse_concepts(concepts))
    if not concepts:
        raise ValueError("no concepts given: pass --concepts nudity,violence (and any of your own)")
    return concepts


def run(args) -> int:
    from tqdm import tqdm

    from ..encoders.select import load_encoder
    from ..train import calibrate

    concepts = read_concepts(args)
    if args.out.suffix != ".safetensors":
        raise ValueError(f"--out {args.out.name}: the weights file must end in .safetensors")
    encoder = load_encoder(args.encoder, device=args.device or "cpu", component=args.component) \
        if args.encoder != "bundled" else load_encoder("bundled", device=args.device or "cpu")
    bars: dict[str, tqdm] = {}

    def progress(done: int, total: int, message: str) -> None:
        phase = "train" if message.startswith(("training", "epoch")) else (
            "encode" if message.startswith("encoding") else "other")
        if phase == "other":
            tqdm.write(message, file=sys.stderr)
            return
        bar = bars.get(phase)
        if bar is None:
            bar = bars[phase] = tqdm(total=total, desc=phase, unit="batch" if phase == "encode" else "step",
                                     file=sys.stderr, dynamic_ncols=True)
        bar.total = max(bar.total or 0, total)
        bar.n = min(done, bar.total)
        bar.set_postfix_str(message.split(": ", 1)[-1][:60], refresh=False)
        bar.refresh()
        if message.startswith("epoch"):
            tqdm.write(message, file=sys.stderr)

    cache = None if str(args.cache_dir).lower() == "none" else args.cache_dir
    summary = calibrate(encoder, concepts, args.out, progress=progress, time_budget_s=args.time_budget,
                        seed=args.seed, n_unsafe=args.unsafe_prompts, n_benign=args.benign_prompts,
                        epochs=args.epochs, hidden=args.hidden, threads=args.threads, layers=args.layers, device=args.device,
                        cache_dir=cache, vocab_words=args.vocab_words, init_weights=args.init,
                        detector_junk_directions=args.detector_junk_directions, keep_better=not args.overwrite)
    for bar in bars.values():
        bar.close()
    history = summary.pop("history")
    val = summary["validation"]
    times = summary["time_s"]
    if summary.get("kept_earlier"):
        print(f"not saved: {summary['kept_earlier']['reason']}")
    else:
        print(f"saved {summary['out']}")
    print(f"encoder {summary['encoder']} (width {summary['width']}) | {summary['concepts']} concepts "
          f"(packs: {', '.join(summary['packs']) or 'none'}; custom: {summary['custom_concepts']})")
    print(f"corpus {summary['prompts']} prompts -> {summary['chunks_encoded']} chunks encoded"
          f"{' (from cache)' if summary['encode_cached'] else ''}; {summary['epochs']} epochs ({summary['stopped_by']})")
    print(f"validation (held-out synthetic prompts): token AUROC {val.get('token_auroc', float('nan')):.4f}, "
          f"chunk AUROC {val.get('chunk_auroc', float('nan')):.4f}, gap left {val.get('erase', float('nan')):.3f}, "
          f"benign chunks edited {val.get('benign_chunks_edited', float('nan')):.3f}, "
          f"whole-prompt detector AUROC {val.get('prompt_auroc', float('nan')):.4f}")
    print(f"time: corpus {times['corpus']} s, encode {times['encode']} s, train {times['train']} s, "
          f"whole-prompt detector {times.get('detector', 0)} s, "
          f"total {times['total']} s")
    if args.json:
        print(json.dumps({**summary, "history": history}, indent=2))
    return 0
