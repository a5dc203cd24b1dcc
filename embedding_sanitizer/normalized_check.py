"""Scoring the normalised prompt text beside the host's own tokens.

An obfuscated prompt ("nudе рhоtо" with Cyrillic letters, "nude\\x00photo", zero-width
characters inside a word) tokenizes into pieces the detectors do not know, and passes.
``sanitize_with_texts`` sanitizes the host's rows as usual, then, for every prompt whose
text ``text_normalize.normalize_prompt`` changes:

1. the normalised text is tokenized and encoded by the same encoder and sanitized with the
   same settings;
2. every chunk of it that this edits more strongly than the prompt's own chunk was edited
   (a larger chunk edit weight) replaces that chunk of the output, BOS kept: chunk k of the
   normalised text goes to chunk k of the prompt (the last chunk when the normalised text
   has more chunks), multiplied by that chunk's overall scale (``scale``). The host's
   token ids are unchanged and only those chunks change; a
   prompt whose normalised text is benign keeps its own result bit for bit;
3. scores and flags move to the prompt's own words by aligning the words of both texts
   character by character after normalisation; where the words cannot be aligned, every
   word of a replaced chunk takes the chunk's largest score and flag;
4. the report notes it, per prompt (``"normalized"``) and in ``notes``.

When the normalised text cannot be encoded (no encoder, an encoder error), the prompt
keeps its own result and the report says why.
"""
from __future__ import annotations

import logging

import torch

from .heatmap import group_words
from .layout import ROLE_BOS, ROLE_EOS, ROLE_NAMES, ROLE_PAD, ROLE_WORD
from .text_normalize import differs, normalize_prompt

log = logging.getLogger(__name__)


def sanitize_with_texts(sanitizer, embeddings, token_ids, layout, settings, pieces, texts):
    """``Sanitizer.sanitize`` plus the normalised-text check (see the module docstring)."""
    from .sanitize import SanitizerInputError

    result = sanitizer.sanitize(embeddings, token_ids, layout, settings, pieces=pieces)
    texts = list(texts)
    if len(texts) != embeddings.shape[0]:
        raise SanitizerInputError(f"{len(texts)} prompt text(s) for a batch of {embeddings.shape[0]}")
    if settings.effective_intensity <= 0:
        return result
    changed = [b for b, text in enumerate(texts) if isinstance(text, str) and differs(text)]
    if not changed:
        return result
    if sanitizer.encoder is None:
        result.report["notes"].append("normalised-text check unavailable: no encoder to encode the normalised "
                                      f"text of {len(changed)} prompt(s)")
        return result
    out = result.embeddings.clone()
    scores, weights, flagged = result.scores.clone(), result.weights.clone(), result.flagged.clone()
    prompt_scores = None if result.prompt_scores is None else result.prompt_scores.clone()
    schedule_end = None if result.schedule_end is None else list(result.schedule_end)
    total = embeddings.shape[1]
    chunk = layout.chunk_len_for(total)
    for b in changed:
        normalized = normalize_prompt(texts[b])
        entry = {"text": normalized, "chunks_replaced": [], "flagged": 0, "max_score": 0.0, "aligned": False}
        result.report["prompts"][b]["normalized"] = entry
        try:
            batch = sanitizer.encoder.tokenize([normalized])
            rows = sanitizer.encoder.encode(batch.ids).tokens.to(embeddings.device, embeddings.dtype)
            other = sanitizer.sanitize(rows, batch.ids, batch.layout, settings, pieces=batch.pieces)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            note = f"prompt {b}: normalised-text check failed ({type(exc).__name__}: {exc}); own scores kept"
            log.warning("Embedding Sanitizer: %s", note)
            result.report["notes"].append(note)
            entry["error"] = str(exc)
            continue
        info = other.report["prompts"][0]
        entry.update(flagged=info["flagged"], max_score=info["max_score"])
        other_chunk = batch.layout.chunk_len_for(batch.ids.shape[1])
        if other_chunk != chunk:
            result.report["notes"].append(f"prompt {b}: the normalised text has chunks of {other_chunk}, the "
                                          f"prompt of {chunk}; own scores kept")
            continue
        n_own, n_other = total // chunk, batch.ids.shape[1] // chunk
        roles = result.roles[b]
        for k in range(n_other):
            theirs = slice(k * chunk, (k + 1) * chunk)
            edit = float(other.weights[0, theirs].max())
            target = min(k, n_own - 1)
            mine = slice(target * chunk, (target + 1) * chunk)
            if edit <= 0 or edit <= float(weights[b, mine].max()):
                continue
            keep_bos = roles[mine] == ROLE_BOS
            replaced = other.embeddings[0, theirs].to(out.device, torch.float32)
            if result.scales is not None:  # the encoder's rows, at the scale of the prompt's own chunk
                replaced = replaced * result.scales[b, target].to(out.device)
            replaced = replaced.to(out.dtype)
            out[b, mine] = torch.where(keep_bos.unsqueeze(-1), out[b, mine], replaced)
            weights[b, mine] = torch.where(keep_bos, torch.zeros_like(weights[b, mine]),
                                           torch.full_like(weights[b, mine], edit))
            entry["chunks_replaced"].append(target)
            aligned = _move_scores(pieces[b][mine] if pieces is not None else None, batch.pieces[0][theirs],
                                   other.scores[0, theirs], other.flagged[0, theirs], roles[mine],
                                   scores[b, mine], flagged[b, mine])
            entry["aligned"] = entry["aligned"] or aligned
            if prompt_scores is not None and other.prompt_scores is not None:
                prompt_scores[b] = torch.maximum(prompt_scores[b], other.prompt_scores[0].to(prompt_scores.device))
            if schedule_end is not None and other.schedule_end is not None:
                schedule_end[b] = max(schedule_end[b], other.schedule_end[0])
        _update_entry(result.report["prompts"][b], roles, scores[b], weights[b], flagged[b], schedule_end, b,
                      info, pieces[b] if pieces is not None else None)
        if prompt_scores is not None:
            result.report["prompts"][b]["prompt_score"] = round(float(prompt_scores[b]), 4)
        replaced = entry["chunks_replaced"]
        if replaced:
            note = (f"prompt {b}: its normalised text ({_short(normalized)!r}) is flagged; chunk(s) {replaced} "
                    "replaced by the sanitized normalised text")
            log.info("Embedding Sanitizer: %s", note)
        else:
            note = f"prompt {b}: text normalised for scoring ({_short(normalized)!r}); no stronger edit needed"
        result.report["notes"].append(note)
    result.embeddings = out
    result.scores, result.weights, result.flagged = scores.clamp(0, 1), weights, flagged
    result.prompt_scores, result.schedule_end = prompt_scores, schedule_end
    return result


