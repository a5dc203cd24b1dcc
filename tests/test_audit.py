"""The audit log: JSONL lines, prompt storage, rotation, off-thread writes, failures per on_error."""
import errno
import hashlib
import json
import logging
import threading

import pytest

from embedding_sanitizer import Sanitizer
from embedding_sanitizer import audit as audit_module
from embedding_sanitizer.audit import AuditError, AuditLog, prompt_sha256
from embedding_sanitizer.encoders.minilm import MiniLMEncoder
from embedding_sanitizer.policy import AuditConfig, Policy
from embedding_sanitizer.settings import Settings

NAKED = "a naked woman on a beach"


def lines(path):
    return [json.loads(line) for line in open(path, encoding="utf-8").read().splitlines()]


def policy_with(tmp_path, **audit):
    audit.setdefault("path", "audit.jsonl")
    return Policy.from_json(json.dumps({"locked": True, "required_concepts": ["nudity"], "audit": audit}),
                            "policy.json", tmp_path)


def fake_report(score=0.9):
    return {"settings": Settings().to_dict(), "notes": ["projection detector: fast"],
            "prompts": [{"rows_edited": 5, "max_score": score, "prompt_score": None,
                         "tokens": [{"position": 2, "token": "naked", "score": score, "weight": 1.0,
                                     "flagged": True, "concept": "nudity"},
                                    {"position": 3, "token": "woman", "score": 0.1, "weight": 0.0,
                                     "flagged": False}]}]}


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder()


def test_from_policy_is_none_without_audit():
    assert AuditLog.from_policy(Policy()) is None
    assert AuditLog.from_policy(Policy(locked=True)) is None


def test_a_real_encode_gives_one_line_with_the_hash_by_default(tmp_path, minilm):
    policy = policy_with(tmp_path)
    log = AuditLog.from_policy(policy)
    settings, notes = policy.resolve({"concepts": "gore", "schedule": "svf"})
    batch, out = minilm.encode_texts([NAKED, "a bowl of fruit on a table"])
    result = Sanitizer(minilm).sanitize(out.tokens, batch.ids, minilm.layout, settings, batch.pieces)
    log.record_result(host="test", request_id="job-1", prompts=[NAKED, "a bowl of fruit on a table"], result=result,
                      notes=notes, settings=settings)
    assert log.flush()
    (entry,) = lines(tmp_path / "audit.jsonl")
    assert entry["v"] == 1 and entry["host"] == "test" and entry["request_id"] == "job-1"
    assert entry["time"].endswith("Z") and entry["store_prompt"] == "hash"
    naked, cat = entry["prompts"]
    assert naked["sha256"] == hashlib.sha256(NAKED.encode()).hexdigest() and "text" not in naked
    assert NAKED not in json.dumps(entry)
    assert naked["rows_edited"] == result.report["prompts"][0]["rows_edited"] > 0
    assert naked["max_weight"] == 1.0
    assert any(f["token"] == "naked" and f["concept"] == "nudity" and f["score"] > 0.5 for f in naked["flagged"])
    assert cat["flagged"] == [] and cat["rows_edited"] == 0
    assert entry["settings"]["required_concepts"] == ["nudity"] and entry["settings"]["schedule"] == "off"
    assert entry["notes"] == notes and any("svf" in n for n in entry["notes"])
    assert any("own list" in n for n in entry["sanitizer_notes"])


@pytest.mark.parametrize("store", ["none", "text"])
def test_store_prompt_none_and_text(tmp_path, store):
    log = AuditLog.from_policy(policy_with(tmp_path, store_prompt=store))
    log.record_result(host="test", prompts=[NAKED], result=fake_report())
    log.flush()
    (row,) = lines(tmp_path / "audit.jsonl")[0]["prompts"]
    assert "sha256" not in row
    assert row.get("text") == (NAKED if store == "text" else None)


def test_hash_keeps_odd_text_and_nan_is_valid_json(tmp_path):
    log = AuditLog.from_policy(policy_with(tmp_path))
    odd = "nude \ud800 photo"  # a lone surrogate
    log.record_result(host="test", prompts=[odd], result=fake_report(float("nan")))
    log.flush()
    (row,) = lines(tmp_path / "audit.jsonl")[0]["prompts"]
    assert row["sha256"] == prompt_sha256(odd) and row["max_score"] is None


