"""The A1111 stand-in, put on sys.path per test module and removed afterwards.

``webui`` loads the extension the way the webui does (``preload.py`` with the argument
parser, ``scripts/*.py`` with the extension folder on sys.path only while it loads,
``on_ui_settings``, the txt2img and img2img script UIs built with Gradio) and yields a
namespace of the stand-in's modules and tiny models. At teardown the script-unloaded
callbacks run and every stand-in and glue module is dropped from sys.modules.
"""
from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import pytest

from tests.support.require import require

ROOT = Path(__file__).resolve().parents[2]
STUB = Path(__file__).resolve().parent / "stub"
OWNED = ("modules", "a1111", "launch", "backend", "a1111_stub_models")


def _owned(name: str) -> bool:
    return name.split(".")[0] in OWNED


@pytest.fixture(scope="session")
def clip_weights():
    """Raw tiny CLIP text models (shared by every stand-in instance)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    import torch

    def build(width, seed, projection):
        config = CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=2 * width,
                                num_hidden_layers=2, num_attention_heads=max(1, width // 64),
                                max_position_embeddings=77, hidden_act="gelu" if projection else "quick_gelu",
                                projection_dim=width, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()
        finally:
            torch.random.set_rng_state(state)

    return {"l": build(768, 0, False), "g": build(1280, 1, True)}


def _wrap_embeddings(model, stub_models):
    embeddings = getattr(model, "text_model", model).embeddings  # transformers 4 nests, 5 does not
    original = embeddings.token_embedding
    while hasattr(original, "wrapped"):  # wrapped by an earlier stand-in instance
        original = original.wrapped
    embeddings.token_embedding = stub_models.EmbeddingsWithFixes(original)
    return model


@pytest.fixture(scope="module")
def webui(clip_weights, tmp_path_factory):
    require("gradio", "run bash tools/bootstrap.sh --test (installs tests/a1111/requirements.txt)")  # fails in CI
    saved_path = list(sys.path)
    saved_env = os.environ.get("A1111_STUB_DATA")
    data = tmp_path_factory.mktemp("a1111-data")
    os.environ["A1111_STUB_DATA"] = str(data)
    for name in [n for n in sys.modules if _owned(n)]:
        del sys.modules[name]
    sys.path.insert(0, str(STUB))
    try:
        import gradio as gr

        from modules import cmd_args, script_loading

        script_loading.load_module(str(ROOT / "preload.py")).preload(cmd_args.parser)
        from modules import processing, prompt_parser, script_callbacks, scripts, shared
        from modules.api import api
        from modules import infotext_utils
        import a1111_stub_models as stub_models

        scripts.load_scripts([str(ROOT)])
        script_callbacks.ui_settings_callback()
        for runner, is_img2img in ((scripts.scripts_txt2img, False), (scripts.scripts_img2img, True)):
            runner.initialize_scripts(is_img2img)
            with gr.Blocks():
                runner.setup_ui()
        clip_l = _wrap_embeddings(clip_weights["l"], stub_models)
        clip_g = _wrap_embeddings(clip_weights["g"], stub_models)
        models = types.SimpleNamespace(
            sd1=stub_models.SD1Model(clip_l), sdxl=stub_models.SDXLModel(clip_l, clip_g),
            forge=stub_models.ForgeSD15Model(clip_l))
        shared.sd_model = models.sd1
        ns = types.SimpleNamespace(
            root=ROOT, data=data, gr=gr, shared=shared, scripts=scripts, script_callbacks=script_callbacks,
            processing=processing, prompt_parser=prompt_parser, api=api, infotext_utils=infotext_utils,
            models=models, stub_models=stub_models, glue=importlib.import_module("a1111.webui"),
            sd_hijack_clip=importlib.import_module("modules.sd_hijack_clip"))
        yield ns
        script_callbacks.script_unloaded_callback()
    finally:
        for name in [n for n in sys.modules if _owned(n)]:
            del sys.modules[name]
        sys.path[:] = saved_path
        if saved_env is None:
            os.environ.pop("A1111_STUB_DATA", None)
        else:
            os.environ["A1111_STUB_DATA"] = saved_env
