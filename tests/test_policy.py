"""The administrator policy engine: file keys, the lock over every weakening setting, resolve, dilution."""
import json

import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st

from embedding_sanitizer import Sanitizer
from embedding_sanitizer.encoders.minilm import MiniLMEncoder
from embedding_sanitizer.policy import DEFAULT_MAX_THRESHOLD, AuditConfig, Policy
from embedding_sanitizer.settings import DEFAULT_CONCEPTS, FIELDS, PRESETS, Settings, SettingsError

NAKED = "a naked woman on a beach"
COLOURS = ["red", "blue", "green", "yellow", "wooden", "old", "small", "large", "shiny", "striped", "round", "tall",
           "quiet", "bright", "soft"]
THINGS = ["chair", "table", "lamp", "bicycle", "teapot", "bookshelf", "garden", "river", "mountain", "kitten",
          "cloud", "window", "bridge", "violin", "sandwich"]
HARMLESS = [f"{a} {b}" for a in COLOURS for b in THINGS]  # 225 harmless concepts


# ------------------------------------------------------------------------------ policy file keys
def test_old_policy_files_stay_valid():
    policy, defaults = Policy.parse_json(json.dumps({
        "locked": True, "min_intensity": 1.0, "forced_mode": "safree", "required_concepts": ["nudity", "gore"],
        "defaults": {"enabled": True, "preset": "high"}}), "old.json")
    assert policy.locked and policy.forced_mode == "safree" and policy.required_concepts == ("nudity", "gore")
    assert defaults == {"enabled": True, "preset": "high"}
    assert policy.default_settings.preset == "high"
    assert policy.fail_closed and policy.scope == "graph" and policy.audit is None
    assert Policy.from_json("{}") == Policy(min_intensity=0.0)


def test_every_new_key_is_parsed(tmp_path):
    text = json.dumps({"locked": True, "max_threshold": 0.35, "detector": "loo", "allow_svf": True,
                       "on_error": "open", "scope": "server",
                       "audit": {"path": "logs/audit.jsonl", "store_prompt": "text", "max_bytes": 4096,
                                 "backups": 1}})
    policy = Policy.from_json(text, "p.json", tmp_path)
    assert policy.max_threshold == 0.35 and policy.detector == "loo" and policy.allow_svf
    assert not policy.fail_closed and policy.on_error == "open"
    assert policy.scope == "server" and policy.server_scope
    assert policy.audit == AuditConfig(str(tmp_path / "logs" / "audit.jsonl"), "text", 4096, 1)
    # the file's own folder is the base of a relative audit path
    (tmp_path / "policy.json").write_text(text)
    assert Policy.from_file(tmp_path / "policy.json").audit.path == str(tmp_path / "logs" / "audit.jsonl")
    absolute = str(tmp_path / "elsewhere.jsonl")
    assert Policy.from_json(json.dumps({"audit": {"path": absolute}}), "p", "/nowhere").audit.path == absolute


def test_audit_defaults():
    audit = Policy.from_json(json.dumps({"audit": {"path": "a.jsonl"}})).audit
    assert (audit.store_prompt, audit.max_bytes, audit.backups) == ("hash", 10 * 1024 * 1024, 3)


@pytest.mark.parametrize("raw, key", [
    ({"on_error": "maybe"}, "on_error"), ({"on_error": False}, "on_error"), ({"scope": "galaxy"}, "scope"),
    ({"detector": "slow"}, "detector"), ({"allow_svf": "false"}, "allow_svf"), ({"locked": "yes"}, "locked"),
    ({"max_threshold": 0}, "max_threshold"), ({"max_threshold": 1.5}, "max_threshold"),
    ({"max_threshold": "0.3"}, "max_threshold"), ({"max_threshold": float("nan")}, "max_threshold"),
    ({"audit": 5}, "audit"), ({"audit": {"store_prompt": "hash"}}, "path"), ({"audit": {"path": ""}}, "path"),
    ({"audit": {"path": "a", "store_prompt": "all"}}, "store_prompt"),
    ({"audit": {"path": "a", "max_bytes": 10}}, "max_bytes"),
    ({"audit": {"path": "a", "max_bytes": 1e9}}, "max_bytes"),
    ({"audit": {"path": "a", "backups": -1}}, "backups"), ({"audit": {"path": "a", "rotate": 1}}, "rotate"),
    ({"forced_mode": "off"}, "forced_mode"), ({"min_intensity": 7}, "min_intensity"),
    ({"required_concepts": 5}, "required_concepts"), ({"defaults": {"intensity": 9}}, "intensity"),
    ({"defaults": [1]}, "defaults"), ({"lock": True}, "unknown key"),
])
def test_invalid_keys_name_the_key_and_the_file(raw, key):
    with pytest.raises(SettingsError, match=key) as info:
        Policy.parse_json(json.dumps(raw), "policy.json")
    assert "policy.json" in str(info.value)


