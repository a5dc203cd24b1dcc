"""One ``scan`` output record per prompt, from a batch run of the sanitizer.

``PromptScanner.scan(texts)`` encodes a batch of prompts with the encoder, sanitizes
it with the effective settings and returns, per prompt, the record fields (see the
README, "scan", for the contract) and the mean of its non-padding rows before and
after sanitizing. Every figure of a prompt is computed on its own chunks only, so a
record does not depend on which prompts shared its batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..heatmap import group_words
from ..layout import ROLE_PAD, ROLE_WORD
from ..sanitize import Sanitizer
from ..settings import Settings

DIGITS = 4


@dataclass
class ScannedPrompt:
    fields: dict  # prompt_score, flagged, edited, max_edit_weight, residual_score, notes
    original: torch.Tensor  # [D] float32 mean of the prompt's non-padding rows
    sanitized: torch.Tensor  # [D] the same after sanitizing
    report: dict  # the sanitizer's report entry of this prompt (for the audit log)


class PromptScanner:
    def __init__(self, encoder, sanitizer: Sanitizer, settings: Settings, es_model=None,
                 notes: list[str] | None = None) -> None:
        self.encoder = encoder
        self.sanitizer = sanitizer
        self.settings = settings
        self.es_model = es_model if es_model is not None and es_model.has_prompt_detector else None
        self.notes = list(notes or [])  # notes of the run (the policy's), shown on every record

    def scan(self, texts: list[str]) -> list[ScannedPrompt]:
        batch, out = self.encoder.encode_texts(list(texts))
        layout = self.encoder.layout
        result = self.sanitizer.sanitize(out.tokens, batch.ids, layout, self.settings, pieces=batch.pieces)
        rows = out.tokens.float()
        sanitized = result.embeddings.float()
        roles = result.roles
        chunk = layout.chunk_len_for(rows.shape[1])
        chunks = roles.reshape(len(texts), -1, chunk)
        own = (chunks == ROLE_WORD).any(-1).sum(-1).clamp_min(1).tolist()  # the prompt's chunks; the rest pad the batch
        before = self._prompt_scores(rows, roles, chunk)
        after = self._prompt_scores(sanitized, roles, chunk)
        keep = (roles != ROLE_PAD).unsqueeze(-1).float()
        scores, weights, flagged = result.scores.cpu(), result.weights.cpu(), result.flagged.cpu()
        out_list = []
        for b, text in enumerate(texts):
            end = own[b] * chunk
            mask = keep[b, :end]
            count = mask.sum().clamp_min(1.0)
            fields = {
                "prompt_score": None if before is None else round(float(before[b, :own[b]].max()), DIGITS),
                "flagged": self._flagged_words(batch.pieces[b][:end], scores[b, :end], flagged[b, :end]),
                "edited": bool((weights[b, :end] > 0).any()),
                "max_edit_weight": round(float(weights[b, :end].max()), DIGITS),
                "residual_score": None if after is None else round(float(after[b, :own[b]].max()), DIGITS),
                "notes": self.notes + result.report["prompts"][b]["notes"] + self._text_notes(text),
            }
            out_list.append(ScannedPrompt(fields, ((rows[b, :end] * mask).sum(0) / count).cpu(),
                                          ((sanitized[b, :end] * mask).sum(0) / count).cpu(),
                                          result.report["prompts"][b]))
        return out_list

    def _prompt_scores(self, rows: torch.Tensor, roles: torch.Tensor, chunk: int) -> torch.Tensor | None:
        """``[B, chunks]`` whole-prompt probabilities of every chunk of ``rows``, None without a detector."""
        if self.es_model is None:
            return None
        batch, total, width = rows.shape
        param = next(self.es_model.parameters())
        flat = rows.reshape(-1, chunk, width).to(param.device, param.dtype)
        probs = self.es_model.prompt_scores(flat, roles.reshape(-1, chunk).to(param.device))
        return probs.float().reshape(batch, total // chunk).cpu()

    @staticmethod
    def _flagged_words(pieces: list[str], scores: torch.Tensor, flagged: torch.Tensor) -> list[dict]:
        """Words (pieces merged as in the heatmap) with at least one flagged piece; score = max of its pieces."""
        if not bool(flagged.any()):
            return []
        flags = flagged.tolist()
        return [{"word": word, "score": round(score, DIGITS)}
                for word, score, positions in group_words(pieces, scores.tolist())
                if any(flags[p] for p in positions)]

    @staticmethod
    def _text_notes(text: str) -> list[str]:
        return ["empty prompt: nothing to flag"] if not text.strip() else []
