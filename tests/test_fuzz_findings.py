"""One test per crash class and no-op the core fuzzer found (issue: shared-server safety, item 6)."""
import json
import logging
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from embedding_sanitizer import Sanitizer, SanitizerInputError, Settings
from embedding_sanitizer.cli import main
from embedding_sanitizer.encoders.minilm import MiniLMEncoder
from embedding_sanitizer.encoders.select import default_weights_path
from embedding_sanitizer.es_model import ESConfig, EmbeddingSanitizerNet
from embedding_sanitizer.layout import ROLE_BOS
from embedding_sanitizer.sanitize import MAX_ABS_VALUE, json_safe
from embedding_sanitizer.text_normalize import differs, normalize_prompt, scrub_surrogates
from embedding_sanitizer.weights_io import WeightsFileError, load_es, save_es, scan_weight_files

CONCEPTS = "nudity, naked, violence, gore, blood"


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder()


@pytest.fixture(scope="module")
def shipped(minilm):
    path = default_weights_path(minilm)
    model, meta = load_es(path, encoder_name=minilm.name, encoder_fingerprint=minilm.fingerprint, width=minilm.width)
    return path, model, {**meta, "file": path.name}


def good_file(folder, encoder, name="good.safetensors"):
    torch.manual_seed(0)
    model = EmbeddingSanitizerNet(ESConfig(width=encoder.width, hidden=16, layers=1, heads=2))
    return save_es(folder / name, model, encoder_name=encoder.name, encoder_fingerprint=encoder.fingerprint,
                   layout=encoder.layout.to_dict(), concepts=["nudity"])


def rewrite(src, dst, *, config=None, tensors=None):
    with safe_open(str(src), framework="pt") as handle:
        meta = dict(handle.metadata())
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    if config is not None:
        meta["config"] = json.dumps({**json.loads(meta["config"]), **config})
    if tensors is not None:
        state = {k: tensors(v) for k, v in state.items()}
    save_file(state, str(dst), metadata=meta)
    return dst


# -- lone surrogates ------------------------------------------------------------------------------
def test_lone_surrogate_in_prompt_and_concept_reads_as_replacement_character(minilm, hash_encoder):
    batch, out = minilm.encode_texts(["a \ud800 cat"])
    assert batch.ids.shape == (1, 77)
    settings = Settings(concepts="nud\ud800ity, gore")
    assert settings.concepts == "nud\ufffdity, gore"  # documented normalisation, in the settings too
    result = Sanitizer(minilm).sanitize(out.tokens, batch.ids, minilm.layout, settings, texts=["a \ud800 cat"])
    json.dumps(result.report, ensure_ascii=False).encode("utf-8")  # writable as UTF-8
    assert scrub_surrogates("x\udfffy") == "x\ufffdy"