@pytest.mark.parametrize("text", ["", "{", "[]", "null", '"locked"'])
def test_unreadable_policy_text_is_an_error(text):
    with pytest.raises(SettingsError, match="policy"):
        Policy.parse_json(text, "policy.json")


def test_page_lock_alone_keeps_the_default_concepts_as_required():
    page = Policy.make(True, 1.0, "", "")
    assert page.required_concepts == DEFAULT_CONCEPTS
    assert Policy(locked=True).required_concepts == DEFAULT_CONCEPTS
    assert Policy.make(False, 1.0, "", "").required_concepts == ()
    enforced, notes = page.enforce(Settings.from_dict({"concepts": "kittens"}))
    assert enforced.concept_list == ("kittens",) and enforced.required_concepts == DEFAULT_CONCEPTS
    assert any("required by policy" in n for n in notes)


def test_stricter_combines_every_key():
    audit_a, audit_b = AuditConfig("a.jsonl"), AuditConfig("b.jsonl")
    file = Policy(locked=True, min_intensity=1.5, required_concepts=("gore",), max_threshold=0.35,
                  detector="loo", allow_svf=True, on_error="open", scope="server", audit=audit_a,
                  defaults=(("preset", "high"),))
    page = Policy.make(True, 1.0, "es+safree", "nudity")
    both = file.stricter(page)
    assert both.locked and both.min_intensity == 1.5 and both.forced_mode == "es+safree"
    assert both.required_concepts == ("gore", "nudity") and both.max_threshold == 0.35
    assert both.detector == "loo" and not both.allow_svf  # the page lock does not allow svf
    assert both.on_error == "open"  # the page sets no on_error, so the file's applies
    assert both.scope == "server" and both.audit == audit_a and both.default_settings.preset == "high"
    assert Policy(on_error="open").stricter(Policy(on_error="closed")).on_error == "closed"
    assert Policy(audit=audit_b).stricter(Policy(audit=audit_a)).audit == audit_b
    unlocked = Policy(on_error="open", audit=audit_a).stricter(Policy())
    assert not unlocked.locked and unlocked.audit == audit_a and not unlocked.fail_closed
    assert Policy(locked=True, allow_svf=True).stricter(Policy()).allow_svf


# ----------------------------------------------------------------------- the lock's overrides
LOCK = Policy(locked=True, min_intensity=1.0, required_concepts=("nudity",))


def notes_of(policy, **values):
    return policy.enforce(Settings(**values))


def test_svf_is_turned_off_under_the_lock_unless_allowed():
    enforced, notes = notes_of(LOCK, schedule="svf")
    assert enforced.schedule == "off" and any("svf" in n for n in notes)
    allowed = Policy(locked=True, required_concepts=("nudity",), allow_svf=True)
    enforced, notes = notes_of(allowed, schedule="svf")
    assert enforced.schedule == "svf" and not any("svf" in n for n in notes)
    assert Policy().enforce(Settings(schedule="svf"))[0].schedule == "svf"


def test_eos_policy_keep_is_forced_to_project():
    enforced, notes = notes_of(LOCK, eos_policy="keep")
    assert enforced.eos_policy == "project" and any("eos_policy" in n for n in notes)


def test_detector_is_forced_only_when_the_policy_names_one():
    assert notes_of(LOCK, detector="loo")[0].detector == "loo"
    forced = Policy(locked=True, required_concepts=("nudity",), detector="fast")
    enforced, notes = notes_of(forced, detector="loo")
    assert enforced.detector == "fast" and any("detector forced" in n for n in notes)


def test_mode_es_gets_the_projection_for_the_required_concepts_unless_forced():
    enforced, notes = notes_of(LOCK, mode="es")
    assert enforced.mode == "es+safree" and any("projection" in n for n in notes)
    forced = Policy(locked=True, forced_mode="es", required_concepts=("nudity",))
    enforced, notes = notes_of(forced, mode="safree")
    assert enforced.mode == "es" and any("learned weights" in n for n in notes)


