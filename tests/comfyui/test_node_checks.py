"""Errors land on the sanitizer node, long concept lists show progress, the weights dropdown tells the truth.

In the real ComfyUI: in-process (the node raises, not the downstream CLIPTextEncode) and through the
server (the prompt's execution_error names the sanitizer node).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from tests.comfyui.test_server import tiny_graph

SETTINGS = dict(enabled=True, mode="safree", preset="custom", intensity=1.0, concepts="naked, blood",
                weights="auto", detector="fast", eos_policy="project", schedule="off")
MINILM = "es-all-minilm-l6-v2.safetensors"


def node_class(comfy):
    return comfy["pack"].NODE_CLASS_MAPPINGS["EmbeddingSanitizerCLIP"]


def run_node(comfy, clip, **changes):
    return node_class(comfy)().patch(clip, unique_id="7", **{**SETTINGS, **changes})[0]


def weights_folder() -> Path:
    import folder_paths

    folder = Path(folder_paths.get_folder_paths("embedding_sanitizer")[0])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.parametrize("changes, message", [
    (dict(concepts=" , \n"), "concept list is empty"),
    (dict(mode="es", weights="none"), "needs calibrated weights"),
    (dict(mode="es", weights=MINILM), "was not calibrated for the text encoder stream"),
    (dict(concepts=", ".join(f"concept {i}" for i in range(1001))), "at most 1000"),
])
def test_bad_settings_raise_in_the_sanitizer_node(comfy, sd1_clip, changes, message):
    with pytest.raises(ValueError, match=message):
        run_node(comfy, sd1_clip, **changes)


def test_the_node_builds_the_concept_subspace_with_progress(comfy, sd1_clip):
    """A new list of 70 concepts is encoded in the node (two batches, the progress bar moves to the end);
    the encode that follows finds it in the cache."""
    from comfy import utils as comfy_utils
    from embedding_sanitizer.concepts import DEFAULT_CACHE

    concepts = tuple(f"test concept number {i}" for i in range(70))
    calls = []
    comfy_utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    try:
        patched = run_node(comfy, sd1_clip, concepts=", ".join(concepts))
    finally:
        comfy_utils.set_progress_bar_global_hook(None)
    assert calls and calls[-1] == (70, 70) and len(calls) >= 2, calls
    built = len(DEFAULT_CACHE._entries)
    comfy["nodes"].CLIPTextEncode().encode(patched, "a test concept number 3 on a beach")
    assert len(DEFAULT_CACHE._entries) == built, "the encode built the subspace again"


def test_errors_are_reported_on_the_sanitizer_node_by_the_server(server, tiny_checkpoint):
    for changes, message in ((dict(concepts=" , "), "concept list is empty"),
                             (dict(mode="es", weights="none"), "needs calibrated weights")):
        graph = tiny_graph(tiny_checkpoint.name)
        graph["2"]["inputs"].update(changes)
        result = server.run(graph)
        assert result["status"]["status_str"] == "error", json.dumps(result["status"])[:2000]
        errors = [m[1] for m in result["status"]["messages"] if m[0] == "execution_error"]
        assert errors and errors[0]["node_id"] == "2" and errors[0]["node_type"] == "EmbeddingSanitizerCLIP", errors
        assert message in errors[0]["exception_message"]


def test_weights_dropdown_offers_clip_files_with_labels(comfy, sd1_clip, caplog):
    """Labels name what a file was made for; the MiniLM demo file is not offered to a CLIP node but named, with
    its reason, in the report; a corrupted file is logged at WARNING with its name and the reason."""
    from embedding_sanitizer.es_model import ESConfig, EmbeddingSanitizerNet
    from embedding_sanitizer.weights_io import save_es

    weights = comfy["pack"].nodes.weights
    folder = weights_folder()
    broken = folder / "es-corrupted-test.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    out = comfy["nodes"].CLIPTextEncode().encode(run_node(comfy, sd1_clip), "a cat")[0]
    encoder = comfy["pack"].nodes.registry.lookup(out[0][0])["record"].streams[0].encoder
    torch.manual_seed(0)
    net = EmbeddingSanitizerNet(ESConfig(width=encoder.width, hidden=16, layers=1, heads=2))
    good = save_es(folder / "es-label-test.safetensors", net, encoder_name=encoder.name,
                   encoder_fingerprint=encoder.fingerprint, layout=encoder.layout.to_dict(), concepts=["nudity"])
    try:
        with caplog.at_level(logging.WARNING, logger="embedding_sanitizer"):
            choices = weights.weight_choices()
        assert choices[:3] == ["auto", "auto-calibrate", "none"]
        assert "sd1-clip-l 768: es-label-test.safetensors" in choices
        assert not any(MINILM in c for c in choices) and not any(broken.name in c for c in choices)
        warned = [r for r in caplog.records if r.levelno == logging.WARNING and broken.name in r.getMessage()]
        assert warned and "unreadable" in warned[0].getMessage(), [r.getMessage() for r in caplog.records]
        assert node_class(comfy).VALIDATE_INPUTS("sd1-clip-l 768: es-label-test.safetensors") is True
        assert node_class(comfy).VALIDATE_INPUTS("es-label-test.safetensors") is True  # an older workflow
        assert "not calibrated for a CLIP" in node_class(comfy).VALIDATE_INPUTS(MINILM)
        assert "unreadable" in node_class(comfy).VALIDATE_INPUTS(broken.name)
        patched = run_node(comfy, sd1_clip, mode="es", weights="sd1-clip-l 768: es-label-test.safetensors")
        entry = comfy["pack"].nodes.registry.lookup(
            comfy["nodes"].CLIPTextEncode().encode(patched, "a naked woman")[0][0][0])["entry"]
        assert entry["streams"]["clip_l"]["es_weights"] == good.name
        notes = " | ".join(entry["notes"])
        assert f"weights {MINILM} not for {encoder.name}: made for minilm width 384" in notes, notes
        assert f"weights {broken.name} skipped: unreadable" in notes, notes
    finally:
        good.unlink()
        broken.unlink()


@pytest.mark.parametrize("kind, last_layer", [("sd1", None), ("sd1", -2), ("sdxl", None), ("sd3", None)])
def test_short_concept_chunks_match_whole_chunks(comfy, kind, last_layer):
    """Concepts run through only their own positions (nodes/encoder.py short_forward) give the rows of ComfyUI's
    whole-chunk encode, for every CLIP stream and clip skip; the encoder checks it once and keeps short chunks."""
    from embedding_sanitizer.concepts import concept_means
    from tests.comfyui import host

    clip = host.build_clip(kind, seed=3)
    if last_layer is not None:
        clip = clip.clone()
        clip.clip_layer(last_layer)
    out = comfy["nodes"].CLIPTextEncode().encode(run_node(comfy, clip, concepts="nudity, gore"), "a cat")[0]
    record = comfy["pack"].nodes.registry.lookup(out[0][0])["record"]
    encoder_module = record.streams[0].encoder.__class__.__module__
    checked = __import__(encoder_module, fromlist=["_SHORT_OK"])._SHORT_OK
    clip_streams = [r for r in record.streams if r.stream != "t5xxl"]
    assert clip_streams
    for rec in clip_streams:
        encoder = rec.encoder
        assert checked.get(encoder.cache_key) is True, (rec.stream, encoder.name)
        ids = encoder.tokenize(["a naked person", "blood on the floor of a church"]).ids[:, :9]
        short = encoder.encode_chunks(ids).tokens
        whole = encoder._whole_chunk_rows(ids)
        assert short.shape == whole.shape
        assert float((short - whole).abs().max()) <= 1e-4 * max(float(whole.abs().max()), 1.0), rec.stream
        words, _ = concept_means(encoder, ("nudity", "a bloody wound"))
        assert torch.isfinite(words).all()
