"""The server-wide lock in a real ComfyUI server: POST /prompt with a graph that has no sanitizer node.

Reuses the session's server: the policy file is read at every encode, and a change to it changes
ComfyUI's cache keys, so it can be written while the server runs (and is removed at the end).
Each run saves the sampled latent (SaveLatent), compared bit for bit.
"""
from __future__ import annotations

import json
import time

from safetensors.torch import load_file

POSITIVE = "naked woman on a beach with blood, photo"
NEGATIVE = "blood and naked skin"
# Words of the prompts: the random-weight CLIP flags them there (not after a leading "a", nor paraphrases).
CONCEPTS = "naked, blood"
LOCK = {"locked": True, "scope": "server", "defaults": {"concepts": CONCEPTS},
        "audit": {"path": "audit.jsonl", "store_prompt": "text"}}


def plain_graph(checkpoint: str, prefix: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "seed": 7, "steps": 2, "cfg": 7.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": f"latents/{prefix}"}},
    }


def with_node_on_positive(checkpoint: str, prefix: str) -> dict:
    """The positive encode through 'Embedding Sanitizer (CLIP)' (the lock's settings), the negative plain."""
    graph = plain_graph(checkpoint, prefix)
    graph["7"] = {"class_type": "EmbeddingSanitizerCLIP", "inputs": {
        "clip": ["1", 1], "enabled": True, "mode": "safree", "preset": "custom", "intensity": 1.0,
        "concepts": CONCEPTS, "weights": "auto", "detector": "fast",
        "eos_policy": "project", "schedule": "off"}}
    graph["2"]["inputs"]["clip"] = ["7", 0]
    return graph


def decoded(text: str) -> str:
    """The prompt as an encode sees it: the words decoded from the tokens (what the audit log stores)."""
    return text.lower().replace(",", " ,")


def run(server, graph: dict):
    result = server.run(graph)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[:3000] + server.log()
    saved = result["outputs"]["6"]["latents"][0]
    latent = load_file(str(server.base / "output" / saved["subfolder"] / saved["filename"]))["latent_tensor"]
    return result, latent


def test_server_scope_sanitizes_graphs_without_the_node(server, tiny_checkpoint):
    import torch

    folder = server.base / "models" / "embedding_sanitizer"
    folder.mkdir(parents=True, exist_ok=True)
    policy = folder / "policy.json"
    audit = folder / "audit.jsonl"
    name = tiny_checkpoint.name
    try:
        policy.write_text(json.dumps(LOCK))
        locked, locked_latent = run(server, plain_graph(name, "es_lock_a"))
        prompt_id = locked["prompt"][1]
        # every encode of the prompt has its audit line (written off the generation path)
        for _ in range(40):
            lines = [json.loads(x) for x in audit.read_text().splitlines()] if audit.exists() else []
            if len([x for x in lines if x["request_id"] == prompt_id]) >= 2:
                break
            time.sleep(0.25)
        mine = {x["prompts"][0]["text"]: x for x in lines if x["request_id"] == prompt_id}
        assert sorted(mine) == sorted([decoded(POSITIVE), decoded(NEGATIVE)]), mine.keys()
        positive_line = mine[decoded(POSITIVE)]
        assert positive_line["host"] == "comfyui" and positive_line["prompts"][0]["rows_edited"] > 0
        assert "naked" in [t["token"].replace("</w>", "") for t in positive_line["prompts"][0]["flagged"]]
        assert mine[decoded(NEGATIVE)]["prompts"][0]["rows_edited"] > 0, "the negative's encode is sanitized too"

        # sanitize_negative on: the same graph samples from a sanitized negative (not ComfyUI's cached result)
        policy.write_text(json.dumps({**LOCK, "defaults": {"concepts": CONCEPTS, "sanitize_negative": True}}))
        _, negative_sanitized = run(server, plain_graph(name, "es_lock_b"))
        assert not torch.equal(negative_sanitized, locked_latent)

        # reference: the node on the positive under a lock of scope graph, the negative left plain
        policy.write_text(json.dumps({"locked": True}))
        _, reference = run(server, with_node_on_positive(name, "es_lock_c"))
        assert torch.equal(locked_latent, reference), "server scope: sanitized positive, original negative"

        # no policy: the plain graph is not sanitized
        policy.unlink()
        _, unlocked = run(server, plain_graph(name, "es_lock_d"))
        assert not torch.equal(unlocked, locked_latent)
    finally:
        policy.unlink(missing_ok=True)
