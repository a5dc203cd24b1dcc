"""Which weights files a webui text model may use: the chunk layout must match too (real SD1.5 and SDXL share
CLIP-L's token embedding, but SDXL reads another layer), and the bundled encoder's demo file is not offered."""
from __future__ import annotations

from types import SimpleNamespace

from embedding_sanitizer.es_model import ESConfig, EmbeddingSanitizerNet
from embedding_sanitizer.layout import SD1_CLIP_L, SDXL_CLIP_L
from embedding_sanitizer.weights_io import save_es


def _file(folder, name, layout, fingerprint="f" * 16, width=768):
    model = EmbeddingSanitizerNet(ESConfig(width=width, hidden=16, layers=1, heads=2))
    return save_es(folder / name, model, encoder_name="webui-x", encoder_fingerprint=fingerprint,
                   layout=layout, concepts=["nudity"])


def test_layout_must_match_and_the_minilm_demo_is_not_offered(webui, tmp_path):
    from a1111.runtime import WeightsResolver

    sd1 = _file(tmp_path, "es-a-sd1.safetensors", SD1_CLIP_L.to_dict())
    sdxl = _file(tmp_path, "es-b-sdxl-l.safetensors", SDXL_CLIP_L.to_dict())
    custom = _file(tmp_path, "es-c-sd1-custom.safetensors", dict(SD1_CLIP_L.to_dict(), name="sd1-clip-l-custom"))
    demo = _file(tmp_path, "es-d-demo.safetensors", dict(SD1_CLIP_L.to_dict(), name="minilm"), width=384)
    resolver = WeightsResolver(lambda: [tmp_path])
    as_sdxl_l = SimpleNamespace(width=768, fingerprint="f" * 16, layout=SDXL_CLIP_L, name="webui-sdxl-l")
    as_sd1 = SimpleNamespace(width=768, fingerprint="f" * 16, layout=SD1_CLIP_L, name="webui-sd1")
    assert resolver.find("", as_sdxl_l) == sdxl  # not the sd1 file, though it sorts first and has the same CLIP-L
    assert resolver.find("", as_sd1) == sd1
    assert resolver.find(custom.name, as_sd1) == custom  # a '-custom' layout of the same family matches
    assert demo.name not in resolver.names() and sd1.name in resolver.names()
