"""The extension inside the A1111 stand-in: hook, caches, infotext, API, admin lock, SD1/SDXL, img2img, Forge."""
from __future__ import annotations

import json

import pytest
import torch

UNSAFE = "a nude person on a beach"
CONCEPTS = "nude person, nudity"
TITLE_KEY = "embedding sanitizer"


def args_for(enabled=True, mode="safree", preset="max", intensity=1.0, concepts=CONCEPTS, weights="",
             detector="fast", eos_policy="project", schedule="off", sanitize_negative=False):
    return [enabled, mode, preset, intensity, concepts, weights, detector, eos_policy, schedule, sanitize_negative]


def generate(webui, args=None, prompt=UNSAFE, negative="blurry", img2img=False, model=None, cls=None, **kwargs):
    """Run a generation through the script runner with the given script args (None: UI defaults)."""
    processing = webui.processing
    runner = webui.scripts.scripts_img2img if img2img else webui.scripts.scripts_txt2img
    webui.shared.sd_model = model or webui.models.sd1
    cls = cls or (processing.StableDiffusionProcessingImg2Img if img2img else processing.StableDiffusionProcessingTxt2Img)
    p = cls(sd_model=webui.shared.sd_model, prompt=prompt, negative_prompt=negative, **kwargs)
    script = runner.alwayson_scripts[0]
    script_args = [None] * script.args_to
    script_args[script.args_from:script.args_to] = args if args is not None else [c.value for c in runner.inputs[1:]]
    p.scripts, p.script_args = runner, tuple(script_args)
    processed = processing.process_images(p)
    return p, processed


def reset_caches(webui):
    P = webui.processing
    P.StableDiffusionProcessing.cached_c[:] = [None, None]
    P.StableDiffusionProcessing.cached_uc[:] = [None, None]
    P.StableDiffusionProcessingTxt2Img.cached_hr_c[:] = [None, None]
    P.StableDiffusionProcessingTxt2Img.cached_hr_uc[:] = [None, None]


@pytest.fixture(autouse=True)
def clean(webui):
    reset_caches(webui)
    opts = webui.shared.opts
    saved = dict(opts.data)
    yield
    opts.data.clear()
    opts.data.update(saved)
    webui.shared.cmd_opts.embedding_sanitizer_policy = None
    webui.glue.HOOK.deactivate()


def host_only(webui, prompt=UNSAFE, negative="blurry", model=None, **kwargs):
    """Conditioning with the hook removed: what the webui computes without the extension."""
    glue = webui.glue
    glue.HOOK.uninstall()
    try:
        reset_caches(webui)
        p, _ = generate(webui, args_for(enabled=False), prompt, negative, model=model, **kwargs)
    finally:
        glue.HOOK.install()
        reset_caches(webui)
    return p.denoiser_conds


def same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return torch.equal(a, b)


def test_script_loaded_and_hook_installed(webui):
    runner = webui.scripts.scripts_txt2img
    assert [s.title() for s in runner.alwayson_scripts] == ["Embedding Sanitizer"]
    assert runner.alwayson_scripts[0].args_to - runner.alwayson_scripts[0].args_from == 10
    forward = webui.sd_hijack_clip.TextConditionalModel.forward
    assert hasattr(forward, "_embedding_sanitizer_original")
    assert "modules.sd_hijack_clip.TextConditionalModel.forward" in webui.glue.HOOK.install()


def test_enable_changes_conditioning_and_disable_restores_it_bit_for_bit(webui):
    baseline = host_only(webui)
    p_on, _ = generate(webui, args_for())
    p_off, _ = generate(webui, args_for(enabled=False))
    (c_base, uc_base), (c_on, uc_on), (c_off, uc_off) = baseline[0], p_on.denoiser_conds[0], p_off.denoiser_conds[0]
    assert c_on.shape == c_base.shape == (1, 77, 768)
    assert not torch.equal(c_on, c_base)
    assert torch.equal(c_on[:, 0], c_base[:, 0]), "BOS row must never change"
    assert torch.equal(uc_on, uc_base), "the negative prompt is left alone by default"
    assert torch.equal(c_off, c_base) and torch.equal(uc_off, uc_base)
    # mode off and intensity 0 are the identity too
    for args in (args_for(mode="off"), args_for(preset="custom", intensity=0.0)):
        reset_caches(webui)
        p, _ = generate(webui, args)
        assert torch.equal(p.denoiser_conds[0][0], c_base)


