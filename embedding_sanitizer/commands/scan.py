"""``python -m embedding_sanitizer scan --input FILE --out OUT.jsonl``: audit a prompt log.

Reads prompts from a ``.txt``, ``.csv`` or ``.jsonl`` file (``scan_input``), applies
the demo's settings flags and, with ``--policy FILE``, an admin policy exactly as
the hosts do (``Policy.from_file`` + ``Policy.resolve``), and writes one JSON line
per prompt in input order (``scan_records``). ``--embeddings`` also writes the mean
of every prompt's non-padding rows before and after sanitizing. The output fields
and flags are a stable contract (README, "scan"): add, never rename.

Prompts are batched (``--batch-size``) and sorted by length within a window of
batches, so that prompts with the same number of chunks share a batch; records are
written in input order. The output file is written under a temporary name and put
in place when the scan is complete.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .scan_input import read_prompts
from .settings_args import add_settings_arguments, prepare

WINDOW_BATCHES = 8  # prompts are sorted by length within this many batches


def configure(parser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="prompts: .txt (one a line), .csv or .jsonl")
    parser.add_argument("--out", required=True, type=Path, help="output .jsonl, one record per prompt")
    parser.add_argument("--column", default=None,
                        help="CSV column or JSONL key holding the prompt (default: prompt)")
    parser.add_argument("--policy", type=Path, default=None,
                        help="admin policy file (JSON), enforced as the ComfyUI and A1111 hosts enforce it")
    parser.add_argument("--embeddings", type=Path, default=None,
                        help="also write original and sanitized [N, D] float32 vectors to this .safetensors file")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per encoder batch (default 32)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (default 0: torch's own choice, one per core); "
                             "1 is faster on a machine shared with other jobs")
    add_settings_arguments(parser)


def run(args) -> int:
    started = time.perf_counter()
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.threads < 0:
        raise ValueError(f"--threads must be 0 (torch's choice) or more, got {args.threads}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for target in (args.out, args.embeddings):
        if target is not None and target.resolve() == args.input.resolve():
            raise ValueError(f"{target.name}: the output would overwrite the input file")
    for target in (args.out, args.embeddings):
        if target is not None and not target.resolve().parent.is_dir():
            raise ValueError(f"{target.name}: the output folder {target.parent.name or '.'!r} does not exist")
    if args.embeddings is not None and args.embeddings.suffix != ".safetensors":
        raise ValueError(f"--embeddings {args.embeddings.name}: the file name must end in .safetensors")
    prompts = read_prompts(args.input, args.column)
    policy = load_policy(args.policy)
    setup = prepare(args, policy)
    settings = setup.settings
    policy_notes = [f"admin policy ({args.policy.name}): {note}" for note in setup.policy_notes]

    from ..sanitize import Sanitizer
    from .scan_records import PromptScanner

    run_notes = list(policy_notes)
    if not setup.has_prompt_detector:
        run_notes.append("prompt_score and residual_score are null: "
                         + ("no ES weights are loaded" if setup.es_model is None
                            else f"the weights {setup.weights.name} have no whole-prompt detector"))
    scanner = PromptScanner(setup.encoder, Sanitizer(setup.encoder, setup.es_model, setup.es_meta), settings,
                            setup.es_model, run_notes)
    settings_dict = settings.effective_dict()
    audit = Audit(policy, policy_notes, settings, args.input.name)
    originals, sanitizeds = [], []
    flagged = edited = 0
    bar = _progress(len(prompts), args.no_progress)
    tmp = args.out.with_name(args.out.name + ".partial")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            window = WINDOW_BATCHES * args.batch_size
            for start in range(0, len(prompts), window):
                chunk = prompts[start:start + window]
                scanned_window = list(_scan_window(scanner, chunk, start, args.batch_size, bar))
                audit.write(scanned_window)
                for index, item, scanned in scanned_window:
                    record = {"index": index, "line": item.line, "prompt": item.text,
                              **{k: v for k, v in scanned.fields.items() if k != "notes"},
                              "settings": settings_dict, "notes": scanned.fields["notes"]}
                    handle.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
                    flagged += bool(scanned.fields["flagged"])
                    edited += scanned.fields["edited"]
                    if args.embeddings is not None:
                        originals.append(scanned.original)
                        sanitizeds.append(scanned.sanitized)
        audit.finish()
        if args.embeddings is not None:
            _write_embeddings(args.embeddings, originals, sanitizeds, setup, settings_dict, args.input.name)
        os.replace(tmp, args.out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    rate = len(prompts) / seconds if seconds > 0 else 0.0
    print(f"scan: {len(prompts)} prompts, {flagged} flagged, {edited} edited, {seconds:.1f} s "
          f"({rate:.1f} prompts/s) -> {args.out.name}", file=sys.stderr)
    return 0


def load_policy(path: Path | None):
    """The policy in a policy file (``Policy.from_file``, as the hosts read it); no file: the empty policy."""
    from ..policy import Policy

    return Policy() if path is None else Policy.from_file(path)


class ScanError(ValueError):
    """The scan cannot go on (the message says why)."""


class Audit:
    """The policy's audit log for a scan (``AuditLog.from_policy``; nothing when the policy configures none).

    One line per prompt, as one encode of the hosts: host ``scan``, request id ``FILE:LINE``.
    A log that cannot be written stops the scan when the policy fails closed (the default);
    with ``on_error: open`` the core logs one warning and the scan goes on.
    """

    def __init__(self, policy, notes: list[str], settings, source: str) -> None:
        from ..audit import AuditLog

        self.log = AuditLog.from_policy(policy)
        self.notes, self.settings, self.source = notes, settings, source

    def write(self, scanned_window) -> None:
        if self.log is None:
            return
        from ..audit import AuditError

        try:
            for _, item, scanned in scanned_window:
                report = {"prompts": [scanned.report], "notes": scanned.report.get("notes", [])}
                self.log.record_result(host="scan", request_id=f"{self.source}:{item.line}", prompts=[item.text],
                                       result=report, notes=self.notes, settings=self.settings)
        except AuditError as exc:
            raise ScanError(f"{exc}; the scan stops") from None

    def finish(self) -> None:
        """Wait for the writer; a failure of the last lines stops the scan too (fail closed)."""
        if self.log is None:
            return
        from ..audit import AuditError

        if not self.log.flush(timeout=60.0):
            raise ScanError(f"the audit log {Path(self.log.path).name} was not written within 60 s")
        try:
            self.log.check()
        except AuditError as exc:
            raise ScanError(f"{exc}; the scan stops") from None


def _scan_window(scanner, items, offset: int, batch_size: int, bar):
    """Scan ``items`` sorted by length in batches; yield (index, item, ScannedPrompt) in input order."""
    order = sorted(range(len(items)), key=lambda i: len(items[i].text))
    results = [None] * len(items)
    for start in range(0, len(order), batch_size):
        picked = order[start:start + batch_size]
        for i, scanned in zip(picked, scanner.scan([items[i].text for i in picked])):
            results[i] = scanned
        if bar is not None:
            bar.update(len(picked))
    for i, scanned in enumerate(results):
        yield offset + i, items[i], scanned


def _progress(total: int, disabled: bool):
    if disabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="prompt", file=sys.stderr, dynamic_ncols=True)


def _write_embeddings(path: Path, originals, sanitizeds, setup, settings_dict: dict, source: str) -> None:
    import torch
    from safetensors.torch import save_file

    width = setup.encoder.width
    stack = (lambda rows: torch.stack(rows).float().contiguous() if rows else torch.zeros(0, width))
    metadata = {"format": "embedding-sanitizer-scan", "encoder": setup.encoder.name,
                "settings": json.dumps(settings_dict), "input": source, "count": str(len(originals)),
                "pooling": "mean of the non-padding rows of the prompt's chunks"}
    tmp = path.with_name(path.name + ".partial")
    try:
        save_file({"original": stack(originals), "sanitized": stack(sanitizeds)}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
