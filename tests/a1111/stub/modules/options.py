"""Options and OptionInfo: the Settings page model (stand-in).

As in the webui, ``Options.load(config.json)`` replaces ``data`` with the file's content (an empty dict when
there is no file): options that were never saved are not in ``data`` and read as their default. Options an
extension adds later (``add_option``) get their default in ``data`` unless the file had a value.
"""
import json


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before="", comment_after="", infotext=None, restrict_api=False,
                 category_id=None):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api

    def link(self, label, url):
        self.comment_before += f"[<a href='{url}'>{label}</a>]"
        return self

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html):
        self.comment_after += html
        return self

    def needs_restart(self):
        return self.info("requires restart")

    def needs_reload_ui(self):
        return self.info("requires Reload UI")


def options_section(section_identifier, options_dict):
    for value in options_dict.values():
        value.section = tuple(section_identifier[:2])
        if len(section_identifier) > 2:
            value.category_id = section_identifier[2]
    return options_dict


class Options:
    def __init__(self, data_labels, restricted_opts=()):
        object.__setattr__(self, "data_labels", dict(data_labels))
        object.__setattr__(self, "data", {k: v.default for k, v in data_labels.items()})
        object.__setattr__(self, "restricted_opts", set(restricted_opts))

    def __setattr__(self, key, value):
        if key in self.data or key in self.data_labels:
            from modules import shared

            if getattr(shared.cmd_opts, "freeze_settings", False):
                raise RuntimeError("changing settings is disabled")
            self.data[key] = value
            return
        object.__setattr__(self, key, value)

    def __getattr__(self, item):
        data = self.__dict__.get("data", {})
        labels = self.__dict__.get("data_labels", {})
        if item in data:
            return data[item]
        if item in labels:
            return labels[item].default
        raise AttributeError(item)

    def set(self, key, value, is_api=False, run_callbacks=True):
        """Change one option; an API caller cannot change a ``restrict_api`` option."""
        old = self.data.get(key)
        if old == value:
            return False
        info = self.data_labels[key]
        if is_api and info.restrict_api:
            return False
        try:
            setattr(self, key, value)
        except RuntimeError:
            return False
        if run_callbacks and info.onchange is not None:
            try:
                info.onchange()
            except Exception as e:  # the webui reports the error and undoes the change
                from modules import errors

                errors.display(e, f"changing setting {key} to {value}")
                setattr(self, key, old)
                return False
        return True

    def get_default(self, key):
        info = self.data_labels.get(key)
        return None if info is None else info.default

    def load(self, filename):
        try:
            with open(filename, encoding="utf8") as file:
                self.data.clear()
                self.data.update(json.load(file))
        except FileNotFoundError:
            self.data.clear()

    def save(self, filename):
        from modules import shared

        if getattr(shared.cmd_opts, "freeze_settings", False):
            raise RuntimeError("saving settings is disabled")
        with open(filename, "w", encoding="utf8") as file:
            json.dump(self.data, file, indent=4)

    def add_option(self, key, info):
        self.data_labels[key] = info
        if key not in self.data:
            self.data[key] = info.default
