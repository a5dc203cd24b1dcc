"""Glue to the running webui: options, policy, the shared runtime and hook, the last reports.

Every ``modules`` import happens inside a function, so this module imports anywhere.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from embedding_sanitizer import FIELDS, Settings, SettingsError
from embedding_sanitizer.paths import WEIGHTS_DIR

from . import schema
from .hook import Hook, Refusal
from .lock_seal import LockSeal
from .svf import Schedule
from .policy import PolicyFile, make_policy, on_error_of, read_policy_file, resolve_args, stricter
from .runtime import Runtime, RunState, merge_words, words_html

log = logging.getLogger("embedding_sanitizer.a1111")

TITLE = "Embedding Sanitizer"
MODELS_SUBDIR = "embedding_sanitizer"
LEGACY_MODELS_SUBDIRS = ("EmbeddingSanitizer",)  # earlier versions saved here; still listed
POLICY_FLAG = "embedding_sanitizer_policy"  # attribute of cmd_opts set by preload.py
LOCK_KEY = schema.OPTION_PREFIX + "admin_lock"
FLOOR_KEY = schema.OPTION_PREFIX + "min_intensity"
FORCED_KEY = schema.OPTION_PREFIX + "forced_mode"
REQUIRED_KEY = schema.OPTION_PREFIX + "required_concepts"
LIVE_KEY = schema.OPTION_PREFIX + "live_heatmap"
RESTRICTED_KEYS = (LOCK_KEY, FLOOR_KEY, FORCED_KEY, REQUIRED_KEY)
RESTRICTED_DEFAULTS = {LOCK_KEY: False, FLOOR_KEY: 1.0, FORCED_KEY: "", REQUIRED_KEY: ""}


def _shared():
    from modules import shared

    return shared


def models_dir() -> Path | None:
    try:
        from modules import paths

        return Path(paths.models_path) / MODELS_SUBDIR
    except (ImportError, AttributeError):
        return None


def weight_folders() -> list[Path]:
    folders = [WEIGHTS_DIR]
    extra = models_dir()
    if extra is not None:
        folders.append(extra)
        folders += [extra.parent / name for name in LEGACY_MODELS_SUBDIRS]
    return folders


def layer_tag() -> str:
    """Changes with A1111's CLIP skip (the conditioning layer), so concept subspaces are rebuilt."""
    try:
        return f"skip{int(getattr(_shared().opts, 'CLIP_stop_at_last_layers', 1))}"
    except Exception:  # noqa: BLE001 - outside the webui
        return ""


def idle_state():
    """Hook state for a text-model call outside an active run: under a lock, the policy's settings."""
    try:
        policy, notes = policy_in_force()
    except Exception as exc:  # noqa: BLE001 - a named policy file that cannot be read: refuse
        if policy_file_path():
            return Refusal(f"Embedding Sanitizer refuses to encode: {exc}")
        return None
    if not policy.locked:
        return None
    try:
        settings, more = resolve([])
    except Exception as exc:  # noqa: BLE001
        return Refusal(f"Embedding Sanitizer refuses to encode: the locked settings are invalid: {exc}")
    note = "text encoded outside a generation set up by the extension; the lock's settings were applied"
    try:
        audit = audit_log()
    except Exception as exc:  # noqa: BLE001 - the audit log fails closed
        return Refusal(str(exc))
    return RunState(settings, notes + more + [note], audit=audit, request_id="outside-a-generation")


def unservable() -> str:
    """Why the webui's current options cannot be sanitized ("" when they can): old emphasis."""
    from .lifecycle import COMPAT_OPTIONS, OLD_EMPHASIS

    try:
        opts = _shared().opts
    except Exception:  # noqa: BLE001 - outside the webui
        return ""
    return OLD_EMPHASIS if any(getattr(opts, key, False) for key in COMPAT_OPTIONS) else ""


RUNTIME = Runtime(weight_folders, lambda: models_dir() or WEIGHTS_DIR)
HOOK = Hook(RUNTIME, layer_tag, idle_state, unservable)
SVF = Schedule(HOOK)
SEAL = LockSeal(RESTRICTED_KEYS, RESTRICTED_DEFAULTS)
LAST_REPORTS: dict[str, dict] = {}
_policy_cache: dict[tuple, PolicyFile] = {}
_policy_lock = threading.Lock()


# ------------------------------------------------------------------ policy
def policy_file_path() -> str:
    try:
        return getattr(_shared().cmd_opts, POLICY_FLAG, None) or ""
    except Exception:  # noqa: BLE001
        return ""


def policy_file() -> PolicyFile:
    """The policy file named on the command line (re-read when it changes); errors fail closed."""
    path = policy_file_path()
    if not path:
        return PolicyFile()
    try:
        stamp = Path(path).stat().st_mtime
    except OSError:
        stamp = None
    with _policy_lock:
        key = (path, stamp)
        if key not in _policy_cache:
            _policy_cache.clear()
            _policy_cache[key] = read_policy_file(path)
        return _policy_cache[key]


