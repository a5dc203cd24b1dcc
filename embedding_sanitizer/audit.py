"""The audit log: one JSON line per encode, written off the generation path.

Configured by the policy file's ``audit`` object (``AuditConfig``). Each line::

    {"v": 1, "time": "2026-01-31T12:00:00.000Z", "host": "comfyui", "request_id": "…",
     "store_prompt": "hash",
     "prompts": [{"index": 0, "sha256": "…",           # or "text": "…", or neither (store_prompt none)
                  "flagged": [{"position": 3, "token": "naked", "score": 0.91, "weight": 1.0,
                               "concept": "nudity"}],
                  "max_score": 0.91, "max_weight": 1.0, "rows_edited": 73, "prompt_score": null}],
     "settings": {…the effective settings…}, "notes": ["…policy notes…"], "sanitizer_notes": ["…"]}

Lines are queued by ``record`` and written by one background thread per file (a registry
keeps one writer per path in the process, so two nodes never interleave a rotation). The
file rotates by size: ``path`` -> ``path.1`` -> … -> ``path.N`` (``backups``), the oldest
dropped. A write that fails (full disk, unwritable path) is kept in memory (up to
``RETRY_LINES`` lines, then counted as dropped and reported in the next line written) and
retried; until a write succeeds again, every ``record`` or ``check`` raises ``AuditError``
when the policy fails closed, or logs one warning when it fails open.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Iterable

from .policy import AuditConfig

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
QUEUE_LINES = 10_000  # entries waiting for the writer before record() reports the log as failed
RETRY_LINES = 1_000  # failed lines kept for the next attempt
RETRY_SECONDS = 1.0


class AuditError(RuntimeError):
    """The audit log cannot be written; under a fail-closed policy nothing is generated until it can."""


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def prompt_sha256(text: str) -> str:
    """sha256 hex of a prompt's UTF-8 bytes (lone surrogates kept as they are, never an error)."""
    return hashlib.sha256(str(text).encode("utf-8", "surrogatepass")).hexdigest()


