"""The delegating proxy put on a cloned CLIP's ``cond_stage_model``.

Every downstream encode (CLIPTextEncode, the SDXL/Flux encode nodes, scheduled
encodes, third-party nodes using ``encode_from_tokens*``) calls
``cond_stage_model.encode_token_weights(tokens)``. The proxy runs the family's
own ``encode_token_weights`` on a *view* whose stream attributes (``clip_l``,
``clip_g``, ``clip_h``, ``t5xxl``) are recorders: each stream is encoded by
ComfyUI as usual and its rows and exact token ids are kept. The family's code
is then replayed on the recorded outputs with each stream sanitized by the
core, so the host's own combination (SDXL concat and cut, SD3 padding and T5
concat, Flux T5-only) builds the result. The shared inner model is never
mutated; the original CLIP and other branches never see the proxy.

Pooled vectors: where the family passes a stream's pooled output on (SDXL: CLIP-G, Flux:
CLIP-L, SD3: both), that stream's recorded pooled output is replaced, before the replay, by
a new tensor cleaned in the pooled concept span (``embedding_sanitizer.pooled``) with the
largest edit weight of the stream's word rows; the span is built from the stream's own
pooled outputs of the concept list (``ComfyStreamEncoder.host_pooled``).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import torch

from embedding_sanitizer import Policy, Sanitizer, Settings
from embedding_sanitizer.normalized_check import text_from_pieces
from embedding_sanitizer.pooled import DEFAULT_POOLED_CACHE, prompt_weights, sanitize_pooled
from embedding_sanitizer.sanitize import SanitizerInputError
from embedding_sanitizer.weights_io import WeightsMismatch

from . import policy as admin_policy
from . import prompt_weights as prompt_weighting  # ComfyUI's (word:1.3); not pooled.prompt_weights
from . import registry
from .encoder import ComfyStreamEncoder, UnsupportedTokens, ids_from_chunks
from .report import stream_view, summary, widget_payload
from .streams import NOT_COVERED, POOLED, family_of, layout_for
from .weights import AUTO, AUTO_CALIBRATE, resolve, save_folder

log = logging.getLogger("embedding_sanitizer.comfyui")
_warned: set = set()


def _warn_once(key, message, *args) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


class _View:
    """Stands in for the family model while its ``encode_token_weights`` runs: stream attributes are swapped."""

    def __init__(self, inner, streams: dict) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_streams", streams)

    def __getattr__(self, name):
        streams = object.__getattribute__(self, "_streams")
        if name in streams:
            return streams[name]
        return getattr(object.__getattribute__(self, "_inner"), name)

    def __setattr__(self, name, value):
        # kept on the view: a family that stores state while encoding must not write onto the shared model
        object.__setattr__(self, name, value)


class _Recorder:
    def __init__(self, sub) -> None:
        self.sub = sub
        self.calls: list = []

    def encode_token_weights(self, token_weight_pairs):
        out = self.sub.encode_token_weights(token_weight_pairs)
        unweighted = None
        if prompt_weighting.has_weights(token_weight_pairs):  # the rows the detectors know (nodes/prompt_weights.py)
            unweighted = self.sub.encode_token_weights(prompt_weighting.unit_weights(token_weight_pairs))
        self.calls.append((token_weight_pairs, out, unweighted))
        return out

    def __getattr__(self, name):
        return getattr(self.sub, name)


class _Replayer:
    def __init__(self, sub, outputs: list) -> None:
        self.sub = sub
        self.outputs = list(outputs)

    def encode_token_weights(self, token_weight_pairs):
        return self.outputs.pop(0)

    def __getattr__(self, name):
        return getattr(self.sub, name)


@dataclass
class StreamRecord:
    stream: str
    encoder: ComfyStreamEncoder
    token_weight_pairs: list
    output: tuple
    unweighted: tuple | None = None  # the output with every prompt weight 1, when the prompt has weights


@dataclass
class EncodeRecord:
    """One encode: the family, each stream's original output and ids, and the original combined output."""

    inner: object
    family: str | None
    token_weight_pairs: object
    streams: list[StreamRecord]
    original: tuple
    notes: list[str] = field(default_factory=list)


