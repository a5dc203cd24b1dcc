"""``python -m embedding_sanitizer demo "a prompt"``: sanitize one prompt and show the heatmap."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .settings_args import add_settings_arguments, prepare


def configure(parser) -> None:
    parser.add_argument("prompt", nargs="+", help="the prompt to sanitize")
    add_settings_arguments(parser)
    parser.add_argument("--png", type=Path, help="also write the heatmap picture here")
    parser.add_argument("--json", action="store_true", help="print the full JSON report")
    parser.add_argument("--no-color", action="store_true", help="plain text heatmap")


def run(args) -> int:
    from .. import Sanitizer
    from ..heatmap import group_words, render_png, render_terminal, should_color

    prompt = " ".join(args.prompt)
    setup = prepare(args)
    encoder, settings = setup.encoder, setup.settings
    mode = settings.mode
    batch, out = encoder.encode_texts([prompt])
    result = Sanitizer(encoder, setup.es_model, setup.es_meta).sanitize(out.tokens, batch.ids, encoder.layout,
                                                                         settings, pieces=batch.pieces, texts=[prompt])
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
