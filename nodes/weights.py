"""Where calibrated ES weights live for ComfyUI, and which file each stream uses.

Files are listed from the package's ``weights/`` folder and from the
``models/embedding_sanitizer`` folder registered with ComfyUI's
``folder_paths`` (see ``register_folder``, called when ComfyUI loads the pack).
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from embedding_sanitizer.auto_calibration import AUTO_CALIBRATE
from embedding_sanitizer.encoders.base import fingerprints_match
from embedding_sanitizer.paths import WEIGHTS_DIR
from embedding_sanitizer.weights_io import (
    WeightsFileError, WeightsMismatch, list_weight_files, load_es, read_metadata, scan_weight_files,
)

FOLDER_NAME = "embedding_sanitizer"
AUTO = "auto"
NONE = "none"
log = logging.getLogger("embedding_sanitizer.comfyui")
_lock = threading.Lock()
_loaded: dict[tuple, tuple] = {}


def register_folder() -> None:
    """Register ``models/embedding_sanitizer`` with ComfyUI (no-op outside ComfyUI)."""
    try:
        import folder_paths
    except ImportError:
        return
    if FOLDER_NAME in folder_paths.folder_names_and_paths:
        return
    path = os.path.join(folder_paths.models_dir, FOLDER_NAME)
    folder_paths.folder_names_and_paths[FOLDER_NAME] = ([path], {".safetensors"})


def folders() -> list[Path]:
    found = [WEIGHTS_DIR]
    try:
        import folder_paths

        found += [Path(p) for p in folder_paths.get_folder_paths(FOLDER_NAME)]
    except Exception:  # noqa: BLE001 - outside ComfyUI, or folder not registered
        pass
    return found


def save_folder() -> Path:
    """Where the Calibrate node writes (the first registered ComfyUI folder)."""
    for folder in folders()[1:]:
        return folder
    return WEIGHTS_DIR


def folder_state() -> str:
    """Changes when a weights file appears, disappears or is rewritten (for the nodes' ``IS_CHANGED``), so a
    graph run after a calibration resolves ``auto`` again and picks the new file."""
    entries = []
    for folder in folders():
        try:
            for path in sorted(Path(folder).glob("*.safetensors")):
                stat = path.stat()
                entries.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:
            continue
    return "|".join(entries)


CLIP_BOS_ID = 49406  # a file calibrated on a CLIP tokenizer's layout (the CLIP node only sees CLIPs)


def _made_for(path: Path) -> dict:
    """What a good weights file was calibrated for: layout name, width, encoder name and fingerprint."""
    meta = read_metadata(path)
    layout = meta.get("layout") or {}
    return {"layout": str(layout.get("name") or "?"), "width": int(meta["width"]),
            "clip": layout.get("bos_id") == CLIP_BOS_ID and layout.get("chunk_length") == 77,
            "encoder": meta.get("encoder_name", "?"), "fingerprint": meta.get("encoder_fingerprint", "")}


def label(path: Path, made_for: dict | None = None) -> str:
    """The dropdown entry of a file: ``'sd1-clip-l 768: file.safetensors'`` (what it was calibrated for)."""
    made_for = made_for or _made_for(path)
    return f"{made_for['layout']} {made_for['width']}: {path.name}"


def file_name(choice: str) -> str:
    """The file name in a dropdown entry (a label or, from older workflows, the bare name)."""
    choice = str(choice or "")
    if choice.endswith(".safetensors") and ": " in choice:
        return choice.split(": ", 1)[1]
    return choice


def weight_choices() -> list[str]:
    """The node's dropdown: auto, auto-calibrate, none and the good files calibrated for a CLIP, labelled with
    the layout and width they were made for. Files made for another encoder (the bundled MiniLM demo
    weights) are not offered; the node's report says why (``mismatch_notes``). Broken files are logged at
    WARNING by the scan, naming the file and the reason, and named in the report; never offered."""
    entries = {}
    for path in list_weight_files(*folders()):
        made_for = _made_for(path)
        if made_for["clip"] and path.name not in entries:
            entries[path.name] = label(path, made_for)
    return [AUTO, AUTO_CALIBRATE, NONE] + sorted(entries.values(), key=str.lower)


def validate_choice(choice: str) -> bool | str:
    """For the node's ``VALIDATE_INPUTS``: True for a listed entry or the bare name of a listed file (saved by
    an older version), else the reason (ComfyUI shows it on the node)."""
    if choice in (AUTO, AUTO_CALIBRATE, NONE, ""):
        return True
    offered = weight_choices()
    if choice in offered or any(file_name(entry) == file_name(choice) for entry in offered[3:]):
        return True
    path = path_of(file_name(choice))
    if path is None:
        return f"weights file {file_name(choice)!r} is not in the weights folders"
    scan = scan_weight_files(path.parent)
    reason = next((why for bad, why in scan.broken if bad == path), None)
    if reason is not None:
        return f"weights file {path.name} is unreadable: {reason}"
    return f"weights file {path.name} was not calibrated for a CLIP text encoder (made for {label(path)})"


def mismatch_notes(stream: str, encoder) -> list[str]:
    """One note per weights file that ``auto`` does not use for this stream, with the reason."""
    scan = scan_weight_files(*folders())
    notes = [f"{stream}: weights {bad.name} skipped: unreadable: {why}" for bad, why in scan.broken]
    for path in scan.good:
        made_for = _made_for(path)
        if made_for["width"] != encoder.width:
            why = f"made for {made_for['layout']} width {made_for['width']}, this stream is width {encoder.width}"
        elif not fingerprints_match(encoder.fingerprint, made_for["fingerprint"]):
            why = f"made for another {made_for['layout']} encoder ({made_for['encoder']})"
        else:
            continue
        if not made_for["clip"]:
            why += "; not a CLIP file, never offered"
        notes.append(f"{stream}: weights {path.name} not for {encoder.name}: {why}")
    return notes


def broken_note(scan) -> str:
    return ("; skipped unreadable weights file(s): " + ", ".join(scan.broken_labels())) if scan.broken else ""


def path_of(name: str) -> Path | None:
    for folder in folders():
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def resolve(choice: str, encoder) -> tuple[object | None, dict, str]:
    """(ES model or None, metadata, note) for ``encoder`` given the node's weights choice.

    ``auto`` (and ``auto-calibrate``, whose background run the caller starts) picks the first file whose width
    and fingerprint match the encoder;
    a named file is used when it matches and refused (``WeightsMismatch``) when
    the encoder has only this stream to give it to.
    """
    if choice == NONE:
        return None, {}, "no ES weights chosen"
    choice = file_name(choice)
    scan = scan_weight_files(*folders())
    skipped = broken_note(scan)
    if choice in ("", AUTO, AUTO_CALIBRATE):
        candidates = scan.good  # one broken file never hides the good ones
    else:
        path = path_of(choice)
        if path is None:
            raise FileNotFoundError(f"Embedding Sanitizer: weights file {choice!r} not found in "
                                    f"{[str(f.name) for f in folders()]}")
        reason = next((why for bad, why in scan.broken if bad == path), None)
        if reason is not None:
            raise WeightsFileError(f"Embedding Sanitizer: weights file {choice} is unreadable: {reason}")
        candidates = [path]
    fingerprint = encoder.fingerprint
    for path in candidates:
        meta = read_metadata(path)
        if meta["width"] != encoder.width or not fingerprints_match(fingerprint, meta.get("encoder_fingerprint", "")):
            continue
        key = (str(path), path.stat().st_mtime, fingerprint)
        with _lock:
            hit = _loaded.get(key)
        if hit is None:
            model, meta = load_es(path, encoder_name=encoder.name, encoder_fingerprint=fingerprint,
                                  width=encoder.width)
            meta = {**meta, "file": path.name}
            hit = (model, meta)
            with _lock:
                _loaded[key] = hit
        return hit[0], hit[1], f"ES weights {path.name}{skipped}"
    if choice not in ("", AUTO, AUTO_CALIBRATE):
        raise WeightsMismatch(f"{choice} was not calibrated for the text encoder stream {encoder.name} "
                              f"(width {encoder.width}); calibrate weights for it with "
                              "'Calibrate Embedding Sanitizer'")
    return None, {}, f"no calibrated ES weights match {encoder.name}{skipped}"
