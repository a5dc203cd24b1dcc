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
    webui.glue.SEAL.seal(opts)
    webui.shared.cmd_opts.embedding_sanitizer_policy = None
    webui.glue.HOOK.deactivate()


def settings_page(webui, **values):
    """Change Embedding Sanitizer options the way an administrator does: on the Settings page."""
    from modules import ui_settings

    return ui_settings.apply({f"embedding_sanitizer_{k}": v for k, v in values.items()})


def host_generation(webui, prompt=UNSAFE, negative="blurry", model=None, **kwargs):
    """A generation with the hook removed: what the webui computes without the extension."""
    glue = webui.glue
    glue.HOOK.uninstall()
    try:
        reset_caches(webui)
        p, _ = generate(webui, args_for(enabled=False), prompt, negative, model=model, **kwargs)
    finally:
        glue.HOOK.install()
        reset_caches(webui)
    return p


def host_only(webui, prompt=UNSAFE, negative="blurry", model=None, **kwargs):
    """Conditioning with the hook removed (``denoiser_conds``)."""
    return host_generation(webui, prompt, negative, model, **kwargs).denoiser_conds


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


def test_json_info_carries_the_flagged_words_as_plain_values_hires_prompts_included(webui):
    """The API's JSON ``info`` cannot evaluate a callable (the webui writes null): the values are plain."""
    base, hires = "a cat on a beach", "a nude woman, nudity"
    out = webui.api.text2imgapi({"prompt": base, "negative_prompt": "blurry", "enable_hr": True, "hr_prompt": hires,
                                 "alwayson_scripts": {TITLE_KEY: {"args": args_for()}}})
    info = json.loads(out["info"])
    params = webui.infotext_utils.parse_generation_parameters(info["infotexts"][0])
    flagged = info["extra_generation_params"]["ES flagged"]
    assert isinstance(flagged, str) and flagged == params["ES flagged"]
    assert info["extra_generation_params"]["Hires prompt"] is None, "the host's own callable: null in its JSON"
    report = webui.glue.LAST_REPORTS["txt2img"]["prompts"]
    hires_words = {w["text"] for item in report if item["prompt"] == hires for w in item["words"] if w["flagged"]}
    assert hires_words and all(word in flagged for word in hires_words), (hires_words, flagged)
    # a batch whose images differ: one plain value per image, each equal to that image's infotext
    p, processed = generate(webui, args_for(), prompt=[UNSAFE, "a cat"], batch_size=2)
    values = json.loads(processed.js())["extra_generation_params"]["ES flagged"]
    texts = [webui.infotext_utils.parse_generation_parameters(t)["ES flagged"] for t in processed.infotexts]
    assert len(set(texts)) == 2 and values == texts
    # nothing flagged: no key in the JSON, as in the infotext
    _, quiet = generate(webui, args_for(preset="custom", intensity=1.0, concepts="zeppelin"), prompt="a")
    assert "ES flagged" not in quiet.infotexts[0]
    assert "ES flagged" not in json.loads(quiet.js())["extra_generation_params"]


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
    # UNSAFE: a concept the tiny random model surely flags
    settings_page(webui, admin_lock=True, min_intensity=1.5, required_concepts=UNSAFE)
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
    settings_page(webui, admin_lock=False)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"locked": True, "min_intensity": 1.0, "required_concepts": [UNSAFE]}))
    webui.shared.cmd_opts.embedding_sanitizer_policy = str(policy)
    out = webui.api.text2imgapi({"prompt": UNSAFE, "negative_prompt": "blurry",
                                 "alwayson_scripts": {TITLE_KEY: {"args": [False]}}})
    assert not torch.equal(out["p"].denoiser_conds[0][0], baseline[0][0])
    # a broken policy file fails closed: the generation is refused with a message naming the file
    policy.write_text("{not json")
    with pytest.raises(RuntimeError, match="policy.json"):
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
    # vector = G pooled (1280) + size/crop embeddings: only the pooled slice changes, towards less concept
    assert torch.equal(c["vector"][:, 1280:], c_base["vector"][:, 1280:]), "size and crop embeddings"
    assert not torch.equal(c["vector"][:, :1280], c_base["vector"][:, :1280]), "CLIP-G pooled part"
    from a1111.encoder import adapter_for
    from a1111.pooled import host_pooled
    from embedding_sanitizer.pooled import DEFAULT_POOLED_CACHE

    encoder = adapter_for(model.conditioner.embedders[1])
    assert torch.allclose(host_pooled(encoder, [long_prompt]), c_base["vector"][:, :1280].float(), atol=1e-5), \
        "the pooled concept span is built from the host's own pooled outputs"
    sub = DEFAULT_POOLED_CACHE.get(f"{encoder.cache_key}|pooled", None, ("nude person", "nudity"))
    change = (c["vector"][:, :1280] - c_base["vector"][:, :1280]).detach().float()
    outside = change - (change @ sub.basis) @ sub.basis.T
    assert float(outside.norm()) < 1e-3 * float(change.norm()), "the edit stays inside the concept span"
    assert same(uc, uc_base)
    assert same(p_off.denoiser_conds[0][0], c_base)
    report = webui.glue.LAST_REPORTS["txt2img"]
    assert report["prompts"][0]["words"][0]["text"] == "a"
    assert any(n.startswith("webui-sdxl-g pooled vector: sanitized with weight") for n in report["policy_notes"])
    # intensity 0 and a prompt with no edited word keep the whole vector bit for bit
    p_zero, _ = generate(webui, args_for(preset="custom", intensity=0.0), prompt=long_prompt, model=model)
    assert same(p_zero.denoiser_conds[0][0], c_base)
    safe = "a wooden table in a quiet room"
    safe_base = host_only(webui, prompt=safe, model=model)
    p_safe, _ = generate(webui, args_for(preset="medium"), prompt=safe, model=model)
    assert not any(w["weight"] > 0 for w in webui.glue.LAST_REPORTS["txt2img"]["prompts"][0]["words"])
    assert torch.equal(p_safe.denoiser_conds[0][0]["vector"], safe_base[0][0]["vector"])


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