def record_encode(inner, tokenizer, token_weight_pairs) -> EncodeRecord:
    family, names = family_of(inner)
    if family is None:
        name = type(inner).__name__
        _warn_once(("family", name), "Embedding Sanitizer: text encoder %s is not covered; its conditioning "
                   "passes through unchanged", name)
        out = inner.encode_token_weights(token_weight_pairs)
        return EncodeRecord(inner, None, token_weight_pairs, [], tuple(out),
                            [f"text encoder family {name} is not covered: conditioning passed through unchanged"])
    recorders = {s: _Recorder(getattr(inner, s)) for s in names}
    out = type(inner).encode_token_weights(_View(inner, recorders), token_weight_pairs)
    streams = []
    for s in names:
        for pairs, stream_out, unweighted in recorders[s].calls:
            sub_tok = getattr(tokenizer, s, None) if tokenizer is not None else None
            encoder = ComfyStreamEncoder(family, s, getattr(inner, s), sub_tok, layout_for(family, s, getattr(inner, s)))
            streams.append(StreamRecord(s, encoder, pairs, tuple(stream_out),
                                        None if unweighted is None else tuple(unweighted)))
    return EncodeRecord(inner, family, token_weight_pairs, streams, tuple(out))


def start_auto_calibration(encoder, settings: Settings):
    """The background calibration job for this stream's encoder (started on the first call, then only read)."""
    from embedding_sanitizer.auto_calibration import SCHEDULER
    from embedding_sanitizer.settings import parse_concepts

    from .calibrate_node import CACHE_SUBDIR

    folder = save_folder()
    return SCHEDULER.request(encoder.cache_key, encoder.detached_copy, folder, parse_concepts(settings.concepts),
                             cache_dir=folder / CACHE_SUBDIR, log_line=logging.getLogger(
                                 "embedding_sanitizer.comfyui").info)


