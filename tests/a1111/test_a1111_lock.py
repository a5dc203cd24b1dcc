"""Issue 13 in the A1111 / Forge stand-in: every way the real hosts let an unsanitized image through.

The stand-in swallows script exceptions and restores ``override_settings`` as the webui does, so each
test below failed before the fix (the request got an image from unsanitized conditioning, or a later
request did). Now each either refuses with an error that reaches the caller (the text model's forward
raises, which the webui does not swallow) or generates sanitized with a note.
"""
from __future__ import annotations

import json

import pytest
import torch

UNSAFE = "a nude person on a beach"
TITLE = "embedding sanitizer"
LOCK = "embedding_sanitizer_admin_lock"
FLOOR = "embedding_sanitizer_min_intensity"
#: invalid alwayson_scripts args from the issue, and the setting each error names
INVALID = [([{"enabld": False}], "enabld"), ([{"intensity": 9}], "intensity"), ([{"enabled": "no"}], "enabled"),
           ([False, "nope"], "mode"), ([{"concepts": 5}], "concepts")]
INVALID_IDS = ["enabld", "intensity9", "enabled-no", "positional-nope", "concepts5"]
MODELS = ["sd1", "forge"]  # A1111's TextConditionalModel.forward and Forge's ClassicTextProcessingEngine.__call__


def reset_caches(webui):
    P = webui.processing
    for cls, names in ((P.StableDiffusionProcessing, ("cached_c", "cached_uc")),
                       (P.StableDiffusionProcessingTxt2Img, ("cached_hr_c", "cached_hr_uc"))):
        for name in names:
            getattr(cls, name)[:] = [None, None]


@pytest.fixture(autouse=True)
def clean(webui):
    reset_caches(webui)
    opts = webui.shared.opts
    saved = dict(opts.data)
    webui.stub_errors = __import__("modules.errors", fromlist=["reported"])
    webui.stub_errors.reported.clear()
    yield
    opts.data.clear()
    opts.data.update(saved)
    webui.glue.SEAL.seal(opts)
    webui.shared.cmd_opts.embedding_sanitizer_policy = None
    webui.glue.HOOK.deactivate()
    webui.shared.sd_model = webui.models.sd1


def refused():
    from a1111.hook import RefusedError

    return RefusedError


def api(webui, args=None, model="sd1", **request):
    """``POST /sdapi/v1/txt2img`` through the stand-in; returns (conditioning of step 0, infotext)."""
    webui.shared.sd_model = getattr(webui.models, model)
    body = {"prompt": UNSAFE, "negative_prompt": "blurry", **request}
    if args is not None:
        body["alwayson_scripts"] = {TITLE: {"args": args}}
    out = webui.api.text2imgapi(body)
    return out["p"].denoiser_conds[0][0], json.loads(out["info"])["infotexts"][0]


def baseline(webui, model="sd1"):
    """The host's own conditioning (hook removed)."""
    glue = webui.glue
    glue.HOOK.uninstall()
    try:
        reset_caches(webui)
        cond, _ = api(webui, [False], model=model)
    finally:
        glue.HOOK.install()
        reset_caches(webui)
    return cond


def settings_page(webui, **values):
    from modules import ui_settings

    return ui_settings.apply({f"embedding_sanitizer_{k}": v for k, v in values.items()})


def page_lock(webui):
    # UNSAFE as the required concept: the tiny random text model surely flags it
    settings_page(webui, admin_lock=True, required_concepts=UNSAFE)


def policy_file(webui, tmp_path, **policy):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    webui.shared.cmd_opts.embedding_sanitizer_policy = str(path)
    return path


