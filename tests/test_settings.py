import json

import pytest

from embedding_sanitizer.settings import FIELDS, PRESETS, Policy, Settings, SettingsError, parse_concepts


def test_defaults_are_valid_and_round_trip_through_dict_and_json():
    s = Settings()
    assert Settings.from_dict(json.loads(json.dumps(s.to_dict()))) == s


@pytest.mark.parametrize("values, field", [
    ({"intensity": 3.5}, "intensity"), ({"intensity": float("nan")}, "intensity"), ({"mode": "nuke"}, "mode"),
    ({"preset": "ultra"}, "preset"), ({"enabled": "yes"}, "enabled"), ({"detector": "slow"}, "detector"),
])
def test_invalid_values_name_the_field(values, field):
    with pytest.raises(SettingsError, match=field):
        Settings.from_dict(values)


def test_unknown_key_is_refused():
    with pytest.raises(SettingsError, match="unknown setting"):
        Settings.from_dict({"strength": 1})


def test_presets_and_custom_intensity():
    assert Settings(preset="high").effective_intensity == PRESETS["high"][0]
    assert Settings(preset="custom", intensity=0.3).effective_intensity == 0.3
    assert Settings(enabled=False).effective_intensity == 0.0
    assert Settings(mode="off").effective_intensity == 0.0


def test_infotext_round_trip():
    s = Settings(mode="es+safree", preset="custom", intensity=1.25, concepts="nudity, Van Gogh", schedule="svf")
    params = s.to_infotext()
    assert set(params) == {f.infotext for f in FIELDS}
    assert Settings.from_infotext(params) == s


def test_concept_parsing():
    assert parse_concepts("nudity,\n violence , ,Nudity, Van Gogh") == ("nudity", "violence", "Van Gogh")
    assert Settings.from_dict({"concepts": ["a", "b"]}).concept_list == ("a", "b")


def test_policy_lock_holds():
    policy = Policy(locked=True, min_intensity=1.0, required_concepts=("nudity",))
    forced, notes = policy.enforce(Settings(enabled=False, mode="off", preset="low", concepts="violence"))
    assert forced.enabled and forced.mode != "off"
    assert forced.effective_intensity >= 1.0
    assert forced.concept_list == ("violence",) and forced.required_concepts == ("nudity",)  # its own list
    assert "nudity" in forced.all_concepts and len(notes) == 5  # with "threshold capped" (preset low)
    unlocked, notes = Policy().enforce(Settings(enabled=False))
    assert not unlocked.enabled and notes == []
