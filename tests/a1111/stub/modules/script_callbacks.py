"""Callback registry (stand-in): the callbacks the extension uses."""
from collections import namedtuple

ScriptCallback = namedtuple("ScriptCallback", ["script", "callback", "name"])
callback_map = {name: [] for name in (
    "callbacks_ui_settings", "callbacks_app_started", "callbacks_model_loaded", "callbacks_script_unloaded",
    "callbacks_cfg_denoiser", "callbacks_infotext_pasted")}


class CFGDenoiserParams:
    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond,
                 denoiser=None):
        self.x = x
        self.image_cond = image_cond
        self.sigma = sigma
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        self.text_uncond = text_uncond
        self.denoiser = denoiser


def _add(kind, callback, name=None):
    callback_map[kind].append(ScriptCallback("extension", callback, name))


def on_ui_settings(callback, *, name=None):
    _add("callbacks_ui_settings", callback, name)


def on_app_started(callback, *, name=None):
    _add("callbacks_app_started", callback, name)


def on_model_loaded(callback, *, name=None):
    _add("callbacks_model_loaded", callback, name)


def on_script_unloaded(callback, *, name=None):
    _add("callbacks_script_unloaded", callback, name)


def on_cfg_denoiser(callback, *, name=None):
    _add("callbacks_cfg_denoiser", callback, name)


def on_infotext_pasted(callback, *, name=None):
    _add("callbacks_infotext_pasted", callback, name)


def ui_settings_callback():
    for c in callback_map["callbacks_ui_settings"]:
        c.callback()


def app_started_callback(demo, app):
    for c in callback_map["callbacks_app_started"]:
        c.callback(demo, app)


def model_loaded_callback(sd_model):
    for c in callback_map["callbacks_model_loaded"]:
        c.callback(sd_model)


def script_unloaded_callback():
    for c in callback_map["callbacks_script_unloaded"]:
        c.callback()


def cfg_denoiser_callback(params):
    for c in callback_map["callbacks_cfg_denoiser"]:
        c.callback(params)


def clear_callbacks():
    for callbacks in callback_map.values():
        callbacks.clear()
