"""The learned Embedding Sanitizer ("ES-style", after Qiu et al., arXiv 2411.10329).

A small bidirectional transformer over one chunk of token embeddings. It
scores every token for harm (the heatmap) and proposes a correction for every
row; the correction is applied with a weight that grows monotonically with
intensity x score. The paper body was not available: the architecture follows
the reconstruction in ``research/algorithms.md`` 1.3, narrowed so that it costs
a few percent of a CLIP text-encoder pass:

* input LayerNorm, then a projection ``D -> hidden`` (hidden 256 by default),
  plus learned position and role (BOS/word/EOS/pad) embeddings;
* ``layers`` pre-LN transformer layers; padding rows are masked out as keys so
  that padding never changes any score;
* score head ``hidden -> hidden/2 -> 1`` with a sigmoid;
* correction head ``hidden -> D`` initialised to zero (a fresh model is the
  identity), scaled by the typical row norm of the calibration data.

Weight rule (``apply_es``): a chunk's edit weight is ``edit_weight(intensity,
max word score)``, zero inside a dead zone so that benign prompts stay bit-for-bit
untouched. With ``edit_scope="chunk"`` (the calibrated default) every row of a
flagged chunk except BOS (the words, EOS and the padding rows) moves by that
weight times its own learned correction: in a bidirectional or causal encoder
the concept's meaning has leaked into the context rows too, and the correction
head was trained to map each of them onto the aligned row of the safe anchor
prompt (and to leave rows that need no change alone). ``edit_scope="tokens"``
is the older rule: word rows by their own score, EOS/padding by the chunk's.

Whole-prompt detector (``prompt_detector``, calibrated with the weights when
``prompt_pooling`` is set): each chunk also gets a probability that it reads as
unsafe as a whole. It is reported, and it confirms uncertain word flags: a chunk
is edited only when ``intensity x max word score >= CONFIRM_SCORE`` or the chunk's
prompt probability is at least 0.5. Raising the intensity therefore also lowers
the word score that edits without confirmation. Files without a detector (older
calibrations) edit every chunk above the dead zone, as before.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .layout import ROLE_BOS, ROLE_EOS, ROLE_PAD, ROLE_WORD
from .pooled_erasure import POOLED_BUFFERS
from .prompt_detector import chunk_has_words, chunk_vectors, prompt_probability

DEAD_ZONE = 0.05
CONFIRM_SCORE = 0.5  # intensity x word score from which a chunk is edited without the prompt detector's support
PROMPT_BUFFERS = ("prompt_direction", "prompt_platt")
OPTIONAL_BUFFERS = PROMPT_BUFFERS + POOLED_BUFFERS  # older files lack them; the feature stays off


@dataclass
class ESConfig:
    width: int
    hidden: int = 256
    layers: int = 2
    heads: int = 4
    max_length: int = 77
    dropout: float = 0.1
    edit_scope: str = "tokens"  # "tokens": words by own score, EOS/pad by the chunk's; "chunk": every non-BOS row
    prompt_pooling: str = ""  # "mean" | "eos": whole-prompt detector calibrated; "": none (older files)
    pooled_head: bool = False  # a pooled-erasure head was fitted (``pooled_erasure``); older files: no

    def to_dict(self) -> dict:
        return asdict(self)


class EmbeddingSanitizerNet(nn.Module):
    def __init__(self, config: ESConfig) -> None:
        super().__init__()
        self.config = config
        d, h = config.width, config.hidden
        self.input_norm = nn.LayerNorm(d)
        self.input_proj = nn.Linear(d, h)
        self.position = nn.Parameter(torch.zeros(config.max_length, h))
        self.role = nn.Embedding(4, h)
        layer = nn.TransformerEncoderLayer(h, config.heads, dim_feedforward=2 * h, dropout=config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.output_norm = nn.LayerNorm(h)
        self.score_head = nn.Sequential(nn.Linear(h, h // 2), nn.GELU(), nn.Linear(h // 2, 1))
        self.delta_head = nn.Linear(h, d)
        nn.init.zeros_(self.delta_head.weight)
        nn.init.zeros_(self.delta_head.bias)
        nn.init.normal_(self.position, std=0.02)
        self.register_buffer("row_scale", torch.ones(()))
        self.register_buffer("prompt_direction", torch.zeros(d))
        self.register_buffer("prompt_platt", torch.zeros(2))  # slope, bias
        # pooled-erasure head (``pooled_erasure.fit_pooled_head``): [2D, D] ridge weight, [D] bias, [2D] mean
        self.register_buffer("pooled_weight", torch.zeros(2 * d, d))
        self.register_buffer("pooled_bias", torch.zeros(d))
        self.register_buffer("pooled_mean", torch.zeros(2 * d))

    def pooled_head(self) -> dict | None:
        """The fitted pooled-erasure head as tensors, or None (older files, or none fitted)."""
        if not getattr(self.config, "pooled_head", False):
            return None
        return {"weight": self.pooled_weight, "bias": self.pooled_bias, "mean": self.pooled_mean}

    @property
    def has_prompt_detector(self) -> bool:
        return bool(self.config.prompt_pooling) and bool(self.prompt_direction.abs().sum() > 0)

    def prompt_scores(self, rows: torch.Tensor, roles: torch.Tensor) -> torch.Tensor | None:
        """``[N, L, D]`` chunks -> ``[N]`` whole-prompt probabilities (0 for chunks without words), or None."""
        if not self.has_prompt_detector:
            return None
        vectors = chunk_vectors(rows, roles, self.config.prompt_pooling)
        platt = self.prompt_platt.to(vectors.device, torch.float32)  # tensors: no device sync
        probs = prompt_probability(vectors, self.prompt_direction, platt[0], platt[1])
        return torch.where(chunk_has_words(roles), probs, torch.zeros_like(probs))

    def forward(self, rows: torch.Tensor, roles: torch.Tensor,
                scores_only: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``rows`` ``[N, L, D]`` (one chunk per row), ``roles`` ``[N, L]``.

        Returns (logits ``[N, L]``, correction ``[N, L, D]`` in the rows' scale; None with ``scores_only``).
        """
        length = rows.shape[1]
        if length > self.config.max_length:
            raise ValueError(f"chunk of {length} tokens is longer than the model's {self.config.max_length}")
        x = self.input_proj(self.input_norm(rows))
        x = x + self.position[:length] + self.role(roles)
        padding = roles == ROLE_PAD
        if self.training:
            hidden = self.encoder(x, src_key_padding_mask=padding)
        else:  # the same layers without nn.TransformerEncoder's per-call checks (a third of the cost at batch 1)
            hidden = _encoder_layers_eval(self.encoder.layers, x, padding)
        hidden = self.output_norm(hidden)
        logits = self.score_head(hidden).squeeze(-1)
        if scores_only:
            return logits, None
        delta = self.delta_head(hidden) * self.row_scale
        return logits, delta


