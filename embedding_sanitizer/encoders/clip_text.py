"""A CLIP text encoder outside any host: ``transformers.CLIPTextModel`` + the CLIP BPE tokenizer.

Output layer per model family (ComfyUI ``sd1_clip.py`` / ``sd2_clip.py`` /
``sdxl_clip.py`` and the original ldm/sgm embedders agree):

========  =========  ==========================  ===================
family    encoder    layer                       final LayerNorm
========  =========  ==========================  ===================
SD1.x     CLIP-L     last (``clip skip 1``)      yes (part of "last")
SD2.x     OpenCLIP-H penultimate                 yes
SDXL      CLIP-L     penultimate                 no
SDXL      OpenCLIP-G penultimate                 no
========  =========  ==========================  ===================

SD1 with "clip skip 2" is ``layer="penultimate", final_norm=True``. SD3 single
file checkpoints carry CLIP-L and CLIP-G and use them like SDXL.

The pooled vector returned here is the row of the first EOS of each chunk in
the selected layer, i.e. in the same space as the token rows (the sanitizer's
convention). It is not the host's pooled output for SDXL (G's last layer, final
norm, then ``text_projection``); the projection weight is kept in
``CLIPTextEncoder.text_projection`` when the checkpoint has one.

No attention mask is passed, as in the hosts: the text transformer is causal.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..layout import (
    ROLE_BOS, ROLE_EOS, ROLE_PAD, SD1_CLIP_L, SD2_CLIP_H, SDXL_CLIP_G, SDXL_CLIP_L, ChunkLayout, token_roles,
)
from .base import EncoderOutput, TextEncoder, TokenBatch, pad_chunks, tensor_fingerprint
from .clip_bpe import VOCAB_SIZE, CLIPBPETokenizer, get_tokenizer

MAX_POSITIONS = 77
_SPECIAL_PIECES = {ROLE_BOS: "<bos>", ROLE_EOS: "<eos>", ROLE_PAD: "<pad>"}
_CANON_TOKEN = "embeddings.token_embedding.weight"


@dataclass(frozen=True)
class _Source:
    """Where one text encoder sits in a checkpoint, and how its family uses it."""

    component: str  # clip_l, clip_g or clip_h
    family: str  # sd1, sd2, sdxl, sd3 or hf
    prefix: str
    fmt: str  # "hf" (transformers names below the prefix) or "openclip"
    projection_key: str | None = None

    @property
    def token_key(self) -> str:
        return self.prefix + ("token_embedding.weight" if self.fmt == "openclip" else _CANON_TOKEN)

    def describe(self) -> str:
        return f"{self.component} ({self.family}: {self.prefix}*)"


# Checked in this order; the first one whose token-embedding key exists is used per component.
KNOWN_SOURCES = (
    _Source("clip_l", "sdxl", "conditioner.embedders.0.transformer.text_model.", "hf"),
    _Source("clip_g", "sdxl", "conditioner.embedders.1.model.", "openclip", "conditioner.embedders.1.model.text_projection"),
    _Source("clip_l", "sd1", "cond_stage_model.transformer.text_model.", "hf"),
    _Source("clip_l", "sd1", "cond_stage_model.transformer.", "hf"),
    _Source("clip_h", "sd2", "cond_stage_model.model.", "openclip", "cond_stage_model.model.text_projection"),
    _Source("clip_l", "sd3", "text_encoders.clip_l.transformer.text_model.", "hf",
            "text_encoders.clip_l.transformer.text_projection.weight"),
    _Source("clip_g", "sd3", "text_encoders.clip_g.transformer.text_model.", "hf",
            "text_encoders.clip_g.transformer.text_projection.weight"),
    _Source("auto", "hf", "text_model.", "hf", "text_projection.weight"),
    _Source("auto", "hf", "", "hf", "text_projection.weight"),
)

# family, component -> (layout, layer, final_norm, hidden_act)
_FAMILY_SETTINGS = {
    ("sd1", "clip_l"): (SD1_CLIP_L, "last", True, "quick_gelu"),
    ("sd2", "clip_h"): (SD2_CLIP_H, "penultimate", True, "gelu"),
    ("sdxl", "clip_l"): (SDXL_CLIP_L, "penultimate", False, "quick_gelu"),
    ("sdxl", "clip_g"): (SDXL_CLIP_G, "penultimate", False, "gelu"),
    ("sd3", "clip_l"): (SDXL_CLIP_L, "penultimate", False, "quick_gelu"),
    ("sd3", "clip_g"): (SDXL_CLIP_G, "penultimate", False, "gelu"),
}


def _hf_defaults(width: int, layers: int) -> tuple[str, ChunkLayout, str, bool, str]:
    """Component, layout, layer, final norm and activation for a bare transformers-layout encoder."""
    if width == 1024:  # OpenCLIP-H as in SD2 (diffusers ships it cut to 23 layers: its last layer is SD2's penultimate)
        return "clip_h", SD2_CLIP_H, ("last" if layers == 23 else "penultimate"), True, "gelu"
    if width == 1280:
        return "clip_g", SDXL_CLIP_G, "penultimate", False, "gelu"
    return "clip_l", SD1_CLIP_L, "last", True, "quick_gelu"


def _openclip_to_hf(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP text-tower names (below the prefix) -> transformers ``CLIPTextModel`` names."""
    out: dict[str, torch.Tensor] = {}
    simple = {
        "token_embedding.weight": "embeddings.token_embedding.weight",
        "positional_embedding": "embeddings.position_embedding.weight",
        "ln_final.weight": "final_layer_norm.weight",
        "ln_final.bias": "final_layer_norm.bias",
    }
    block_parts = {
        "ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
        "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
    }
    for key, value in tensors.items():
        if key in simple:
            out[simple[key]] = value
            continue
        if not key.startswith("transformer.resblocks."):
            continue  # text_projection, logit_scale, attn_mask, visual tower...
        index, rest = key[len("transformer.resblocks."):].split(".", 1)
        base = f"encoder.layers.{index}."
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = "weight" if rest.endswith("weight") else "bias"
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{base}self_attn.{name}.{kind}"] = part.contiguous()
            continue
        module, kind = rest.rsplit(".", 1)
        if module in block_parts:
            out[f"{base}{block_parts[module]}.{kind}"] = value
    return out