# ---------------------------------------------------------------------------------------------
# schedule "svf": the sanitized conditioning for the first steps, the original one afterwards
SVF_STEPS = 20


def host_steps(webui, prompt=UNSAFE, negative="blurry", model=None, **kwargs):
    """Every step's conditioning of every pass without the extension (``denoiser_steps``)."""
    return host_generation(webui, prompt, negative, model, **kwargs).denoiser_steps


def cut_off(webui, text, steps=SVF_STEPS, tab="txt2img"):
    """Steps that use the sanitized embedding for the positive (sub)prompt ``text``, from the run's report."""
    from embedding_sanitizer.projection import steps_for_fraction

    items = [i for i in webui.glue.LAST_REPORTS[tab]["prompts"] if not i["negative"] and i["prompt"].strip() == text]
    assert items, f"{text!r} not in the report"
    return steps_for_fraction(items[0]["schedule_end"], steps)


@pytest.fixture
def varied_fractions(monkeypatch):
    """The core's svf fraction replaced by a cycle of larger values (the tiny random model always gives 1/50),
    so cut-offs lie well inside the 20 steps and differ between prompts; the tests read them from the report."""
    import itertools

    from embedding_sanitizer import sanitize

    values = itertools.cycle([0.3, 0.55, 0.15, 0.42, 0.7])
    monkeypatch.setattr(sanitize, "svf_fraction", lambda beta: torch.tensor(
        [next(values) for _ in range(beta.shape[0])], dtype=beta.dtype, device=beta.device))


def row(cond, r):
    return {k: v[r] for k, v in cond.items()} if isinstance(cond, dict) else cond[r]