def _encoder_layers_eval(layers, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """Pre-LN ``nn.TransformerEncoderLayer`` stack in eval mode (no dropout), padding masked out as keys.

    The same arithmetic as the modules' own forward, written out so that a batch-1 call costs fewer
    framework checks. A chunk whose every position is padding (never from the layouts) attends to all of
    them rather than to none, so its rows stay finite."""
    n, length, width = x.shape
    keep_all = padding.all(-1, keepdim=True)
    masked = padding & ~keep_all
    bias = torch.zeros(masked.shape, dtype=x.dtype, device=x.device).masked_fill(masked, float("-inf"))
    bias = bias[:, None, None, :]
    for layer in layers:
        attention = layer.self_attn
        heads = attention.num_heads
        y = F.layer_norm(x, (width,), layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
        qkv = F.linear(y, attention.in_proj_weight, attention.in_proj_bias)
        q, k, v = qkv.view(n, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(n, length, width)
        x = x + F.linear(mixed, attention.out_proj.weight, attention.out_proj.bias)
        y = F.layer_norm(x, (width,), layer.norm2.weight, layer.norm2.bias, layer.norm2.eps)
        x = x + layer.linear2(F.gelu(layer.linear1(y)))
    return x


def edit_weight(intensity: float, scores: torch.Tensor) -> torch.Tensor:
    """Monotone weight of intensity x score with a small dead zone (benign tokens stay exact)."""
    product = intensity * scores
    return ((product - DEAD_ZONE) / (1.0 - DEAD_ZONE)).clamp_min(0.0)


class ESOutput(NamedTuple):
    rows: torch.Tensor  # [B, T, D] float32, sanitized
    scores: torch.Tensor  # [B, T] word scores (0 off words)
    weights: torch.Tensor  # [B, T] edit weights
    prompt: torch.Tensor | None  # [B, chunks] whole-prompt probabilities, None without a detector
    unconfirmed: int  # chunks with a word above the dead zone left unedited for lack of confirmation
    flagged: torch.Tensor  # [B, T] flagged words: every edited chunk has at least one


def _network(model: EmbeddingSanitizerNet, flat: torch.Tensor, roles: torch.Tensor, prompt: torch.Tensor | None):
    """(logits ``[N, L]``, corrections ``[N, L, D]``, which chunks have their corrections ``[N]``).

    Padding is masked out as a key, so no live row depends on the padding rows: a chunk the whole-prompt
    detector calls benign (most prompts) runs through the network over its live positions only, and its
    corrections are left for ``apply_es`` to compute if it does get edited. The others (and every chunk
    without a whole-prompt detector) run whole, once. The result is the whole-chunk network's either way.
    """
    whole = (prompt >= 0.5) if prompt is not None else torch.ones(flat.shape[0], dtype=torch.bool,
                                                                  device=flat.device)
    if bool(whole.all()):
        with torch.inference_mode():
            return (*model(flat, roles), whole)
    logits = torch.zeros(flat.shape[:2], dtype=flat.dtype, device=flat.device)
    delta = torch.zeros_like(flat)
    with torch.inference_mode():
        if bool(whole.any()):
            logits[whole], delta[whole] = model(flat[whole], roles[whole])
        rest = ~whole
        length = max(1, int((roles[rest] != ROLE_PAD).sum(-1).max()))
        logits[rest, :length] = model(flat[rest, :length], roles[rest, :length], scores_only=True)[0]
    return logits, delta, whole


def apply_es(model: EmbeddingSanitizerNet, rows: torch.Tensor, roles: torch.Tensor, intensity: float,
             chunk_length: int) -> ESOutput:
    """Run ES over ``[B, T, D]`` rows chunk by chunk.

    Flagged words: ``intensity x score >= CONFIRM_SCORE``; in a chunk without one that the whole-prompt
    detector supports (probability >= 0.5), the chunk's highest-scoring word above the dead zone. Only
    chunks with a flagged word are edited: their words by their own weight (``edit_scope="tokens"``; a
    word below the dead zone stays bit for bit), their EOS and padding rows, which absorb the whole
    prompt, by the chunk's largest weight. BOS is never edited. Weights files calibrated before the
    whole-prompt detector flag the top word of every chunk with a word above the dead zone;
    ``edit_scope="chunk"`` (older files) edits every non-BOS row of an edited chunk.
    """
    batch, total, width = rows.shape
    chunks = total // chunk_length
    param = next(model.parameters())
    flat = rows.reshape(batch * chunks, chunk_length, width).to(param.device, param.dtype)
    flat_roles = roles.reshape(batch * chunks, chunk_length).to(param.device)
    prompt = model.prompt_scores(flat, flat_roles)
    logits, delta, has_delta = _network(model, flat, flat_roles, prompt)
    is_word = flat_roles == ROLE_WORD
    scores = torch.where(is_word, torch.sigmoid(logits.float()), torch.zeros_like(logits, dtype=torch.float32))
    weights = edit_weight(intensity, scores)
    confident_words = is_word & (intensity * scores >= CONFIRM_SCORE)
    live = weights.amax(-1) > 0
    supported = (prompt >= 0.5) if prompt is not None else live
    top = torch.zeros_like(is_word)
    top[torch.arange(top.shape[0], device=top.device), scores.argmax(-1)] = True
    flagged = confident_words | (top & is_word & (weights > 0) & (supported & ~confident_words.any(-1)).unsqueeze(-1))
    edited = flagged.any(-1)
    unconfirmed = int((live & ~edited).sum())
    weights = torch.where(edited.unsqueeze(-1), weights, torch.zeros_like(weights))
    chunk_max = weights.amax(dim=-1, keepdim=True)
    if getattr(model.config, "edit_scope", "tokens") == "chunk":
        weights = chunk_max.expand_as(weights).clone()
    else:
        tail = (flat_roles == ROLE_EOS) | (flat_roles == ROLE_PAD)
        weights = torch.where(tail, chunk_max.expand_as(weights), weights)
    weights = torch.where(flat_roles == ROLE_BOS, torch.zeros_like(weights), weights)
    missing = edited & ~has_delta  # edited chunks whose padding rows (they take the edit) were not run yet
    if bool(missing.any()):
        with torch.inference_mode():
            delta[missing] = model(flat[missing], flat_roles[missing])[1].to(delta.dtype)
    out = flat.float() + weights.unsqueeze(-1) * delta.float()
    shape = (batch, total)
    return ESOutput(out.reshape(batch, total, width).to(rows.device), scores.reshape(shape).to(rows.device),
                    weights.reshape(shape).to(rows.device),
                    None if prompt is None else prompt.float().reshape(batch, chunks).to(rows.device), unconfirmed,
                    flagged.reshape(shape).to(rows.device))