def _count_layers(state: dict[str, torch.Tensor]) -> int:
    indices = {int(key.split(".")[2]) for key in state if key.startswith("encoder.layers.")}
    if indices != set(range(len(indices))):
        raise ValueError(f"text encoder layers are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def _build_model(state: dict[str, torch.Tensor], *, hidden_act: str, heads: int | None, layer_norm_eps: float,
                 device, dtype):
    """A ``CLIPTextModel`` whose config is read off the weight shapes, holding exactly ``state``."""
    from transformers import CLIPTextConfig, CLIPTextModel

    token = state[_CANON_TOKEN]
    vocab, width = token.shape
    positions = state["embeddings.position_embedding.weight"].shape[0]
    layers = _count_layers(state)
    if layers == 0:
        raise ValueError("text encoder has no transformer layers")
    config = CLIPTextConfig(
        vocab_size=int(vocab), hidden_size=int(width), num_hidden_layers=layers,
        num_attention_heads=int(heads or max(1, width // 64)),
        intermediate_size=int(state["encoder.layers.0.mlp.fc1.weight"].shape[0]),
        max_position_embeddings=int(positions), hidden_act=hidden_act, layer_norm_eps=layer_norm_eps,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
    )
    with torch.device("meta"):
        model = CLIPTextModel(config)
    expected = set(model.state_dict())
    if not any(key.startswith("text_model.") for key in expected):
        loadable = dict(state)
    else:  # transformers 4.x nests the text tower under text_model.
        loadable = {f"text_model.{key}": value for key, value in state.items()}
    missing = sorted(expected - set(loadable))
    unexpected = sorted(set(loadable) - expected)
    if missing or unexpected:
        raise ValueError(f"text encoder weights do not fit a CLIPTextModel: missing {missing[:6]}, "
                         f"unexpected {unexpected[:6]}")
    model.load_state_dict({k: v.to(dtype) for k, v in loadable.items()}, strict=True, assign=True)
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta:  # non-persistent buffers (position_ids) are not in a state dict
            if not name.endswith("position_ids"):
                raise ValueError(f"cannot initialise buffer {name} of the text model")
            owner = model.get_submodule(name.rsplit(".", 1)[0])
            owner.register_buffer("position_ids", torch.arange(positions).expand(1, -1), persistent=False)
    return model.to(device).eval()


class CLIPTextEncoder(TextEncoder):
    """A CLIP text transformer behind the ``TextEncoder`` interface.

    ``model``: a ``transformers.CLIPTextModel`` (or a module with the same call
    ``model(input_ids=..., output_hidden_states=...)`` returning
    ``last_hidden_state`` and ``hidden_states``).
    ``layer``: ``"last"`` (last hidden state after the final LayerNorm),
    ``"penultimate"`` (``hidden_states[-2]``) or an int index into
    ``hidden_states`` (0 = embeddings). ``final_norm``: apply the model's final
    LayerNorm to a non-last layer (SD2 and SD1 clip-skip: yes; SDXL: no).
    """

    def __init__(self, model: torch.nn.Module, layout: ChunkLayout = SD1_CLIP_L, *, layer: str | int = "last",
                 final_norm: bool = True, tokenizer: CLIPBPETokenizer | None = None, name: str | None = None,
                 final_norm_module: torch.nn.Module | None = None, text_projection: torch.Tensor | None = None,
                 family: str | None = None):
        if layer not in ("last", "penultimate") and not isinstance(layer, int):
            raise ValueError(f"layer must be 'last', 'penultimate' or an int, got {layer!r}")
        if layout.chunk_length is None or layout.chunk_length > MAX_POSITIONS or layout.bos_id is None:
            raise ValueError(f"layout {layout.name!r} is not a CLIP 77-token chunk layout")
        self.model = model.eval()
        self.layout = layout
        self.layer = layer
        self.final_norm = bool(final_norm)
        self.tokenizer = tokenizer if tokenizer is not None else get_tokenizer()
        self.text_projection = text_projection
        self.family = family
        self.name = name or layout.name
        config = getattr(model, "config", None)
        self.width = int(getattr(config, "hidden_size", 0) or self._token_embedding().shape[1])
        if final_norm_module is None and layer != "last" and self.final_norm:
            final_norm_module = getattr(model, "final_layer_norm", None)
            if final_norm_module is None and hasattr(model, "text_model"):
                final_norm_module = getattr(model.text_model, "final_layer_norm", None)
            if final_norm_module is None:
                raise ValueError("final_norm=True needs the model's final LayerNorm: pass final_norm_module")
        self.final_norm_module = final_norm_module

    # ------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _token_embedding(self) -> torch.Tensor:
        get = getattr(self.model, "get_input_embeddings", None)
        module = get() if callable(get) else None
        if module is None:
            for name, candidate in self.model.named_modules():
                if name.endswith("token_embedding"):
                    module = candidate
                    break
        if module is None:
            raise ValueError("cannot find the token embedding of the text model")
        return module.weight

    def compute_fingerprint(self) -> str:
        return tensor_fingerprint(self._token_embedding())

    @property
    def cache_key(self) -> str:
        """Includes the output layer: the same weights give other vectors at another layer (clip skip)."""
        return f"{self.name}|{self.fingerprint}|layer={self.layer}|final_norm={int(self.final_norm)}"

    def describe(self) -> dict:
        return {"name": self.name, "family": self.family, "layout": self.layout.name, "layer": self.layer,
                "final_norm": self.final_norm, "width": self.width, "tokenizer": self.tokenizer.source}

    # -------------------------------------------------------------- tokenize
    def tokenize(self, texts: list[str]) -> TokenBatch:
        """Prompts -> ``[B, 77 * chunks]`` ids; prompts with fewer chunks get empty chunks (as A1111 pads a batch).

        Words are split every 75 tokens (ComfyUI keeps word groups of fewer
        than 8 tokens whole across a chunk boundary; this does not).
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        length = self.layout.chunk_length
        rows = [pad_chunks(self.tokenizer.encode_words(text), self.layout) for text in texts]
        count = max((len(chunks) for chunks in rows), default=1)
        empty = pad_chunks([], self.layout)[0]
        flat = [[i for chunk in chunks + [empty] * (count - len(chunks)) for i in chunk] for chunks in rows]
        ids = torch.tensor(flat, dtype=torch.long).reshape(len(texts), count * length)
        roles = token_roles(ids, self.layout).tolist()
        pieces = [
            [_SPECIAL_PIECES.get(role) or self.tokenizer.decode_piece(i) for i, role in zip(row, row_roles)]
            for row, row_roles in zip(flat, roles)
        ]
        return TokenBatch(ids, pieces, self.layout, texts)

    # ---------------------------------------------------------------- encode
    def encode_chunks(self, ids: torch.Tensor) -> EncoderOutput:
        """``[N, L]`` ids (``L <= 77``, each row one chunk) -> tokens ``[N, L, D]`` and pooled ``[N, D]``.

        Runs under ``torch.no_grad`` (not inference mode, so that the outputs
        can feed a module that is being trained), on the model's device and
        dtype; the outputs keep that device and dtype.
        """
        if ids.dim() != 2:
            raise ValueError(f"ids must be [chunks, length], got shape {tuple(ids.shape)}")
        if ids.shape[1] > MAX_POSITIONS:
            raise ValueError(f"a CLIP chunk holds at most {MAX_POSITIONS} ids, got {ids.shape[1]}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= VOCAB_SIZE):
            raise ValueError(
                f"ids outside the CLIP vocabulary 0..{VOCAB_SIZE - 1} (min {int(ids.min())}, max {int(ids.max())}); "
                "textual-inversion positions can only be encoded by the host's own text encoder"
            )
        ids = ids.to(self.device, torch.long)
        with torch.no_grad():
            want_hidden = self.layer != "last"
            out = self.model(input_ids=ids, output_hidden_states=want_hidden)
            if not want_hidden:
                tokens = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            else:
                hidden = out.hidden_states if hasattr(out, "hidden_states") else out[2]
                tokens = hidden[-2 if self.layer == "penultimate" else self.layer]
                if self.final_norm:
                    tokens = self.final_norm_module(tokens)
            is_eos = ids == self.layout.eos_id
            first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(ids[:, 0], ids.shape[1] - 1))
            pooled = tokens[torch.arange(ids.shape[0], device=tokens.device), first]
        return EncoderOutput(tokens, pooled)

    # ---------------------------------------------------------- constructors
    @classmethod
    def tiny_random(cls, width: int = 32, layers: int = 2, heads: int = 2, seed: int = 0,
                    layout: ChunkLayout = SD1_CLIP_L, *, layer: str | int = "last", final_norm: bool = True,
                    hidden_act: str = "quick_gelu", intermediate: int | None = None,
                    vocab: str | Path | None = None) -> "CLIPTextEncoder":
        """A small random ``CLIPTextModel`` with the real vocabulary size (for shape tests)."""
        from transformers import CLIPTextConfig, CLIPTextModel

        config = CLIPTextConfig(
            vocab_size=VOCAB_SIZE, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=intermediate or 4 * width, max_position_embeddings=MAX_POSITIONS,
            hidden_act=hidden_act, bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
        )
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            model = CLIPTextModel(config)
        finally:
            torch.random.set_rng_state(state)
        return cls(model.eval(), layout, layer=layer, final_norm=final_norm, tokenizer=get_tokenizer(vocab),
                   name=f"tiny-random-{layout.name}", family="tiny")

    @classmethod
    def from_pretrained_folder(cls, path: str | Path, *, layout: ChunkLayout | None = None,
                               layer: str | int | None = None, final_norm: bool | None = None,
                               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                               vocab: str | Path | None = None) -> "CLIPTextEncoder":
        """A local transformers folder (``config.json`` + weights), or a diffusers folder with ``text_encoder/``.

        Never downloads. The layout and layer default from the width (768: SD1,
        1024: SD2, 1280: SDXL-G); the tokenizer comes from ``vocab``, else the
        folder's (or its sibling ``tokenizer/``) ``vocab.json``/``merges.txt``,
        else the open_clip package.
        """
        from transformers import CLIPTextModel

        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"text encoder folder {str(folder)!r} does not exist")
        if not (folder / "config.json").is_file() and (folder / "text_encoder" / "config.json").is_file():
            folder = folder / "text_encoder"
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{str(folder)!r} has no config.json: expected a transformers CLIP text model "
                                    "folder (config.json + model.safetensors) or a diffusers folder with text_encoder/")
        model = CLIPTextModel.from_pretrained(str(folder), local_files_only=True, dtype=dtype).to(device).eval()
        component, auto_layout, auto_layer, auto_norm, _ = _hf_defaults(
            int(model.config.hidden_size), int(model.config.num_hidden_layers))
        if vocab is None:
            for candidate in (folder, folder.parent / "tokenizer"):
                if (candidate / "vocab.json").is_file() and (candidate / "merges.txt").is_file():
                    vocab = candidate
                    break
        return cls(model, layout or auto_layout, layer=layer or auto_layer,
                   final_norm=auto_norm if final_norm is None else final_norm, tokenizer=get_tokenizer(vocab),
                   family="hf")

    @classmethod
    def from_checkpoint(cls, path: str | Path, component: str = "auto", *, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = torch.float32, layer: str | int | None = None,
                        final_norm: bool | None = None, layout: ChunkLayout | None = None,
                        hidden_act: str | None = None, heads: int | None = None,
                        vocab: str | Path | None = None) -> "CLIPTextEncoder":
        """The CLIP text encoder of a local Stable Diffusion checkpoint ``.safetensors``.

        Only the text-encoder tensors are read (``safetensors.safe_open``).
        ``component``: ``"clip_l"``, ``"clip_g"``, ``"clip_h"`` or ``"auto"``
        (the only encoder of the file; CLIP-L for SDXL/SD3). Recognised layouts:
        SD1 (``cond_stage_model.transformer[.text_model].*``), SD2
        (``cond_stage_model.model.*``, OpenCLIP), SDXL
        (``conditioner.embedders.0.transformer.text_model.*`` and
        ``conditioner.embedders.1.model.*``), SD3 single files
        (``text_encoders.clip_{l,g}.transformer.text_model.*``) and bare
        transformers/diffusers/ComfyUI text-encoder files (``text_model.*``).
        The family decides the layout, the output layer and the activation;
        ``layer``, ``final_norm``, ``layout``, ``hidden_act`` and ``heads``
        override them. ``dtype=None`` keeps the file's dtype.
        """
        from safetensors import safe_open

        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"checkpoint {str(file)!r} does not exist (expected a local .safetensors file)")
        if file.suffix != ".safetensors":
            raise ValueError(f"{file.name}: only .safetensors checkpoints are read (never pickle files)")
        if component not in ("auto", "clip_l", "clip_g", "clip_h"):
            raise ValueError(f"component must be 'auto', 'clip_l', 'clip_g' or 'clip_h', got {component!r}")
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            keys = set(handle.keys())
            found = find_text_encoders(keys)
            chosen = _choose(found, component, keys, file)
            below = [key for key in keys if key.startswith(chosen.prefix)]
            raw = {key[len(chosen.prefix):]: handle.get_tensor(key) for key in below}
            projection = handle.get_tensor(chosen.projection_key) if chosen.projection_key in keys else None
        if chosen.fmt == "openclip":
            state = _openclip_to_hf(raw)
            if projection is not None:
                projection = projection.t().contiguous()  # OpenCLIP x @ P -> transformers weight P^T
        else:
            state = {key: value for key, value in raw.items()
                     if key.split(".")[0] in ("embeddings", "encoder", "final_layer_norm")
                     and not key.endswith("position_ids")}
        width = int(state[_CANON_TOKEN].shape[1])
        if chosen.family == "hf":
            name, auto_layout, auto_layer, auto_norm, auto_act = _hf_defaults(width, _count_layers(state))
            sidecar = file.parent / "config.json"
            if sidecar.is_file():  # diffusers text_encoder/ folder
                config = json.loads(sidecar.read_text())
                auto_act = config.get("hidden_act", auto_act)
                heads = heads or config.get("num_attention_heads")
        else:
            name = chosen.component
            auto_layout, auto_layer, auto_norm, auto_act = _FAMILY_SETTINGS[(chosen.family, chosen.component)]
        if dtype is None:
            dtype = state[_CANON_TOKEN].dtype
        model = _build_model(state, hidden_act=hidden_act or auto_act, heads=heads, layer_norm_eps=1e-5,
                             device=device, dtype=dtype)
        chosen_layout = layout or auto_layout
        return cls(model, chosen_layout, layer=layer or auto_layer,
                   final_norm=auto_norm if final_norm is None else final_norm, tokenizer=get_tokenizer(vocab),
                   name=chosen_layout.name, family=f"{chosen.family}:{name}",
                   text_projection=None if projection is None else projection.to(device, dtype))


def find_text_encoders(keys) -> list[_Source]:
    """The text encoders present among a checkpoint's tensor names (one per component)."""
    keys = set(keys)
    found: list[_Source] = []
    taken: set[str] = set()
    for source in KNOWN_SOURCES:
        if source.token_key not in keys:
            continue
        if source.prefix == "" and any(key.startswith("text_model.") for key in keys):
            continue
        if source.component != "auto" and source.component in taken:
            continue
        found.append(source)
        taken.add(source.component)
        if source.family == "hf":
            break
    if any(source.family != "hf" for source in found):
        found = [source for source in found if source.family != "hf"]
    return found


def list_text_encoders(path: str | Path) -> list[str]:
    """Descriptions of the text encoders found in a checkpoint (reads only the header)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return [source.describe() for source in find_text_encoders(handle.keys())]


def _choose(found: list[_Source], component: str, keys: set[str], file: Path) -> _Source:
    if not found:
        looked = ", ".join(sorted({source.token_key for source in KNOWN_SOURCES}))
        sample = ", ".join(sorted(keys)[:5]) or "no tensors"
        raise ValueError(f"{file.name}: no recognised CLIP text encoder. Looked for the token embedding under: "
                         f"{looked}. The file holds {len(keys)} tensors ({sample}, ...)")
    if component == "auto":
        for preferred in ("clip_l", "clip_h", "clip_g", "auto"):
            for source in found:
                if source.component == preferred:
                    return source
    for source in found:
        if source.component == component or source.component == "auto":
            return source
    raise ValueError(f"{file.name}: no {component} text encoder; found "
                     + ", ".join(source.describe() for source in found))