@pytest.mark.parametrize("preset", list(PRESETS) + ["custom"])
@pytest.mark.parametrize("floor", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("cap", [DEFAULT_MAX_THRESHOLD, 0.35, 0.6])
def test_no_preset_loosens_the_threshold_or_the_intensity(preset, floor, cap):
    policy = Policy(locked=True, min_intensity=floor, required_concepts=("nudity",), max_threshold=cap)
    for intensity in (0.0, 0.3, 1.0, 3.0):
        chosen = Settings(preset=preset, intensity=intensity)
        enforced, notes = policy.enforce(chosen)
        assert enforced.effective_intensity >= floor
        assert enforced.threshold <= min(cap, chosen.threshold)
        if chosen.threshold > cap and enforced.preset == chosen.preset:
            assert any("threshold capped" in n for n in notes)


def test_low_preset_threshold_is_capped_with_a_note():
    policy = Policy(locked=True, min_intensity=0.5, required_concepts=("nudity",))
    enforced, notes = notes_of(policy, preset="low")
    assert enforced.preset == "low" and enforced.effective_intensity == 0.5
    assert Settings(preset="low").threshold == 0.7 and enforced.threshold == DEFAULT_MAX_THRESHOLD
    assert any("threshold capped at 0.5" in n and "'low'" in n for n in notes)


def test_enforce_is_idempotent_and_every_override_has_a_note():
    weak = Settings(enabled=False, mode="off", preset="low", intensity=0.2, concepts="kittens", eos_policy="keep",
                    schedule="svf", detector="loo")
    policy = Policy(locked=True, min_intensity=1.0, required_concepts=("nudity",), detector="fast")
    enforced, notes = policy.enforce(weak)
    changed = [f.name for f in FIELDS if getattr(enforced, f.name) != getattr(weak, f.name)]
    assert set(changed) == {"enabled", "mode", "preset", "intensity", "eos_policy", "schedule", "detector"}
    assert len(notes) == 8  # enabled, mode, intensity (preset with it), threshold, eos, svf, detector, required
    again, more = policy.enforce(enforced)
    assert again == enforced
    assert more == [n for n in notes if "required by policy" in n]  # the user's list still lacks them


def test_users_cannot_set_the_policy_fields():
    with pytest.raises(SettingsError, match="unknown"):
        Settings.from_dict({"required_concepts": ["x"]})
    with pytest.raises(SettingsError, match="unknown"):
        Policy().resolve({"max_threshold": 1.0})
    enforced, notes = LOCK.resolve({"required_concepts": [], "max_threshold": 1.0})
    assert enforced.required_concepts == ("nudity",) and enforced.max_threshold == DEFAULT_MAX_THRESHOLD
    assert any("unknown" in n for n in notes)
    assert "required_concepts" not in Settings().to_dict()
    assert Settings.from_dict(enforced.to_dict()).to_dict() == enforced.to_dict()
    assert enforced.effective_dict()["required_concepts"] == ["nudity"]


# ------------------------------------------------------------------------------------ resolve
BYPASSES = [
    {"enabld": False}, {"intensity": 9}, {"enabled": "no"}, [False, "nope"], {"concepts": 5},
    {"mode": "off", "intensity": -1}, {"preset": None, "mode": "off"}, "enabled=false", 17, [None] * 30,
    {"concepts": ["a", 3]}, {"intensity": "lots"}, {"intensity": float("nan")}, {"schedule": "svf"},
]


@pytest.mark.parametrize("values", BYPASSES)
def test_invalid_arguments_under_a_lock_fall_back_with_notes(values):
    policy = Policy(locked=True, min_intensity=1.0, required_concepts=("nudity",),
                    defaults=(("preset", "high"),))
    enforced, notes = policy.resolve(values)
    assert enforced.enabled and enforced.mode != "off" and enforced.effective_intensity >= 1.0
    assert enforced.required_concepts == ("nudity",) and enforced.schedule == "off"
    assert notes  # every one of these is rejected or overridden, and says so


def test_resolve_notes_name_the_rejected_field_and_the_default_used():
    policy = Policy(locked=True, required_concepts=("nudity",), defaults=(("intensity", 1.5),))
    enforced, notes = policy.resolve({"intensity": 9, "concepts": "gore"})
    assert enforced.intensity == 1.5 and enforced.concept_list == ("gore",)
    assert any("'intensity'" in n and "1.5" in n for n in notes)


def test_resolve_keeps_valid_values_and_coerces_what_clients_send():
    enforced, notes = LOCK.resolve({"intensity": "1.25", "sanitize_negative": "true", "concepts": ["gore"]},
                                   base=Settings(detector="loo"))
    assert (enforced.intensity, enforced.sanitize_negative, enforced.detector) == (1.25, True, "loo")
    assert enforced.concept_list == ("gore",)
    positional, _ = LOCK.resolve([True, "es+safree", "high"])
    assert positional.mode == "es+safree" and positional.preset == "high"


@pytest.mark.parametrize("values", [{"enabld": False}, {"intensity": 9}, {"enabled": "no"}, [False, "nope"],
                                    {"concepts": 5}, "text", [None] * 30])
def test_without_a_lock_invalid_arguments_raise(values):
    with pytest.raises(SettingsError):
        Policy().resolve(values)


def test_without_a_lock_resolve_is_plain_validation():
    settings, notes = Policy().resolve({"enabled": False, "intensity": 2})
    assert settings == Settings(enabled=False, intensity=2.0) and notes == []


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=12)
field_values = st.dictionaries(st.sampled_from([f.name for f in FIELDS] + ["x"]), json_values, max_size=8)


