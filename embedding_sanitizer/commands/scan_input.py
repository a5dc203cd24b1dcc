"""Prompts from a ``scan`` input file: ``.txt``, ``.csv`` or ``.jsonl``.

Every prompt comes with the 1-based line of the file where it starts, so that an
output record can be traced back to its input line.

* ``.txt``: one prompt a line (``\\n``, ``\\r\\n`` or ``\\r``). Empty lines are prompts
  too (empty ones), so output record N is input line N.
* ``.csv`` (read with the ``csv`` module): if the first row has a cell equal to the
  column name (``prompt``, or ``--column NAME``; case and surrounding spaces ignored),
  it is the header and that column is read; blank rows are skipped, an empty cell is an
  empty prompt. A first row that looks like a header (two or more identifier-like cells
  and rows of the same width) without that column is an error. Otherwise the file has
  no header and is read as one prompt a line: a line's cells are joined back with
  commas, so unquoted commas stay part of the prompt.
* ``.jsonl``: one JSON object a line with a ``prompt`` key (or ``--column NAME``), whose
  value is a string; blank lines are skipped.

Problems raise ``ScanInputError`` naming the file and the line.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

FORMATS = (".txt", ".csv", ".jsonl")
DEFAULT_COLUMN = "prompt"
HEADER_SNIFF_ROWS = 50
_HEADER_CELL = re.compile(r"^[A-Za-z_][A-Za-z0-9_ .\-]{0,63}$")
_SURROGATE = re.compile("[\ud800-\udfff]")


class ScanInputError(ValueError):
    """The input file cannot be read as prompts; the message names the file and line."""


@dataclass(frozen=True)
class PromptLine:
    text: str
    line: int  # 1-based line of the input file where the prompt starts


def read_prompts(path: str | Path, column: str | None = None) -> list[PromptLine]:
    """The prompts of ``path`` in file order (see the module docstring for the formats)."""
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in FORMATS:
        raise ScanInputError(f"{path.name}: unknown input format {path.suffix or '(no extension)'!r}; "
                             f"use one of {', '.join(FORMATS)}")
    if column is not None and kind == ".txt":
        raise ScanInputError(f"{path.name}: --column applies to .csv and .jsonl input, not .txt")
    if not path.exists():
        raise ScanInputError(f"{path.name}: input file not found")
    if path.is_dir():
        raise ScanInputError(f"{path.name}: is a folder, not an input file")
    try:
        with path.open(encoding="utf-8-sig", newline="" if kind == ".csv" else None) as handle:
            if kind == ".txt":
                prompts = _read_txt(handle)
            elif kind == ".csv":
                prompts = _read_csv(handle, path.name, column)
            else:
                prompts = _read_jsonl(handle, path.name, column or DEFAULT_COLUMN)
    except UnicodeDecodeError as exc:
        raise ScanInputError(f"{path.name}: not UTF-8 text (byte {exc.start} cannot be decoded); "
                             "save the file as UTF-8") from None
    except csv.Error as exc:
        raise ScanInputError(f"{path.name}: not a readable CSV file: {exc}") from None
    except OSError as exc:
        raise ScanInputError(f"{path.name}: cannot be read: {exc.strerror or exc}") from None
    for item in prompts:
        if _SURROGATE.search(item.text):
            raise ScanInputError(f"{path.name} line {item.line}: the prompt contains an unpaired UTF-16 "
                                 "surrogate (an invalid \\ud800-\\udfff escape), which no tokenizer can read")
    return prompts


def _read_txt(handle) -> list[PromptLine]:
    return [PromptLine(line.rstrip("\n"), number) for number, line in enumerate(handle, start=1)]


def _read_csv(handle, name: str, column: str | None) -> list[PromptLine]:
    reader = csv.reader(handle)
    rows: list[tuple[int, list[str]]] = []
    start = 1
    for row in reader:
        rows.append((start, row))
        start = reader.line_num + 1
    if not rows:
        return []
    wanted = (column or DEFAULT_COLUMN).strip().lower()
    first = [cell.strip().lower() for cell in rows[0][1]]
    if wanted in first:
        return _csv_column(rows[1:], name, first.index(wanted), column or DEFAULT_COLUMN, len(first))
    if column is not None:
        raise ScanInputError(f"{name} line 1: no column {column!r} in the header; "
                             f"the first row is {rows[0][1]!r}")
    if _looks_like_header(rows):
        raise ScanInputError(f"{name} line 1: the header {rows[0][1]!r} has no {DEFAULT_COLUMN!r} column; "
                             "pass --column NAME")
    return [PromptLine(",".join(row), number) for number, row in rows]


def _csv_column(rows, name: str, index: int, column: str, width: int) -> list[PromptLine]:
    out = []
    for number, row in rows:
        if not row:
            continue  # a blank line is not a record
        if index >= len(row):
            raise ScanInputError(f"{name} line {number}: {len(row)} field(s), no value for column "
                                 f"{column!r} (field {index + 1} of the header's {width})")
        out.append(PromptLine(row[index], number))
    return out


def _looks_like_header(rows) -> bool:
    first = rows[0][1]
    if len(first) < 2 or not all(_HEADER_CELL.match(cell.strip()) for cell in first):
        return False
    sample = [row for _, row in rows[1:HEADER_SNIFF_ROWS + 1] if row]
    return not sample or all(len(row) == len(first) for row in sample)


def _read_jsonl(handle, name: str, key: str) -> list[PromptLine]:
    out = []
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ScanInputError(f"{name} line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise ScanInputError(f"{name} line {number}: expected a JSON object with a {key!r} key, "
                                 f"got {type(record).__name__}")
        if key not in record:
            raise ScanInputError(f"{name} line {number}: no {key!r} key (keys: {sorted(record)[:10]}); "
                                 "pass --column NAME for another key")
        value = record[key]
        if not isinstance(value, str):
            raise ScanInputError(f"{name} line {number}: {key!r} must be a string, got {type(value).__name__}")
        out.append(PromptLine(value, number))
    return out
