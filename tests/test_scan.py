"""``python -m embedding_sanitizer scan``: input formats, the output contract, embeddings, policy, errors.

Runs the bundled encoder with the shipped weights (weights/es-all-minilm-l6-v2.safetensors).
The encoder is loaded once per session: ``load_encoder_checked`` is memoised, the loading
itself is the real one.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from embedding_sanitizer.cli import main
from embedding_sanitizer.commands import settings_args
from embedding_sanitizer.commands.scan_input import ScanInputError, read_prompts
from embedding_sanitizer.commands.scan_records import PromptScanner
from embedding_sanitizer.paths import ROOT_DIR, WEIGHTS_DIR

WEIGHTS = WEIGHTS_DIR / "es-all-minilm-l6-v2.safetensors"
CONTRACT = ("index", "line", "prompt", "prompt_score", "flagged", "edited", "max_edit_weight", "residual_score",
            "settings", "notes")
UNSAFE = "a naked woman on a beach"
BENIGN = "a red bicycle leaning against a brick wall"


@pytest.fixture(autouse=True)
def one_encoder(monkeypatch):
    real = settings_args.load_encoder_checked
    cache = _ENCODERS

    def cached(spec, device):
        key = (spec, device)
        if key not in cache:
            cache[key] = real(spec, device)
        return cache[key]

    monkeypatch.setattr(settings_args, "load_encoder_checked", cached)


_ENCODERS: dict = {}


def scan(tmp_path, name: str, content: str, *extra: str, out_name: str = "out.jsonl"):
    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    out = tmp_path / out_name
    rc = main(["scan", "--input", str(src), "--out", str(out), "--no-progress", *extra])
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] if out.exists() else []
    return rc, records


# ------------------------------------------------------------------------------ input formats
def test_txt_one_prompt_a_line_empty_lines_kept(tmp_path, capsys):
    rc, records = scan(tmp_path, "p.txt", f"{UNSAFE}\n\n{BENIGN}\r\n   \n")
    assert rc == 0
    assert [r["prompt"] for r in records] == [UNSAFE, "", BENIGN, "   "]
    assert [r["index"] for r in records] == [0, 1, 2, 3] and [r["line"] for r in records] == [1, 2, 3, 4]
    assert "empty prompt: nothing to flag" in records[1]["notes"] and not records[1]["edited"]
    assert records[1]["flagged"] == [] and records[3]["flagged"] == []
    err = capsys.readouterr().err
    assert "scan: 4 prompts, 1 flagged, 1 edited" in err and "Traceback" not in err


def test_csv_header_detected_and_quoted_commas(tmp_path):
    content = f'id,Prompt,label\n1,"{UNSAFE}, at night",x\n2,{BENIGN},y\n\n3,"",z\n'
    rc, records = scan(tmp_path, "p.csv", content)
    assert rc == 0
    assert [r["prompt"] for r in records] == [f"{UNSAFE}, at night", BENIGN, ""]
    assert [r["line"] for r in records] == [2, 3, 5]


def test_csv_column_flag_and_multiline_cell(tmp_path):
    content = f'caption,other\n"{UNSAFE}\nsecond line",1\n{BENIGN},2\n'
    rc, records = scan(tmp_path, "p.csv", content, "--column", "caption")
    assert rc == 0 and [r["prompt"] for r in records] == [f"{UNSAFE}\nsecond line", BENIGN]
    assert [r["line"] for r in records] == [2, 4]


def test_headerless_csv_is_one_prompt_a_line(tmp_path):
    content = f"{UNSAFE}, sunset, 4k\n{BENIGN}\n\n\"quoted, prompt\"\n"
    prompts = read_prompts(_write(tmp_path, "h.csv", content))
    assert [p.text for p in prompts] == [f"{UNSAFE}, sunset, 4k", BENIGN, "", "quoted, prompt"]
    assert [p.line for p in prompts] == [1, 2, 3, 4]


def test_csv_header_without_the_column_is_an_error(tmp_path, capsys):
    rc, records = scan(tmp_path, "p.csv", "case_number,source,caption\n1,coco,a cat\n2,coco,a dog\n")
    err = capsys.readouterr().err
    assert rc == 2 and records == []
    assert "p.csv line 1" in err and "'prompt'" in err and "--column" in err and "Traceback" not in err
    rc, _ = scan(tmp_path, "p.csv", "a,b\n1,2\n", "--column", "text")
    assert rc == 2 and "no column 'text'" in capsys.readouterr().err


def test_csv_short_row_names_the_line(tmp_path):
    with pytest.raises(ScanInputError, match=r"s\.csv line 3: 1 field\(s\)"):
        read_prompts(_write(tmp_path, "s.csv", "id,prompt\n1,a cat\n2\n"))


def test_jsonl_prompt_key_and_column(tmp_path):
    content = json.dumps({"prompt": UNSAFE, "id": 1}) + "\n\n" + json.dumps({"prompt": BENIGN}) + "\n"
    rc, records = scan(tmp_path, "p.jsonl", content)
    assert rc == 0 and [r["prompt"] for r in records] == [UNSAFE, BENIGN] and [r["line"] for r in records] == [1, 3]
    prompts = read_prompts(_write(tmp_path, "q.jsonl", json.dumps({"text": "ünïcode ok"}) + "\n"), "text")
    assert prompts[0].text == "ünïcode ok"


@pytest.mark.parametrize("line,message", [
    (json.dumps({"text": "x"}), "line 2: no 'prompt' key"),
    (json.dumps({"prompt": 5}), "line 2: 'prompt' must be a string"),
    ("[1, 2]", "line 2: expected a JSON object"),
    ("{not json", "line 2: not valid JSON"),
    ('{"prompt": "bad \\ud800 surrogate"}', "line 2: the prompt contains an unpaired UTF-16 surrogate"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, line, message):
    path = _write(tmp_path, "bad.jsonl", json.dumps({"prompt": "ok"}) + "\n" + line + "\n")
    with pytest.raises(ScanInputError, match="bad.jsonl " + _re(message)):
        read_prompts(path)


# ------------------------------------------------------------------------------ output contract
def test_output_fields_and_values(tmp_path):
    prompts = [BENIGN, UNSAFE, "a photo of a cat", "a bloody corpse in the street"]
    rc, records = scan(tmp_path, "p.txt", "\n".join(prompts) + "\n")
    assert rc == 0 and len(records) == len(prompts)
    for i, (record, prompt) in enumerate(zip(records, prompts)):
        assert tuple(record) == CONTRACT
        assert record["index"] == i and record["prompt"] == prompt
        assert 0.0 <= record["prompt_score"] <= 1.0 and 0.0 <= record["residual_score"] <= 1.0
        assert record["edited"] == (record["max_edit_weight"] > 0)
        assert record["settings"]["mode"] == "es+safree" and record["settings"]["weights"] == WEIGHTS.name
        assert isinstance(record["notes"], list)
        for word in record["flagged"]:
            assert set(word) == {"word", "score"} and word["word"] in prompt and not word["word"].startswith("##")
        if not record["edited"]:  # nothing changed: the detector sees the same embedding
            assert record["residual_score"] == record["prompt_score"]
    benign, unsafe = records[0], records[1]
    assert not benign["edited"] and benign["flagged"] == []
    assert unsafe["edited"] and "naked" in [w["word"] for w in unsafe["flagged"]]
    assert unsafe["prompt_score"] > 0.5 > benign["prompt_score"]


def test_records_match_the_sanitizer_and_do_not_depend_on_the_batch(tmp_path):
    prompts = [UNSAFE, BENIGN, " ".join(["a long prompt about a quiet garden with flowers"] * 12), "nude", ""]
    content = "\n".join(prompts) + "\n"
    _, one = scan(tmp_path, "p.txt", content, "--batch-size", "1", out_name="one.jsonl")
    _, many = scan(tmp_path, "p.txt", content, "--batch-size", "4", out_name="many.jsonl")
    for a, b in zip(one, many):
        assert a["flagged"] == b["flagged"] or [w["word"] for w in a["flagged"]] == [w["word"] for w in b["flagged"]]
        assert a["edited"] == b["edited"] and a["notes"] == b["notes"]
        for key in ("prompt_score", "residual_score", "max_edit_weight"):
            assert a[key] == pytest.approx(b[key], abs=2e-4)
    # the whole-prompt score is the one the sanitizer reports (demo's "whole prompt")
    from embedding_sanitizer import Sanitizer, Settings
    from embedding_sanitizer.weights_io import load_es

    encoder = settings_args.load_encoder_checked("bundled", "cpu")
    model, meta = load_es(WEIGHTS)
    batch, out = encoder.encode_texts([UNSAFE])
    result = Sanitizer(encoder, model, meta).sanitize(out.tokens, batch.ids, encoder.layout, Settings(mode="es+safree"))
    assert one[0]["prompt_score"] == pytest.approx(result.report["prompts"][0]["prompt_score"], abs=1e-4)


def test_flagged_pieces_are_merged_into_words():
    pieces = ["[CLS]", "a", "na", "##ked", "woman", "[SEP]", "[PAD]"]
    scores = torch.tensor([0.0, 0.1, 0.4, 0.9, 0.2, 0.0, 0.0])
    flags = torch.tensor([False, False, False, True, False, False, False])
    assert PromptScanner._flagged_words(pieces, scores, flags) == [{"word": "naked", "score": 0.9}]


def test_embeddings_file(tmp_path):
    prompts = [BENIGN, UNSAFE, "", "a bloody corpse in the street", "two dogs playing in the snow"]
    emb = tmp_path / "e.safetensors"
    rc, records = scan(tmp_path, "p.txt", "\n".join(prompts) + "\n", "--embeddings", str(emb), "--batch-size", "2")
    assert rc == 0
    with safe_open(str(emb), framework="pt") as handle:
        meta = handle.metadata()
        original, sanitized = handle.get_tensor("original"), handle.get_tensor("sanitized")
    assert original.shape == sanitized.shape == (len(prompts), 384)
    assert original.dtype == sanitized.dtype == torch.float32
    assert meta["encoder"] == "all-MiniLM-L6-v2" and json.loads(meta["settings"]) == records[0]["settings"]
    changed = (original != sanitized).any(-1).tolist()
    assert changed == [r["edited"] for r in records] and any(changed) and not all(changed)
    # the mean of the prompt's own non-padding rows, whatever else was in the batch
    encoder = settings_args.load_encoder_checked("bundled", "cpu")
    batch, out = encoder.encode_texts([BENIGN])
    keep = batch.ids[0] != 0
    assert torch.allclose(original[0], out.tokens[0][keep].mean(0), atol=1e-5)


# ------------------------------------------------------------------------------ policy
def test_locked_policy_forces_mode_raises_intensity_and_adds_concepts(tmp_path):
    policy = _write(tmp_path, "policy.json", json.dumps(
        {"locked": True, "min_intensity": 1.5, "forced_mode": "safree", "required_concepts": ["gore"]}))
    rc, records = scan(tmp_path, "p.txt", f"{UNSAFE}\n{BENIGN}\n", "--policy", str(policy), "--mode", "es",
                       "--intensity", "0.5", "--concepts", "nudity")
    assert rc == 0
    for record in records:
        settings = record["settings"]
        assert settings["mode"] == "safree" and settings["intensity"] == 1.5 and settings["preset"] == "custom"
        assert settings["concepts"] == "nudity" and settings["required_concepts"] == ["gore"]
        assert settings["effective_intensity"] == 1.5 and settings["threshold"] == 0.5
        notes = record["notes"]
        assert any(n.startswith("admin policy (policy.json): mode forced to 'safree' by policy") for n in notes)
        assert "admin policy (policy.json): intensity raised to the policy floor 1.5" in notes
        assert "admin policy (policy.json): concepts required by policy are removed as their own list: ['gore']" in notes
    assert records[0]["edited"] and records[0]["max_edit_weight"] == pytest.approx(1.5)
    # the weights still give the whole-prompt score in safree mode
    assert records[0]["prompt_score"] is not None


def test_locked_policy_replaces_a_bad_flag_with_its_default_and_says_so(tmp_path, capsys):
    """As in the hosts: under a lock, bad user input falls back to the policy default (with a note)."""
    policy = _write(tmp_path, "policy.json", json.dumps({"locked": True, "defaults": {"intensity": 1.0}}))
    rc, records = scan(tmp_path, "p.txt", f"{UNSAFE}\n", "--policy", str(policy), "--intensity", "9")
    assert rc == 0 and records[0]["settings"]["intensity"] == 1.0
    assert any("intensity" in n and "policy default" in n for n in records[0]["notes"])
    rc, records = scan(tmp_path, "p.txt", f"{UNSAFE}\n", "--intensity", "9")  # no lock: an error
    assert rc == 2 and "intensity" in capsys.readouterr().err


def test_policy_defaults_fill_flags_not_given(tmp_path):
    policy = _write(tmp_path, "policy.json", json.dumps({"defaults": {"preset": "high", "mode": "safree"}}))
    _, records = scan(tmp_path, "p.txt", f"{UNSAFE}\n", "--policy", str(policy))
    assert records[0]["settings"]["preset"] == "high" and records[0]["settings"]["mode"] == "safree"
    _, records = scan(tmp_path, "p.txt", f"{UNSAFE}\n", "--policy", str(policy), "--preset", "low")
    assert records[0]["settings"]["preset"] == "low" and records[0]["notes"] == ["projection detector: fast"]


def test_intensity_under_a_policy_preset_is_noted_not_silently_dropped(tmp_path, capsys):
    """--preset NAME --intensity X is a usage error; a preset from the policy's defaults gets a note instead."""
    policy = _write(tmp_path, "policy.json", json.dumps({"defaults": {"preset": "low"}}))
    rc, records = scan(tmp_path, "p.txt", f"{UNSAFE}\n", "--policy", str(policy), "--intensity", "2")
    assert rc == 0 and records[0]["settings"]["preset"] == "low"
    assert any("--intensity 2 is not used" in n and "'low'" in n for n in records[0]["notes"])
    with pytest.raises(SystemExit):
        scan(tmp_path, "p.txt", f"{UNSAFE}\n", "--preset", "low", "--intensity", "2")
    assert "--preset low sets the intensity itself" in capsys.readouterr().err


