"""The single entry of the core: sanitize a batch of prompt embeddings.

``Sanitizer(encoder, es_model).sanitize(embeddings [B, T, D], token_ids [B, T],
layout, settings)`` returns a ``SanitizeResult``: sanitized embeddings (same
shape, dtype and device), per-token scores in [0, 1], the edit weight of every
row, the role of every row, the schedule fraction when the self-validating
schedule is on, and a JSON-serialisable report. The report's ``notes`` concern the
batch; each prompt's entry has its own ``notes`` (what concerns that prompt).

Scale: every chunk is divided by its overall scale (read from its BOS row, ``scale``) before it is
scored and edited, and the edited rows are multiplied by it again, so a host that rescales whole
chunks (A1111's and Forge's emphasis) gets the same scores and flags and a proportional edit.

Order in ``es+safree`` mode: the learned sanitizer runs first; the projection
detector then looks at its output and projects what is still flagged. Scores
are the maximum of both stages.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .concepts import DEFAULT_CACHE, SubspaceCache
from .es_model import EmbeddingSanitizerNet, apply_es, edit_weight
from .layout import ROLE_BOS, ROLE_EOS, ROLE_NAMES, ROLE_PAD, ROLE_WORD, ChunkLayout, SD1_CLIP_L, token_roles
from .pooled_erasure import (
    PROMPT_TARGET_PROBABILITY, PooledCorrection, apply_pooled_erasure, edited_words, reencoded_targets,
)
from .scale import expand, row_scales
from .prompt_detector import pooling_for
from .projection import (
    ConceptSubspace, concept_complement, fast_project, fast_scores, input_space_projectors,
    loo_project, loo_scores_from_ratio, loo_trigger_stats, svf_beta, svf_fraction,
)
from .settings import Settings

log = logging.getLogger(__name__)
REPORT_MIN_SCORE = 0.05
LOO_BATCH = 256
#: Largest magnitude accepted in the embeddings. Text encoders give values below about 1e3; beyond
#: 1e12 the float32 squares and sums of the norms and LayerNorm variances can overflow (NaN scores).
MAX_ABS_VALUE = 1e12


class SanitizerInputError(ValueError):
    """The input tensors cannot be sanitized (shape, NaN, missing resources); the message says why."""


@dataclass
class SanitizeResult:
    embeddings: torch.Tensor
    scores: torch.Tensor
    weights: torch.Tensor
    roles: torch.Tensor
    flagged: torch.Tensor
    schedule_end: list[float] | None
    report: dict = field(default_factory=dict)
    prompt_scores: torch.Tensor | None = None  # [B] whole-prompt probability (ES weights with a detector)
    scales: torch.Tensor | None = None  # [B, chunks] each chunk's overall scale (None: every chunk at scale 1)

    @property
    def changed(self) -> bool:
        return bool((self.weights > 0).any())


@dataclass
class _ConceptNames:
    """Nearest-concept lookup over several concept lists (the report's concept names)."""

    concepts: tuple[str, ...]
    word_center: torch.Tensor
    word_dirs: torch.Tensor

    @classmethod
    def merge(cls, subspaces: list[ConceptSubspace]) -> "_ConceptNames":
        return cls(tuple(c for s in subspaces for c in s.concepts), subspaces[0].word_center,
                   torch.cat([s.word_dirs for s in subspaces]))

    def nearest_concepts(self, rows: torch.Tensor) -> torch.Tensor:
        return ((rows.to(torch.float32) - self.word_center) @ self.word_dirs.T).argmax(dim=-1)


class Sanitizer:
    """Holds the resources (encoder, learned model, concept-subspace cache) for sanitizing."""

    def __init__(self, encoder=None, es_model: EmbeddingSanitizerNet | None = None, es_meta: dict | None = None,
                 cache: SubspaceCache = DEFAULT_CACHE) -> None:
        self.encoder = encoder
        self.es_model = es_model
        self.es_meta = es_meta or {}
        self.cache = cache
        self._on_device: dict[str, tuple[ConceptSubspace, ConceptSubspace]] = {}

    # -- resources -------------------------------------------------------------------------
    def subspace(self, concepts: tuple[str, ...], device: torch.device) -> ConceptSubspace:
        if self.encoder is None:
            raise SanitizerInputError("the projection needs the text encoder to encode the concept list; "
                                      "none was given to the Sanitizer")
        base = self.cache.get(self.encoder, concepts)
        key = str(device)
        held = self._on_device.get(key)
        if held is None or held[0] is not base:  # identity, not id(): a freed subspace's id can be reused
            held = self._on_device[key] = (base, base.to(device))
        return held[1]

    # -- entry -----------------------------------------------------------------------------
    def sanitize(self, embeddings: torch.Tensor, token_ids: torch.Tensor, layout: ChunkLayout = SD1_CLIP_L,
                 settings: Settings | None = None, pieces: list[list[str]] | None = None,
                 texts: list[str | None] | None = None) -> SanitizeResult:
        """``texts``, the prompt of every batch row where known, also scores each prompt's normalised
        text (``text_normalize``: confusables, NFKC, control and zero-width characters) and edits the
        chunks it flags (``normalized_check``); the report notes it."""
        settings = settings or Settings()
        if texts is not None:
            from .normalized_check import sanitize_with_texts

            return sanitize_with_texts(self, embeddings, token_ids, layout, settings, pieces, texts)
        self._validate(embeddings, token_ids, layout)
        ids = token_ids.to(embeddings.device)
        roles = token_roles(ids, layout)
        chunk = layout.chunk_len_for(ids.shape[1])
        intensity = settings.effective_intensity
        batch, total, width = embeddings.shape
        zeros = torch.zeros(batch, total, device=embeddings.device)
        notes: list[str] = []  # notes that concern every prompt of the batch
        head_notes: list[str] = []  # batch totals of per-prompt notes, listed first in the report
        unconfirmed_per_prompt = [0] * batch

        if not settings.enabled or settings.mode == "off":
            report = self._report(settings, 0.0, roles, zeros, zeros, zeros.bool(), None, pieces, None, notes)
            return SanitizeResult(embeddings, zeros, zeros, roles, zeros.bool(), None, report)

        rows = embeddings.to(torch.float32)
        scales = row_scales(self.encoder, rows, roles, chunk, notes)
        if scales is not None:  # score and edit at the encoder's own scale; the edit is scaled back below
            rows = rows / expand(scales, chunk)
        current = rows
        scores = zeros.clone()
        weights = zeros.clone()
        flagged = torch.zeros_like(zeros, dtype=torch.bool)
        subspace = None
        prompt_scores = None

        if settings.uses_es:
            model = self._es_for(width)
            if chunk > model.config.max_length:
                raise SanitizerInputError(f"mode {settings.mode!r}: chunks of {chunk} tokens are longer than the "
                                          f"{model.config.max_length} the sanitizer weights were calibrated for; "
                                          "use mode 'safree' for this encoder")
            current, es_scores, es_weights, chunk_prompt, unconfirmed, es_flags = apply_es(model, rows, roles,
                                                                                           intensity, chunk)
            if chunk_prompt is not None:
                prompt_scores = chunk_prompt.amax(-1)  # the most unsafe chunk speaks for the prompt
            if unconfirmed:
                # per prompt: chunks that had a word above the dead zone and were left wholly unedited
                would_edit = edit_weight(intensity, es_scores).reshape(batch, -1, chunk).amax(-1) > 0
                edited = es_weights.reshape(batch, -1, chunk).amax(-1) > 0
                unconfirmed_per_prompt = (would_edit & ~edited).sum(-1).tolist()
                head_notes.append(unconfirmed_note(unconfirmed))
            scores = torch.maximum(scores, es_scores)
            weights = torch.maximum(weights, es_weights)
            flagged |= es_flags

        schedule_end = None
        if settings.uses_projection:
            # one stage per concept list: the user's, then the policy's required list with its own
            # subspace and threshold, so that extra user concepts cannot dilute the required ones
            stages, fractions = [], None
            for concepts in settings.projection_concept_lists:
                stage = self.subspace(concepts, embeddings.device)
                if stage.width != width:
                    raise SanitizerInputError(f"the embeddings have width {width} but the text encoder "
                                              f"{getattr(self.encoder, 'name', '?')} that encodes the concepts "
                                              f"gives width {stage.width}: pass the encoder that made the embeddings")
                current, p_scores, p_flags, p_weights, proj, detector = self._projection_stage(
                    current, ids, roles, layout, chunk, settings, stage, intensity, notes)
                scores = torch.maximum(scores, p_scores)
                flagged |= p_flags
                weights = torch.maximum(weights, p_weights)
                if settings.schedule == "svf" and proj is not None:  # the longest schedule of the stages
                    stage_fraction = svf_fraction(svf_beta(rows, proj, roles, chunk))
                    fractions = stage_fraction if fractions is None else torch.maximum(fractions, stage_fraction)
                stages.append(stage)
            if settings.schedule == "svf":
                has_edit = (weights > 0).any(-1)
                fractions = fractions if fractions is not None else torch.zeros(batch)
                schedule_end = [float(f) if e else 0.0 for f, e in zip(fractions.tolist(), has_edit.tolist())]
            notes.append(f"projection detector: {detector}")
            if len(stages) > 1:
                notes.append(f"required concepts ({len(stages[-1].concepts)}) scored and projected as their "
                             f"own list, beside the {len(stages[0].concepts)} given")
            subspace = stages[0] if len(stages) == 1 else _ConceptNames.merge(stages)
            notes[:] = list(dict.fromkeys(notes))  # a fallback note once, not once per stage
        elif settings.schedule == "svf":
            notes.append("schedule 'svf' needs the projection (mode safree or es+safree); every step is sanitized")

        if bool((weights > 0).any()):
            current, weights = self._pooled_stage(current, rows, ids, roles, weights, layout, chunk, settings, notes,
                                                  es_weights if settings.uses_es else None)

        if scales is not None:
            current = current * expand(scales, chunk)
        touched = weights > 0
        touched &= roles != ROLE_BOS
        out = torch.where(touched.unsqueeze(-1), current.to(embeddings.dtype), embeddings)
        weights = torch.where(touched, weights, torch.zeros_like(weights))
        report = self._report(settings, intensity, roles, scores, weights, flagged, schedule_end, pieces,
                              (subspace, rows) if subspace is not None else None, notes, prompt_scores,
                              head_notes, unconfirmed_per_prompt)
        return SanitizeResult(out, scores.clamp(0, 1), weights, roles, flagged, schedule_end, report, prompt_scores,
                              scales)

    # -- pieces ----------------------------------------------------------------------------
    def _pooled_stage(self, current, rows, ids, roles, weights, layout, chunk, settings, notes, es_weights=None):
        """Pooled-space erasure (``pooled_erasure``) over every edited chunk, after the row edits.

        The target of an edited chunk is the chunk re-encoded without its edited words (one encoder pass over
        the edited chunks only) when the encoder can re-encode it; otherwise the fitted pooled head's
        prediction (chunks ES edited) or the mean of the unedited rows. In the chunks ES edited, the target is
        then lowered along ES's whole-prompt detector (``PooledCorrection``)."""
        model = self.es_model if settings.uses_es else None
        head = model.pooled_head() if model is not None else None
        pooling = (model.config.prompt_pooling if model is not None and model.config.prompt_pooling
                   else pooling_for(layout))
        if pooling == "eos" and head is None:
            return current, weights  # CLIP without a head: the EOS/padding rows were already projected
        if settings.eos_policy == "keep" and pooling == "eos":
            return current, weights  # the EOS and padding rows are to be left as they are
        batch, total, width = current.shape
        flat_roles = roles.reshape(-1, chunk)
        if settings.eos_policy == "keep":  # mean pooling: only the edited words absorb the correction
            flat_roles = torch.where(flat_roles == ROLE_EOS, torch.full_like(flat_roles, ROLE_BOS), flat_roles)
        use_head = None if es_weights is None else (es_weights.reshape(-1, chunk) > 0).any(-1)
        flat_weights = weights.reshape(-1, chunk)
        targets = self._reencoded_targets(ids.reshape(-1, chunk), roles.reshape(-1, chunk), flat_weights,
                                          layout, pooling, notes)
        moved, stage_w = apply_pooled_erasure(current.reshape(-1, chunk, width), rows.reshape(-1, chunk, width),
                                              flat_roles, flat_weights, pooling,
                                              None if head is None else {k: v.to(rows.device) for k, v in head.items()},
                                              use_head, targets,
                                              pooled_correction(model, pooling, settings.effective_intensity))
        return moved.reshape(batch, total, width), torch.maximum(weights, stage_w.reshape(batch, total))

    def _reencoded_targets(self, ids, roles, weights, layout, pooling, notes) -> torch.Tensor | None:
        """``[N, D]`` pooled targets of the chunks ``ids`` ``[N, L]`` re-encoded without their edited words
        (zero for chunks without one: not used), or None when they cannot be re-encoded (no encoder; and noted:
        textual-inversion vectors, ids outside the vocabulary, an encoder error)."""
        words = edited_words(roles, weights)
        live = words.any(-1)
        if self.encoder is None or not bool(live.any()):
            return None
        pick = ids[live]
        why = self._reencode_blocker(pick, layout)
        if not why:
            device = getattr(self.encoder, "device", pick.device)
            try:
                picked = reencoded_targets(lambda c: self.encoder.encode_chunks(c.to(device)).tokens.to(ids.device),
                                           pick, roles[live], words[live], layout, pooling)
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                why = f"re-encoding failed ({type(exc).__name__}: {exc})"
                log.warning("Embedding Sanitizer: pooled target not re-encoded: %s", why)
            else:
                out = torch.zeros(ids.shape[0], picked.shape[-1], device=picked.device)
                out[live.to(picked.device)] = picked
                return out
        notes.append(f"pooled target not re-encoded ({why}); used the "
                     f"{'fitted pooled head' if self.es_model is not None else 'unedited rows'}")
        return None

    def _word_joins(self, ids: torch.Tensor) -> torch.Tensor | None:
        """Which positions are pieces of one word, from the encoder's tokenizer (None: not known)."""
        joins = getattr(self.encoder, "word_joins", None)
        if joins is None or ids is None:
            return None
        try:
            return joins(ids)
        except Exception as exc:  # a host adapter's tokenizer: score piece by piece as before
            log.warning("Embedding Sanitizer: word pieces unknown (%s); scoring each piece alone", exc)
            return None

    def _reencode_blocker(self, ids: torch.Tensor, layout: ChunkLayout) -> str:
        """Why chunk ids cannot be encoded again by id with this sanitizer's encoder (the leave-one-out
        detector and the pooled target both do), or "" when they can."""
        if self.encoder is None:
            return "no encoder"
        if bool((ids == layout.ti_id).any()):
            return "textual-inversion vectors cannot be re-encoded by id"
        return _outside_vocabulary(ids, self.encoder)

    def _validate(self, embeddings: torch.Tensor, token_ids: torch.Tensor, layout: ChunkLayout) -> None:
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 3:
            shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
            raise SanitizerInputError(f"embeddings must be a [batch, tokens, width] tensor, got {shape}")
        if not embeddings.is_floating_point():
            raise SanitizerInputError(f"embeddings must be floating point, got {embeddings.dtype}")
        if token_ids.shape != embeddings.shape[:2]:
            raise SanitizerInputError(f"token ids {tuple(token_ids.shape)} do not match embeddings "
                                      f"{tuple(embeddings.shape)} (expected [batch, tokens])")
        if embeddings.shape[1] == 0:
            raise SanitizerInputError("embeddings have no tokens")
        try:
            layout.chunk_len_for(embeddings.shape[1])
        except ValueError as exc:
            raise SanitizerInputError(str(exc)) from exc
        if not embeddings.numel():
            raise SanitizerInputError(f"embeddings {tuple(embeddings.shape)} hold no values")
        peak = float(embeddings.abs().amax())  # one reduction: NaN propagates
        if not math.isfinite(peak):
            raise SanitizerInputError("embeddings contain NaN or infinite values; the text encoder output is "
                                      "broken (check the checkpoint and the precision settings)")
        if peak > MAX_ABS_VALUE:
            raise SanitizerInputError(f"embeddings hold values up to {peak:.3g}, far outside any text encoder's "
                                      f"range (limit {MAX_ABS_VALUE:.0e}); the text encoder output is broken")

    def _es_for(self, width: int) -> EmbeddingSanitizerNet:
        if self.es_model is None:
            raise SanitizerInputError("mode 'es' needs calibrated sanitizer weights for this text encoder; "
                                      "choose a weights file, calibrate one (`python -m embedding_sanitizer train`), "
                                      "or use mode 'safree'")
        if self.es_model.config.width != width:
            made_for = self.es_meta.get("encoder_name", "another encoder")
            raise SanitizerInputError(f"the sanitizer weights were calibrated for {made_for} "
                                      f"(width {self.es_model.config.width}) but the embeddings have width {width}")
        return self.es_model

    def _projection_stage(self, current, ids, roles, layout, chunk, settings, subspace, intensity, notes):
        """Detect with one concept list and project what it flags.

        Returns (rows after the edit, scores, flags, edit weights, full projection or None, detector used).
        """
        batch, total = roles.shape
        proj, p_scores, p_flags, detector = self._projection(current, ids, roles, layout, chunk, settings,
                                                             subspace, notes)
        p_weights = torch.zeros_like(p_scores)
        if proj is not None:  # None: nothing flagged anywhere in the batch, nothing to edit
            word_w = intensity * p_flags.float()
            chunk_max = word_w.reshape(batch, -1, chunk).amax(-1, keepdim=True).expand(-1, -1, chunk)
            tail = (roles == ROLE_EOS) | (roles == ROLE_PAD)
            use_tail = settings.eos_policy == "project"
            p_weights = torch.where(tail & use_tail, chunk_max.reshape(batch, total), word_w)
            p_weights = torch.where(roles == ROLE_BOS, torch.zeros_like(p_weights), p_weights)
            current = current + p_weights.unsqueeze(-1) * (proj - current)
        return current, p_scores, p_flags, p_weights, proj, detector

    def _projection(self, rows, ids, roles, layout, chunk, settings, subspace, notes):
        detector = settings.detector
        why = self._reencode_blocker(ids, layout) if detector == "loo" else ""
        if why:
            notes.append(f"leave-one-out detector unavailable ({why}); used the fast detector")
            log.warning("Embedding Sanitizer: leave-one-out detector unavailable (%s); using the fast detector", why)
            detector = "fast"
        if detector == "fast":
            p_scores = fast_scores(rows, roles, subspace, joins=self._word_joins(ids))
            p_flags = (p_scores > settings.threshold) & (roles == ROLE_WORD)
            proj = fast_project(rows, roles, subspace) if bool(p_flags.any()) else None
            return proj, p_scores, p_flags, "fast"
        return self._loo(rows, ids, roles, layout, chunk, subspace)

    def _loo(self, rows, ids, roles, layout, chunk, subspace):
        batch, total, width = rows.shape
        chunk_ids = ids.reshape(-1, chunk)
        chunk_roles = roles.reshape(-1, chunk)
        owner, position = torch.nonzero(chunk_roles == ROLE_WORD, as_tuple=True)
        scores = torch.zeros(batch * (total // chunk), chunk, device=rows.device)
        flags = torch.zeros_like(scores, dtype=torch.bool)
        proj = None
        if owner.numel():
            active = int((chunk_roles != ROLE_PAD).sum(-1).max())
            copies = chunk_ids[owner, :active].clone()
            copies[torch.arange(owner.numel(), device=copies.device), position] = layout.mask_id
            pooled = torch.cat([self.encoder.encode_chunks(copies[i:i + LOO_BATCH].to(self.encoder.device)).pooled
                                .to(rows.device, torch.float32) for i in range(0, copies.shape[0], LOO_BATCH)])
            groups = chunk_ids.shape[0]
            ratio, trigger = loo_trigger_stats(pooled, owner, groups, subspace)
            scores[owner, position] = loo_scores_from_ratio(ratio)
            flags[owner, position] = trigger
            flagged_groups = torch.unique(owner[trigger])
            if flagged_groups.numel():
                proj = rows.reshape(-1, chunk, width).clone()
                keep = torch.isin(owner, flagged_groups)
                p_input = input_space_projectors(pooled[keep], owner[keep], groups)[flagged_groups]
                chunk_rows = rows.reshape(-1, chunk, width)[flagged_groups]
                words = loo_project(chunk_rows, p_input, subspace)
                tails = concept_complement(chunk_rows, subspace)
                is_word = (chunk_roles[flagged_groups] == ROLE_WORD).unsqueeze(-1)
                proj[flagged_groups] = torch.where(is_word, words, tails)
        shape = (batch, total)
        proj = None if proj is None else proj.reshape(batch, total, width)
        return proj, scores.reshape(shape), flags.reshape(shape), "loo"

    def _report(self, settings, intensity, roles, scores, weights, flagged, schedule_end, pieces, concept_ctx,
                notes, prompt_scores=None, head_notes=(), unconfirmed_per_prompt=None) -> dict:
        prompts = []
        nearest = None
        if concept_ctx is not None and bool(flagged.any()):
            subspace, rows = concept_ctx
            nearest = subspace.nearest_concepts(rows).cpu()
        # one transfer, then plain arrays: a batch-1 report costs less than the tensor ops per field would
        roles = roles.cpu().numpy()
        scores = scores.detach().float().cpu().numpy()
        weights = weights.detach().float().cpu().numpy()
        flagged = flagged.cpu().numpy()
        nearest = None if nearest is None else nearest.numpy()
        prompt_list = None if prompt_scores is None else prompt_scores.float().cpu().tolist()
        is_word = roles == ROLE_WORD
        edited = weights > 0
        shown = is_word & ((scores >= REPORT_MIN_SCORE) | flagged | edited)
        for b in range(roles.shape[0]):
            tokens = []
            concepts: dict[str, int] = {}
            for pos in np.flatnonzero(shown[b]).tolist():  # only the tokens worth reporting
                is_flagged = bool(flagged[b, pos])
                entry = {"position": pos, "score": round(float(scores[b, pos]), 4),
                         "weight": round(float(weights[b, pos]), 4), "flagged": is_flagged}
                if pieces is not None:
                    entry["token"] = pieces[b][pos]
                if is_flagged and nearest is not None:
                    name = concept_ctx[0].concepts[int(nearest[b, pos])]
                    entry["concept"] = name
                    concepts[name] = concepts.get(name, 0) + 1
                tokens.append(entry)
            word_scores = scores[b][is_word[b]]
            prompts.append({
                "words": int(is_word[b].sum()),
                "flagged": int(flagged[b].sum()),
                "rows_edited": int(edited[b].sum()),
                "rows_edited_by_role": {ROLE_NAMES[r]: int(((roles[b] == r) & edited[b]).sum())
                                        for r in (ROLE_WORD, ROLE_EOS, ROLE_PAD)},
                "max_score": round(float(word_scores.max()) if word_scores.size else 0.0, 4),
                "prompt_score": None if prompt_list is None else round(prompt_list[b], 4),
                "concepts": concepts,
                "tokens": tokens,
                "schedule_end": None if schedule_end is None else round(schedule_end[b], 4),
                "notes": prompt_notes(unconfirmed_per_prompt[b] if unconfirmed_per_prompt else 0, notes),
            })
        return json_safe({
            "settings": settings.to_dict(),
            "intensity": intensity,
            "es_weights": self.es_meta.get("file", "") if settings.uses_es else "",
            "prompts": prompts,
            "notes": list(head_notes) + notes,
        })


def pooled_correction(model: EmbeddingSanitizerNet | None, pooling: str, intensity: float = 1.0
                      ) -> PooledCorrection | None:
    """The pooled target's correction from ES's whole-prompt detector, when it pools as the stage does.

    The target probability is ``PROMPT_TARGET_PROBABILITY`` up to intensity 1 and its power ``intensity``
    above (0.02 at 1, 0.0028 at 1.5): a higher intensity removes more of the concept from the pooled vector,
    where the row edits are already at full removal."""
    if model is None or not model.has_prompt_detector or model.config.prompt_pooling != pooling:
        return None
    slope, bias = model.prompt_platt.float().tolist()
    probability = PROMPT_TARGET_PROBABILITY ** max(1.0, float(intensity))
    return PooledCorrection.from_detector(model.prompt_direction.float(), slope, bias, probability)


def unconfirmed_note(chunks: int) -> str:
    return (f"{chunks} chunk(s) with uncertain word scores left unedited: the whole-prompt "
            "detector did not confirm them (raise the intensity to edit them anyway)")


def prompt_notes(unconfirmed: int, batch_notes: list[str]) -> list[str]:
    """The notes of one prompt: its own (unconfirmed chunks), then those that concern the whole batch."""
    return ([unconfirmed_note(unconfirmed)] if unconfirmed else []) + list(batch_notes)


def _outside_vocabulary(ids: torch.Tensor, encoder) -> str:
    """Why ``ids`` cannot be re-encoded by ``encoder`` (ids outside its vocabulary), or ""."""
    size = getattr(encoder, "vocab_size", None)
    if not size or not ids.numel():
        return ""
    low, high = int(ids.min()), int(ids.max())
    if low >= 0 and high < size:
        return ""
    return f"token ids outside the encoder's vocabulary 0..{size - 1} (min {low}, max {high})"


def json_safe(value):
    """``value`` with every NaN or infinite float replaced by None, so that the report is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