def _finite(value):
    """JSON has no NaN or infinity: such numbers are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class _Writer:
    """One background thread writing one file, with size-based rotation."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.config: AuditConfig | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_LINES)
        self._lock = threading.Lock()  # guards the failure state
        self._life = threading.Lock()  # one thread at a time: start and close do not overlap
        self._thread: threading.Thread | None = None
        self._file = None
        self._retry: deque[str] = deque()
        self._dropped = 0
        self.failure: str | None = None
        self.failures = 0  # failure episodes, so a fail-open log warns once per episode
        self.warned = 0  # the last episode warned about
        self.written = 0
        self._next_retry = 0.0

    # -- caller side -------------------------------------------------------------------------
    def submit(self, item) -> None:
        self._start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self._dropped += 1
                if self.failure is None:
                    self.failures += 1
                self.failure = (f"the audit log {self.path!r} cannot be written fast enough "
                                f"({QUEUE_LINES} lines waiting)")

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every line submitted before this call was written or failed; False on timeout."""
        with self._lock:
            running = self._thread is not None and self._thread.is_alive()
        if not running:
            return True
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        with self._life:
            thread = self._thread
            if thread is None or not thread.is_alive():
                return
            try:
                self._queue.put(None, timeout=timeout)  # after every line already queued
            except queue.Full:
                return
            thread.join(timeout)
            if not thread.is_alive():
                self._thread = None

    def _start(self) -> None:
        with self._life:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="embedding-sanitizer-audit", daemon=True)
                self._thread.start()

    # -- writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=RETRY_SECONDS if self._retry else None)
            except queue.Empty:
                self._write_pending()
                continue
            if item is None:
                self._write_pending()  # a last attempt for lines kept after a failure
                self._close_file()
                return
            if isinstance(item, threading.Event):
                self._write_pending()
                item.set()
                continue
            try:
                line = item()  # the entry is serialised here, off the generation path
            except Exception as exc:  # noqa: BLE001 - a bad entry must not stop the writer
                line = json.dumps({"v": FORMAT_VERSION, "time": _utc_now(), "error": f"entry not written: {exc}"})
            self._retry.append(line)
            while len(self._retry) > RETRY_LINES:
                self._retry.popleft()
                self._dropped += 1
            if self.failure is None or time.monotonic() >= self._next_retry:
                self._write_pending()

    def _write_pending(self) -> None:
        if not self._retry:
            return
        try:
            while self._retry:
                if self._dropped:
                    gap = json.dumps({"v": FORMAT_VERSION, "time": _utc_now(),
                                      "error": f"{self._dropped} audit line(s) lost while the log could not be "
                                               "written"})
                    self._write_line(gap)
                    self._dropped = 0
                self._write_line(self._retry[0])
                self._retry.popleft()
                self.written += 1
        except (OSError, ValueError) as exc:
            self._close_file()
            self._next_retry = time.monotonic() + RETRY_SECONDS
            with self._lock:
                if self.failure is None:
                    self.failures += 1
                self.failure = f"the audit log {self.path!r} cannot be written: {exc}"
            return
        with self._lock:
            self.failure = None

    def _write_line(self, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        config = self.config
        if self._file is None:
            folder = os.path.dirname(self.path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            self._file = open(self.path, "ab", buffering=0)  # unbuffered: a failed write fails here
        size = self._file.tell()
        if config is not None and size > 0 and size + len(data) > config.max_bytes:
            self._rotate(config.backups)
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            if not written:
                raise OSError(f"no bytes written to {self.path!r}")
            view = view[written:]

    def _rotate(self, backups: int) -> None:
        self._close_file()
        if backups <= 0:
            os.remove(self.path)
        else:
            oldest = f"{self.path}.{backups}"
            if os.path.lexists(oldest):
                os.remove(oldest)
            for index in range(backups - 1, 0, -1):
                if os.path.lexists(f"{self.path}.{index}"):
                    os.replace(f"{self.path}.{index}", f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._file = open(self.path, "ab", buffering=0)

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


_registry: dict[str, _Writer] = {}
_registry_lock = threading.Lock()


def _writer_for(config: AuditConfig) -> _Writer:
    key = os.path.realpath(os.path.abspath(config.path))
    with _registry_lock:
        writer = _registry.get(key)
        if writer is None:
            writer = _registry[key] = _Writer(config.path)
        writer.config = config  # the latest policy decides the rotation limits
    return writer


@atexit.register
def close_all(timeout: float = 5.0) -> None:
    """Write what is queued and close every audit file (also run at interpreter exit)."""
    with _registry_lock:
        writers = list(_registry.values())
    for writer in writers:
        writer.close(timeout)


class AuditLog:
    """The audit log of one policy. Thread-safe; instances for the same path share one writer."""

    def __init__(self, config: AuditConfig, fail_closed: bool = True) -> None:
        if not isinstance(config, AuditConfig):
            raise TypeError(f"AuditLog needs an AuditConfig, got {type(config).__name__}")
        self.config = config
        self.fail_closed = bool(fail_closed)
        self._writer = _writer_for(config)

    @classmethod
    def from_policy(cls, policy) -> "AuditLog | None":
        """The policy's audit log, or None when the policy configures none."""
        config = getattr(policy, "audit", None)
        if config is None:
            return None
        return cls(config, fail_closed=policy.fail_closed)

    @property
    def path(self) -> str:
        return self.config.path

    @property
    def failure(self) -> str | None:
        """Why the last write failed, while it keeps failing; None when the log works."""
        return self._writer.failure

    def check(self) -> None:
        """Raise ``AuditError`` (fail closed) or warn once (fail open) while the log cannot be written."""
        failure = self._writer.failure
        if failure is None:
            return
        if self.fail_closed:
            raise AuditError(f"Embedding Sanitizer: {failure}; nothing is generated until the audit log "
                             "works again (the policy fails closed: on_error 'closed')")
        writer = self._writer
        with writer._lock:
            warn = writer.warned != writer.failures
            writer.warned = writer.failures
        if warn:
            log.warning("Embedding Sanitizer: %s; generating without an audit record (policy on_error 'open')",
                        failure)

    def record(self, entry: dict) -> None:
        """Queue one entry (a JSON-serialisable dict); ``time`` is added when missing.

        Raises ``AuditError`` first if an earlier write failed and the policy fails closed.
        """
        self.check()
        entry = dict(entry)
        entry.setdefault("v", FORMAT_VERSION)
        entry.setdefault("time", _utc_now())
        self._writer.submit(lambda: json.dumps(_finite(entry), ensure_ascii=True, default=str))
        self.check()  # the queue may have been full

    def record_result(self, *, host: str, request_id: Any = None, prompts: Iterable[str] = (),
                      result=None, notes: Iterable[str] = (), settings=None) -> None:
        """Queue the line of one encode.

        ``result`` is a ``SanitizeResult`` or its ``report`` dict (one entry in ``prompts`` per
        batch row, aligned with ``prompts``, the texts); ``notes`` are the policy's notes;
        ``settings`` (a ``Settings``) gives the effective settings, including the policy-set
        fields, else the report's are used.
        """
        report = getattr(result, "report", result)
        if report is None:
            report = {}
        if not isinstance(report, dict):
            raise TypeError(f"record_result needs a SanitizeResult or a report dict, got {type(result).__name__}")
        texts = [str(p) for p in prompts]
        if settings is not None and hasattr(settings, "effective_dict"):
            used = settings.effective_dict()
        else:
            used = dict(report.get("settings") or {})
        rows = []
        for index, item in enumerate(report.get("prompts") or []):
            tokens = item.get("tokens") or []
            flagged = [{k: t[k] for k in ("position", "token", "score", "weight", "concept") if k in t}
                       for t in tokens if t.get("flagged")]
            rows.append({"index": index, "flagged": flagged, "max_score": item.get("max_score"),
                         "max_weight": max((float(t.get("weight", 0.0)) for t in tokens), default=0.0),
                         "rows_edited": item.get("rows_edited", 0), "prompt_score": item.get("prompt_score")})
        for index in range(len(rows), len(texts)):  # texts the report has no row for (e.g. nothing ran)
            rows.append({"index": index, "flagged": [], "max_score": None, "max_weight": 0.0, "rows_edited": 0,
                         "prompt_score": None})
        entry = {"v": FORMAT_VERSION, "time": _utc_now(), "host": str(host),
                 "request_id": None if request_id is None else str(request_id),
                 "store_prompt": self.config.store_prompt, "prompts": rows, "settings": used,
                 "notes": [str(n) for n in notes], "sanitizer_notes": [str(n) for n in report.get("notes") or []]}
        store = self.config.store_prompt

        def line() -> str:  # hashing and serialising happen on the writer thread
            for row in entry["prompts"]:
                if row["index"] < len(texts):
                    if store == "hash":
                        row["sha256"] = prompt_sha256(texts[row["index"]])
                    elif store == "text":
                        row["text"] = texts[row["index"]]
            return json.dumps(_finite(entry), ensure_ascii=True, default=str)

        self.check()
        self._writer.submit(line)
        self.check()

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until the queued lines are written (or failed); False if ``timeout`` passed first."""
        return self._writer.flush(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Write what is queued and close the file (a later record opens it again)."""
        self._writer.close(timeout)
