"""Forge's ClassicTextProcessingEngine (stand-in): the same chunking, called with ``__call__``.

As in Forge, each call notes in the module-level ``last_extra_generation_params`` what the next
infotext should say: the emphasis mode when a prompt uses emphasis syntax and the mode is not
"Original" (Forge's processing copies and clears the dict after computing the conditioning).
"""
from modules.sd_hijack_clip import ChunkingMixin

last_extra_generation_params = {}


class ClassicTextProcessingEngine(ChunkingMixin):
    def __init__(self, text_encoder, tokenizer, return_pooled=False, layer_idx=None):
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.return_pooled = return_pooled
        self.layer_idx = layer_idx
        self.comma_token = tokenizer.get_vocab().get(",</w>")
        self.id_start = tokenizer.bos_token_id
        self.id_end = tokenizer.eos_token_id
        self.id_pad = tokenizer.pad_token_id

    def tokenize(self, texts):
        return self.tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]

    def encode_with_transformers(self, tokens):
        out = self.text_encoder(input_ids=tokens, output_hidden_states=self.layer_idx is not None)
        return out.last_hidden_state if self.layer_idx is None else out.hidden_states[self.layer_idx]

    def __call__(self, texts):
        out = self.encode_chunks_of(texts)
        if any("(" in t or "[" in t for t in texts) and self.emphasis.name != "Original":
            last_extra_generation_params["Emphasis"] = self.emphasis.name
        return out
