"""The core's ``TextEncoder`` interface around one ComfyUI text-encoder stream.

``tokenize`` uses ComfyUI's own tokenizer for the stream (exact ids and
chunking); ``encode_chunks`` runs the stream's ``SDClipModel.encode`` with the
clip options currently set (so the rows come from the same layer as the
conditioning), and ``pooled`` is the row at the first EOS of that same layer.
``host_pooled`` is different: it is the stream's own pooled output (what ComfyUI hands
the diffusion model as ``pooled_output``), used for the pooled concept span.
"""
from __future__ import annotations

import numbers

import torch

from embedding_sanitizer.encoders.base import EncoderOutput, TextEncoder, TokenBatch, pad_chunks, tensor_fingerprint
from embedding_sanitizer.layout import ROLE_BOS, ROLE_EOS, ROLE_PAD, ChunkLayout, token_roles

PIECE_BY_ROLE = {ROLE_BOS: "<|startoftext|>", ROLE_EOS: "<|endoftext|>", ROLE_PAD: "<pad>"}
_SHORT_OK: dict[str, bool] = {}  # encoder cache key -> whether short chunks matched whole chunks


def short_forward(model, ids: torch.Tensor) -> torch.Tensor | None:
    """``[N, L, D]`` float32 rows of integer ids through a ComfyUI ``SDClipModel``'s CLIP text model, for
    ``L`` below its 77 positions, with the model's current layer option; None for any other model or option.

    The same steps as the host's forward for plain token ids (token embedding, the first ``L`` position
    embeddings, the causal mask, the encoder layers up to the chosen layer, the final layer norm where the
    host applies it), calling the host's own modules and nothing else.
    """
    text_model = getattr(getattr(model, "transformer", None), "text_model", None)
    embeddings = getattr(text_model, "embeddings", None)
    position = getattr(embeddings, "position_embedding", None)
    layer = getattr(model, "layer", None)
    if (position is None or not hasattr(text_model, "encoder") or not hasattr(text_model, "final_layer_norm")
            or layer not in ("last", "hidden") or getattr(model, "zero_out_masked", False)
            or getattr(model, "enable_attention_masks", False) or ids.shape[1] > position.weight.shape[0]):
        return None
    import comfy.ops

    length = ids.shape[1]
    device = model.transformer.get_input_embeddings().weight.device
    with torch.no_grad():
        x = model.transformer.get_input_embeddings()(ids.to(device), out_dtype=torch.float32)
        x = x + comfy.ops.cast_to(position.weight[:length], dtype=torch.float32, device=device)
        mask = torch.full((length, length), -torch.finfo(x.dtype).max, dtype=x.dtype, device=device).triu_(1)
        hidden = model.layer_idx if layer == "hidden" else None
        x, intermediate = text_model.encoder(x, mask=mask, intermediate_output=hidden)
        if layer == "last":
            return text_model.final_layer_norm(x).float()
        if getattr(model, "layer_norm_hidden_state", True):
            intermediate = text_model.final_layer_norm(intermediate)
        return intermediate.float()
EMBEDDING_PIECE = "<embedding></w>"


class UnsupportedTokens(ValueError):
    """The token list holds entries the sanitizer cannot place (e.g. image embeds for LLM encoders)."""


def ids_from_chunks(chunks, layout: ChunkLayout) -> torch.Tensor:
    """``[1, T]`` ids of ComfyUI token chunks; textual-inversion vectors become ``layout.ti_id``."""
    ids = []
    for chunk in chunks:
        for entry in chunk:
            token = entry[0]
            if isinstance(token, numbers.Integral):
                ids.append(int(token))
            elif torch.is_tensor(token) or (isinstance(token, dict) and token.get("type") == "embedding"):
                ids.append(layout.ti_id)
            else:
                raise UnsupportedTokens(f"token of type {type(token).__name__} "
                                        f"({token.get('type') if isinstance(token, dict) else ''})")
    return torch.tensor([ids], dtype=torch.long)