def test_negative_prompt_sanitized_only_when_asked(webui):
    baseline = host_only(webui, negative=UNSAFE)
    p, _ = generate(webui, args_for(sanitize_negative=True), negative=UNSAFE)
    assert not torch.equal(p.denoiser_conds[0][1], baseline[0][1])


def test_conditioning_cache_never_serves_across_extension_states(webui):
    P = webui.processing.StableDiffusionProcessing
    p_off, _ = generate(webui, args_for(enabled=False))
    shared_entry = P.cached_c[1]
    assert shared_entry is not None, "the disabled run fills the shared class-level cache"
    p_on, _ = generate(webui, args_for())
    assert p_on.cached_c is not P.cached_c and p_on.cached_uc is not P.cached_uc
    assert p_on.cached_hr_c is not webui.processing.StableDiffusionProcessingTxt2Img.cached_hr_c
    assert not torch.equal(p_on.denoiser_conds[0][0], p_off.denoiser_conds[0][0]), "a cached original was served"
    assert P.cached_c[1] is shared_entry, "sanitized conds must not land in the shared cache"
    p_again, _ = generate(webui, args_for(enabled=False))
    assert torch.equal(p_again.denoiser_conds[0][0], p_off.denoiser_conds[0][0])
    # a changed setting between two enabled runs is honoured (no stale sanitized cache)
    p_low, _ = generate(webui, args_for(preset="custom", intensity=0.1))
    p_high, _ = generate(webui, args_for(preset="custom", intensity=2.0))
    assert not torch.equal(p_low.denoiser_conds[0][0], p_high.denoiser_conds[0][0])


def test_hires_pass_is_sanitized_with_its_own_cache(webui):
    baseline = host_only(webui, enable_hr=True, hr_prompt="a nude person in a forest")
    p, _ = generate(webui, args_for(), enable_hr=True, hr_prompt="a nude person in a forest")
    assert len(p.denoiser_conds) == 2
    assert not torch.equal(p.denoiser_conds[1][0], baseline[1][0])
    assert torch.equal(p.denoiser_conds[1][1], baseline[1][1])


def test_infotext_round_trip(webui):
    settings = args_for(preset="custom", intensity=1.35, concepts="nude person, gore, Van Gogh", detector="loo",
                        eos_policy="keep", sanitize_negative=True)
    p, processed = generate(webui, settings)
    text = processed.infotexts[0]
    params = webui.infotext_utils.parse_generation_parameters(text)
    assert params["ES intensity"] == "1.35" and params["ES concepts"] == "nude person, gore, Van Gogh"
    assert "ES flagged" in params and params["Prompt"] == UNSAFE
    runner = webui.scripts.scripts_txt2img
    script = runner.alwayson_scripts[0]
    pasted = dict(webui.infotext_utils.paste_values(params, script.infotext_fields))
    components = runner.inputs[script.args_from:script.args_to]
    values = [pasted.get(c, c.value) for c in components]
    assert values == settings
    p2, processed2 = generate(webui, values)
    assert webui.infotext_utils.parse_generation_parameters(processed2.infotexts[0]) == params
    assert torch.equal(p2.denoiser_conds[0][0], p.denoiser_conds[0][0])