@hsettings(max_examples=300, deadline=None)
@given(values=field_values | json_values)
def test_resolve_under_a_lock_never_raises_and_always_holds(values):
    enforced, notes = LOCK.resolve(values)
    assert enforced.enabled and enforced.mode != "off" and enforced.effective_intensity >= 1.0
    assert enforced.eos_policy == "project" and enforced.schedule == "off"
    assert enforced.required_concepts == ("nudity",) and enforced.threshold <= DEFAULT_MAX_THRESHOLD
    assert all(isinstance(n, str) for n in notes)


# ------------------------------------------------------- required concepts as their own list
@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder()


@pytest.fixture(scope="module")
def minilm_sanitizer(minilm):
    return Sanitizer(minilm)


def rows_edited(sanitizer, encoder, settings, text=NAKED):
    batch, out = encoder.encode_texts([text])
    result = sanitizer.sanitize(out.tokens, batch.ids, encoder.layout, settings, batch.pieces)
    return result.report["prompts"][0]["rows_edited"], result


def test_extra_concepts_cannot_dilute_the_required_ones(minilm, minilm_sanitizer):
    policy = Policy(locked=True, required_concepts=("nudity",))
    diluted = ", ".join(["nudity"] + HARMLESS)
    alone, _ = rows_edited(minilm_sanitizer, minilm, policy.enforce(Settings(concepts="nudity"))[0])
    assert alone > 0
    # without a lock the wide list raises the detector's threshold out of reach (the bypass)
    unlocked, _ = rows_edited(minilm_sanitizer, minilm, Settings(concepts=diluted))
    assert unlocked < alone // 2
    enforced, _ = policy.enforce(Settings(concepts=diluted))
    locked, result = rows_edited(minilm_sanitizer, minilm, enforced)
    assert locked >= alone
    assert any("own list" in n for n in result.report["notes"])
    flagged = [t for t in result.report["prompts"][0]["tokens"] if t["flagged"]]
    assert any(t["token"] == "naked" and t["concept"] == "nudity" for t in flagged)


def test_page_lock_kittens_still_removes_nudity(minilm, minilm_sanitizer):
    page = Policy.make(True, 1.0, "", "")
    enforced, _ = page.resolve({"concepts": "kittens"})
    edited, _ = rows_edited(minilm_sanitizer, minilm, enforced)
    plain, _ = rows_edited(minilm_sanitizer, minilm, Settings(concepts="kittens"))
    assert plain == 0 and edited > 0


@pytest.mark.parametrize("concepts", ["", " , ,", "kittens"])
def test_empty_or_junk_user_concepts_keep_the_required_list(minilm, minilm_sanitizer, concepts):
    enforced, _ = LOCK.resolve({"concepts": concepts})
    edited, _ = rows_edited(minilm_sanitizer, minilm, enforced)
    assert edited > 0


def test_two_lists_with_svf_give_the_longer_schedule(minilm, minilm_sanitizer):
    policy = Policy(locked=True, required_concepts=("nudity",), allow_svf=True)
    enforced, _ = policy.enforce(Settings(concepts="kittens", schedule="svf"))
    _, result = rows_edited(minilm_sanitizer, minilm, enforced)
    _, alone = rows_edited(minilm_sanitizer, minilm, Settings(concepts="nudity", schedule="svf"))
    assert result.schedule_end is not None and result.schedule_end[0] >= alone.schedule_end[0] > 0


def test_one_list_when_the_user_list_is_the_required_list(minilm, minilm_sanitizer):
    enforced, _ = LOCK.enforce(Settings(concepts="Nudity"))
    assert enforced.projection_concept_lists == (("nudity",),)
    _, with_lock = rows_edited(minilm_sanitizer, minilm, enforced)
    _, plain = rows_edited(minilm_sanitizer, minilm, Settings(concepts="nudity"))
    assert torch.equal(with_lock.embeddings, plain.embeddings)