def test_rotation_by_size(tmp_path):
    log = AuditLog.from_policy(policy_with(tmp_path, max_bytes=2048, backups=2))
    for i in range(60):
        log.record_result(host="test", request_id=i, prompts=[f"prompt {i}"], result=fake_report())
    log.flush()
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("audit"))
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 2048
    newest = [e["request_id"] for e in lines(tmp_path / "audit.jsonl")]
    older = [e["request_id"] for e in lines(tmp_path / "audit.jsonl.1")]
    assert newest[-1] == "59" and int(older[-1]) + 1 == int(newest[0])  # nothing lost between the files


def test_records_are_written_off_the_calling_thread(tmp_path, monkeypatch):
    log = AuditLog.from_policy(policy_with(tmp_path))
    writer = log._writer
    release = threading.Event()
    threads = []
    real = writer._write_line

    def slow(line):
        threads.append(threading.get_ident())
        release.wait(10)
        real(line)

    monkeypatch.setattr(writer, "_write_line", slow)
    log.record_result(host="test", prompts=["x"], result=fake_report())  # returns while the write waits
    assert not (tmp_path / "audit.jsonl").exists() or lines(tmp_path / "audit.jsonl") == []
    release.set()
    assert log.flush()
    assert len(lines(tmp_path / "audit.jsonl")) == 1
    assert threads and threading.get_ident() not in threads


def test_one_writer_per_path(tmp_path):
    a = AuditLog.from_policy(policy_with(tmp_path))
    b = AuditLog(AuditConfig(str(tmp_path / "." / "audit.jsonl")))
    assert a._writer is b._writer
    done = []

    def many(log, tag):
        for i in range(50):
            log.record_result(host=tag, request_id=i, prompts=["p"], result=fake_report())
        done.append(tag)

    workers = [threading.Thread(target=many, args=(log, tag)) for log, tag in ((a, "a"), (b, "b"))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    a.flush()
    entries = lines(tmp_path / "audit.jsonl")
    assert len(entries) == 100 and {e["host"] for e in entries} == {"a", "b"}


def test_unwritable_path_fails_closed_on_the_next_record(tmp_path):
    (tmp_path / "audit.jsonl").mkdir()  # a folder where the file should be
    log = AuditLog.from_policy(policy_with(tmp_path))
    assert log.fail_closed
    log.record_result(host="test", prompts=["first"], result=fake_report())
    log.flush()
    assert log.failure and "audit.jsonl" in log.failure
    with pytest.raises(AuditError, match="cannot be written"):
        log.record_result(host="test", prompts=["second"], result=fake_report())
    with pytest.raises(AuditError):
        log.check()


def test_full_disk_fails_open_with_one_warning_and_recovers(tmp_path, monkeypatch, caplog):
    policy = Policy.from_json(json.dumps({"locked": True, "on_error": "open", "audit": {"path": "audit.jsonl"}}),
                              "policy.json", tmp_path)
    log = AuditLog.from_policy(policy)
    writer = log._writer
    real = writer._write_line

    def full(line):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "_write_line", full)
    log.record_result(host="test", request_id=1, prompts=["one"], result=fake_report())
    log.flush()
    assert "No space left" in log.failure
    with caplog.at_level(logging.WARNING, logger="embedding_sanitizer.audit"):
        for i in range(2, 5):
            log.record_result(host="test", request_id=i, prompts=["more"], result=fake_report())  # no raise
    assert sum("No space left" in r.getMessage() for r in caplog.records) == 1
    monkeypatch.setattr(writer, "_write_line", real)  # space again: the kept lines are written
    log.flush()
    assert log.failure is None
    assert [e["request_id"] for e in lines(tmp_path / "audit.jsonl")] == ["1", "2", "3", "4"]


def test_full_disk_fails_closed(tmp_path, monkeypatch):
    log = AuditLog.from_policy(policy_with(tmp_path))

    def full(line):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(log._writer, "_write_line", full)
    log.record_result(host="test", prompts=["one"], result=fake_report())
    log.flush()
    with pytest.raises(AuditError, match="No space left"):
        log.record_result(host="test", prompts=["two"], result=fake_report())


def test_close_writes_what_is_queued_and_a_later_record_reopens(tmp_path):
    log = AuditLog.from_policy(policy_with(tmp_path))
    for i in range(20):
        log.record_result(host="test", request_id=i, prompts=["p"], result=fake_report())
    log.close()
    assert len(lines(tmp_path / "audit.jsonl")) == 20
    log.record_result(host="test", request_id=20, prompts=["p"], result=fake_report())
    audit_module.close_all()
    assert len(lines(tmp_path / "audit.jsonl")) == 21


def test_record_result_refuses_what_it_cannot_read(tmp_path):
    log = AuditLog.from_policy(policy_with(tmp_path))
    with pytest.raises(TypeError):
        log.record_result(host="test", prompts=["p"], result=42)