def test_api_arguments_match_the_ui(webui):
    baseline = host_only(webui)
    positional = webui.api.text2imgapi({"prompt": UNSAFE, "negative_prompt": "blurry",
                                        "alwayson_scripts": {TITLE_KEY: {"args": args_for()}}})
    ui_run, _ = generate(webui, args_for())
    assert torch.equal(positional["p"].denoiser_conds[0][0], ui_run.denoiser_conds[0][0])
    assert not torch.equal(positional["p"].denoiser_conds[0][0], baseline[0][0])
    infotext = json.loads(positional["info"])["infotexts"][0]
    assert "ES preset: max" in infotext
    by_name = webui.api.text2imgapi({"prompt": UNSAFE, "negative_prompt": "blurry", "alwayson_scripts": {
        "Embedding Sanitizer": {"args": [{"preset": "max", "concepts": CONCEPTS}]}}})
    assert torch.equal(by_name["p"].denoiser_conds[0][0], ui_run.denoiser_conds[0][0])
    off = webui.api.text2imgapi({"prompt": UNSAFE, "negative_prompt": "blurry",
                                 "alwayson_scripts": {TITLE_KEY: {"args": [False]}}})
    assert torch.equal(off["p"].denoiser_conds[0][0], baseline[0][0])
    assert "ES enabled" not in json.loads(off["info"])["infotexts"][0]
    with pytest.raises(Exception, match="intensity"):
        webui.api.text2imgapi({"prompt": UNSAFE, "alwayson_scripts": {
            TITLE_KEY: {"args": [True, "safree", "custom", 9.0]}}})
    with pytest.raises(Exception, match="unknown"):
        webui.api.text2imgapi({"prompt": UNSAFE, "alwayson_scripts": {TITLE_KEY: {"args": [{"strength": 1}]}}})


def test_api_without_script_args_uses_the_settings_page_defaults(webui):
    baseline = host_only(webui)
    opts = webui.shared.opts
    opts.set("embedding_sanitizer_enabled", False)
    off = webui.api.text2imgapi({"prompt": UNSAFE, "negative_prompt": "blurry"})
    assert torch.equal(off["p"].denoiser_conds[0][0], baseline[0][0])
    opts.set("embedding_sanitizer_enabled", True)
    opts.set("embedding_sanitizer_preset", "max")
    opts.set("embedding_sanitizer_concepts", CONCEPTS)
    on = webui.api.text2imgapi({"prompt": UNSAFE, "negative_prompt": "blurry"})
    assert not torch.equal(on["p"].denoiser_conds[0][0], baseline[0][0])


def test_admin_lock_holds_against_ui_and_api(webui, tmp_path):
    baseline = host_only(webui)
    opts = webui.shared.opts
    opts.set("embedding_sanitizer_admin_lock", True)
    opts.set("embedding_sanitizer_min_intensity", 1.5)
    opts.set("embedding_sanitizer_required_concepts", UNSAFE)  # a concept the tiny random model surely flags
    # the UI sends "off"
    p_ui, processed = generate(webui, args_for(enabled=False, preset="custom", intensity=0.2))
    assert not torch.equal(p_ui.denoiser_conds[0][0], baseline[0][0])
    assert "ES policy" in processed.infotexts[0] and "ES intensity: 1.5" in processed.infotexts[0]
    # the API sends "off", mode off, intensity 0, and tries to unlock through override_settings
    for args in ([False], [True, "off"], [True, "safree", "custom", 0.0]):
        out = webui.api.text2imgapi({"prompt": UNSAFE, "negative_prompt": "blurry",
                                     "override_settings": {"embedding_sanitizer_admin_lock": False,
                                                           "embedding_sanitizer_min_intensity": 0.0},
                                     "alwayson_scripts": {TITLE_KEY: {"args": args}}})
        assert not torch.equal(out["p"].denoiser_conds[0][0], baseline[0][0]), args
        assert "ES policy" in json.loads(out["info"])["infotexts"][0]
    assert opts.embedding_sanitizer_admin_lock is True
    # the policy file holds even when the Settings page is unlocked
    opts.set("embedding_sanitizer_admin_lock", False)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"locked": True, "min_intensity": 1.0, "required_concepts": [UNSAFE]}))
    webui.shared.cmd_opts.embedding_sanitizer_policy = str(policy)
    out = webui.api.text2imgapi({"prompt": UNSAFE, "negative_prompt": "blurry",
                                 "alwayson_scripts": {TITLE_KEY: {"args": [False]}}})
    assert not torch.equal(out["p"].denoiser_conds[0][0], baseline[0][0])
    # a broken policy file fails closed: the generation is refused with a message naming the file
    policy.write_text("{not json")
    with pytest.raises(ValueError, match="policy.json"):
        webui.api.text2imgapi({"prompt": UNSAFE, "alwayson_scripts": {TITLE_KEY: {"args": [False]}}})


