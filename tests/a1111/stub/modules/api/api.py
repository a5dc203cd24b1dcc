"""The generation API's script-argument handling (stand-in; requests are plain dicts)."""

from modules import processing, scripts, shared


class ApiError(Exception):
    def __init__(self, status_code, detail):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def init_default_script_args(script_runner):
    """Defaults: the values of each always-visible script's UI components (ui() is called again)."""
    import gradio as gr

    last = max([1] + [s.args_to or 0 for s in script_runner.scripts])
    args = [None] * last
    args[0] = 0
    with gr.Blocks():
        for script in script_runner.scripts:
            controls = script.ui(script.is_img2img)
            if controls:
                args[script.args_from:script.args_to] = [c.value for c in controls]
    return args


def init_script_args(request, default_script_args, script_runner):
    args = list(default_script_args)
    for name, payload in (request.get("alwayson_scripts") or {}).items():
        script = next((s for s in script_runner.alwayson_scripts if s.title().lower() == name.lower()), None)
        if script is None:
            raise ApiError(422, f"always on script {name} not found")
        given = payload.get("args", []) if isinstance(payload, dict) else []
        for i in range(min(script.args_to - script.args_from, len(given))):
            args[script.args_from + i] = given[i]
    return args


def _generate(request, runner, cls, **extra):
    request = dict(request)
    defaults = init_default_script_args(runner)
    script_args = init_script_args(request, defaults, runner)
    p = cls(sd_model=shared.sd_model, prompt=request.get("prompt", ""),
            negative_prompt=request.get("negative_prompt", ""), steps=request.get("steps", 4),
            batch_size=request.get("batch_size", 1), n_iter=request.get("n_iter", 1),
            override_settings=request.get("override_settings"), **extra)
    p.scripts = runner
    p.script_args = tuple(script_args)
    processed = processing.process_images(p)
    return {"images": processed.images, "parameters": request,
            "info": processed.js(), "p": p}


def set_config(request, forge=False):
    """``POST /sdapi/v1/options``. A1111's ``Api.set_config`` sets each option with ``is_api=True`` (so a
    ``restrict_api`` option is refused); Forge's ``sysinfo.set_config`` does not mark the call as coming from
    the API, so ``restrict_api`` is not checked there. Both save config.json afterwards."""
    for key, value in request.items():
        if value == shared.opts.data.get(key):
            continue
        shared.opts.set(key, value, is_api=not forge)
    shared.opts.save(shared.config_filename)
    return True


def get_config():
    """``GET /sdapi/v1/options``: every option's current value (defaults for options never saved)."""
    return {k: shared.opts.data.get(k, v.default) for k, v in shared.opts.data_labels.items()}


def text2imgapi(request):
    extra = {k: request[k] for k in ("enable_hr", "hr_prompt", "hr_negative_prompt") if k in request}
    return _generate(request, scripts.scripts_txt2img, processing.StableDiffusionProcessingTxt2Img, **extra)


def img2imgapi(request):
    return _generate(request, scripts.scripts_img2img, processing.StableDiffusionProcessingImg2Img,
                     init_images=request.get("init_images", []),
                     denoising_strength=request.get("denoising_strength", 0.75))