# ---------------------------------------------------------------- the stand-in is faithful
def test_stand_in_swallows_script_exceptions_and_leaks_unsaved_overrides(webui):
    """The two host behaviours behind the bypasses, reproduced by the stand-in itself."""
    from modules import processing, scripts

    class Broken(scripts.Script):
        def title(self):
            return "broken"

        def process(self, p, *args):
            raise ValueError("boom")

    runner = scripts.ScriptRunner()
    script = Broken()
    script.args_from = script.args_to = 1
    runner.alwayson_scripts.append(script)
    p = processing.StableDiffusionProcessingTxt2Img(sd_model=webui.models.sd1, prompt="a cat",
                                                    override_settings={"CLIP_stop_at_last_layers": 2})
    p.scripts, p.script_args = runner, (0,)
    webui.shared.sd_model = webui.models.sd1
    processed = processing.process_images(p)
    assert processed.images, "the webui generates anyway"
    assert any("Error running process" in m and isinstance(e, ValueError) for m, e in webui.stub_errors.reported)
    opts = webui.shared.opts
    assert opts.data["CLIP_stop_at_last_layers"] == 2, "an option never saved keeps the override"
    opts.data.pop("CLIP_stop_at_last_layers")


# ------------------------------------------------------------------ invalid arguments
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("args,field", INVALID, ids=INVALID_IDS)
def test_invalid_arguments_without_a_lock_refuse_the_generation(webui, model, args, field):
    with pytest.raises(refused(), match=field):
        api(webui, args, model=model)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("args,field", INVALID, ids=INVALID_IDS)
def test_invalid_arguments_under_the_page_lock_use_the_policy_defaults(webui, model, args, field):
    base = baseline(webui, model)
    page_lock(webui)
    cond, info = api(webui, args, model=model)
    assert not torch.equal(cond, base), "sanitized"
    assert "ES policy" in info and field in info.split("ES policy", 1)[1]
    assert "ES enabled: True" in info
    assert "ignored (policy lock)" not in info or field == "enabld", "the UI defaults after a dict are no news"


@pytest.mark.parametrize("args,field", INVALID, ids=INVALID_IDS)
def test_invalid_arguments_under_the_policy_file_use_the_policy_defaults(webui, tmp_path, args, field):
    base = baseline(webui)
    policy_file(webui, tmp_path, locked=True, required_concepts=[UNSAFE], defaults={"preset": "max"})
    cond, info = api(webui, args)
    assert not torch.equal(cond, base)
    assert "ES policy" in info


def test_on_error_open_without_a_lock_passes_through_with_a_note(webui, tmp_path):
    base = baseline(webui)
    policy_file(webui, tmp_path, on_error="open")
    cond, info = api(webui, [{"enabld": False}])
    assert torch.equal(cond, base) and "ES error" in info and "not sanitized" in info
    # on_error open does not open a lock
    policy_file(webui, tmp_path, on_error="open", locked=True, required_concepts=[UNSAFE])
    cond, info = api(webui, [{"enabld": False}])
    assert not torch.equal(cond, base) and "ES error" not in info


def test_an_error_inside_the_sanitizer_reaches_the_caller(webui, tmp_path):
    with pytest.raises(refused(), match="weights"):
        api(webui, [{"mode": "es"}])
    policy_file(webui, tmp_path, on_error="open")
    base = baseline(webui)
    cond, _ = api(webui, [{"mode": "es"}])
    assert torch.equal(cond, base)
    assert any("on_error open" in n for n in webui.glue.LAST_REPORTS["txt2img"]["policy_notes"])


# ------------------------------------------------------------------- override_settings
@pytest.mark.parametrize("locked", [False, True], ids=["unlocked", "page-lock"])
def test_old_emphasis_override_is_refused_and_never_left_behind(webui, locked):
    base = baseline(webui)
    if locked:
        page_lock(webui)
    opts = webui.shared.opts
    assert "use_old_emphasis_implementation" not in opts.data, "a fresh install: the option was never saved"
    with pytest.raises(refused(), match="old emphasis"):
        api(webui, [{"preset": "max", "concepts": UNSAFE}],
            override_settings={"use_old_emphasis_implementation": True})
    assert opts.use_old_emphasis_implementation is False, "the request's value was put back"
    cond, _ = api(webui, [{"preset": "max", "concepts": UNSAFE}])  # a later request by anyone
    assert not torch.equal(cond, base)