def text_from_pieces(pieces) -> str:
    """The prompt text as far as its tokenizer pieces tell it (for hosts that pass only token ids)."""
    return " ".join(word for word, _, _ in group_words(list(pieces), [0.0] * len(pieces)))


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _words(pieces, scores) -> list[tuple[str, float, list[int]]]:
    return group_words(list(pieces), [float(s) for s in scores])


def _move_scores(own_pieces, other_pieces, other_scores, other_flags, roles, scores, flagged) -> bool:
    """Give the prompt's word rows of one chunk the scores and flags of the normalised words they overlap.

    Writes into ``scores``/``flagged`` (views of one chunk); returns whether the words aligned.
    """
    is_word = roles == ROLE_WORD
    if own_pieces is not None:
        own = _words(own_pieces, torch.zeros(len(own_pieces)))
        theirs = _words(other_pieces, other_scores)
        own_chars = [(normalize_prompt(w).replace(" ", "").lower(), pos) for w, _, pos in own]
        their_chars = [(normalize_prompt(w).replace(" ", "").lower(), pos) for w, _, pos in theirs]
        if "".join(c for c, _ in own_chars) == "".join(c for c, _ in their_chars) and own_chars:
            owner = [i for i, (text, _) in enumerate(their_chars) for _ in text]
            start = 0
            for text, positions in own_chars:
                hit = sorted(set(owner[start:start + len(text)]))
                start += len(text)
                if not hit:
                    continue
                best = max(float(other_scores[their_chars[i][1]].max()) for i in hit)
                flag = any(bool(other_flags[their_chars[i][1]].any()) for i in hit)
                for p in positions:
                    scores[p] = max(float(scores[p]), best)
                    flagged[p] = bool(flagged[p]) or flag
            return True
    best = float(other_scores.max())
    scores[is_word] = torch.clamp_min(scores[is_word], best)
    flagged[is_word] |= bool(other_flags.any())
    return False


def _update_entry(entry, roles, scores, weights, flagged, schedule_end, b, info, pieces) -> None:
    """Recount one prompt's report entry after chunks were replaced."""
    roles, scores, weights, flagged = roles.cpu(), scores.cpu().clamp(0, 1), weights.cpu(), flagged.cpu()
    word_scores = scores[roles == ROLE_WORD]
    entry["flagged"] = int(flagged.sum())
    entry["rows_edited"] = int((weights > 0).sum())
    entry["rows_edited_by_role"] = {ROLE_NAMES[r]: int(((roles == r) & (weights > 0)).sum())
                                    for r in (ROLE_WORD, ROLE_EOS, ROLE_PAD)}
    entry["max_score"] = round(float(word_scores.max()) if word_scores.numel() else 0.0, 4)
    if schedule_end is not None:
        entry["schedule_end"] = round(float(schedule_end[b]), 4)
    for name, count in info.get("concepts", {}).items():
        entry["concepts"][name] = max(entry["concepts"].get(name, 0), count)
    concept_at = {t["position"]: t.get("concept") for t in entry["tokens"]}
    tokens = []
    for pos in torch.nonzero((roles == ROLE_WORD) & ((scores >= 0.05) | flagged | (weights > 0))).flatten().tolist():
        token = {"position": pos, "score": round(float(scores[pos]), 4), "weight": round(float(weights[pos]), 4),
                 "flagged": bool(flagged[pos])}
        if pieces is not None:
            token["token"] = pieces[pos]
        if concept_at.get(pos):
            token["concept"] = concept_at[pos]
        tokens.append(token)
    entry["tokens"] = tokens