def test_demo_with_a_lone_surrogate_prints_no_traceback(capsys):
    assert main(["demo", "a \ud800 photo", "--no-color"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "row(s) edited" in captured.out


# -- wrong width, huge values, out-of-vocabulary ids ----------------------------------------------
def test_wrong_width_in_safree_names_both_widths(hash_encoder):
    batch = hash_encoder.tokenize(["a cat"])
    with pytest.raises(SanitizerInputError, match=r"width 16.*width 32"):
        Sanitizer(hash_encoder).sanitize(torch.randn(1, 77, 16), batch.ids, hash_encoder.layout, Settings())


@pytest.mark.parametrize("scale", [1e19, 1e30])
def test_huge_values_are_refused_clearly(hash_encoder, scale):
    batch, out = hash_encoder.encode_texts(["a naked woman"])
    with pytest.raises(SanitizerInputError, match="far outside"):
        Sanitizer(hash_encoder).sanitize(out.tokens * scale, batch.ids, hash_encoder.layout, Settings())


def test_large_but_accepted_values_give_finite_scores_and_strict_json(hash_encoder):
    batch, out = hash_encoder.encode_texts(["a naked woman with blood"])
    emb = out.tokens * (MAX_ABS_VALUE / float(out.tokens.abs().max()))
    for mode in ("safree", "es"):
        model = EmbeddingSanitizerNet(ESConfig(width=hash_encoder.width, hidden=16, layers=1, heads=2)).eval()
        result = Sanitizer(hash_encoder, model).sanitize(emb, batch.ids, hash_encoder.layout,
                                                         Settings(mode=mode, concepts=CONCEPTS))
        assert bool(torch.isfinite(result.scores).all()) and float(result.scores.max()) <= 1
        json.dumps(result.report, allow_nan=False)


def test_report_is_strict_json_whatever_the_floats():
    assert json_safe({"a": [float("nan"), 1.5, float("inf")], "b": (float("-inf"),)}) == \
        {"a": [None, 1.5, None], "b": [None]}


def test_out_of_vocabulary_ids_with_loo_fall_back_to_fast_with_a_note(hash_encoder):
    batch, out = hash_encoder.encode_texts(["a naked woman on a beach"])
    ids = batch.ids.clone()
    ids[0, 2] = 10 ** 6
    result = Sanitizer(hash_encoder).sanitize(out.tokens, ids, hash_encoder.layout,
                                              Settings(detector="loo", concepts=CONCEPTS))
    assert any("outside the encoder's vocabulary" in n for n in result.report["notes"])
    assert "projection detector: fast" in result.report["notes"]


# -- weights files --------------------------------------------------------------------------------
def test_crafted_hidden_width_is_refused_in_milliseconds_naming_file_and_field(tmp_path, hash_encoder):
    bad = rewrite(good_file(tmp_path, hash_encoder), tmp_path / "crafted.safetensors", config={"hidden": 2 ** 22})
    started = time.perf_counter()
    with pytest.raises(WeightsFileError, match=r"crafted\.safetensors.*'hidden' = 4194304"):
        load_es(bad)
    assert time.perf_counter() - started < 0.5


def test_all_nan_weights_are_refused_at_load(tmp_path, hash_encoder):
    bad = rewrite(good_file(tmp_path, hash_encoder), tmp_path / "nan.safetensors",
                  tensors=lambda v: torch.full_like(v, float("nan")))
    with pytest.raises(WeightsFileError, match=r"nan\.safetensors.*NaN"):
        load_es(bad)


def test_scan_lists_good_files_and_broken_ones_with_the_reason(tmp_path, hash_encoder, caplog):
    good = good_file(tmp_path, hash_encoder, "b-good.safetensors")
    rewrite(good, tmp_path / "a-nan.safetensors", tensors=lambda v: torch.full_like(v, float("nan")))
    (tmp_path / "c-truncated.safetensors").write_bytes(good.read_bytes()[:300])
    save_file({"lora": torch.zeros(2)}, str(tmp_path / "d-lora.safetensors"))
    with caplog.at_level(logging.WARNING, logger="embedding_sanitizer"):
        scan = scan_weight_files(tmp_path)
    assert scan.good == [good]
    labels = scan.broken_labels()
    assert [label.split(" ")[0] for label in labels] == ["a-nan.safetensors", "c-truncated.safetensors"]
    assert "NaN" in labels[0] and "(unreadable: " in labels[1]
    assert sum("unreadable" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records) == 2


def test_cli_prints_one_line_for_a_bad_weights_file(tmp_path, capsys):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    assert main(["demo", "a cat", "--weights", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "broken.safetensors" in err


@pytest.fixture
def pack_weights(monkeypatch):
    """The pack's ``nodes.weights``, also after the ComfyUI tests put ComfyUI's own ``nodes`` module in place;
    whatever ``nodes`` modules were loaded before are back afterwards."""
    import importlib
    import sys
    from pathlib import Path

    ours = lambda name: name == "nodes" or name.startswith("nodes.")  # noqa: E731
    saved = {name: module for name, module in sys.modules.items() if ours(name)}
    for name in saved:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    try:
        yield importlib.import_module("nodes.weights")
    finally:
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_comfyui_auto_uses_the_good_file_and_names_the_broken_one(tmp_path, hash_encoder, monkeypatch, pack_weights):
    weights = pack_weights

    good = good_file(tmp_path, hash_encoder, "b-good.safetensors")
    rewrite(good, tmp_path / "a-broken.safetensors", config={"hidden": 2 ** 22})
    monkeypatch.setattr(weights, "folders", lambda: [tmp_path])
    model, meta, note = weights.resolve(weights.AUTO, hash_encoder)
    assert model is not None and meta["file"] == "b-good.safetensors"
    assert "a-broken.safetensors (unreadable: config field 'hidden'" in note
    assert "a-broken.safetensors" not in weights.weight_choices()
    with pytest.raises(WeightsFileError, match="a-broken.safetensors is unreadable"):
        weights.resolve("a-broken.safetensors", hash_encoder)


def test_a1111_auto_uses_the_good_file_and_lists_the_broken_one(tmp_path, hash_encoder):
    from a1111.runtime import WeightsResolver

    good = good_file(tmp_path, hash_encoder, "b-good.safetensors")
    (tmp_path / "a-broken.safetensors").write_bytes(good.read_bytes()[:100])
    resolver = WeightsResolver(lambda: [tmp_path])
    assert resolver.names() == ["b-good.safetensors"]
    assert resolver.find("", hash_encoder) == good
    assert resolver.broken_labels()[0].startswith("a-broken.safetensors (unreadable: ")
    with pytest.raises(WeightsFileError, match="a-broken"):
        resolver.find("a-broken.safetensors", hash_encoder)


# -- normalised text -------------------------------------------------------------------------------
@pytest.mark.parametrize("text, plain", [
    ("nud\u0435 \u0440h\u043et\u043e", "nude photo"),  # Cyrillic e, p, o
    ("n\u03c5de", "nude"),  # Greek upsilon
    ("nude\x00photo", "nude photo"),
    ("nude\x1fphoto", "nude photo"),
    ("nu\u200bd\u00ade", "nude"),  # zero-width space, soft hyphen
    ("\uff4e\uff55\uff44\uff45", "nude"),  # full-width
    ("\U0001d427\U0001d42e\U0001d41d\U0001d41e", "nude"),  # mathematical bold
])
def test_normalisation_undoes_common_obfuscations(text, plain):
    assert normalize_prompt(text) == plain and differs(text)


def test_normalisation_leaves_real_words_of_other_scripts_and_plain_text_alone():
    assert normalize_prompt("голая девушка") == "голая девушка"
    assert not differs("a photo of a cat,\nat night")


@pytest.mark.parametrize("mode", ["safree", "es+safree"])
@pytest.mark.parametrize("hidden", ["a nud\u0435 \u0440h\u043et\u043e of a woman", "a naked\x00woman on a beach",
                                    "a n\u200baked woman on a beach"])
def test_obfuscated_prompt_is_edited_like_the_plain_one(minilm, shipped, mode, hidden):
    _, model, meta = shipped
    sanitizer = Sanitizer(minilm, model, meta)
    settings = Settings(mode=mode)
    plain = normalize_prompt(hidden)
    batch, out = minilm.encode_texts([plain])
    plain_result = sanitizer.sanitize(out.tokens, batch.ids, minilm.layout, settings, pieces=batch.pieces)
    assert plain_result.report["prompts"][0]["rows_edited"] > 0
    batch, out = minilm.encode_texts([hidden])
    result = sanitizer.sanitize(out.tokens, batch.ids, minilm.layout, settings, pieces=batch.pieces, texts=[hidden])
    info = result.report["prompts"][0]
    assert info["rows_edited"] > 0 and info["flagged"] > 0
    assert info["normalized"]["text"] == plain
    assert any("normalised" in note for note in result.report["notes"])
    bos = result.roles == ROLE_BOS
    assert torch.equal(result.embeddings[bos], out.tokens[bos])
    assert batch.ids.shape == result.embeddings.shape[:2]  # the host's tokens stay as they are
    json.dumps(result.report, allow_nan=False)


def test_benign_obfuscated_prompt_keeps_its_own_result_bit_for_bit(minilm, shipped):
    _, model, meta = shipped
    sanitizer = Sanitizer(minilm, model, meta)
    text = "a c\u0430t on a ch\u0430ir"
    batch, out = minilm.encode_texts([text])
    settings = Settings(mode="es+safree")
    own = sanitizer.sanitize(out.tokens, batch.ids, minilm.layout, settings)
    checked = sanitizer.sanitize(out.tokens, batch.ids, minilm.layout, settings, texts=[text])
    assert torch.equal(own.embeddings, checked.embeddings) and not checked.changed
    assert checked.report["prompts"][0]["normalized"]["chunks_replaced"] == []


def test_intensity_zero_skips_the_normalised_check(minilm):
    text = "a nud\u0435 woman"
    batch, out = minilm.encode_texts([text])
    result = Sanitizer(minilm).sanitize(out.tokens, batch.ids, minilm.layout, Settings(intensity=0.0), texts=[text])
    assert torch.equal(result.embeddings, out.tokens)