def check_schedule(sanitized_steps, base_steps, svf_steps, cut_offs):
    """Per step and row: the sanitized run's row before the row's cut-off, the host's own row from it on."""
    assert len(svf_steps) == len(base_steps) == len(sanitized_steps)
    for step, (cond, uncond) in enumerate(svf_steps):
        assert same(uncond, base_steps[step][1]), f"step {step}: the negative prompt is left alone"
        for r, cut in enumerate(cut_offs(step)):
            expected = sanitized_steps[step][0] if step < cut else base_steps[step][0]
            assert same(row(cond, r), row(expected, r)), f"step {step}, row {r} (cut-off {cut})"


def test_svf_schedule_uses_the_original_conditioning_after_the_cut_off(webui):
    base = host_steps(webui, steps=SVF_STEPS)[0]
    p_off, _ = generate(webui, args_for(), steps=SVF_STEPS)  # schedule off: every step sanitized
    sanitized = p_off.denoiser_steps[0]
    assert len(sanitized) == SVF_STEPS
    for cond, _ in sanitized:
        assert torch.equal(cond, sanitized[0][0]) and not torch.equal(cond, base[0][0])
    p, processed = generate(webui, args_for(schedule="svf"), steps=SVF_STEPS)
    cut = cut_off(webui, UNSAFE)
    assert 1 <= cut < SVF_STEPS
    check_schedule(sanitized, base, p.denoiser_steps[0], lambda step: [cut])
    assert not torch.equal(p.denoiser_steps[0][cut - 1][0], p.denoiser_steps[0][cut][0])
    text = processed.infotexts[0]
    assert "ES schedule: svf" in text and "ES note" not in text and "not applied" not in text
    assert not webui.glue.LAST_REPORTS["txt2img"]["policy_notes"]
    # registered once, whatever the number of generations; a no-op outside an svf run
    callbacks = webui.script_callbacks.callback_map["callbacks_cfg_denoiser"]
    assert [c.callback for c in callbacks].count(webui.glue.SVF.on_cfg_denoiser) == 1
    cond = sanitized[0][0]
    params = webui.script_callbacks.CFGDenoiserParams(None, None, None, SVF_STEPS - 1, SVF_STEPS, cond, base[0][1])
    webui.script_callbacks.cfg_denoiser_callback(params)
    assert params.text_cond is cond
    assert "get_learned_conditioning" not in vars(webui.models.sd1), "the model is unwrapped after the run"


def test_svf_schedule_per_prompt_in_a_batch_with_and_and_hires(webui, varied_fractions):
    prompts = [UNSAFE, "a nude person AND a beach"]
    kwargs = dict(batch_size=2, steps=SVF_STEPS, enable_hr=True, hr_prompt="a nude person in a forest")
    base = host_steps(webui, prompt=prompts, **kwargs)
    p_off, _ = generate(webui, args_for(), prompt=prompts, **kwargs)
    p, _ = generate(webui, args_for(schedule="svf"), prompt=prompts, **kwargs)
    cuts = [cut_off(webui, t) for t in (UNSAFE, "a nude person", "a beach")]  # rows: prompt 0, prompt 1's two parts
    assert p.denoiser_steps[0][0][0].shape[0] == 3
    assert len(set(cuts)) > 1 and min(cuts) > 1, cuts
    check_schedule(p_off.denoiser_steps[0], base[0], p.denoiser_steps[0], lambda step: cuts)
    hr_cut = cut_off(webui, "a nude person in a forest")
    assert 1 < hr_cut < SVF_STEPS
    check_schedule(p_off.denoiser_steps[1], base[1], p.denoiser_steps[1], lambda step: [hr_cut, hr_cut])


