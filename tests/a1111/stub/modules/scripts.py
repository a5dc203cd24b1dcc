"""Scripts: the Script base class and the runner (stand-in)."""
import os
import re
import sys
from collections import namedtuple

from modules import errors, script_loading

AlwaysVisible = object()
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data = []


class Script:
    name = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    infotext_fields = None
    paste_field_names = None

    def title(self):
        raise NotImplementedError

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def before_hr(self, p, *args):
        pass

    def elem_id(self, item_id):
        """``script_<tab>_<title>_<item>``; the tab is included when the script shows on both tabs."""
        need_tab = self.show(True) == self.show(False)
        tab = ("img2img_" if self.is_img2img else "txt2img_") if need_tab else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tab}{title}_{item_id}"


def load_scripts(extension_dirs):
    """Import every ``scripts/*.py`` of each extension with its folder on sys.path while it loads."""
    scripts_data.clear()
    for basedir in extension_dirs:
        folder = os.path.join(basedir, "scripts")
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".py"):
                continue
            saved = sys.path
            try:
                sys.path = [basedir] + sys.path
                module = script_loading.load_module(os.path.join(folder, name))
            finally:
                sys.path = saved
            for obj in module.__dict__.values():
                if isinstance(obj, type) and issubclass(obj, Script) and obj is not Script:
                    scripts_data.append(ScriptClassData(obj, os.path.join(folder, name), basedir, module))


class ScriptRunner:
    def __init__(self):
        self.scripts = []
        self.alwayson_scripts = []
        self.selectable_scripts = []
        self.inputs = [None]

    def initialize_scripts(self, is_img2img):
        self.scripts.clear()
        self.alwayson_scripts.clear()
        for data in scripts_data:
            script = data.script_class()
            script.filename = data.path
            script.is_txt2img = not is_img2img
            script.is_img2img = is_img2img
            visibility = script.show(is_img2img)
            if visibility is AlwaysVisible:
                script.alwayson = True
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)

    def setup_ui(self):
        """Build every always-visible script's UI (inside the caller's gr.Blocks)."""
        self.inputs = [None]
        for script in self.alwayson_scripts:
            script.args_from = script.args_to = len(self.inputs)
            controls = script.ui(script.is_img2img)
            if controls:
                self.inputs += list(controls)
            script.args_to = len(self.inputs)
        return self.inputs

    def _each(self, p, method, *extra, **kwargs):
        """Call ``method`` of every always-visible script. Like the webui's ScriptRunner, an exception from a
        script is reported (``errors.report``) and the generation goes on without that script's step."""
        for script in self.alwayson_scripts:
            try:
                args = p.script_args[script.args_from:script.args_to]
                getattr(script, method)(p, *extra, *args, **kwargs)
            except Exception:
                errors.report(f"Error running {method}: {script.filename}", exc_info=True)

    def setup_scrips(self, p, *, is_ui=True):
        self._each(p, "setup")

    def before_process(self, p):
        self._each(p, "before_process")

    def process(self, p):
        self._each(p, "process")

    def before_process_batch(self, p, **kwargs):
        self._each(p, "before_process_batch", **kwargs)

    def process_batch(self, p, **kwargs):
        self._each(p, "process_batch", **kwargs)

    def postprocess_batch(self, p, images, **kwargs):
        for script in self.alwayson_scripts:
            try:
                args = p.script_args[script.args_from:script.args_to]
                script.postprocess_batch(p, *args, images=images, **kwargs)
            except Exception:
                errors.report(f"Error running postprocess_batch: {script.filename}", exc_info=True)

    def postprocess(self, p, processed):
        self._each(p, "postprocess", processed)

    def before_hr(self, p):
        self._each(p, "before_hr")


scripts_txt2img = ScriptRunner()
scripts_img2img = ScriptRunner()