class Patch:
    """The settings of one Embedding Sanitizer (CLIP) node, and its per-stream sanitizers."""

    def __init__(self, settings: Settings, weights_choice: str = AUTO, node_id: str | None = None,
                 notes: list[str] | None = None, policy=None, server: bool = False) -> None:
        self.settings = settings
        self.weights_choice = weights_choice
        self.node_id = node_id
        self.notes = list(notes or [])
        # The admin policy in force when the patch was made: under a lock, a pass-through fails closed.
        self.policy = policy if policy is not None else Policy()
        self.server = server  # made by the server-wide lock, not by a node
        self.on_encode = None  # called with (record, entry) after each sanitized encode (the audit log)
        self.preparing = None  # set by nodes/prepare.py while the node's own check run encodes
        self._lock = threading.Lock()
        self._sanitizers: dict[tuple, tuple] = {}

    def _sanitizer_for(self, rec: StreamRecord, n_streams: int):
        """(Sanitizer, settings for this stream, notes)."""
        settings = self.settings
        notes = []
        enc = rec.encoder
        key = (rec.stream, enc.name, enc.fingerprint)
        with self._lock:
            hit = self._sanitizers.get(key)
        if hit is not None:
            return hit
        es_model, es_meta = None, {}
        if settings.uses_es and settings.effective_intensity > 0:
            if rec.stream == "t5xxl":
                notes.append("t5xxl: learned ES is not available for T5; the projection is used")
            else:
                try:
                    es_model, es_meta, note = resolve(self.weights_choice, enc)
                except WeightsMismatch:
                    if n_streams == 1:
                        raise
                    es_model, es_meta, note = resolve(AUTO, enc)
                notes.append(f"{rec.stream}: {note}")
            if es_model is None and self.weights_choice == AUTO_CALIBRATE and rec.stream != "t5xxl":
                job = start_auto_calibration(enc, settings)
                notes.append(f"{rec.stream}: {job.note()}")
                # Not cached while the job is not done: the next encode looks for the new file again.
                return Sanitizer(enc), settings.replace(mode="safree"), notes
            if es_model is None:
                if settings.mode == "es" and rec.stream != "t5xxl":
                    raise SanitizerInputError(
                        f"Embedding Sanitizer: mode 'es' needs calibrated weights for the {rec.stream} stream "
                        f"({enc.name}); none found. Run 'Calibrate Embedding Sanitizer' on this CLIP, pick a "
                        "weights file, or use mode 'safree'.")
                settings = settings.replace(mode="safree")
                if rec.stream != "t5xxl":
                    notes.append(f"{rec.stream}: no ES weights, projection only")
        hit = (Sanitizer(enc, es_model, es_meta), settings, notes)
        with self._lock:
            self._sanitizers[key] = hit
        return hit

    def apply(self, record: EncodeRecord) -> tuple[tuple, dict]:
        """Sanitize a recorded encode: (output tuple like the family's, result entry)."""
        entry = {"family": record.family, "settings": self.settings.effective_dict(), "streams": {}, "heatmap": [],
                 "not_covered": list(NOT_COVERED.get(record.family, [])), "notes": self.notes + record.notes,
                 "schedule_end": None, "pooled": {}}
        if record.family is None:
            admin_policy.refuse_or_note(self.policy, f"the text encoder {type(record.inner).__name__} is not covered "
                                        "by the sanitizer")
            entry["not_covered"] = ["all streams"]
            return record.original, entry
        pooled_streams, pooled_label = POOLED.get(record.family, ((), ""))
        replay: dict[str, list] = {}
        fractions = []
        pooled_gaps = []
        for rec in record.streams:
            out = rec.output
            new_out, result = self._sanitize_stream(rec, out, len(record.streams), entry, fractions)
            if rec.stream in pooled_streams:
                new_out, gap = self._sanitize_pooled(rec, new_out, result, entry)
                if gap:
                    pooled_gaps.append(gap)
            replay.setdefault(rec.stream, []).append(new_out)
        if pooled_label:
            missing = [s for s in pooled_streams if not any(r.stream == s for r in record.streams)]
            pooled_gaps += [f"{s}: stream not present" for s in missing]
            if pooled_gaps:
                entry["not_covered"].append(f"{pooled_label}: passed through unchanged ({'; '.join(pooled_gaps)})")
        players = {name: _Replayer(getattr(record.inner, name), outs) for name, outs in replay.items()}
        out = type(record.inner).encode_token_weights(_View(record.inner, players), record.token_weight_pairs)
        if fractions:
            entry["schedule_end"] = max(fractions)
        entry["summary"] = summary(entry)
        return tuple(out), entry

    def _sanitize_pooled(self, rec: StreamRecord, out: tuple, result, entry: dict) -> tuple[tuple, str]:
        """(stream output with a new pooled tensor, "" or why the pooled vector was left as it was)."""
        pooled = out[1] if len(out) > 1 else None
        if result is None:
            return out, f"{rec.stream}: its token rows were passed through"
        if not torch.is_tensor(pooled) or pooled.dim() != 2:
            return out, f"{rec.stream}: no pooled output"
        weight = prompt_weights(result.weights, result.roles).to(torch.float32)
        if weight.shape[0] != pooled.shape[0]:
            weight = weight.amax().expand(pooled.shape[0])
        largest = float(weight.max()) if weight.numel() else 0.0
        if largest <= 0:
            new = pooled.clone()
        else:
            try:
                subspace = DEFAULT_POOLED_CACHE.get(rec.encoder.pooled_key, rec.encoder.host_pooled,
                                                    self.settings.all_concepts)
                with torch.no_grad():  # the span is built under inference mode
                    new = sanitize_pooled(pooled, weight, subspace)
            except (RuntimeError, ValueError) as exc:
                admin_policy.refuse_or_note(self.policy, f"the {rec.stream} pooled vector cannot be sanitized ({exc})")
                _warn_once(("pooled", rec.stream, str(exc)), "Embedding Sanitizer: %s pooled vector passed "
                           "through unchanged: %s", rec.stream, exc)
                return out, f"{rec.stream}: {exc}"
        previous = entry["pooled"].get(rec.stream, {}).get("weight", 0.0)
        entry["pooled"][rec.stream] = {"weight": round(max(largest, previous), 4),
                                       "changed": bool(largest > 0 and not torch.equal(new, pooled))}
        note = (f"{rec.stream} pooled: sanitized with weight {largest:.3g}" if largest > 0 else
                f"{rec.stream} pooled: unchanged (no word edited)")
        if note not in entry["notes"]:
            entry["notes"].append(note)
        return (out[0], new) + tuple(out[2:]), ""

    def _sanitize_stream(self, rec: StreamRecord, out: tuple, n_streams: int, entry: dict, fractions: list):
        """(stream output with sanitized rows, the core's result or None when passed through)."""
        cond = out[0]
        try:
            ids = ids_from_chunks(rec.token_weight_pairs, rec.encoder.layout)
        except UnsupportedTokens as exc:
            admin_policy.refuse_or_note(self.policy, f"the {rec.stream} tokens cannot be placed ({exc})")
            entry["notes"].append(f"{rec.stream}: passed through unchanged ({exc})")
            return out, None
        chunk = rec.encoder.layout.chunk_length
        if cond.shape[1] != ids.shape[1] or (chunk and ids.shape[1] % chunk) or \
                (chunk is None and len(rec.token_weight_pairs) != 1):
            admin_policy.refuse_or_note(self.policy, f"the {rec.stream} token list ({ids.shape[1]}) does not line up "
                                        f"with the {cond.shape[1]} encoded rows")
            entry["notes"].append(f"{rec.stream}: passed through unchanged (token list of {ids.shape[1]} does not "
                                  f"line up with the {cond.shape[1]} encoded rows)")
            _warn_once(("align", rec.stream), "Embedding Sanitizer: %s rows do not line up with the tokens; "
                       "passed through unchanged", rec.stream)
            return out, None
        sanitizer, settings, notes = self._sanitizer_for(rec, n_streams)
        entry["notes"].extend(n for n in notes if n not in entry["notes"])
        pieces = rec.encoder.pieces_for(ids)
        texts = [text_from_pieces(p) for p in pieces]  # ComfyUI passes token ids only: the text they spell
        rows, weights = cond, None
        if rec.unweighted is not None:  # prompt weights: score and edit the unweighted rows, then weight the edit
            candidate = prompt_weighting.row_weights(rec.token_weight_pairs)
            if tuple(rec.unweighted[0].shape) == tuple(cond.shape) and candidate.shape[1] == cond.shape[1]:
                rows, weights = rec.unweighted[0], candidate
            else:
                entry["notes"].append(f"{rec.stream}: prompt weights scored as weighted rows (their layout "
                                      "did not line up)")
        try:
            result = sanitizer.sanitize(rows, ids.to(cond.device), rec.encoder.layout, settings, pieces=pieces,
                                        texts=texts)
        except SanitizerInputError as exc:
            raise SanitizerInputError(f"Embedding Sanitizer ({rec.stream}): {exc}") from exc
        if weights is not None:
            result.embeddings = prompt_weighting.reweighted(cond, rows, result.embeddings, weights)
        entry["streams"][rec.stream] = result.report
        view = stream_view(rec.stream, pieces[0], result.scores[0].tolist(), result.flagged[0], result.weights[0])
        if result.prompt_scores is not None:  # ES weights with a whole-prompt detector
            view["prompt_score"] = round(float(result.prompt_scores[0]), 4)
        entry["heatmap"].append(view)
        if result.schedule_end is not None:
            fractions.append(float(result.schedule_end[0]))
        return (result.embeddings,) + tuple(out[1:]), result