def test_a_broken_policy_stops_the_scan(tmp_path, capsys):
    policy = _write(tmp_path, "policy.json", '{"locked": true, "forced_mode": "off"}')
    rc, records = scan(tmp_path, "p.txt", f"{UNSAFE}\n", "--policy", str(policy))
    err = capsys.readouterr().err
    assert rc == 2 and records == [] and "policy.json" in err and "forced_mode" in err
    assert not list(tmp_path.glob("*.partial"))
    rc, _ = scan(tmp_path, "p.txt", f"{UNSAFE}\n", "--policy", str(tmp_path / "missing.json"))
    assert rc == 2 and "missing.json" in capsys.readouterr().err


def test_policy_audit_log(tmp_path):
    from embedding_sanitizer.audit import close_all

    logs = tmp_path / "logs"
    policy = _write(tmp_path, "policy.json", json.dumps({"locked": True, "audit": {"path": "logs/audit.jsonl"}}))
    rc, records = scan(tmp_path, "p.txt", f"{UNSAFE}\n{BENIGN}\n", "--policy", str(policy))
    assert rc == 0
    close_all()
    entries = [json.loads(line) for line in (logs / "audit.jsonl").read_text().splitlines()]
    assert [e["request_id"] for e in entries] == ["p.txt:1", "p.txt:2"]
    for entry, record in zip(entries, records):
        assert entry["host"] == "scan" and entry["store_prompt"] == "hash" and len(entry["prompts"]) == 1
        row = entry["prompts"][0]
        assert "text" not in row and len(row["sha256"]) == 64
        assert [t["token"] for t in row["flagged"]] == [w["word"] for w in record["flagged"]]
        assert row["max_weight"] == pytest.approx(record["max_edit_weight"], abs=1e-4)
        assert row["prompt_score"] == record["prompt_score"] and entry["settings"] == record["settings"]
        assert entry["notes"] == [n for n in record["notes"] if n.startswith("admin policy")]