def page_policy():
    """The Settings-page lock as sealed (``lock_seal``), and notes about options changed around the seal.

    A locked policy with no required concepts requires the default concept list (the core's
    ``Policy``), so a request's own concept list can never replace it (e.g. ``{"concepts": "kittens"}``)."""
    values, notes = SEAL.sealed_values(_shared().opts)
    policy = make_policy(bool(values[LOCK_KEY]), values[FLOOR_KEY], values[FORCED_KEY], values[REQUIRED_KEY])
    return policy, notes


def policy_in_force():
    """``(policy, notes)``: the stricter of the policy file and the sealed Settings-page lock.

    Raises when the named policy file cannot be read (the caller fails closed)."""
    page, notes = page_policy()
    return stricter(policy_file().policy, page), (notes if page.locked else [])


def current_policy():
    return policy_in_force()[0]


def audit_log():
    """The audit log the policy file configures (``None`` without one); ``AuditError`` if it fails closed."""
    from embedding_sanitizer.audit import AuditLog

    log_ = AuditLog.from_policy(current_policy())
    if log_ is not None:
        log_.check()
    return log_


def on_error() -> str:
    """``closed`` (default) or ``open``, from the policy file; ``closed`` when the file cannot be read."""
    try:
        return on_error_of(policy_file().policy)
    except Exception:  # noqa: BLE001
        return "closed"


def file_defaults() -> dict:
    try:
        return dict(policy_file().defaults)
    except Exception:  # noqa: BLE001 - reported at generation time
        log.exception("Embedding Sanitizer: cannot read the policy file")
        return {}


# ---------------------------------------------------------------- settings
def default_settings() -> Settings:
    """The Settings-page defaults (falling back to the policy file's, then the schema's)."""
    opts = _shared().opts
    base = Settings.from_dict(file_defaults())
    values = base.to_dict()
    for spec in FIELDS:
        value = getattr(opts, schema.option_key(spec.name), None)
        if value is not None:
            values[spec.name] = value
    try:
        return Settings.from_dict(schema._coerce(values))
    except SettingsError as exc:
        raise SettingsError(f"Embedding Sanitizer defaults on the Settings page are invalid: {exc}") from None


def resolve(args) -> tuple[Settings, list[str]]:
    """Script args (UI or API) -> the settings that will be used, after the admin policy.

    Without a lock, invalid arguments raise ``SettingsError``. Under a lock they never switch the
    sanitizer off: the policy's defaults are used instead, and the notes say why."""
    policy, notes = policy_in_force()
    try:
        defaults = default_settings()
    except SettingsError as exc:
        if not policy.locked:
            raise
        defaults = policy.default_settings
        notes = notes + [f"the Settings-page defaults are invalid ({exc}); the policy's defaults apply"]
    settings, more = resolve_args(policy, args, defaults)
    return settings, notes + more


# ------------------------------------------------------------ text models
def text_models(sd_model) -> list:
    """The webui text models of a checkpoint that this extension can read, in conditioning order."""
    if sd_model is None:
        return []
    found = []
    for name in ("text_processing_engine", "text_processing_engine_l", "text_processing_engine_g"):  # Forge
        engine = getattr(sd_model, name, None)
        if engine is not None and hasattr(engine, "process_texts"):
            found.append(engine)
    if found:
        return found
    conditioner = getattr(sd_model, "conditioner", None)  # SDXL
    if conditioner is not None:
        return [e for e in getattr(conditioner, "embedders", []) if hasattr(e, "process_texts")]
    model = getattr(sd_model, "cond_stage_model", None)
    return [model] if model is not None and hasattr(model, "process_texts") else []


# ----------------------------------------------------------------- reports
def store_report(tab: str, state: RunState, settings: Settings, notes: list[str]) -> dict:
    """Keep the heatmap of the prompts actually used in the last generation of ``tab``."""
    prompts: dict[tuple[str, bool], list] = {}
    ends: dict[tuple[str, bool], list[float]] = {}
    for record in state.records:
        prompts.setdefault((record.text, record.negative), []).append(record.words)
        if record.schedule_end is not None:
            ends.setdefault((record.text, record.negative), []).append(record.schedule_end)
    items = []
    for (text, negative), views in prompts.items():
        words = merge_words(views)
        end = ends.get((text, negative))
        items.append({"prompt": text, "negative": negative, "words": _public(words), "html": words_html(words),
                      "schedule_end": None if not end else round(max(end), 4)})
    with _policy_lock:
        LAST_REPORTS["_counter"] = LAST_REPORTS.get("_counter", 0) + 1
        report = {"id": LAST_REPORTS["_counter"], "tab": tab, "settings": settings.effective_dict(),
                  "policy_notes": list(notes), "prompts": items}
        LAST_REPORTS[tab] = report
    return report


def _public(words: list[dict]) -> list[dict]:
    return [{k: v for k, v in w.items() if k != "positions"} for w in words]


def live_heatmap_enabled() -> bool:
    return bool(getattr(_shared().opts, LIVE_KEY, True))
