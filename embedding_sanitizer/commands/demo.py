"""``python -m embedding_sanitizer demo "a prompt"``: sanitize one prompt and show the heatmap."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..settings import FIELD_BY_NAME, MODES, PRESET_CHOICES


def configure(parser) -> None:
    parser.add_argument("prompt", nargs="+", help="the prompt to sanitize")
    parser.add_argument("--encoder", default="bundled",
                        help="'bundled' (all-MiniLM-L6-v2), a local SD checkpoint .safetensors, or a transformers folder")
    parser.add_argument("--mode", choices=MODES + ("auto",), default="auto",
                        help="auto: es+safree when calibrated weights for the encoder exist, else safree")
    parser.add_argument("--preset", choices=PRESET_CHOICES, default="custom")
    parser.add_argument("--intensity", type=float, default=1.0, help="0 = identity, 1 = operating point (used with --preset custom, the default)")
    parser.add_argument("--concepts", default=FIELD_BY_NAME["concepts"].default)
    parser.add_argument("--detector", choices=("fast", "loo"), default="fast")
    parser.add_argument("--weights", default="", help="ES weights .safetensors (default: the shipped ones, if any)")
    parser.add_argument("--png", type=Path, help="also write the heatmap picture here")
    parser.add_argument("--json", action="store_true", help="print the full JSON report")
    parser.add_argument("--no-color", action="store_true", help="plain text heatmap")


def run(args) -> int:
    from .. import Sanitizer, Settings
    from ..encoders.select import default_weights_path, load_encoder
    from ..heatmap import group_words, render_png, render_terminal, should_color
    from ..weights_io import load_es

    prompt = " ".join(args.prompt)
    encoder = load_encoder(args.encoder)
    weights = Path(args.weights) if args.weights else default_weights_path(encoder)
    mode = args.mode if args.mode != "auto" else ("es+safree" if weights else "safree")
    es_model, es_meta = None, {}
    if mode in ("es", "es+safree"):
        if weights is None:
            raise FileNotFoundError(f"mode {mode!r} needs calibrated weights for {encoder.name}: run "
                                    "`python -m embedding_sanitizer train` or pass --weights")
        es_model, es_meta = load_es(weights, encoder_name=encoder.name, encoder_fingerprint=encoder.fingerprint,
                                    width=encoder.width)
        es_meta["file"] = weights.name
    settings = Settings(mode=mode, preset=args.preset, intensity=args.intensity, concepts=args.concepts,
                        detector=args.detector)
    batch, out = encoder.encode_texts([prompt])
    result = Sanitizer(encoder, es_model, es_meta).sanitize(out.tokens, batch.ids, encoder.layout, settings,
                                                             pieces=batch.pieces, texts=[prompt])
    words = group_words(batch.pieces[0], result.scores[0].tolist())
    info = result.report["prompts"][0]
    summary = (f"encoder {encoder.name} | mode {mode} | preset {settings.preset} | intensity "
               f"{settings.effective_intensity:g} | {info['flagged']} token(s) flagged, {info['rows_edited']} row(s) edited")
    if info.get("prompt_score") is not None:
        summary += f" | whole prompt {info['prompt_score']:.2f}"
    print(render_terminal(words, color=should_color(sys.stdout) and not args.no_color))
    print(summary)
    if info["concepts"]:
        print("concepts: " + ", ".join(f"{k} ({v})" for k, v in info["concepts"].items()))
    for note in result.report["notes"]:
        if note.startswith("prompt 0: "):  # the normalised-text check
            print("note: " + note[len("prompt 0: "):])
    if args.json:
        print(json.dumps(result.report, indent=2))
    if args.png:
        render_png(words, title=summary, path=args.png)
        print(f"heatmap written to {args.png}")
    return 0