@pytest.mark.parametrize("on_error", ["closed", "open"])
def test_an_unwritable_audit_log_follows_on_error(tmp_path, capsys, on_error):
    (tmp_path / f"audit-{on_error}.jsonl").mkdir()  # a folder where the log should be
    policy = _write(tmp_path, "policy.json", json.dumps({"audit": f"audit-{on_error}.jsonl", "on_error": on_error}))
    rc, records = scan(tmp_path, "p.txt", f"{UNSAFE}\n", "--policy", str(policy))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if on_error == "closed":
        assert rc == 2 and records == [] and "audit" in err and "the scan stops" in err
        assert not list(tmp_path.glob("*.partial"))
    else:
        assert rc == 0 and len(records) == 1


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("args,message", [
    (["--input", "{tmp}/none.txt"], "none.txt: input file not found"),
    (["--input", "{tmp}/p.tsv"], "unknown input format '.tsv'"),
    (["--input", "{tmp}/p.txt", "--weights", "{tmp}/broken.safetensors"], "ES weights broken.safetensors: not a readable"),
    (["--input", "{tmp}/p.txt", "--weights", "{tmp}/gone.safetensors"], "ES weights file not found: gone.safetensors"),
    (["--input", "{tmp}/p.txt", "--encoder", "{tmp}/nowhere"], "--encoder"),
    (["--input", "{tmp}/p.txt", "--encoder", "{tmp}/broken.safetensors"], "--encoder broken.safetensors"),
    (["--input", "{tmp}/p.txt", "--batch-size", "0"], "--batch-size"),
    (["--input", "{tmp}/p.txt", "--threads", "-1"], "--threads"),
    (["--input", "{tmp}/p.txt", "--embeddings", "{tmp}/e.npy"], "must end in .safetensors"),
    (["--input", "{tmp}/latin1.txt"], "latin1.txt: not UTF-8 text"),
    (["--input", "{tmp}/p.txt", "--device", "tpu:7"], "--device"),
])
def test_bad_input_gives_one_line_errors(tmp_path, capsys, args, message):
    (tmp_path / "p.txt").write_text("a cat\n", encoding="utf-8")
    (tmp_path / "p.tsv").write_text("a cat\n", encoding="utf-8")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00\x01not a safetensors file")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    rc = main(["scan", "--out", str(tmp_path / "o.jsonl"), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()