def test_override_settings_cannot_unlock_or_disable(webui):
    base = baseline(webui)
    page_lock(webui)
    cond, info = api(webui, [False], override_settings={LOCK: False, FLOOR: 0.0, "embedding_sanitizer_enabled": False})
    assert not torch.equal(cond, base) and "ES policy" in info
    assert webui.shared.opts.data[LOCK] is True


# --------------------------------------------------------------------- the policy file
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("problem", ["broken", "renamed", "bad-key"])
def test_broken_or_renamed_policy_file_refuses(webui, tmp_path, model, problem):
    path = policy_file(webui, tmp_path, locked=True)
    if problem == "broken":
        path.write_text("{not json")
    elif problem == "renamed":
        path.rename(tmp_path / "policy.json.bak")
    else:
        path.write_text(json.dumps({"locked": True, "min_intensty": 1.0}))
    for args in ([False], None, [{"enabled": True}]):
        with pytest.raises(refused(), match="policy.json"):
            api(webui, args, model=model)


def test_processing_without_scripts_is_sanitized_under_a_lock(webui, tmp_path):
    """A generation whose process() never runs (an extension's own processing object, scripts=None)."""
    base = baseline(webui)
    P = webui.processing
    policy_file(webui, tmp_path, locked=True, required_concepts=[UNSAFE])
    p = P.StableDiffusionProcessingTxt2Img(sd_model=webui.models.sd1, prompt=UNSAFE, negative_prompt="blurry")
    P.process_images(p)
    assert not torch.equal(p.denoiser_conds[0][0], base)
    (tmp_path / "policy.json").write_text("{")
    reset_caches(webui)  # without process() nothing shadows the shared cache: the sanitized cond is in it
    p = P.StableDiffusionProcessingTxt2Img(sd_model=webui.models.sd1, prompt=UNSAFE, negative_prompt="blurry")
    with pytest.raises(refused(), match="policy.json"):
        P.process_images(p)
    webui.shared.cmd_opts.embedding_sanitizer_policy = None
    reset_caches(webui)
    p = P.StableDiffusionProcessingTxt2Img(sd_model=webui.models.sd1, prompt=UNSAFE, negative_prompt="blurry")
    P.process_images(p)
    assert torch.equal(p.denoiser_conds[0][0], base), "no lock: the host's own behaviour"


# ------------------------------------------------------------ the lock through the API
@pytest.mark.parametrize("forge", [False, True], ids=["a1111", "forge"])
def test_options_api_cannot_unlock(webui, forge):
    base = baseline(webui)
    page_lock(webui)
    webui.api.set_config({LOCK: False, FLOOR: 0.0}, forge=forge)
    opts = webui.shared.opts
    assert opts.data[LOCK] is True and opts.data[FLOOR] == 1.0
    saved = json.loads(open(webui.shared.config_filename, encoding="utf8").read())
    assert saved[LOCK] is True, "config.json keeps the lock (a restart reads it again)"
    cond, info = api(webui, [{"enabled": False}])
    assert not torch.equal(cond, base) and "ES policy" in info
    if forge:  # Forge runs the onchange guard, which refuses and says so
        assert any("Settings page" in m for m, _ in webui.stub_errors.reported)


def test_a_write_around_the_guard_is_ignored_at_generation(webui):
    base = baseline(webui)
    page_lock(webui)
    webui.shared.opts.data[LOCK] = False  # e.g. another extension writing opts.data directly
    cond, info = api(webui, [False])
    assert not torch.equal(cond, base)
    assert "changed outside the Settings page" in info


def test_the_settings_page_can_unlock(webui):
    base = baseline(webui)
    page_lock(webui)
    settings_page(webui, admin_lock=False)
    cond, info = api(webui, [False])
    assert torch.equal(cond, base) and "ES policy" not in info


