"""``python -m embedding_sanitizer demo "a prompt"``: sanitize one prompt and show the heatmap.

The prompt is read with the host's weight syntax first (``--syntax``, default a1111:
``(nude:1.4)`` is the word ``nude`` with weight 1.4; ``prompt_syntax``), and the plain
text is encoded. Counts are of words as shown. With ``--json`` stdout carries the JSON
report alone and the heatmap text goes to stderr. On a terminal, progress lines on
stderr cover the start-up (loading the encoder takes most of it).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..prompt_syntax import SYNTAXES
from .settings_args import add_settings_arguments, prepare


def configure(parser) -> None:
    parser.add_argument("prompt", nargs="+", help="the prompt to sanitize")
    add_settings_arguments(parser)
    parser.add_argument("--syntax", choices=SYNTAXES, default="a1111",
                        help="prompt weight syntax: a1111 (default; also Forge), comfyui, or none (as written)")
    parser.add_argument("--png", type=Path, help="also write the heatmap picture here")
    parser.add_argument("--json", action="store_true",
                        help="print the full JSON report alone on stdout (the heatmap text goes to stderr)")
    parser.add_argument("--no-color", action="store_true", help="plain text heatmap")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


class Progress:
    """One line per start-up stage on stderr, when stderr is a terminal (scripts see only results)."""

    def __init__(self, stream, enabled: bool | None = None) -> None:
        self.stream = stream
        if enabled is None:
            try:
                enabled = bool(stream.isatty())
            except Exception:  # noqa: BLE001 - a stream without isatty is not a terminal
                enabled = False
        self.enabled = enabled

    def __call__(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)


def run(args, progress: Progress | None = None) -> int:
    progress = progress or Progress(sys.stderr, False if args.quiet else None)
    progress(f"loading encoder {args.encoder} and weights ...")
    from ..heatmap import records_json, render_png, render_terminal, should_color, word_records
    from ..prompt_syntax import parse_prompt
    from ..sanitize import Sanitizer

    parsed = parse_prompt(" ".join(args.prompt), args.syntax)
    prompt = parsed.text
    setup = prepare(args)
    encoder, settings = setup.encoder, setup.settings
    progress("scoring ...")
    batch, out = encoder.encode_texts([prompt])
    result = Sanitizer(encoder, setup.es_model, setup.es_meta).sanitize(out.tokens, batch.ids, encoder.layout,
                                                                         settings, pieces=batch.pieces, texts=[prompt])
    words = parsed.annotate(word_records(batch.pieces[0], result.scores[0].tolist(), result.weights[0].tolist(),
                                         result.flagged[0].tolist()))
    info = result.report["prompts"][0]
    flagged_words = sum(w.flagged for w in words)
    summary = (f"encoder {encoder.name} | mode {settings.mode} | preset {settings.preset} | intensity "
               f"{settings.effective_intensity:g} | {flagged_words} word(s) flagged, "
               f"{sum(w.edit > 0 for w in words)} word(s) edited, {info['rows_edited']} row(s) edited")
    if info.get("prompt_score") is not None:
        summary += f" | whole prompt {info['prompt_score']:.2f}"

    text_out = sys.stderr if args.json else sys.stdout  # --json: stdout is the JSON alone
    print(render_terminal(words, color=should_color(text_out) and not args.no_color), file=text_out)
    print(summary, file=text_out)
    if info["concepts"]:
        print("concepts: " + ", ".join(f"{k} ({v})" for k, v in info["concepts"].items()), file=text_out)
    for note in _notes(parsed, result.report["notes"]):
        print("note: " + note, file=text_out)
    if args.png:
        render_png(words, title=summary, path=args.png)
        print(f"heatmap written to {args.png}", file=text_out)
    if args.json:
        report = dict(result.report)
        report["words"] = records_json(words)
        report["prompt_syntax"] = {"syntax": parsed.syntax, "text": prompt, "extra_networks": parsed.extra_networks,
                                   "breaks": parsed.breaks, "notes": parsed.notes}
        print(json.dumps(report, indent=2))
    return 0


def _notes(parsed, report_notes: list[str]) -> list[str]:
    notes = list(parsed.notes)
    if parsed.weighted:
        notes.append(f"prompt weights ({parsed.syntax} syntax) are shown next to the words; the demo scores "
                     f"the plain text {parsed.text.strip()!r}")
    for note in report_notes:
        if note.startswith("prompt 0: "):  # the normalised-text check
            notes.append(note[len("prompt 0: "):])
    return notes