def test_svf_schedule_follows_prompt_editing(webui, varied_fractions):
    prompt = "[a nude person:a naked person:2] on a beach"  # steps 0-2 the first text, then the second
    texts = ("a nude person on a beach", "a naked person on a beach")
    base = host_steps(webui, prompt=prompt, steps=SVF_STEPS)[0]
    p_off, _ = generate(webui, args_for(), prompt=prompt, steps=SVF_STEPS)
    p, _ = generate(webui, args_for(schedule="svf"), prompt=prompt, steps=SVF_STEPS)
    cuts = {t: cut_off(webui, t) for t in texts if any(i["prompt"] == t for i in
                                                        webui.glue.LAST_REPORTS["txt2img"]["prompts"])}
    assert cuts[texts[0]] > 1 and cuts.get(texts[1], 0) > 3, cuts  # both texts seen sanitized and original
    check_schedule(p_off.denoiser_steps[0], base, p.denoiser_steps[0],
                   lambda step: [cuts.get(texts[0] if step <= 2 else texts[1], 0)])
    assert not torch.equal(base[0][0], base[3][0]), "the prompt edit takes effect at step 3"


def test_svf_schedule_sdxl_dict_conditioning(webui, varied_fractions):
    model = webui.models.sdxl
    base = host_steps(webui, model=model, steps=SVF_STEPS)[0]
    p_off, _ = generate(webui, args_for(), model=model, steps=SVF_STEPS)
    p, _ = generate(webui, args_for(schedule="svf"), model=model, steps=SVF_STEPS)
    cut = cut_off(webui, UNSAFE)
    assert 1 < cut < SVF_STEPS
    check_schedule(p_off.denoiser_steps[0], base, p.denoiser_steps[0], lambda step: [cut])
    swapped = p.denoiser_steps[0][cut][0]
    assert type(swapped) is type(base[cut][0]) and set(swapped) == {"crossattn", "vector"}
    assert swapped["crossattn"].shape == (1, 77, 768 + 1280)
    assert not same(p.denoiser_steps[0][0][0], base[0][0])
    assert "get_learned_conditioning" not in vars(model)


def test_svf_schedule_forge_engine(webui, varied_fractions):
    model = webui.models.forge
    base = host_steps(webui, model=model, steps=8)[0]
    p_off, _ = generate(webui, args_for(), model=model, steps=8)
    p, _ = generate(webui, args_for(schedule="svf"), model=model, steps=8)
    cut = cut_off(webui, UNSAFE, steps=8)
    assert 1 < cut < 8
    check_schedule(p_off.denoiser_steps[0], base, p.denoiser_steps[0], lambda step: [cut])


def test_svf_schedule_intensity_zero_leaves_every_step_untouched(webui):
    base = host_steps(webui, steps=SVF_STEPS, enable_hr=True)
    p, _ = generate(webui, args_for(preset="custom", intensity=0.0, schedule="svf"), steps=SVF_STEPS, enable_hr=True)
    for base_pass, svf_pass in zip(base, p.denoiser_steps, strict=True):
        for (c, uc), (c_base, uc_base) in zip(svf_pass, base_pass, strict=True):
            assert torch.equal(c, c_base) and torch.equal(uc, uc_base)


def test_svf_schedule_refuses_rows_of_unequal_length_with_a_note(webui, caplog, varied_fractions):
    long_prompt = ", ".join(["a nude person on a beach"] * 16)
    prompts = [long_prompt, UNSAFE]  # 2 chunks and 1 chunk: the webui pads the second row
    base = host_steps(webui, prompt=prompts, batch_size=2, steps=SVF_STEPS)[0]
    p_off, _ = generate(webui, args_for(), prompt=prompts, batch_size=2, steps=SVF_STEPS)
    with caplog.at_level("WARNING", logger="embedding_sanitizer.a1111"):
        p, _ = generate(webui, args_for(schedule="svf"), prompt=prompts, batch_size=2, steps=SVF_STEPS)
    cut = cut_off(webui, long_prompt)
    assert 1 < cut < SVF_STEPS
    check_schedule(p_off.denoiser_steps[0], base, p.denoiser_steps[0], lambda step: [cut, SVF_STEPS])
    notes = webui.glue.LAST_REPORTS["txt2img"]["policy_notes"]
    assert any("different lengths" in n for n in notes)
    assert "different lengths" in caplog.text
