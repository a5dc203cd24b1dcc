"""The core settings schema (``FIELDS``) turned into A1111 front doors.

One table drives the accordion components, the Settings-page options, the
order of the ``alwayson_scripts`` API arguments and the infotext keys, so the
UI, the API and pasted infotext can never disagree about a setting.

Nothing here imports the webui; Gradio is passed in (or imported lazily).
"""
from __future__ import annotations

from typing import Any, Sequence

from embedding_sanitizer import FIELDS, Settings, SettingsError

SECTION = ("embedding_sanitizer", "Embedding Sanitizer")
OPTION_PREFIX = "embedding_sanitizer_"

#: API argument order == accordion component order == FIELDS order.
ARG_NAMES: tuple[str, ...] = tuple(spec.name for spec in FIELDS)
#: Fields shown in the "Advanced" sub-accordion rather than in the main rows.
ADVANCED = ("weights", "detector", "eos_policy", "schedule", "sanitize_negative")
#: Infotext key -> field name (for pasting).
INFOTEXT_KEYS = {spec.infotext: spec.name for spec in FIELDS}


def option_key(name: str) -> str:
    """Settings-page key holding the default of field ``name`` (``shared.opts.<key>``)."""
    return f"{OPTION_PREFIX}{name}"


def component_kwargs(spec, value: Any) -> dict:
    """Keyword arguments for the Gradio component of ``spec`` (label, value, tooltip as ``info``)."""
    kwargs: dict[str, Any] = {"label": spec.label, "value": value}
    if spec.kind is float:
        kwargs.update(minimum=spec.minimum, maximum=spec.maximum, step=spec.step)
    elif spec.choices:
        kwargs["choices"] = list(spec.choices)
    elif spec.kind is str:
        kwargs["lines"] = 2 if spec.name == "concepts" else 1
    return kwargs


def component_class(spec, gr, weight_choices: Sequence[str] | None = None):
    """The Gradio class for a field: Checkbox, Slider, Dropdown or Textbox."""
    if spec.kind is bool:
        return gr.Checkbox
    if spec.kind is float:
        return gr.Slider
    if spec.choices or (spec.name == "weights" and weight_choices is not None):
        return gr.Dropdown
    return gr.Textbox


def make_component(spec, gr, value: Any, elem_id: str, weight_choices: Sequence[str] | None = None):
    """Build the Gradio component of one field (inside the caller's layout context)."""
    kwargs = component_kwargs(spec, value)
    cls = component_class(spec, gr, weight_choices)
    if spec.name == "weights" and weight_choices is not None:
        choices = [""] + [c for c in weight_choices if c]
        kwargs.pop("lines", None)
        kwargs["choices"] = choices
        if value not in choices:
            kwargs["value"] = ""
    if cls is not gr.Textbox:
        kwargs.pop("lines", None)
    kwargs["info"] = spec.tooltip
    return cls(elem_id=elem_id, **kwargs)


def settings_from_args(args: Sequence[Any], defaults: Settings) -> Settings:
    """Script arguments (UI values or ``alwayson_scripts`` args) -> validated ``Settings``.

    ``args`` follow ``ARG_NAMES``; a missing or ``None`` value keeps ``defaults``.
    An API caller may instead pass one dict of field names to values as the
    first argument. Invalid values raise ``SettingsError`` naming the field.
    """
    values = defaults.to_dict()
    args = list(args or ())
    if args and isinstance(args[0], dict):
        given = dict(args[0])
        unknown = set(given) - set(ARG_NAMES)
        if unknown:
            raise SettingsError(f"unknown Embedding Sanitizer argument(s): {sorted(unknown)}; "
                                f"known: {list(ARG_NAMES)}")
        values.update({k: v for k, v in given.items() if v is not None})
    else:
        if len(args) > len(ARG_NAMES):
            raise SettingsError(f"Embedding Sanitizer takes at most {len(ARG_NAMES)} arguments "
                                f"({', '.join(ARG_NAMES)}), got {len(args)}")
        for name, value in zip(ARG_NAMES, args):
            if value is not None:
                values[name] = value
    return Settings.from_dict(_coerce(values))


def _coerce(values: dict) -> dict:
    """Accept what Gradio and JSON clients send: ints for floats, numbers as text, "true"/"false"."""
    out = dict(values)
    for spec in FIELDS:
        value = out.get(spec.name)
        if spec.kind is float and isinstance(value, str):
            try:
                out[spec.name] = float(value)
            except ValueError:
                raise SettingsError(f"setting {spec.name!r} must be a number, got {value!r}") from None
        elif spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
            out[spec.name] = float(value)
        elif spec.kind is bool and isinstance(value, str) and value.strip().lower() in ("true", "false"):
            out[spec.name] = value.strip().lower() == "true"
        elif spec.kind is str and value is None:
            out[spec.name] = spec.default
    return out


def settings_to_args(settings: Settings) -> list:
    """The inverse of ``settings_from_args`` (what an API client sends)."""
    return [getattr(settings, name) for name in ARG_NAMES]


def infotext_params(settings: Settings) -> dict[str, str]:
    """``extra_generation_params`` entries; empty values are left out (A1111 drops ``None``)."""
    return {key: value for key, value in settings.to_infotext().items() if value != ""}
