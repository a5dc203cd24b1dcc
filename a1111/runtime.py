"""Sanitizing one text-model output: resources, the core call, and what is kept for the UI.

``RunState`` is what ``process()`` activates for one generation: the enforced settings,
the policy notes and the per-prompt records that feed the heatmap and the infotext.
``sanitize_output`` is called by the hook with the host's own output and returns an
output of the same type (a tensor, or a tuple whose first element is the tensor).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from embedding_sanitizer import Sanitizer, Settings
from embedding_sanitizer.heatmap import group_words, score_color, text_color
from embedding_sanitizer.weights_io import WeightsFileError, WeightsMismatch, load_es, read_metadata, scan_weight_files

from . import auto_calibration, emphasis, pooled
from .encoder import WebuiTextEncoder

log = logging.getLogger("embedding_sanitizer.a1111")
SVF_UNMAPPED = ("schedule svf: a prompt was encoded outside the checkpoint's get_learned_conditioning (another "
                "extension, or a model switched in mid-generation); its conditioning keeps the sanitized embedding "
                "for every step")


@dataclass
class Record:
    """Scores of one prompt as one text model saw it."""

    text: str
    encoder: str
    negative: bool
    words: list[dict]
    flagged: list[str]
    schedule_end: float | None = None  # svf: fraction of the steps that use the sanitized embedding


@dataclass
class RunState:
    settings: Settings
    notes: list[str] = field(default_factory=list)
    owner: Any = None  # the processing object this state belongs to
    records: list[Record] = field(default_factory=list)
    calls: int = 0
    #: svf schedule: (sanitized, original, fraction) per conditioning, filled by ``svf.Schedule``.
    svf_pairs: list = field(default_factory=list)
    #: while ``svf.Schedule`` encodes a prompt batch: each text-model call's ``schedule_end``.
    svf_fractions: list | None = None
    #: ``on_error: open`` without a lock: a failure while sanitizing returns the host's output (with a note)
    fail_open: bool = False
    #: the policy file's audit log (``embedding_sanitizer.audit.AuditLog``), one line per text-model call
    audit: Any = None
    request_id: str = ""

    def note_once(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)
            log.warning("Embedding Sanitizer: %s", note)

    def flagged_summary(self, *prompts: str) -> str | None:
        """``"naked (nudity), blood (gore)"`` for the infotext of one image, whose prompts are ``prompts``
        (its prompt and, with hires fix, its hires prompt)."""
        positive = [r for r in self.records if not r.negative]
        # The text model sees the prompt after extra networks are stripped and AND/schedules split,
        # so match the pieces it saw inside the image's prompts; else summarise the whole run.
        mine = [r for r in positive if r.text.strip() and any(r.text.strip() in prompt for prompt in prompts if prompt)]
        seen: dict[str, None] = {}
        for record in mine or positive:
            for item in record.flagged:
                seen[item] = None
        return ", ".join(seen) or None


class WeightsResolver:
    """Finds and caches ES weights for an encoder (named file first, else any matching file)."""

    def __init__(self, folders: Callable[[], Iterable[Path]]):
        self.folders = folders
        self._models: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def scan(self):
        """Good files and broken ones with the reason (``weights_io.scan_weight_files``; broken ones are
        logged at WARNING there and noted in the run's infotext by ``sanitize_output``)."""
        return scan_weight_files(*self.folders())

    def files(self) -> list[Path]:
        return self.scan().good

    def names(self) -> list[str]:
        """Files a webui text model can use: the bundled encoder's demo weights (layout ``minilm``) are left out."""
        return [p.name for p in self.files() if _layout_name(p) not in NOT_WEBUI_LAYOUTS]

    def broken_labels(self) -> list[str]:
        return self.scan().broken_labels()

    def find(self, name: str, encoder: WebuiTextEncoder) -> Path | None:
        scan = self.scan()
        files = scan.good
        if name:
            named = [p for p in files if p.name == name or p.stem == name]
            broken = [why for p, why in scan.broken if p.name == name or p.stem == name]
            if not named and broken:
                raise WeightsFileError(f"Embedding Sanitizer weights {name!r} are unreadable: {broken[0]}")
            if not named:
                raise FileNotFoundError(f"Embedding Sanitizer weights {name!r} not found in "
                                        f"{', '.join(str(Path(f).name) for f in self.folders())}")
            if _matches(named[0], encoder):
                return named[0]
            log.info("weights %s were made for another encoder than %s; looking for a matching file",
                     name, encoder.name)
        matching = [p for p in files if _matches(p, encoder)]
        if matching:
            return matching[0]
        if name:  # let load_es raise its message naming both encoders
            return named[0]
        return None

    def load(self, path: Path, encoder: WebuiTextEncoder):
        key = (str(path), path.stat().st_mtime, encoder.fingerprint, str(encoder.device))
        with self._lock:
            if key not in self._models:
                model, meta = load_es(path, encoder_name=encoder.name, encoder_fingerprint=encoder.fingerprint,
                                      width=encoder.width, device=encoder.device)
                meta["file"] = path.name
                self._models = {k: v for k, v in self._models.items() if k[2] != encoder.fingerprint}
                self._models[key] = (model, meta)
            return self._models[key]


NOT_WEBUI_LAYOUTS = ("minilm",)


def _layout_name(path: Path) -> str:
    try:
        layout = read_metadata(path).get("layout") or {}
    except (WeightsMismatch, OSError):
        return ""
    return str(layout.get("name", "")) if isinstance(layout, dict) else ""


def _base_layout(name: str) -> str:
    return name[:-len("-custom")] if name.endswith("-custom") else name


def _matches(path: Path, encoder: WebuiTextEncoder) -> bool:
    """Same width, same token embedding and, when the file records it, the same chunk layout: real SD1.5 and
    SDXL share CLIP-L's token embedding, but SDXL reads another layer, so an ``sd1-clip-l`` file is not used
    for SDXL's ``sdxl-clip-l`` (found in the real A1111 1.10.1)."""
    from embedding_sanitizer.encoders.base import fingerprints_match

    try:
        meta = read_metadata(path)
    except (WeightsMismatch, OSError):
        return False
    layout = meta.get("layout") if isinstance(meta.get("layout"), dict) else {}
    if layout.get("name") and _base_layout(str(layout["name"])) != _base_layout(encoder.layout.name):
        return False
    return int(meta.get("width", 0)) == encoder.width and fingerprints_match(
        meta.get("encoder_fingerprint", ""), encoder.fingerprint)


class Runtime:
    """Sanitizers per encoder, shared by the hook, the live-heatmap route and calibration.

    ``save_folder`` is where calibrated weights go (``models/embedding_sanitizer``): the weights choice
    ``auto-calibrate`` writes its background run's file there (``a1111/auto_calibration.py``).
    """

    def __init__(self, weight_folders: Callable[[], Iterable[Path]],
                 save_folder: Callable[[], Path] | None = None):
        self.weights = WeightsResolver(weight_folders)
        self.save_folder = save_folder

    def plan(self, encoder: WebuiTextEncoder, settings: Settings) -> tuple[Sanitizer, Settings, list[str]]:
        """(sanitizer, the settings it runs with, notes for the infotext)."""
        if not settings.uses_es:
            return Sanitizer(encoder), settings, []
        if auto_calibration.is_auto_calibrate(settings):
            path = self.weights.find("", encoder)  # a file that matches, as with the weights left on auto
            if path is None:
                if self.save_folder is None:
                    raise RuntimeError("weights 'auto-calibrate' needs the webui's models folder")
                job = auto_calibration.request(encoder, settings, self.save_folder())
                if job.state != "done" or not job.path.is_file():
                    # never waits: the training-free projection until the file is ready
                    return Sanitizer(encoder), settings.replace(mode="safree"), [job.note()]
                path = job.path
            model, meta = self.weights.load(path, encoder)
            return Sanitizer(encoder, model, meta), settings, []
        path = self.weights.find(settings.weights, encoder)
        if path is None:
            return Sanitizer(encoder), settings, []  # the core raises its clear "needs calibrated weights" error
        model, meta = self.weights.load(path, encoder)
        return Sanitizer(encoder, model, meta), settings, []

    def sanitizer(self, encoder: WebuiTextEncoder, settings: Settings) -> Sanitizer:
        return self.plan(encoder, settings)[0]

    def run(self, encoder: WebuiTextEncoder, z: torch.Tensor, ids: torch.Tensor, pieces, settings: Settings,
            texts: list[str] | None = None, multipliers: torch.Tensor | None = None):
        """The core call; ``texts`` (the prompts as typed) turn on the normalised-text check.

        ``multipliers``: the rows' emphasis weights (``emphasis.row_multipliers``); the core scores and edits
        the rows without them, and the edited rows get their weight back."""
        sanitizer, settings, notes = self.plan(encoder, settings)
        rows = z if multipliers is None else emphasis.unweighted(z, multipliers)
        with torch.no_grad():
            result = sanitizer.sanitize(rows, ids.to(z.device), encoder.layout, settings, pieces=pieces, texts=texts)
            if multipliers is not None:
                result.embeddings = emphasis.reweighted(z, result.embeddings, result.weights > 0, multipliers)
        if notes:
            result.report["notes"] = list(notes) + [n for n in result.report["notes"] if n not in notes]
        return result

    def score_texts(self, encoder: WebuiTextEncoder, texts: list[str], settings: Settings,
                    forward: Callable[[list[str]], Any] | None = None):
        """Tokenize and encode ``texts`` with the host model, then sanitize (for the live heatmap).

        ``forward``: the host text model's own call (``host_forward``), so the rows scored are the rows a
        generation sanitizes, emphasis included; without it, the transformer's rows without emphasis."""
        batch = encoder.tokenize(texts)
        multipliers = None
        with torch.no_grad():
            if forward is not None:
                z = forward(list(texts))
                z = z[0] if isinstance(z, tuple) else z
                multipliers = emphasis.row_multipliers(encoder.host, encoder.host.process_texts(list(texts))[0])
            else:
                z = encoder.encode(batch.ids.to(encoder.device)).tokens
        if tuple(z.shape[:2]) != tuple(batch.ids.shape):
            raise RuntimeError(f"the text model returned {tuple(z.shape)} for token ids {tuple(batch.ids.shape)}")
        return batch, self.run(encoder, z, batch.ids, batch.pieces, settings, texts=list(texts),
                               multipliers=multipliers)


def host_forward(host, texts: list[str]):
    """The host text model's own output for ``texts`` (A1111 ``forward``, Forge ``__call__``), as in a generation.

    Forge's engine notes emphasis and textual-inversion names for the next infotext in a module-level dict
    (``classic_engine.last_extra_generation_params``); its content is put back so that a live-heatmap call
    leaves no trace in a generation. Call it inside ``Hook.bypass()``."""
    import sys

    engine = sys.modules.get("backend.text_processing.classic_engine")
    pending = getattr(engine, "last_extra_generation_params", None)
    saved = dict(pending) if isinstance(pending, dict) else None
    try:
        return host(list(texts))
    finally:
        if saved is not None:
            pending.clear()
            pending.update(saved)


def sanitize_output(runtime: Runtime, state: RunState, encoder: WebuiTextEncoder, texts, out):
    """Sanitize a host forward's output; returns the same structure with a new tensor."""
    z = out[0] if isinstance(out, tuple) else out
    if not isinstance(z, torch.Tensor) or z.dim() != 3:
        raise TypeError(f"Embedding Sanitizer: unexpected text model output {type(z).__name__}; "
                        "this webui version is not supported")
    batch_chunks, _ = encoder.host.process_texts(list(texts))
    ids, pieces = encoder.chunk_ids(batch_chunks)
    if tuple(ids.shape) != tuple(z.shape[:2]):
        raise RuntimeError(f"Embedding Sanitizer: the text model returned {tuple(z.shape)} for token ids "
                           f"{tuple(ids.shape)}; this webui version lays out chunks differently")
    if state.settings.uses_es:
        for label in runtime.weights.broken_labels():
            state.note_once(f"skipped ES weights file {label}")
    result = runtime.run(encoder, z, ids, pieces, state.settings, texts=[str(t) for t in texts],
                         multipliers=emphasis.row_multipliers(encoder.host, batch_chunks))
    negative = bool(getattr(texts, "is_negative_prompt", False))
    for note in result.report["notes"]:
        if note.startswith("prompt ") and "normalised" in note:  # the normalised-text check
            state.note_once(note)
        elif note.startswith("auto-calibration"):  # weights 'auto-calibrate': running, finished or failed
            state.note_once(note)
    # float32 from the core: 0.55 arrives as 0.55000001, which would give one step more; the fractions are
    # (t' + 1) / 50, so six decimals give back the intended value.
    ends = None if result.schedule_end is None else [round(float(f), 6) for f in result.schedule_end]
    for b, text in enumerate(texts):
        words = word_view(pieces[b], result.scores[b], result.weights[b], result.flagged[b])
        state.records.append(Record(str(text), encoder.name, negative, words, flagged_words(result.report, b, words),
                                    None if ends is None else ends[b]))
    state.calls += 1
    if state.audit is not None:  # queued; written by the log's own thread (raises if it fails closed)
        host = "forge" if type(encoder.host).__module__.startswith("backend.") else "a1111"
        state.audit.record_result(host=host, request_id=state.request_id, prompts=[str(t) for t in texts],
                                  result=result, notes=list(state.notes), settings=state.settings)
    if ends is not None and not negative:
        if state.svf_fractions is not None:
            state.svf_fractions.append(ends)
        elif any(f > 0 for f in ends):
            state.note_once(SVF_UNMAPPED)
    new = result.embeddings
    if isinstance(out, tuple):  # (z, pooled): only the pooled vector may change besides z
        return (new,) + pooled.sanitize_rest(encoder, state, result, tuple(out[1:]))
    return new


def word_view(pieces, scores, weights, flagged) -> list[dict]:
    """Per word: text, max score, max edit weight, flagged (for the heatmap)."""
    scores_l = [float(s) for s in scores.tolist()]
    weights_l = [float(w) for w in weights.tolist()]
    flagged_l = [bool(f) for f in flagged.tolist()]
    out = []
    for text, score, positions in group_words(pieces, scores_l):
        out.append({
            "text": text,
            "score": round(float(score), 4),
            "weight": round(max(weights_l[p] for p in positions), 4),
            "flagged": any(flagged_l[p] for p in positions),
            "positions": list(positions),
        })
    return out


def flagged_words(report: dict, b: int, words: list[dict]) -> list[str]:
    concept_at = {t["position"]: t["concept"] for t in report["prompts"][b]["tokens"] if t.get("concept")}
    out = []
    for word in words:
        if word["flagged"]:
            concept = next((concept_at[p] for p in word["positions"] if p in concept_at), None)
            out.append(f"{word['text']} ({concept})" if concept else word["text"])
    return out


def merge_words(views: list[list[dict]]) -> list[dict]:
    """Combine the views of several text models of one prompt (SDXL L and G): max per word."""
    views = [v for v in views if v]
    if not views:
        return []
    base = [dict(w) for w in views[0]]
    for other in views[1:]:
        if [w["text"] for w in other] != [w["text"] for w in base]:
            continue
        for mine, theirs in zip(base, other):
            mine["score"] = max(mine["score"], theirs["score"])
            mine["weight"] = max(mine["weight"], theirs["weight"])
            mine["flagged"] = mine["flagged"] or theirs["flagged"]
    return base


def words_html(words: list[dict]) -> str:
    """Word chips coloured by score; words the sanitizer edits are marked ``es-edited``."""
    import html

    spans = []
    for word in words:
        bg = score_color(word["score"])
        fg = text_color(bg)
        edited = word["weight"] > 0
        title = f"harm score {word['score']:.2f}" + (f", edited (weight {word['weight']:.2f})" if edited else "")
        spans.append(
            f'<span class="es-word{" es-edited" if edited else ""}" data-score="{word["score"]:.2f}" '
            f'title="{title}" style="background:#{bg[0]:02x}{bg[1]:02x}{bg[2]:02x};'
            f'color:#{fg[0]:02x}{fg[1]:02x}{fg[2]:02x}">{html.escape(word["text"])}</span>')
    return '<div class="es-heatmap">' + " ".join(spans) + "</div>"
