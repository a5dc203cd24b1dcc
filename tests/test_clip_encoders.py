"""CLIP BPE tokenizer parity with the host tokenizer, chunking, and checkpoint loading round trips."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from embedding_sanitizer.encoders.clip_bpe import (
    BOS_ID, EOS_ID, VOCAB_SIZE, CLIPBPETokenizer, VocabularyNotFound, find_open_clip_vocab,
)
from embedding_sanitizer.encoders.clip_text import CLIPTextEncoder, list_text_encoders
from embedding_sanitizer.layout import (
    ROLE_BOS, ROLE_EOS, ROLE_PAD, ROLE_WORD, SD1_CLIP_L, SD2_CLIP_H, SDXL_CLIP_G, SDXL_CLIP_L, token_roles,
)
from tests.support.comfyui_tree import sd1_tokenizer_dir

STRINGS = [
    "", " ", "a photo of a cat", "A Photo Of A CAT", "(nude:1.2)", "((masterpiece)), best quality, [blurry]",
    "a woman, (naked:1.3), (breasts:0.8)", "embedding:my_ti, 1girl", "don't you're we'll I'm they've he'd it's",
    "DON'T IT'S", "rock'n'roll", "12345 3.14159 1e-5 2024-01-01", "100% 50/50 #hashtag @user $9.99",
    "C:\\path\\to\\file.png", "https://example.com/a?b=c&d=e", "&amp; &lt;tag&gt; &quot;", "<b>bold</b>",
    "naïve café résumé Zürich", "Ünïcödé ﬁ ligature", "e\u0301 combining accent", "Привет мир", "Ελληνικά",
    "日本語のテキスト", "中文提示词 混合 english", "한국어", "مرحبا بالعالم", "emoji 🎉🔥👩‍👩‍👧 🇫🇷",
    "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis", "x" * 120,
    "tabs\tand\nnewlines\r\n  and   spaces  ", "non\u00a0breaking\u2003em space", "\x00\x01 control chars",
    "...!!!???---___", "a-b_c.d,e;f:g", "<|startoftext|> hi <|endoftext|>", "<|ENDOFTEXT|> x<|endoftext|>y", "ΣΑΣ ΟΔΟΣ", "ALL CAPS SHOUTING!!!",
    "mixedCaseWord camelCase snake_case", "greg rutkowski, trending on artstation, 8k, octane render",
    "a" + " very" * 40 + " long prompt",
]


@pytest.fixture(scope="module")
def vocab_dir():
    # Fails (does not skip) when the ComfyUI tree cannot be downloaded.
    folder = sd1_tokenizer_dir()
    assert (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    return folder


@pytest.fixture(scope="module")
def host_tokenizer(vocab_dir):
    return CLIPTokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"))


@pytest.fixture(scope="module")
def bpe_folder(vocab_dir):
    return CLIPBPETokenizer(vocab_dir)


@pytest.fixture(scope="module")
def bpe_gz():
    assert find_open_clip_vocab() is not None, "install open-clip-torch (pip install --no-deps open-clip-torch)"
    return CLIPBPETokenizer()


# --------------------------------------------------------------------------- tokenizer
def test_vocabularies_identical(bpe_folder, bpe_gz):
    assert bpe_gz.vocab_size == bpe_folder.vocab_size == VOCAB_SIZE
    assert bpe_gz.encoder == bpe_folder.encoder
    assert bpe_gz.ranks == bpe_folder.ranks
    assert bpe_gz.encoder["<|startoftext|>"] == BOS_ID and bpe_gz.encoder["<|endoftext|>"] == EOS_ID


@pytest.mark.parametrize("text", STRINGS)
def test_ids_match_host_tokenizer(text, host_tokenizer, bpe_folder, bpe_gz):
    expected = host_tokenizer(text)["input_ids"]
    assert expected[0] == BOS_ID and expected[-1] == EOS_ID
    assert [BOS_ID, *bpe_gz.encode_words(text), EOS_ID] == expected
    assert bpe_folder.encode_words(text) == expected[1:-1]
    assert bpe_gz.encode(text) == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cn")), max_size=40))
def test_ids_match_host_tokenizer_random(host_tokenizer, bpe_gz, text):
    assert bpe_gz.encode(text) == host_tokenizer(text)["input_ids"]


def test_decode_piece_and_decode(bpe_gz):
    ids = bpe_gz.encode_words("A photo of a Café, (nude:1.2) 🎉")
    pieces = [bpe_gz.decode_piece(i) for i in ids]
    assert pieces[:4] == ["a", "photo", "of", "a"]
    assert "café" in pieces and "nude" in pieces and "🎉" in pieces
    assert not any(piece.endswith("</w>") for piece in pieces)
    assert bpe_gz.decode_piece(BOS_ID) == "<|startoftext|>"
    assert bpe_gz.decode(ids) == "a photo of a café , ( nude : 1 . 2 ) 🎉"
    with pytest.raises(ValueError, match="outside the CLIP vocabulary"):
        bpe_gz.decode_piece(VOCAB_SIZE)


def test_bpe_cache_is_used(bpe_gz):
    first = bpe_gz.bpe("zyzzyvaxx")
    assert bpe_gz._cache["zyzzyvaxx"] == first
    assert bpe_gz.bpe("zyzzyvaxx") is first


def test_openai_cleanup_unescapes_html():
    tok = CLIPBPETokenizer(clean="openai")
    assert tok.encode_words("fish &amp; chips") == tok.encode_words("fish & chips")
    assert tok.encode_words("  A  Cat ") == CLIPBPETokenizer().encode_words("a cat")
    assert tok.encode_words("<|ENDOFTEXT|>") == [EOS_ID]  # lowercased first, as in the original CLIP


def test_missing_vocabulary_is_a_clear_error(tmp_path):
    with pytest.raises(VocabularyNotFound, match="pip install --no-deps open-clip-torch"):
        CLIPBPETokenizer(tmp_path / "nowhere")
    with pytest.raises(VocabularyNotFound, match="vocab.json"):
        CLIPBPETokenizer(tmp_path)  # an existing folder without the files


# --------------------------------------------------------------------------- chunking
@pytest.fixture(scope="module")
def tiny():
    return CLIPTextEncoder.tiny_random()


def test_long_prompt_chunks(tiny):
    text = " ".join(["cat"] * 300)  # "cat" is one token
    assert len(tiny.tokenizer.encode_words(text)) == 300
    batch = tiny.tokenize([text])
    assert batch.ids.shape == (1, 4 * 77)
    ids = batch.ids[0].reshape(4, 77)
    assert (ids[:, 0] == BOS_ID).all() and (ids[:, 76] == EOS_ID).all()
    roles = token_roles(batch.ids, SD1_CLIP_L).reshape(4, 77)
    assert (roles[:, 0] == ROLE_BOS).all() and (roles[:, 1:76] == ROLE_WORD).all() and (roles[:, 76] == ROLE_EOS).all()
    assert batch.pieces[0][0] == "<bos>" and batch.pieces[0][1] == "cat" and batch.pieces[0][76] == "<eos>"
    assert batch.pieces[0][77] == "<bos>"

    five = tiny.tokenize([text + " dog"]).ids  # 301 tokens: a fifth chunk with one word
    assert five.shape == (1, 5 * 77)
    last = five[0, 4 * 77:]
    assert last[:3].tolist() == [BOS_ID, tiny.tokenizer.encode_words("dog")[0], EOS_ID]
    assert (last[3:] == SD1_CLIP_L.pad_id).all()


def test_batch_is_padded_with_empty_chunks_and_pieces(tiny):
    batch = tiny.tokenize(["a photo of a cat", " ".join(["dog"] * 80), ""])
    assert batch.ids.shape == (3, 154)
    empty = [BOS_ID, EOS_ID] + [SD1_CLIP_L.pad_id] * 75
    assert batch.ids[0, 77:].tolist() == empty and batch.ids[2, 77:].tolist() == empty
    assert batch.pieces[0][:8] == ["<bos>", "a", "photo", "of", "a", "cat", "<eos>", "<pad>"]
    assert batch.pieces[2][:3] == ["<bos>", "<eos>", "<pad>"]
    assert batch.texts == ["a photo of a cat", " ".join(["dog"] * 80), ""]
    roles = token_roles(batch.ids, SD1_CLIP_L)
    assert int((roles == ROLE_WORD).sum()) == 5 + 80


def test_open_clip_layout_pads_with_zero():
    enc = CLIPTextEncoder.tiny_random(layout=SD2_CLIP_H, layer="penultimate")
    batch = enc.tokenize(["a cat"])
    assert batch.ids[0, :4].tolist() == [BOS_ID, 320, 2368, EOS_ID]
    assert (batch.ids[0, 4:] == 0).all()
    assert batch.pieces[0][4] == "<pad>"  # id 0 is "!" but it is padding here


def test_encode_shapes_pooled_and_errors(tiny):
    batch = tiny.tokenize(["a photo of a cat", " ".join(["dog"] * 80)])
    out = tiny.encode(batch.ids)
    assert out.tokens.shape == (2, 154, 32) and out.pooled.shape == (2, 32)
    assert out.tokens.dtype == torch.float32 and not out.tokens.requires_grad
    assert torch.equal(out.pooled[0], out.tokens[0, 6])  # first EOS of the first chunk
    chunks = tiny.encode_chunks(batch.ids[:, :20])  # shorter than 77: no EOS for the long prompt
    assert chunks.tokens.shape == (2, 20, 32)
    assert torch.equal(chunks.pooled[1], chunks.tokens[1, 19])
    bad = batch.ids.clone()
    bad[0, 3] = SD1_CLIP_L.ti_id
    with pytest.raises(ValueError, match="textual-inversion"):
        tiny.encode(bad)
    with pytest.raises(ValueError, match="at most 77"):
        tiny.encode_chunks(torch.zeros(1, 78, dtype=torch.long))


def test_output_keeps_model_dtype():
    enc = CLIPTextEncoder.tiny_random(layer="penultimate")
    enc.model.to(torch.bfloat16)
    out = enc.encode(enc.tokenize(["a cat"]).ids)
    assert out.tokens.dtype == torch.bfloat16 and out.pooled.dtype == torch.bfloat16


# --------------------------------------------------------------------------- checkpoints
WIDTH, LAYERS, HEADS = 128, 3, 2


def _source_model(hidden_act: str, seed: int) -> CLIPTextModel:
    config = CLIPTextConfig(vocab_size=VOCAB_SIZE, hidden_size=WIDTH, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, intermediate_size=2 * WIDTH, max_position_embeddings=77,
                            hidden_act=hidden_act, eos_token_id=EOS_ID, bos_token_id=BOS_ID)
    torch.manual_seed(seed)
    model = CLIPTextModel(config).eval()
    with torch.no_grad():  # make the LayerNorms non-trivial
        for name, param in model.named_parameters():
            if "layer_norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def _hf_state(model: CLIPTextModel) -> dict[str, torch.Tensor]:
    """Transformers 4.x key names (``text_model.*``), as every SD checkpoint stores them."""
    out = {}
    for key, value in model.state_dict().items():
        if "position_ids" in key:
            continue
        key = key[len("text_model."):] if key.startswith("text_model.") else key
        out["text_model." + key] = value.clone()
    return out


def _openclip_state(model: CLIPTextModel, projection: torch.Tensor) -> dict[str, torch.Tensor]:
    """Convert to the OpenCLIP text-tower layout (fused in_proj, c_fc/c_proj, ln_final, text_projection)."""
    hf = {k[len("text_model."):]: v for k, v in _hf_state(model).items()}
    out = {
        "token_embedding.weight": hf["embeddings.token_embedding.weight"],
        "positional_embedding": hf["embeddings.position_embedding.weight"],
        "ln_final.weight": hf["final_layer_norm.weight"],
        "ln_final.bias": hf["final_layer_norm.bias"],
        "text_projection": projection,
        "logit_scale": torch.tensor(4.6),
    }
    for i in range(LAYERS):
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(
                [hf[f"{src}self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")])
            for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("attn.out_proj", "self_attn.out_proj"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                out[f"{dst}{a}.{kind}"] = hf[f"{src}{b}.{kind}"]
    return out


def _prefixed(state: dict[str, torch.Tensor], prefix: str, strip: str = "") -> dict[str, torch.Tensor]:
    return {prefix + (k[len(strip):] if strip and k.startswith(strip) else k): v.contiguous() for k, v in state.items()}


UNET = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
        "first_stage_model.decoder.conv_in.weight": torch.zeros(4, 4, 3, 3)}


def _expected(model: CLIPTextModel, ids: torch.Tensor, layer: str, final_norm: bool) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        if layer == "last":
            return out.last_hidden_state
        hidden = out.hidden_states[-2]
        return model.final_layer_norm(hidden) if final_norm else hidden


def _check(encoder: CLIPTextEncoder, source: CLIPTextModel, layout, layer, final_norm):
    assert encoder.layout == layout and encoder.layer == layer and encoder.final_norm == final_norm
    assert encoder.width == WIDTH
    batch = encoder.tokenize(["a photo of a cat", "(nude:1.2), " + "very " * 90 + "detailed"])
    assert batch.ids.shape == (2, 154)
    got = encoder.encode_chunks(batch.ids.reshape(-1, 77))
    want = _expected(source, batch.ids.reshape(-1, 77), layer, final_norm)
    torch.testing.assert_close(got.tokens, want, rtol=0, atol=1e-6)
    eos = (batch.ids.reshape(-1, 77) == EOS_ID).int().argmax(1)
    torch.testing.assert_close(got.pooled, want[torch.arange(4), eos], rtol=0, atol=1e-6)
    assert encoder.fingerprint == CLIPTextEncoder(source, layout).fingerprint


@pytest.fixture(scope="module")
def sources():
    return {"l": _source_model("quick_gelu", 1), "g": _source_model("gelu", 2), "h": _source_model("gelu", 3)}


def test_sd1_original_layout(tmp_path, sources):
    path = tmp_path / "sd15.safetensors"
    save_file({**UNET, **_prefixed(_hf_state(sources["l"]), "cond_stage_model.transformer.")}, str(path))
    enc = CLIPTextEncoder.from_checkpoint(path, heads=HEADS)
    assert enc.family == "sd1:clip_l" and enc.model.config.hidden_act == "quick_gelu"
    _check(enc, sources["l"], SD1_CLIP_L, "last", True)


def test_sd1_older_layout_without_text_model(tmp_path, sources):
    path = tmp_path / "sd14.safetensors"
    state = _prefixed(_hf_state(sources["l"]), "cond_stage_model.transformer.", strip="text_model.")
    save_file({**UNET, **state}, str(path))
    _check(CLIPTextEncoder.from_checkpoint(path, "clip_l", heads=HEADS), sources["l"], SD1_CLIP_L, "last", True)


def test_hf_layout_text_encoder_file(tmp_path, sources):
    path = tmp_path / "clip_l.safetensors"
    save_file(_hf_state(sources["l"]), str(path))
    enc = CLIPTextEncoder.from_checkpoint(path, heads=HEADS)
    assert enc.family == "hf:clip_l"
    _check(enc, sources["l"], SD1_CLIP_L, "last", True)


def test_sdxl_layout_both_encoders(tmp_path, sources):
    projection = torch.randn(WIDTH, 64)
    path = tmp_path / "sdxl.safetensors"
    state = {**UNET, **_prefixed(_hf_state(sources["l"]), "conditioner.embedders.0.transformer."),
             **_prefixed(_openclip_state(sources["g"], projection), "conditioner.embedders.1.model.")}
    save_file(state, str(path))
    assert len(list_text_encoders(path)) == 2
    enc_l = CLIPTextEncoder.from_checkpoint(path, "clip_l", heads=HEADS)
    assert enc_l.model.config.hidden_act == "quick_gelu"
    _check(enc_l, sources["l"], SDXL_CLIP_L, "penultimate", False)
    enc_g = CLIPTextEncoder.from_checkpoint(path, "clip_g", heads=HEADS)
    assert enc_g.model.config.hidden_act == "gelu" and enc_g.family == "sdxl:clip_g"
    _check(enc_g, sources["g"], SDXL_CLIP_G, "penultimate", False)
    assert torch.equal(enc_g.text_projection, projection.t())
    assert enc_g.tokenize(["a cat"]).ids[0, 4] == 0  # G pads with 0
    assert CLIPTextEncoder.from_checkpoint(path, heads=HEADS).layout == SDXL_CLIP_L  # auto: CLIP-L


def test_sd2_openclip_layout(tmp_path, sources):
    path = tmp_path / "sd21.safetensors"
    state = {**UNET, **_prefixed(_openclip_state(sources["h"], torch.randn(WIDTH, 64)), "cond_stage_model.model.")}
    save_file(state, str(path))
    enc = CLIPTextEncoder.from_checkpoint(path, heads=HEADS)
    assert enc.family == "sd2:clip_h"
    _check(enc, sources["h"], SD2_CLIP_H, "penultimate", True)


def test_checkpoint_dtype_and_overrides(tmp_path, sources):
    path = tmp_path / "sd15_fp16.safetensors"
    state = {k: v.half() for k, v in _prefixed(_hf_state(sources["l"]), "cond_stage_model.transformer.").items()}
    save_file(state, str(path))
    enc = CLIPTextEncoder.from_checkpoint(path, dtype=None, heads=HEADS, layer="penultimate")
    assert enc.dtype == torch.float16 and enc.layer == "penultimate" and enc.final_norm
    default = CLIPTextEncoder.from_checkpoint(path, dtype=None, heads=HEADS)
    assert default.fingerprint == enc.fingerprint and default.cache_key != enc.cache_key
    assert CLIPTextEncoder.from_checkpoint(path, heads=HEADS).dtype == torch.float32


def test_pretrained_folder(tmp_path, sources):
    sources["l"].save_pretrained(tmp_path / "te")
    enc = CLIPTextEncoder.from_pretrained_folder(tmp_path / "te")
    _check(enc, sources["l"], SD1_CLIP_L, "last", True)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CLIPTextEncoder.from_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CLIPTextEncoder.from_pretrained_folder(tmp_path / "missing")


def test_checkpoint_without_text_encoder_is_a_clear_error(tmp_path, sources):
    path = tmp_path / "unet_only.safetensors"
    save_file(UNET, str(path))
    with pytest.raises(ValueError, match="no recognised CLIP text encoder") as info:
        CLIPTextEncoder.from_checkpoint(path)
    message = str(info.value)
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in message
    assert "conditioner.embedders.1.model.token_embedding.weight" in message
    sd1 = tmp_path / "sd1.safetensors"
    save_file(_prefixed(_hf_state(sources["l"]), "cond_stage_model.transformer."), str(sd1))
    with pytest.raises(ValueError, match="no clip_g text encoder; found clip_l"):
        CLIPTextEncoder.from_checkpoint(sd1, "clip_g")
