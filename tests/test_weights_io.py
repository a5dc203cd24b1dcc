import pytest
import torch
from safetensors.torch import save_file

from embedding_sanitizer.encoders.base import fingerprints_match, tensor_fingerprint
from embedding_sanitizer.es_model import ESConfig, EmbeddingSanitizerNet
from embedding_sanitizer.weights_io import WeightsMismatch, list_weight_files, load_es, read_metadata, save_es


def make(width=16):
    torch.manual_seed(0)
    return EmbeddingSanitizerNet(ESConfig(width=width, hidden=16, layers=1, heads=2))


def test_round_trip_in_real_safetensors(tmp_path):
    model = make()
    path = save_es(tmp_path / "w.safetensors", model, encoder_name="enc", encoder_fingerprint="fp1:2x2:1,1",
                   layout={"name": "x"}, concepts=["nudity"], metrics={"auroc": 0.99})
    loaded, meta = load_es(path, encoder_name="enc", encoder_fingerprint="fp1:2x2:1,1", width=16)
    assert meta["concepts"] == ["nudity"] and meta["metrics"]["auroc"] == 0.99
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert list_weight_files(tmp_path) == [path]


def test_other_encoder_is_refused_with_both_names(tmp_path):
    path = save_es(tmp_path / "w.safetensors", make(), encoder_name="clip-l", encoder_fingerprint="a",
                   layout={}, concepts=[])
    with pytest.raises(WeightsMismatch, match="clip-l.*width 16.*open-clip-h.*width 1024"):
        load_es(path, encoder_name="open-clip-h", width=1024)


def test_foreign_safetensors_is_not_listed_and_not_loaded(tmp_path):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "lora.safetensors"))
    assert list_weight_files(tmp_path) == []
    with pytest.raises(WeightsMismatch, match="not an Embedding Sanitizer"):
        read_metadata(tmp_path / "lora.safetensors")


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="train"):
        load_es(tmp_path / "nope.safetensors")


def test_fingerprint_survives_dtype_but_not_another_encoder():
    torch.manual_seed(0)
    weight = torch.randn(1000, 64) * 0.02
    fp32 = tensor_fingerprint(weight)
    assert fingerprints_match(fp32, tensor_fingerprint(weight.half()))
    assert fingerprints_match(fp32, tensor_fingerprint(weight.bfloat16()))
    assert not fingerprints_match(fp32, tensor_fingerprint(torch.randn(1000, 64) * 0.02))
    assert not fingerprints_match(fp32, tensor_fingerprint(weight[:, :32]))
