"""The shipped API examples against the real ComfyUI's node definitions: ``execution.validate_prompt``, as
``POST /prompt`` runs it, with ComfyUI's own node classes (the SDXL, Flux and sampler nodes from its
``comfy_extras``) and the pack loaded by ComfyUI's loader. Model files are empty placeholders named as in
the examples (validation checks the names against the model folders, it does not open the files)."""
from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import pytest

from tests.comfyui.host import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
EXTRAS = ("nodes_clip_sdxl.py", "nodes_custom_sampler.py", "nodes_flux.py", "nodes_sd3.py")
MODEL_FOLDERS = {"ckpt_name": "checkpoints", "unet_name": "diffusion_models", "clip_name1": "text_encoders",
                 "clip_name2": "text_encoders", "vae_name": "vae"}


@pytest.fixture(scope="module")
def validate(comfy):
    """``validate(prompt) -> (ok, error, outputs, node_errors)`` with ComfyUI's own validation."""
    import execution
    import folder_paths

    nodes = comfy["nodes"]
    extras = Path(nodes.__file__).parent / "comfy_extras"
    for name in EXTRAS:
        if not asyncio.run(nodes.load_custom_node(str(extras / name), module_parent="comfy_extras")):
            raise RuntimeError(f"ComfyUI could not load comfy_extras/{name}")
    for path in EXAMPLES.glob("*_api.json"):  # placeholders for the model files the examples name
        for node in json.loads(path.read_text()).values():
            for key, folder in MODEL_FOLDERS.items():
                if key in node["inputs"]:
                    target = Path(folder_paths.get_folder_paths(folder)[0]) / node["inputs"][key]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.touch()
    return lambda prompt: asyncio.run(execution.validate_prompt("example-check", prompt, None))


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*_api.json")))
def test_api_example_is_a_valid_prompt(validate, name):
    prompt = json.loads((EXAMPLES / name).read_text())
    ok, error, outputs, node_errors = validate(prompt)
    assert ok, json.dumps({"error": error, "node_errors": node_errors}, indent=1, default=str)[:4000]
    assert outputs, "no output node"
    kinds = {node["class_type"] for node in prompt.values()}
    assert {"EmbeddingSanitizerCLIP", "EmbeddingSanitizerConditioning"} <= kinds


def test_family_layouts():
    """Each family's example has the loaders and encode nodes that family needs."""
    def kinds(name):
        return {n["class_type"]: n for n in json.loads((EXAMPLES / f"{name}_embedding_sanitizer_api.json")
                                                        .read_text()).values()}

    sd15, sdxl, flux = kinds("sd15"), kinds("sdxl"), kinds("flux")
    assert {"CheckpointLoaderSimple", "CLIPTextEncode", "KSampler"} <= set(sd15)
    assert {"CheckpointLoaderSimple", "CLIPTextEncodeSDXL", "KSampler"} <= set(sdxl)
    assert sdxl["EmptyLatentImage"]["inputs"]["width"] == 1024
    assert {"UNETLoader", "DualCLIPLoader", "VAELoader", "FluxGuidance", "EmptySD3LatentImage",
            "SamplerCustomAdvanced", "BasicGuider"} <= set(flux)
    assert flux["DualCLIPLoader"]["inputs"]["type"] == "flux"


def test_validation_rejects_a_broken_example(validate):
    """The check can fail: a wrong setting value and an unknown node type are refused."""
    prompt = json.loads((EXAMPLES / "sdxl_embedding_sanitizer_api.json").read_text())
    bad = copy.deepcopy(prompt)
    bad["2"]["inputs"]["mode"] = "no-such-mode"
    ok, _, _, node_errors = validate(bad)
    assert not ok and "2" in node_errors
    bad = copy.deepcopy(prompt)
    bad["3"]["class_type"] = "CLIPTextEncodeSDXXL"
    assert not validate(bad)[0]
