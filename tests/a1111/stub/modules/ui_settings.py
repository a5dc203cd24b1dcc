"""The Settings page's "Apply settings" (stand-in): one value per option, in ``opts.data_labels`` order.

As in the webui, each changed value goes through ``opts.set`` (not as the API) and config.json is saved.
``None`` stands for a component the page does not send (the webui's dummy component).
"""
from modules import shared


class UiSettings:
    def run_settings(self, *args):
        opts = shared.opts
        changed = []
        for key, value in zip(list(opts.data_labels), args):
            if value is None:
                continue
            if opts.set(key, value):
                changed.append(key)
        opts.save(shared.config_filename)
        return changed

    def run_settings_single(self, value, key):
        if value is None or not shared.opts.set(key, value):
            return False
        shared.opts.save(shared.config_filename)
        return True


def apply(changes):
    """What a user does on the page: change some options and press "Apply settings"."""
    args = [changes.get(key) for key in shared.opts.data_labels]
    return UiSettings().run_settings(*args)
