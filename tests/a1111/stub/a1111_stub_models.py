"""Tiny random checkpoints for the stand-in: SD1, SD2 (OpenCLIP ViT-H), SDXL (CLIP-L + CLIP-G + size
embedders), Forge SD1.

Real widths (768, 1024, 1280) and the real 49,408-id vocabulary; 2 transformer layers. The
tokenizer is the project's CLIP BPE behind Hugging Face- and open_clip-shaped wrappers.
The token embeddings are wrapped like the webui's hijack does (a module holding the
original embedding as ``.wrapped``).
"""
import math

import torch

from embedding_sanitizer.encoders.clip_bpe import get_tokenizer
from modules import sd_hijack_clip, sd_hijack_open_clip, sd_models_xl


class HFStyleTokenizer:
    """The calls the webui makes on transformers' CLIPTokenizer."""

    bos_token_id = 49406
    eos_token_id = 49407

    def __init__(self, pad_token_id=49407):
        self.bpe = get_tokenizer()
        self.pad_token_id = pad_token_id

    def get_vocab(self):
        return dict(self.bpe.encoder)

    def __call__(self, texts, truncation=False, add_special_tokens=False):
        return {"input_ids": [self.bpe.encode_words(text) for text in texts]}

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self.bpe.token(ids)
        return [self.bpe.token(i) for i in ids]


class OpenClipStyleTokenizer:
    """open_clip's SimpleTokenizer: ``encoder``/``decoder`` dicts and ``encode``."""

    def __init__(self):
        self.bpe = get_tokenizer()
        rename = {"<|startoftext|>": "<start_of_text>", "<|endoftext|>": "<end_of_text>"}
        self.encoder = {rename.get(k, k): v for k, v in self.bpe.encoder.items()}
        self.decoder = {v: k for k, v in self.encoder.items()}

    def encode(self, text):
        return self.bpe.encode_words(text)


class EmbeddingsWithFixes(torch.nn.Module):
    def __init__(self, wrapped):
        super().__init__()
        self.wrapped = wrapped

    def forward(self, input_ids):
        return self.wrapped(input_ids)


class WrappedCLIP(torch.nn.Module):
    """ldm/sgm FrozenCLIPEmbedder: ``transformer``, ``tokenizer``, ``layer``/``layer_idx``."""

    def __init__(self, transformer, layer="last", layer_idx=None):
        super().__init__()
        self.transformer = transformer
        self.tokenizer = HFStyleTokenizer()
        self.layer = layer
        self.layer_idx = layer_idx


class WrappedOpenCLIP(torch.nn.Module):
    """sgm FrozenOpenCLIPEmbedder2: ``encode_with_transformer`` -> {penultimate, last, pooled}."""

    def __init__(self, model, layer="penultimate"):
        super().__init__()
        self.model = model
        self.tokenizer = OpenClipStyleTokenizer()
        self.layer = layer
        self.return_pooled = True

    def encode_with_transformer(self, tokens):
        out = self.model(input_ids=tokens, output_hidden_states=True)
        return {"penultimate": out.hidden_states[-2], "last": out.last_hidden_state, "pooled": out.text_embeds}


class WrappedOpenCLIPSD2(torch.nn.Module):
    """ldm FrozenOpenCLIPEmbedder (SD2, ViT-H/14 text tower): ``encode_with_transformer`` runs every residual
    block but the last (``layer="penultimate"``) and applies ``ln_final``; a tensor, no pooled output.
    ``dtype``: the precision the webui runs the text model in (float16 with ``--precision half``)."""

    def __init__(self, model, dtype=torch.float32):
        super().__init__()
        self.model = model
        self.tokenizer = OpenClipStyleTokenizer()
        self.layer = "penultimate"
        self.dtype = dtype

    def encode_with_transformer(self, tokens):
        out = self.model(input_ids=tokens, output_hidden_states=True)
        text_model = getattr(self.model, "text_model", self.model)
        return text_model.final_layer_norm(out.hidden_states[-2]).to(self.dtype)


class SizeEmbedder(torch.nn.Module):
    """Fourier features of a (B, 2) size tensor -> (B, 512)."""

    def __init__(self, input_key, dim=256):
        super().__init__()
        self.input_key = input_key
        self.dim = dim

    def forward(self, values):
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = values.float().reshape(-1, 1) * freqs
        emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
        return emb.reshape(values.shape[0], -1)


class Conditioner(torch.nn.Module):
    OUTPUT = {2: "vector", 3: "crossattn"}

    def __init__(self, embedders):
        super().__init__()
        self.embedders = torch.nn.ModuleList(embedders)

    def forward(self, batch, force_zero_embeddings=()):
        out = {}
        for embedder in self.embedders:
            emb_out = embedder(batch[embedder.input_key])
            for emb in emb_out if isinstance(emb_out, (tuple, list)) else (emb_out,):
                key = self.OUTPUT[emb.dim()]
                if embedder.input_key in force_zero_embeddings:
                    emb = torch.zeros_like(emb)
                out[key] = torch.cat((out[key], emb), -1) if key in out else emb
        return out


class SD1Model(torch.nn.Module):
    is_sdxl = False

    def __init__(self, transformer):
        super().__init__()
        self.cond_stage_model = sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords(WrappedCLIP(transformer))

    def get_learned_conditioning(self, c):
        return self.cond_stage_model(c)


class SD2Model(torch.nn.Module):
    """SD2.x: ``cond_stage_model`` is the OpenCLIP embedder (pad id 0); the conditioning a ``[B, 77n, 1024]`` tensor."""

    is_sdxl = False
    is_sd2 = True

    def __init__(self, transformer, dtype=torch.float32):
        super().__init__()
        self.cond_stage_model = sd_hijack_open_clip.FrozenOpenCLIPEmbedderWithCustomWords(
            WrappedOpenCLIPSD2(transformer, dtype))

    def get_learned_conditioning(self, c):
        return self.cond_stage_model(c)


class SDXLModel(torch.nn.Module):
    is_sdxl = True

    def __init__(self, clip_l, clip_g):
        super().__init__()
        embed_l = sd_hijack_clip.FrozenCLIPEmbedderForSDXLWithCustomWords(WrappedCLIP(clip_l, "hidden", -2))
        embed_g = sd_hijack_open_clip.FrozenOpenCLIPEmbedder2WithCustomWords(WrappedOpenCLIP(clip_g))
        embed_l.input_key = embed_g.input_key = "txt"
        self.conditioner = Conditioner([embed_l, embed_g, SizeEmbedder("original_size_as_tuple"),
                                        SizeEmbedder("crop_coords_top_left"), SizeEmbedder("target_size_as_tuple")])

    def get_learned_conditioning(self, batch):
        return sd_models_xl.get_learned_conditioning(self, batch)


class ForgeSD15Model:
    """Forge: the engine is reached as ``sd_model.text_processing_engine``."""

    is_sdxl = False

    def __init__(self, transformer):
        from backend.text_processing.classic_engine import ClassicTextProcessingEngine

        self.text_processing_engine = ClassicTextProcessingEngine(transformer, HFStyleTokenizer())

    def get_learned_conditioning(self, prompt):
        return self.text_processing_engine(prompt)