class SanitizedTextModel:
    """Delegating proxy for ``CLIP.cond_stage_model``; overrides only ``encode_token_weights``."""

    def __init__(self, inner, tokenizer, patch: Patch | None) -> None:
        while isinstance(inner, SanitizedTextModel):  # re-patching replaces the settings
            inner = inner.es_inner
        object.__setattr__(self, "es_inner", inner)
        object.__setattr__(self, "es_tokenizer", tokenizer)
        object.__setattr__(self, "es_patch", patch)

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "es_inner"), name)

    def __setattr__(self, name, value):
        setattr(self.es_inner, name, value)

    def __repr__(self) -> str:
        return f"SanitizedTextModel({self.es_inner.__class__.__name__})"

    def encode_token_weights(self, token_weight_pairs):
        patch = self.es_patch
        if patch is None:  # record only (Sanitize Conditioning re-encoding a text)
            record = record_encode(self.es_inner, self.es_tokenizer, token_weight_pairs)
            registry.remember(record.original[0], {"record": record})
            return record.original
        if patch.preparing is not None:  # the node's check run (nodes/prepare.py): raises, records nothing
            return patch.preparing(self.es_inner, self.es_tokenizer, token_weight_pairs)
        try:
            record = record_encode(self.es_inner, self.es_tokenizer, token_weight_pairs)
            out, entry = patch.apply(record)
        except Exception as exc:
            if not admin_policy.fails_open(patch.policy):
                raise
            log.warning("Embedding Sanitizer: sanitizing failed (%s: %s); the conditioning passes through "
                        "unsanitized because the admin policy (%s) says on_error: open",
                        type(exc).__name__, exc, admin_policy.LABEL)
            return self.es_inner.encode_token_weights(token_weight_pairs)
        held = {"record": record, "patch": patch, "entry": entry, "output": out}
        if patch.server:
            held["server"] = True
        registry.remember(out[0], held)
        if patch.on_encode is not None:  # the audit line; raises when the log fails under a closed policy
            patch.on_encode(record, entry)
        if entry["heatmap"] and not patch.server:
            registry.push(widget_payload(patch.node_id, [entry]))
        return out


def patch_clip(clip, patch: Patch | None):
    """A clone of ``clip`` whose text model is wrapped; ``clip`` itself is untouched."""
    clone = clip.clone()
    clone.cond_stage_model = SanitizedTextModel(clip.cond_stage_model, clip.tokenizer, patch)
    return clone


def unwrap(model):
    while isinstance(model, SanitizedTextModel):
        model = model.es_inner
    return model


def is_close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    a = a.to(torch.float32)
    b = b.to(a.device, torch.float32)
    scale = float(b.abs().max()) if b.numel() else 1.0
    return bool((a - b).abs().max() <= 1e-3 * max(scale, 1.0))