class ComfyStreamEncoder(TextEncoder):
    """One stream (``clip_l``, ``clip_g``, ``clip_h`` or ``t5xxl``) of a ComfyUI CLIP."""

    def __init__(self, family: str, stream: str, sub_model, sub_tokenizer, layout: ChunkLayout) -> None:
        self.family = family
        self.stream = stream
        self.model = sub_model
        self.tokenizer = sub_tokenizer
        self.layout = layout
        embedding = sub_model.transformer.get_input_embeddings()
        self.width = int(embedding.weight.shape[-1])
        self.inv_vocab = getattr(sub_tokenizer, "inv_vocab", {}) if sub_tokenizer is not None else {}

    def detached_copy(self) -> "ComfyStreamEncoder":
        """The same stream with a private copy of its text model (same weights, device and clip options), for a
        background calibration that must never touch the model a generation is using."""
        import copy

        clone = ComfyStreamEncoder(self.family, self.stream, copy.deepcopy(self.model), self.tokenizer, self.layout)
        clone._fingerprint = self.fingerprint
        return clone

    @property
    def name(self) -> str:
        layer = getattr(self.model, "layer", "last")
        if layer == "hidden":
            layer = f"hidden{getattr(self.model, 'layer_idx', '')}"
        return f"comfyui-{self.family}-{self.stream}-{layer}"

    @property
    def cache_key(self) -> str:
        return f"{self.name}|{self.fingerprint}"

    @property
    def device(self) -> torch.device:
        return self.model.transformer.get_input_embeddings().weight.device

    @property
    def vocab_size(self) -> int:
        return int(self.model.transformer.get_input_embeddings().weight.shape[0])

    def compute_fingerprint(self) -> str:
        return tensor_fingerprint(self.model.transformer.get_input_embeddings().weight)

    # -- pieces ------------------------------------------------------------------------------
    def pieces_for(self, ids: torch.Tensor) -> list[list[str]]:
        roles = token_roles(ids, self.layout) if self.layout.chunk_length is None or \
            ids.shape[1] % self.layout.chunk_length == 0 else None
        out = []
        for b, row in enumerate(ids.tolist()):
            pieces = []
            for t, token in enumerate(row):
                role = int(roles[b, t]) if roles is not None else 1
                if role in PIECE_BY_ROLE:
                    pieces.append(PIECE_BY_ROLE[role])
                elif token == self.layout.ti_id:
                    pieces.append(EMBEDDING_PIECE)
                else:
                    pieces.append(str(self.inv_vocab.get(token, f"<{token}>")))
            out.append(pieces)
        return out

    # -- TextEncoder -------------------------------------------------------------------------
    def tokenize(self, texts):
        if self.tokenizer is None:
            raise RuntimeError(f"no tokenizer for stream {self.stream}")
        rows = []
        for text in texts:
            chunks = self.tokenizer.tokenize_with_weights(text, disable_weights=True)
            rows.append(ids_from_chunks(chunks, self.layout)[0].tolist())
        total = max(len(r) for r in rows)
        if self.layout.chunk_length is None:
            rows = [r + [self.layout.pad_id] * (total - len(r)) for r in rows]
        else:
            filler = pad_chunks([], self.layout)[0]
            rows = [r + filler * ((total - len(r)) // len(filler)) for r in rows]
        ids = torch.tensor(rows, dtype=torch.long)
        return TokenBatch(ids, self.pieces_for(ids), self.layout, list(texts))

    def encode_chunks(self, ids: torch.Tensor) -> EncoderOutput:
        length = ids.shape[1]
        full = self.layout.chunk_length
        rows = self._short_rows(ids) if full is not None and length < full else None
        if rows is None:
            rows = self._whole_chunk_rows(ids)
        position = torch.arange(ids.shape[1], device=ids.device)
        hit = ids == self.layout.eos_id
        if self.layout.bos_id is not None:
            hit &= position != 0
        first = torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(hit[:, 0], ids.shape[1] - 1,
                                                                               dtype=torch.long))
        pooled = rows[torch.arange(rows.shape[0], device=rows.device), first.to(rows.device)]
        return EncoderOutput(rows, pooled)

    def _whole_chunk_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of ``ids`` from the stream's own ``encode``; ComfyUI's CLIP needs whole chunks (its position
        embeddings are added for all 77 positions), so shorter rows are padded and cut back."""
        length = ids.shape[1]
        full = self.layout.chunk_length
        if full is not None and length < full:
            ids = torch.cat([ids, ids.new_full((ids.shape[0], full - length), self.layout.pad_id)], 1)
        return self.model.encode(ids.tolist())[0].float()[:, :length]

    def _short_rows(self, ids: torch.Tensor) -> torch.Tensor | None:
        """Rows of chunks cut short (``[N, L]``, ``L`` < 77), or None when this stream cannot run them.

        CLIP is causal, so the rows of the first ``L`` positions do not depend on what follows; concept lists
        are short texts, so running only ``L`` positions through the stream's own layers is several times
        cheaper than whole chunks (``short_forward``). The first time per encoder the result is compared with
        the whole-chunk encode; if they differ (another ComfyUI model layout), whole chunks are used.
        """
        key = self.cache_key
        verdict = _SHORT_OK.get(key)
        if verdict is False:
            return None
        rows = short_forward(self.model, ids)
        if rows is None or verdict is True:
            return rows
        reference = self._whole_chunk_rows(ids)
        scale = max(float(reference.abs().max()), 1.0)
        tolerance = (1e-3 if rows.dtype == torch.float32 and self.model_dtype == torch.float32 else 3e-2) * scale
        same = rows.shape == reference.shape and float((rows - reference.to(rows.device)).abs().max()) <= tolerance
        _SHORT_OK[key] = same
        if not same:
            import logging

            logging.getLogger("embedding_sanitizer.comfyui").info(
                "Embedding Sanitizer: %s: short chunks differ from whole chunks; concepts are encoded as whole "
                "chunks", self.name)
            return reference
        return rows

    @property
    def model_dtype(self) -> torch.dtype:
        return self.model.transformer.get_input_embeddings().weight.dtype

    # -- the host's pooled output ----------------------------------------------------------------
    @property
    def pooled_key(self) -> str:
        """Cache key of the pooled concept span: encoder, layer, and the pooled projection option."""
        projected = getattr(self.model, "return_projected_pooled", None)
        return f"{self.cache_key}|pooled|projected={projected}"

    def host_pooled(self, texts, batch: int = 16, progress=None) -> torch.Tensor:
        """``[N, Dp]``: the stream's own pooled output for each text, float32 on the CPU.

        Each text is tokenized by the stream's ComfyUI tokenizer and its first chunk encoded by
        the stream's ``encode``, exactly as ``encode_token_weights`` computes the pooled vector it
        returns (the pooled row of the first chunk); texts are batched by chunk length.
        ``progress(done, total)`` is called after each batch.
        """
        if self.tokenizer is None:
            raise RuntimeError(f"no tokenizer for stream {self.stream}")
        rows = []
        for text in texts:
            chunks = self.tokenizer.tokenize_with_weights(text, disable_weights=True)
            rows.append([entry[0] for entry in chunks[0]])
        out: list = [None] * len(rows)
        by_length: dict[int, list[int]] = {}
        done = 0
        for i, row in enumerate(rows):
            by_length.setdefault(len(row), []).append(i)
        for indices in by_length.values():
            for start in range(0, len(indices), batch):
                part = indices[start:start + batch]
                pooled = self.model.encode([rows[i] for i in part])[1]
                if pooled is None:
                    raise RuntimeError(f"stream {self.stream} returns no pooled output")
                for i, vector in zip(part, pooled.float().cpu()):
                    out[i] = vector
                done += len(part)
                if progress is not None:
                    progress(done, len(rows))
        return torch.stack(out)
