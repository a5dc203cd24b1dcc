"""``python -m embedding_sanitizer <command>``: demo, train, evaluate, bench, scan.

Each command lives in ``embedding_sanitizer/commands/<name>.py`` with
``configure(parser)`` and ``run(args) -> int``; modules are imported only when
their command runs, so a missing optional dependency of one command never
breaks the others.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

COMMANDS = {
    "demo": "Sanitize one prompt with the bundled encoder and print the token heatmap.",
    "train": "Calibrate the learned sanitizer (ES) for a text encoder from a synthetic corpus.",
    "evaluate": "Measure every method side by side on real prompt sets; write JSON, Markdown and plots.",
    "bench": "Measure the cost of every method relative to the text-encoder pass.",
    "scan": "Score and sanitize every prompt of a .txt, .csv or .jsonl file; one JSON line per prompt.",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedding_sanitizer", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if a in COMMANDS), None)
    modules = {}
    for name, help_text in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only the chosen command's module is imported
            modules[name] = importlib.import_module(f"embedding_sanitizer.commands.{name}")
            modules[name].configure(command_parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(modules[args.command].run(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # permissions, a full disk: one line, no traceback
        where = f" ({Path(exc.filename).name})" if getattr(exc, "filename", None) else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
