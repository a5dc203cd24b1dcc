"""Forge's ClassicTextProcessingEngine (stand-in): the same chunking, called with ``__call__``."""
from modules.sd_hijack_clip import ChunkingMixin


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
        return self.encode_chunks_of(texts)
