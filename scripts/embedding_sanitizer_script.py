"""Embedding Sanitizer for AUTOMATIC1111 / Forge: the always-visible script (entry point).

The webui imports every ``.py`` under ``scripts/`` with the extension folder on
``sys.path`` only while the file loads, so everything from ``a1111`` and the core is
imported here, eagerly. The glue lives in ``a1111/``; the core in ``embedding_sanitizer/``.
"""
from modules import script_callbacks, scripts, shared

from a1111 import lifecycle, routes, ui, webui

webui.HOOK.install()


class EmbeddingSanitizerScript(scripts.Script):
    def title(self):
        return webui.TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr

        return ui.build_accordion(self, is_img2img, gr)

    def before_process(self, p, *args):
        lifecycle.before_process(p)

    def process(self, p, *args):
        lifecycle.start(p, args, self._tab())

    def process_batch(self, p, *args, **kwargs):
        lifecycle.ensure_active(p)

    def before_hr(self, p, *args):
        lifecycle.ensure_active(p)

    def postprocess(self, p, processed, *args):
        lifecycle.finish(p, self._tab(), processed)

    def _tab(self):
        return "img2img" if self.is_img2img else "txt2img"


def _on_ui_settings():
    import gradio as gr

    ui.register_options(shared, gr)


def _on_app_started(demo, app):
    routes.register(app)


script_callbacks.on_ui_settings(_on_ui_settings)
script_callbacks.on_app_started(_on_app_started)
script_callbacks.on_cfg_denoiser(webui.SVF.on_cfg_denoiser)  # once; a no-op unless a run uses svf
script_callbacks.on_model_loaded(webui.SVF.on_model_loaded)
script_callbacks.on_script_unloaded(webui.HOOK.uninstall)
script_callbacks.on_script_unloaded(webui.SVF.detach_all)
