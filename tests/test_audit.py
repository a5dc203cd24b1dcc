"""The audit log: what a record stores of the prompt, size-based rotation, clear errors."""
import json

import pytest

from embedding_sanitizer.audit import AuditError, AuditLog, prompt_field
from embedding_sanitizer.policy import AuditConfig


def entry(log, i):
    return log.entry(host="test", request_id=str(i), prompt=f"prompt {i}", flagged=[{"word": "x", "score": 0.9}],
                     edit_weight=1.0, settings={"mode": "safree"}, notes=["n"])


@pytest.mark.parametrize("store,keys", [("hash", {"prompt_sha256"}), ("text", {"prompt"}), ("none", set())])
def test_store_prompt(store, keys):
    assert set(prompt_field("a nude", store)) == keys
    if store == "hash":
        assert prompt_field("a nude", store) != prompt_field("a nude ", store)


def test_lines_and_rotation(tmp_path):
    log = AuditLog(AuditConfig(str(tmp_path / "a" / "audit.jsonl"), "text", max_bytes=1024, backups=2))
    log.write([entry(log, i) for i in range(40)])
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for name in files:
        text = (tmp_path / "a" / name).read_text()
        assert len(text.encode()) <= 1024
        for line in text.splitlines():
            record = json.loads(line)
            assert record["host"] == "test" and record["prompt"].startswith("prompt ") and record["time"].endswith("+00:00")
    newest = [json.loads(line)["request_id"] for line in (tmp_path / "a" / "audit.jsonl").read_text().splitlines()]
    assert newest[-1] == "39"


def test_no_backups_starts_again(tmp_path):
    log = AuditLog(AuditConfig(str(tmp_path / "audit.jsonl"), "none", max_bytes=1024, backups=0))
    log.write([entry(log, i) for i in range(40)])
    assert [p.name for p in tmp_path.iterdir()] == ["audit.jsonl"]
    assert 0 < (tmp_path / "audit.jsonl").stat().st_size <= 1024


def test_unwritable_log_names_the_file(tmp_path):
    (tmp_path / "audit.jsonl").mkdir()
    log = AuditLog(AuditConfig(str(tmp_path / "audit.jsonl")))
    with pytest.raises(AuditError, match="audit.jsonl cannot be written"):
        log.write([entry(log, 0)])