def test_sd1_long_prompts_and_batches_keep_shapes(webui):
    long_prompt = ", ".join(["a nude person on a beach"] * 16)
    baseline = host_only(webui, prompt=[long_prompt, UNSAFE], batch_size=2)
    p, _ = generate(webui, args_for(), prompt=[long_prompt, UNSAFE], batch_size=2)
    c, c_base = p.denoiser_conds[0][0], baseline[0][0]
    assert c.shape == c_base.shape and c.shape[1] % 77 == 0 and c.shape[1] >= 154 and c.shape[2] == 768
    assert not torch.equal(c, c_base)
    assert torch.equal(c[0, ::77], c_base[0, ::77]), "no chunk's BOS row changes"
    assert torch.equal(c[1, 0], c_base[1, 0])


def test_sdxl_dict_conditioning(webui):
    model = webui.models.sdxl
    long_prompt = ", ".join(["a nude person on a beach"] * 16)
    baseline = host_only(webui, prompt=long_prompt, model=model)
    p, _ = generate(webui, args_for(), prompt=long_prompt, model=model)
    p_off, _ = generate(webui, args_for(enabled=False), prompt=long_prompt, model=model)
    (c, uc), (c_base, uc_base) = p.denoiser_conds[0], baseline[0]
    assert set(c) == {"crossattn", "vector"}
    assert c["crossattn"].shape == c_base["crossattn"].shape == (1, 154, 768 + 1280)
    assert c["vector"].shape == (1, 1280 + 3 * 512)
    assert not torch.equal(c["crossattn"][..., :768], c_base["crossattn"][..., :768]), "CLIP-L part"
    assert not torch.equal(c["crossattn"][..., 768:], c_base["crossattn"][..., 768:]), "CLIP-G part"
    assert torch.equal(c["vector"], c_base["vector"]), "the pooled vector is passed through (documented)"
    assert same(uc, uc_base)
    assert same(p_off.denoiser_conds[0][0], c_base)
    report = webui.glue.LAST_REPORTS["txt2img"]
    assert report["prompts"][0]["words"][0]["text"] == "a"


def test_img2img(webui):
    baseline = host_only(webui, cls=webui.processing.StableDiffusionProcessingImg2Img)
    p, processed = generate(webui, args_for(), img2img=True)
    assert not torch.equal(p.denoiser_conds[0][0], baseline[0][0])
    assert "ES enabled: True" in processed.infotexts[0]
    assert webui.glue.LAST_REPORTS["img2img"]["prompts"][0]["prompt"] == UNSAFE
    out = webui.api.img2imgapi({"prompt": UNSAFE, "negative_prompt": "blurry",
                                "alwayson_scripts": {TITLE_KEY: {"args": [False]}}})
    assert torch.equal(out["p"].denoiser_conds[0][0], baseline[0][0])


def test_forge_engine_and_three_element_caches(webui):
    from backend.text_processing.classic_engine import ClassicTextProcessingEngine

    assert hasattr(ClassicTextProcessingEngine.__call__, "_embedding_sanitizer_original")
    P = webui.processing

    class ForgeTxt2Img(P.StableDiffusionProcessingTxt2Img):
        pass

    ForgeTxt2Img.cached_c = [None, None, None]
    ForgeTxt2Img.cached_uc = [None, None, None]
    model = webui.models.forge
    baseline = host_only(webui, model=model, cls=ForgeTxt2Img)
    ForgeTxt2Img.cached_c[:] = ForgeTxt2Img.cached_uc[:] = [None, None, None]
    p, _ = generate(webui, args_for(), model=model, cls=ForgeTxt2Img)
    assert len(p.cached_c) == 3 and p.cached_c is not ForgeTxt2Img.cached_c
    assert not torch.equal(p.denoiser_conds[0][0], baseline[0][0])
    p_off, _ = generate(webui, args_for(enabled=False), model=model, cls=ForgeTxt2Img)
    assert torch.equal(p_off.denoiser_conds[0][0], baseline[0][0])
    assert webui.glue.text_models(model) == [model.text_processing_engine]


def test_clear_errors(webui):
    with pytest.raises(Exception, match="weights"):
        generate(webui, args_for(mode="es"))
    webui.shared.opts.set("use_old_emphasis_implementation", True)
    with pytest.raises(RuntimeError, match="old emphasis"):
        generate(webui, args_for())
    webui.shared.opts.set("use_old_emphasis_implementation", False)
    with pytest.raises(Exception, match="concept"):
        generate(webui, args_for(concepts=" , "))