# ------------------------------------------------- settings that weaken the protection
@pytest.mark.parametrize("args,field,expected", [
    ([{"schedule": "svf"}], "schedule", "off"),
    ([{"eos_policy": "keep"}], "eos_policy", "project"),
    ([{"preset": "low"}], "threshold", 0.5),
    ([{"mode": "off"}], "mode", "safree"),
], ids=["svf", "eos-keep", "preset-low", "mode-off"])
def test_page_lock_overrides_weakening_settings(webui, args, field, expected):
    page_lock(webui)
    _, info = api(webui, args, steps=6)
    settings = webui.glue.LAST_REPORTS["txt2img"]["settings"]
    assert settings[field] == expected, settings
    assert "ES policy" in info


def test_page_lock_alone_keeps_the_default_concepts(webui):
    from embedding_sanitizer.settings import DEFAULT_CONCEPTS

    settings_page(webui, admin_lock=True)  # no required concepts given
    api(webui, [{"concepts": "kittens"}])
    settings = webui.glue.LAST_REPORTS["txt2img"]["settings"]
    assert settings["concepts"] == "kittens"
    assert tuple(settings["required_concepts"]) == DEFAULT_CONCEPTS, "projected as their own list"


def test_svf_under_the_lock_sanitizes_every_step(webui):
    page_lock(webui)
    webui.shared.sd_model = webui.models.sd1
    out = webui.api.text2imgapi({"prompt": UNSAFE, "negative_prompt": "blurry", "steps": 8,
                                 "alwayson_scripts": {TITLE: {"args": [{"schedule": "svf"}]}}})
    steps = out["p"].denoiser_steps[0]
    assert all(torch.equal(cond, steps[0][0]) for cond, _ in steps)


# --------------------------------------------------------------------------- audit log
@pytest.mark.parametrize("model", MODELS)
def test_audit_log_has_one_line_per_encode(webui, tmp_path, model):
    from embedding_sanitizer.audit import AuditLog, prompt_sha256
    from embedding_sanitizer.policy import AuditConfig

    policy_file(webui, tmp_path, locked=True, required_concepts=[UNSAFE], audit={"path": "audit.jsonl"})
    _, info = api(webui, [{"preset": "max"}], model=model)
    AuditLog(AuditConfig(str(tmp_path / "audit.jsonl"))).flush()
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert len(lines) == 1, "the negative prompt is not sanitized by default, so one encode"
    line = lines[0]
    assert line["host"] == ("forge" if model == "forge" else "a1111")
    assert f"ES audit id: {line['request_id']}" in info
    assert line["prompts"][0]["sha256"] == prompt_sha256(UNSAFE) and "text" not in line["prompts"][0]
    assert line["prompts"][0]["flagged"] and line["settings"]["required_concepts"] == [UNSAFE]


def test_audit_log_that_cannot_be_written_refuses_when_closed(webui, tmp_path):
    from embedding_sanitizer.audit import AuditLog
    from embedding_sanitizer.policy import AuditConfig

    base = baseline(webui)
    target = tmp_path / "not-a-file"
    target.mkdir()  # writing a "file" there fails, like a full disk
    policy_file(webui, tmp_path, locked=True, required_concepts=[UNSAFE], audit={"path": str(target)})
    try:
        api(webui, [{"preset": "max"}])  # queued; the writer thread fails
    except refused():
        pass
    AuditLog(AuditConfig(str(target))).flush()
    with pytest.raises(refused(), match="audit"):
        api(webui, [{"preset": "max"}])
    # on_error open: a failing audit log does not stop generating (the lock still holds)
    policy_file(webui, tmp_path, locked=True, on_error="open", required_concepts=[UNSAFE], audit={"path": str(target)})
    cond, _ = api(webui, [{"preset": "max"}])
    assert not torch.equal(cond, base)
