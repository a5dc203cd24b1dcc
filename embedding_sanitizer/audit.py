"""The audit log a policy file configures (``"audit": {"path": ..., "store_prompt": ...}``).

One JSON line per sanitized prompt: time (UTC, ISO 8601), host, request id, the prompt
as its SHA-256 (``store_prompt: "hash"``, the default), as text (``"text"``) or not at
all (``"none"``), the flagged words and their scores, the edit weight, the effective
settings and the policy's notes. When a write would take the file past ``max_bytes``
the file is rotated first (``audit.jsonl`` -> ``audit.jsonl.1`` -> ... up to
``backups`` old files; with ``backups`` 0 it starts again empty). Writes are serialised
by a lock, so threads of one process may share an ``AuditLog``. A failed write raises
``AuditError`` naming the file; the caller decides by ``on_error`` whether that stops
the work (closed) or is reported and skipped (open).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from .policy import AuditConfig


class AuditError(OSError):
    """The audit log cannot be written; the message names the file."""


def prompt_field(prompt: str, store_prompt: str) -> dict:
    """The prompt as the configuration stores it: ``{"prompt_sha256": ...}``, ``{"prompt": ...}`` or ``{}``."""
    if store_prompt == "text":
        return {"prompt": prompt}
    if store_prompt == "hash":
        return {"prompt_sha256": hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()}
    return {}


class AuditLog:
    def __init__(self, config: AuditConfig) -> None:
        self.config = config
        self.path = Path(config.path)
        self._lock = threading.Lock()

    def entry(self, *, host: str, request_id: str, prompt: str, flagged: list, edit_weight: float,
              settings: dict, notes: list[str], **extra) -> dict:
        """One audit record (not yet written)."""
        return {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "host": host,
                "request_id": request_id, **prompt_field(prompt, self.config.store_prompt), "flagged": flagged,
                "edit_weight": edit_weight, **extra, "settings": settings, "notes": list(notes)}

    def write(self, entries: list[dict]) -> None:
        """Append ``entries``, one JSON line each, rotating by size; ``AuditError`` if the file cannot be written."""
        lines = [json.dumps(e, ensure_ascii=False, allow_nan=False) + "\n" for e in entries]
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                size = self._size()
                handle = open(self.path, "ab")
                try:
                    for line in lines:
                        data = line.encode("utf-8", "surrogatepass")
                        if size > 0 and size + len(data) > self.config.max_bytes:
                            handle.close()
                            self._rotate()
                            handle = open(self.path, "ab")
                            size = 0
                        handle.write(data)
                        size += len(data)
                finally:
                    handle.close()
            except OSError as exc:
                raise AuditError(f"the audit log {self.path.name} cannot be written: "
                                 f"{exc.strerror or exc}") from None

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _rotate(self) -> None:
        backups = self.config.backups
        if backups == 0:
            os.truncate(self.path, 0)
            return
        oldest = self.path.with_name(f"{self.path.name}.{backups}")
        if oldest.exists():
            oldest.unlink()
        for i in range(backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