def test_module_entry_point_runs_without_a_tty(tmp_path):
    """The real command line: no progress bar when stderr is not a terminal, one summary line."""
    src = _write(tmp_path, "p.txt", f"{UNSAFE}\n{BENIGN}\n")
    out = tmp_path / "o.jsonl"
    proc = subprocess.run([sys.executable, "-m", "embedding_sanitizer", "scan", "--input", str(src), "--out", str(out)],
                          cwd=ROOT_DIR, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("scan: 2 prompts")
    assert len(out.read_text().splitlines()) == 2


def test_demo_and_scan_share_the_settings_flags(capsys):
    import argparse

    from embedding_sanitizer.commands import demo, scan as scan_command

    parsers = {}
    for name, module in (("demo", demo), ("scan", scan_command)):
        parsers[name] = argparse.ArgumentParser()
        module.configure(parsers[name])
    shared = ("--encoder", "--mode", "--preset", "--intensity", "--concepts", "--detector", "--weights", "--device")
    for flag in shared:
        a, b = (next(x for x in parsers[n]._actions if flag in x.option_strings) for n in ("demo", "scan"))
        assert (a.default, a.choices, a.type, a.help) == (b.default, b.choices, b.type, b.help)
    assert main(["demo", UNSAFE, "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "naked[" in out and "mode es+safree" in out and "whole prompt" in out


def _write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def _re(text: str) -> str:
    import re

    return re.escape(text)
