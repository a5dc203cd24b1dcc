"""OpenCLIP embedders (SD2, SDXL CLIP-G) (stand-in): pad id 0, G returns (z, pooled)."""
from modules import sd_hijack_clip


class FrozenOpenCLIPEmbedderWithCustomWords(sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase):
    def __init__(self, wrapped, hijack=None):
        super().__init__(wrapped, hijack)
        self.tokenizer = wrapped.tokenizer
        self.comma_token = self.tokenizer.encoder.get(",</w>")
        self.id_start = self.tokenizer.encoder["<start_of_text>"]
        self.id_end = self.tokenizer.encoder["<end_of_text>"]
        self.id_pad = 0

    def tokenize(self, texts):
        return [self.tokenizer.encode(text) for text in texts]

    def encode_with_transformers(self, tokens):
        return self.wrapped.encode_with_transformer(tokens)


class FrozenOpenCLIPEmbedder2WithCustomWords(FrozenOpenCLIPEmbedderWithCustomWords):
    def encode_with_transformers(self, tokens):
        d = self.wrapped.encode_with_transformer(tokens)
        z = d[self.wrapped.layer]
        pooled = d.get("pooled")
        if pooled is not None:
            z.pooled = pooled
        return z
