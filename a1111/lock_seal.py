"""The Settings-page lock as the extension honours it: sealed at startup, changed only from the Settings page.

A1111 refuses to set a ``restrict_api`` option through ``POST /sdapi/v1/options``; Forge does not
(its ``sysinfo.set_config`` calls ``opts.set`` without ``is_api``), and both then save config.json.
So the lock options (``LOCK_KEYS``) are not trusted as they stand in ``shared.opts``. The
extension keeps its own copy, the seal:

* it is taken when the options are registered (``on_ui_settings``), that is from config.json as the
  webui loaded it at startup;
* it changes only when a lock option is set by the webui's Settings page ("Apply settings" or a
  quicksetting): ``modules.ui_settings`` is on the call stack of ``opts.set``. Any other change
  (Forge's options API, another extension calling ``opts.set``) is refused by the option's
  ``onchange`` callback: the value is put back before the webui saves config.json, and the callback
  raises, which the webui reports (A1111 and Forge also undo the change themselves when ``onchange``
  raises). A restart therefore reads the admin's values again;
* at every generation the lock that applies is the seal (``sealed_values``); an option that differs
  from it (a write that ran no ``onchange``) is ignored, with a note in the infotext.

What it does not cover: anyone who can open the Settings page can change the lock there (that is the
page's purpose); an administrator who needs a lock that the UI cannot change uses the policy file
(``--embedding-sanitizer-policy``), which nothing in the webui writes.
"""
from __future__ import annotations

import logging
import sys
import threading

log = logging.getLogger("embedding_sanitizer.a1111")

SETTINGS_PAGE_MODULE = "modules.ui_settings"


class LockChangeRefused(PermissionError):
    """A lock option was set by something other than the Settings page."""


def from_settings_page() -> bool:
    """Whether the current call comes from the webui's Settings page (``modules.ui_settings`` on the stack)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == SETTINGS_PAGE_MODULE:
            return True
        frame = frame.f_back
    return False


class LockSeal:
    def __init__(self, keys: tuple[str, ...], defaults: dict) -> None:
        self.keys = tuple(keys)
        self.defaults = dict(defaults)
        self._values: dict | None = None
        self._lock = threading.Lock()

    def seal(self, opts) -> dict:
        """Take the lock values from ``opts`` (at registration: config.json as loaded at startup)."""
        with self._lock:
            self._values = {key: _value(opts, key, self.defaults[key]) for key in self.keys}
            return dict(self._values)

    @property
    def sealed(self) -> bool:
        return self._values is not None

    def sealed_values(self, opts) -> tuple[dict, list[str]]:
        """The lock values that apply, and a note per option whose current value differs from the seal."""
        with self._lock:
            if self._values is None:  # options never registered: nothing was locked from the page
                return {key: self.defaults[key] for key in self.keys}, []
            values = dict(self._values)
        notes = [f"{key} was changed outside the Settings page; the sealed value {values[key]!r} applies"
                 for key in self.keys if _value(opts, key, values[key]) != values[key]]
        return values, notes

    def onchange(self, opts, key: str):
        """The ``onchange`` callback of one lock option."""
        def guard():
            value = _value(opts, key, self.defaults[key])
            with self._lock:
                if self._values is None:
                    return
                if from_settings_page():
                    self._values[key] = value
                    log.info("Embedding Sanitizer: %s set to %r on the Settings page", key, value)
                    return
                sealed = self._values[key]
            if value == sealed:
                return
            opts.data[key] = sealed  # before the webui saves config.json
            log.warning("Embedding Sanitizer: refused to change %s to %r outside the Settings page "
                        "(the API or another extension); it stays %r", key, value, sealed)
            raise LockChangeRefused(f"Embedding Sanitizer: {key} can only be changed on the Settings page")
        return guard


def _value(opts, key: str, default):
    data = getattr(opts, "data", None)
    if isinstance(data, dict) and key in data:
        return data[key]
    return getattr(opts, key, default)
