"""TextConditionalModel and the SD1 / SDXL-L embedders (stand-in).

Chunks are 77 ids: start + 75 + end, the unused tail filled with the end id; the tail
after the first end id is replaced by ``id_pad`` just before encoding. ``BREAK`` starts a
new chunk; when a chunk fills up within ``comma_padding_backtrack`` tokens of a comma, the
words after the comma move to the next chunk. Emphasis (option ``emphasis``, read per forward
into ``self.emphasis`` as the webui does): "Original" multiplies the weighted rows and rescales the
chunk batch by original mean / new mean; "No norm" only multiplies; "Ignore" parses the weights but
leaves the rows; "None" does not parse weights at all.
"""
import math
from collections import namedtuple

import torch

from modules import devices, prompt_parser, shared

PromptChunkFix = namedtuple("PromptChunkFix", ["offset", "embedding"])


class PromptChunk:
    def __init__(self):
        self.tokens = []
        self.multipliers = []
        self.fixes = []


class Emphasis:
    def __init__(self, name):
        self.name = name

    def apply(self, z, multipliers):
        if self.name not in ("Original", "No norm"):
            return z
        original_mean = z.mean()
        z = z * multipliers.unsqueeze(-1)
        if self.name == "Original":
            z = z * (original_mean / z.mean())
        return z


class ChunkingMixin:
    """The chunking shared by A1111's TextConditionalModel and Forge's ClassicTextProcessingEngine."""

    chunk_length = 75
    emphasis = Emphasis("Original")

    def read_emphasis(self):
        self.emphasis = Emphasis(str(getattr(shared.opts, "emphasis", "Original")))

    def empty_chunk(self):
        chunk = PromptChunk()
        chunk.tokens = [self.id_start] + [self.id_end] * (self.chunk_length + 1)
        chunk.multipliers = [1.0] * (self.chunk_length + 2)
        return chunk

    def get_target_prompt_token_count(self, token_count):
        return math.ceil(max(token_count, 1) / self.chunk_length) * self.chunk_length

    def tokenize_line(self, line):
        parsed = prompt_parser.parse_prompt_attention(line) if self.emphasis.name != "None" else [[line, 1.0]]
        tokenized = self.tokenize([text for text, _ in parsed])
        chunks, state = [], {"chunk": PromptChunk(), "comma": -1, "count": 0}

        def close(last=False):
            chunk = state["chunk"]
            state["count"] += len(chunk.tokens) if last else self.chunk_length
            missing = self.chunk_length - len(chunk.tokens)
            chunk.tokens = [self.id_start] + chunk.tokens + [self.id_end] * (missing + 1)
            chunk.multipliers = [1.0] + chunk.multipliers + [1.0] * (missing + 1)
            chunks.append(chunk)
            state["chunk"], state["comma"] = PromptChunk(), -1

        backtrack = int(getattr(shared.opts, "comma_padding_backtrack", 20))
        for ids, (text, weight) in zip(tokenized, parsed):
            if text == "BREAK" and weight == -1:
                close()
                continue
            for token in ids:
                chunk = state["chunk"]
                if len(chunk.tokens) == self.chunk_length:
                    comma = state["comma"]
                    if comma != -1 and backtrack and self.chunk_length - comma <= backtrack:
                        moved, moved_w = chunk.tokens[comma + 1:], chunk.multipliers[comma + 1:]
                        chunk.tokens, chunk.multipliers = chunk.tokens[:comma + 1], chunk.multipliers[:comma + 1]
                        close()
                        state["chunk"].tokens, state["chunk"].multipliers = moved, moved_w
                    else:
                        close()
                    chunk = state["chunk"]
                if token == self.comma_token:
                    state["comma"] = len(chunk.tokens)
                chunk.tokens.append(token)
                chunk.multipliers.append(weight)
        if state["chunk"].tokens or not chunks:
            close(last=True)
        return chunks, state["count"]

    def process_texts(self, texts):
        cache, batch_chunks, token_count = {}, [], 0
        for line in texts:
            if line not in cache:
                cache[line], count = self.tokenize_line(line)
                token_count = max(token_count, count)
            batch_chunks.append(cache[line])
        return batch_chunks, token_count

    def process_tokens(self, remade_batch_tokens, batch_multipliers):
        tokens = torch.asarray(remade_batch_tokens).to(devices.device)
        if self.id_end != self.id_pad:
            for b, row in enumerate(remade_batch_tokens):
                tokens[b, row.index(self.id_end) + 1:] = self.id_pad
        z = self.encode_with_transformers(tokens)
        pooled = getattr(z, "pooled", None)
        multipliers = torch.asarray(batch_multipliers, dtype=z.dtype).to(z.device)
        z = self.emphasis.apply(z, multipliers)
        if pooled is not None:
            z.pooled = pooled
        return z

    def encode_chunks_of(self, texts):
        self.read_emphasis()
        batch_chunks, _ = self.process_texts(texts)
        count = max(len(chunks) for chunks in batch_chunks)
        zs = []
        for i in range(count):
            batch = [chunks[i] if i < len(chunks) else self.empty_chunk() for chunks in batch_chunks]
            zs.append(self.process_tokens([c.tokens for c in batch], [c.multipliers for c in batch]))
        if getattr(self, "return_pooled", False):
            return torch.hstack(zs), zs[0].pooled
        return torch.hstack(zs)


class TextConditionalModel(ChunkingMixin, torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hijack = None
        self.is_trainable = False
        self.input_key = "txt"
        self.return_pooled = False
        self.comma_token = None
        self.id_start = None
        self.id_end = None
        self.id_pad = None

    def tokenize(self, texts):
        raise NotImplementedError

    def encode_with_transformers(self, tokens):
        raise NotImplementedError

    def forward(self, texts):
        return self.encode_chunks_of(texts)


class FrozenCLIPEmbedderWithCustomWordsBase(TextConditionalModel):
    def __init__(self, wrapped, hijack=None):
        super().__init__()
        self.wrapped = wrapped
        self.hijack = hijack
        self.return_pooled = getattr(wrapped, "return_pooled", False)

    def forward(self, texts):
        if shared.opts.use_old_emphasis_implementation:
            return self.encode_chunks_of(texts)  # the old path does not go through TextConditionalModel.forward
        return super().forward(texts)


class FrozenCLIPEmbedderWithCustomWords(FrozenCLIPEmbedderWithCustomWordsBase):
    def __init__(self, wrapped, hijack=None):
        super().__init__(wrapped, hijack)
        self.tokenizer = wrapped.tokenizer
        self.comma_token = self.tokenizer.get_vocab().get(",</w>")
        self.id_start = self.tokenizer.bos_token_id
        self.id_end = self.tokenizer.eos_token_id
        self.id_pad = self.id_end

    def tokenize(self, texts):
        return self.tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]

    def encode_with_transformers(self, tokens):
        skip = int(shared.opts.CLIP_stop_at_last_layers)
        out = self.wrapped.transformer(input_ids=tokens, output_hidden_states=skip > 1)
        if skip > 1:
            text_model = getattr(self.wrapped.transformer, "text_model", self.wrapped.transformer)
            return text_model.final_layer_norm(out.hidden_states[-skip])
        return out.last_hidden_state


class FrozenCLIPEmbedderForSDXLWithCustomWords(FrozenCLIPEmbedderWithCustomWords):
    def encode_with_transformers(self, tokens):
        out = self.wrapped.transformer(input_ids=tokens, output_hidden_states=self.wrapped.layer == "hidden")
        if self.wrapped.layer == "last":
            return out.last_hidden_state
        return out.hidden_states[self.wrapped.layer_idx]
