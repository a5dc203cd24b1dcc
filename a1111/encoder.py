"""The webui's own text model behind the core ``TextEncoder`` interface.

Works for every A1111 ``TextConditionalModel`` (SD1 ``FrozenCLIPEmbedderWithCustomWords``,
SD2 ``FrozenOpenCLIPEmbedderWithCustomWords``, SDXL's CLIP-L and CLIP-G embedders) and
Forge's ``ClassicTextProcessingEngine``: all of them expose ``process_texts`` (the exact
77-token chunks), ``encode_with_transformers`` (the same layer as the conditioning, CLIP
skip included), ``empty_chunk`` and the special ids ``id_start``/``id_end``/``id_pad``.

Token ids are reported the way the transformer saw them: after the first EOS of a chunk
every position holds ``id_pad`` (the host substitutes it in ``process_tokens``), and
positions holding a textual-inversion vector carry the layout's ``ti_id`` sentinel.
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch

from embedding_sanitizer.encoders.base import EncoderOutput, TextEncoder, TokenBatch, tensor_fingerprint
from embedding_sanitizer.layout import (
    ROLE_BOS, ROLE_EOS, ROLE_PAD, SD1_CLIP_L, SD2_CLIP_H, SDXL_CLIP_G, SDXL_CLIP_L, ChunkLayout, token_roles,
)

CHUNK = 77
SPECIAL_PIECES = {ROLE_BOS: "<|startoftext|>", ROLE_EOS: "<|endoftext|>", ROLE_PAD: "<pad>"}


class UnsupportedTextModel(TypeError):
    """The object is not a webui text model this extension knows how to read."""


def family_of(host) -> str:
    """``sd1``, ``sd2``, ``sdxl-l`` or ``sdxl-g`` from the host class and its special ids."""
    names = {cls.__name__ for cls in type(host).__mro__}
    if "FrozenOpenCLIPEmbedder2WithCustomWords" in names or getattr(host, "return_pooled", False):
        return "sdxl-g"
    if "FrozenCLIPEmbedderForSDXLWithCustomWords" in names:
        return "sdxl-l"
    if "FrozenOpenCLIPEmbedderWithCustomWords" in names:
        return "sd2"
    if getattr(host, "id_pad", None) == 0:
        return "sd2"
    return "sd1"


def layout_of(host, family: str | None = None) -> ChunkLayout:
    """The chunk layout of a host text model (the core's named layout when the ids agree)."""
    family = family or family_of(host)
    base = {"sd1": SD1_CLIP_L, "sd2": SD2_CLIP_H, "sdxl-l": SDXL_CLIP_L, "sdxl-g": SDXL_CLIP_G}[family]
    start, end = getattr(host, "id_start", base.bos_id), getattr(host, "id_end", base.eos_id)
    pad = getattr(host, "id_pad", end)
    if (start, end, pad) == (base.bos_id, base.eos_id, base.pad_id):
        return base
    return ChunkLayout(f"{base.name}-custom", CHUNK, start, end, pad, base.mask_id)


def _embedding_weight(module) -> torch.Tensor | None:
    """The weight of an embedding module, looking through A1111's ``EmbeddingsWithFixes`` (``.wrapped``)."""
    for candidate in (module, getattr(module, "wrapped", None)):
        weight = getattr(candidate, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 2:
            return weight
    return None


def find_token_embedding(host) -> torch.Tensor:
    """The token-embedding weight of the transformer inside a host text model."""
    roots = [getattr(host, name, None) for name in ("wrapped", "text_encoder", "transformer", "model")]
    for root in [r for r in roots if isinstance(r, torch.nn.Module)] + [host]:
        getter = getattr(root, "get_input_embeddings", None)
        if callable(getter):
            try:
                weight = _embedding_weight(getter())
            except (NotImplementedError, AttributeError):
                weight = None
            if weight is not None:
                return weight
        for name, module in root.named_modules():
            if name.split(".")[-1] in ("token_embedding", "embed_tokens"):
                weight = _embedding_weight(module)
                if weight is not None:
                    return weight
    raise UnsupportedTextModel(f"cannot find the token embedding inside {type(host).__name__}")


class WebuiTextEncoder(TextEncoder):
    """Adapter: a webui text model (A1111 or Forge) as a core ``TextEncoder``.

    ``layer_tag`` returns a string that changes whenever the output layer changes without
    the weights changing (A1111's CLIP skip), so cached concept subspaces are rebuilt.
    """

    def __init__(self, host, layer_tag: Callable[[], str] | None = None) -> None:
        for needed in ("process_texts", "encode_with_transformers", "empty_chunk"):
            if not callable(getattr(host, needed, None)):
                raise UnsupportedTextModel(f"{type(host).__name__} has no {needed}(); it is not a webui text model")
        self._host = weakref.ref(host)
        self.family = family_of(host)
        self.layout = layout_of(host, self.family)
        self.name = f"webui-{self.family}"
        self.layer_tag = layer_tag or (lambda: "")
        weight = find_token_embedding(host)
        self.width = int(weight.shape[1])

    @property
    def host(self):
        host = self._host()
        if host is None:
            raise RuntimeError("the webui text model was unloaded; reload the checkpoint")
        return host

    @property
    def device(self) -> torch.device:
        return find_token_embedding(self.host).device

    @property
    def vocab_size(self) -> int:
        return int(find_token_embedding(self.host).shape[0])

    def compute_fingerprint(self) -> str:
        return tensor_fingerprint(find_token_embedding(self.host))

    @property
    def cache_key(self) -> str:
        return f"{self.name}|{self.fingerprint}|{self.layer_tag()}"

    # ----------------------------------------------------------------- ids
    def chunk_ids(self, batch_chunks) -> tuple[torch.Tensor, list[list[str]]]:
        """``process_texts`` chunks -> ids ``[B, 77 * n]`` as the transformer sees them, and pieces.

        Prompts with fewer chunks are completed with ``empty_chunk()`` exactly as the host's
        forward does, so row ``b``, position ``77 * k + i`` is ``chunks[b][k].tokens[i]``.
        """
        host = self.host
        count = max((len(chunks) for chunks in batch_chunks), default=1) or 1
        rows: list[list[int]] = []
        ti_rows: list[dict[int, str]] = []
        for chunks in batch_chunks:
            row: list[int] = []
            ti: dict[int, str] = {}
            for k in range(count):
                chunk = chunks[k] if k < len(chunks) else host.empty_chunk()
                tokens = [int(t) for t in chunk.tokens]
                if len(tokens) != CHUNK:
                    raise UnsupportedTextModel(f"{type(host).__name__} made a chunk of {len(tokens)} tokens, "
                                               f"expected {CHUNK}")
                if self.layout.pad_id != self.layout.eos_id and self.layout.eos_id in tokens[1:]:
                    first = tokens.index(self.layout.eos_id, 1)
                    tokens[first + 1:] = [self.layout.pad_id] * (CHUNK - first - 1)
                for fix in getattr(chunk, "fixes", None) or ():
                    vectors = _vector_count(fix.embedding)
                    name = str(getattr(fix.embedding, "name", "embedding"))
                    for j in range(vectors):
                        pos = int(fix.offset) + 1 + j
                        if 0 < pos < CHUNK:
                            tokens[pos] = self.layout.ti_id
                            ti[CHUNK * k + pos] = f"{name}</w>" if j == vectors - 1 else ""
                row.extend(tokens)
            rows.append(row)
            ti_rows.append(ti)
        ids = torch.tensor(rows, dtype=torch.long)
        return ids, self.pieces(ids, ti_rows)

    def pieces(self, ids: torch.Tensor, ti_rows: list[dict[int, str]] | None = None) -> list[list[str]]:
        """Readable BPE pieces (``</w>`` kept so ``heatmap.group_words`` can rebuild words)."""
        roles = token_roles(ids, self.layout).tolist()
        decode = _piece_decoder(self.host)
        out = []
        for b, (row, row_roles) in enumerate(zip(ids.tolist(), roles)):
            ti = ti_rows[b] if ti_rows else {}
            pieces = []
            for pos, (token, role) in enumerate(zip(row, row_roles)):
                if role in SPECIAL_PIECES:
                    pieces.append(SPECIAL_PIECES[role])
                elif pos in ti or token == self.layout.ti_id:
                    pieces.append(ti.get(pos, "embedding</w>"))
                else:
                    pieces.append(decode(token))
            out.append(pieces)
        return out

    # ------------------------------------------------------- TextEncoder
    def tokenize(self, texts: list[str]) -> TokenBatch:
        texts = [texts] if isinstance(texts, str) else list(texts)
        batch_chunks, _ = self.host.process_texts(texts)
        ids, pieces = self.chunk_ids(batch_chunks)
        return TokenBatch(ids, pieces, self.layout, texts)

    def encode_chunks(self, ids: torch.Tensor) -> EncoderOutput:
        """Encode ``[N, L <= 77]`` chunks with the host's ``encode_with_transformers``.

        Short chunks are padded to 77 with ``id_pad`` (OpenCLIP needs full chunks); CLIP is
        causal, so the first ``L`` rows do not depend on the padding. Pooled is the row at
        the first EOS, from the same layer as the conditioning.
        """
        if ids.dim() != 2 or ids.shape[1] > CHUNK:
            raise ValueError(f"ids must be [chunks, <= {CHUNK}], got {tuple(ids.shape)}")
        if ids.numel() and int(ids.min()) < 0:
            raise ValueError("textual-inversion positions cannot be re-encoded by id")
        length = ids.shape[1]
        full = ids
        if length < CHUNK:
            pad = torch.full((ids.shape[0], CHUNK - length), self.layout.pad_id, dtype=ids.dtype, device=ids.device)
            full = torch.cat([ids, pad], 1)
        with torch.no_grad():
            z = self.host.encode_with_transformers(full.to(self.device))
        if isinstance(z, (tuple, list)):
            z = z[0]
        tokens = z[:, :length]
        ids_dev = ids.to(tokens.device)
        is_eos = ids_dev == self.layout.eos_id
        is_eos[:, 0] = False
        last = torch.full_like(ids_dev[:, 0], length - 1)
        first = torch.where(is_eos.any(1), is_eos.int().argmax(1), last)
        pooled = tokens[torch.arange(ids.shape[0], device=tokens.device), first]
        return EncoderOutput(tokens, pooled)


def _vector_count(embedding) -> int:
    for attr in ("vectors", "vec"):
        value = getattr(embedding, attr, None)
        if isinstance(value, int):
            return value
        if isinstance(value, torch.Tensor):
            return int(value.shape[0]) if value.dim() > 1 else 1
        if isinstance(value, dict):  # SDXL embeddings: {"clip_l": tensor, "clip_g": tensor}
            first = next(iter(value.values()), None)
            if isinstance(first, torch.Tensor):
                return int(first.shape[0]) if first.dim() > 1 else 1
    return 1


def _piece_decoder(host) -> Callable[[int], str]:
    """id -> raw BPE piece, from the host's own tokenizer (HF ``CLIPTokenizer`` or open_clip's)."""
    candidates = [getattr(host, "tokenizer", None), getattr(getattr(host, "wrapped", None), "tokenizer", None)]
    for tokenizer in candidates:
        if tokenizer is None:
            continue
        convert = getattr(tokenizer, "convert_ids_to_tokens", None)
        if callable(convert):
            return lambda i, convert=convert: str(convert(int(i)))
        decoder = getattr(tokenizer, "decoder", None)
        if isinstance(decoder, dict):
            return lambda i, decoder=decoder: str(decoder.get(int(i), i))
    try:  # SD2 / SDXL-G in A1111 use open_clip's module-level tokenizer
        from open_clip import tokenizer as oc_tokenizer  # type: ignore

        decoder = oc_tokenizer._tokenizer.decoder
        return lambda i: str(decoder.get(int(i), i))
    except Exception:  # noqa: BLE001 - fall back to the core's vocabulary, then to the id
        pass
    try:
        from embedding_sanitizer.encoders.clip_bpe import get_tokenizer

        bpe = get_tokenizer()
        return lambda i: bpe.token(int(i)) if 0 <= int(i) < bpe.vocab_size else str(i)
    except Exception:  # noqa: BLE001
        return str


_ADAPTERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def adapter_for(host, layer_tag: Callable[[], str] | None = None) -> WebuiTextEncoder:
    """One adapter per host text model instance (a reloaded model gets a new one)."""
    adapter = _ADAPTERS.get(host)
    if adapter is None:
        adapter = WebuiTextEncoder(host, layer_tag)
        _ADAPTERS[host] = adapter
    return adapter
