"""``python -m embedding_sanitizer <command>``: demo, train, evaluate, bench, scan, fuzz.

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
    "fuzz": "Fuzz the core API with random inputs; print crashes, silent no-ops and invariant violations.",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedding_sanitizer", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if a in COMMANDS), None)
    modules, parsers = {}, {}
    for name, help_text in COMMANDS.items():
        command_parser = parsers[name] = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only the chosen command's module is imported
            modules[name] = importlib.import_module(f"embedding_sanitizer.commands.{name}")
            modules[name].configure(command_parser)
    args = parser.parse_args(argv)
    check_flags = getattr(args, "check_flags", None)  # flags that contradict each other (settings_args)
    if check_flags is not None:
        check_flags(parsers[args.command], args)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(modules[args.command].run(args) or 0)
    except (OSError, ValueError) as exc:  # the documented clear errors (bad file, bad input, bad setting)
        if args.verbose:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - anything else: still one line, the traceback with -v
        if args.verbose:
            raise
        print(f"error: {type(exc).__name__}: {_one_line(exc)} (run with -v for the traceback)", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
