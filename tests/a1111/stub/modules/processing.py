"""Processing objects and the generation loop (stand-in; sampling records the conditioning per step).

Faithful where it matters for a safety extension:

* ``process_images`` applies ``override_settings`` with ``opts.set(..., is_api=True)`` and afterwards puts back
  only the options that were already in ``opts.data`` (i.e. in config.json or set before): an option that was
  never saved keeps the overridden value for every later generation, as in the webui.
* script callbacks go through ``ScriptRunner``, which reports and swallows their exceptions;
* the batch loop (text encoding included) runs under a grad-free mode: ``torch.no_grad()`` in A1111,
  ``torch.inference_mode()`` in Forge. ``GRAD_FREE`` selects it; the stricter inference mode is the default.
"""
import json

import torch
from PIL import Image

from modules import devices, infotext_utils, prompt_parser, script_callbacks, shared


class Processed:
    def __init__(self, p, images, infotexts):
        self.images = images
        self.infotexts = infotexts
        self.info = infotexts[0] if infotexts else ""
        self.prompt = p.prompt
        self.all_prompts = p.all_prompts
        self.comments = "".join(f"{c}\n" for c in p.comments)
        self.extra_generation_params = p.extra_generation_params  # the same dict, as in the webui

    def js(self):
        """The API's JSON ``info``: like the webui, values JSON cannot encode (callables) become ``null``."""
        return json.dumps({"prompt": self.all_prompts[0] if self.all_prompts else self.prompt,
                           "all_prompts": self.all_prompts, "infotexts": self.infotexts,
                           "extra_generation_params": self.extra_generation_params}, default=lambda o: None)


class StableDiffusionProcessing:
    cached_uc = [None, None]
    cached_c = [None, None]

    def __init__(self, sd_model=None, prompt="", negative_prompt="", steps=4, batch_size=1, n_iter=1, width=64,
                 height=64, seed=1, override_settings=None, override_settings_restore_afterwards=True, **_):
        self.sd_model = sd_model
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.steps = steps
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.width = width
        self.height = height
        self.seed = seed
        self.override_settings = dict(override_settings or {})
        self.override_settings_restore_afterwards = override_settings_restore_afterwards
        self.extra_generation_params = {}
        self.comments = {}
        self.scripts = None
        self.script_args = ()
        self.extra_network_data = None
        self.c = self.uc = None
        self.denoiser_conds = []
        self.denoiser_steps = []
        self.cached_uc = type(self).cached_uc  # bound to the shared class-level lists
        self.cached_c = type(self).cached_c

    def comment(self, text):
        self.comments[text] = 1

    def cached_params(self, required_prompts, steps, hires_steps=None):
        opts = shared.opts
        return (tuple(required_prompts), steps, hires_steps, opts.use_old_scheduling, opts.CLIP_stop_at_last_layers,
                id(shared.sd_model), self.extra_network_data, opts.sdxl_crop_left, opts.sdxl_crop_top, self.width,
                self.height, opts.emphasis)

    def get_conds_with_caching(self, function, required_prompts, steps, caches, hires_steps=None):
        """Cache key: prompts and model settings only -- extension state is not part of it."""
        params = self.cached_params(required_prompts, steps, hires_steps)
        for cache in caches:
            if cache[0] is not None and cache[0] == params:
                return cache[1]
        cache = caches[0]
        with devices.autocast():
            cache[1] = function(shared.sd_model, required_prompts, steps, hires_steps, shared.opts.use_old_scheduling)
        cache[0] = params
        return cache[1]

    def setup_conds(self):
        prompts = prompt_parser.SdConditioning(self.prompts, width=self.width, height=self.height)
        negatives = prompt_parser.SdConditioning(self.negative_prompts, width=self.width, height=self.height,
                                                 is_negative_prompt=True)
        self.uc = self.get_conds_with_caching(prompt_parser.get_learned_conditioning, negatives, self.steps,
                                              [self.cached_uc])
        self.c = self.get_conds_with_caching(prompt_parser.get_multicond_learned_conditioning, prompts, self.steps,
                                             [self.cached_c])

    def denoise(self, c, uc, steps=None):
        """A sampling loop without a model: one denoiser call per step, through on_cfg_denoiser.

        Per step the conditioning is rebuilt for that step (prompt schedules) as a new batch,
        handed to the callbacks as ``CFGDenoiserParams`` (``sampling_step`` 0..steps-1,
        ``total_sampling_steps``), and what the callbacks leave in ``text_cond``/``text_uncond``
        is what the model would get. ``denoiser_conds`` keeps step 0 of each pass (base, hires),
        ``denoiser_steps`` every step of each pass.
        """
        steps = steps or self.steps
        seen = []
        for step in range(steps):
            _, cond = prompt_parser.reconstruct_multicond_batch(c, step)
            uncond = prompt_parser.reconstruct_cond_batch(uc, step)
            params = script_callbacks.CFGDenoiserParams(None, None, None, step, steps, cond, uncond)
            script_callbacks.cfg_denoiser_callback(params)
            seen.append((params.text_cond, params.text_uncond))
        self.denoiser_conds.append(seen[0])
        self.denoiser_steps.append(seen)

    def sample(self):
        self.denoise(self.c, self.uc)

    def close(self):
        if not shared.opts.persistent_cond_cache:
            StableDiffusionProcessing.cached_c = [None, None]
            StableDiffusionProcessing.cached_uc = [None, None]


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    cached_hr_uc = [None, None]
    cached_hr_c = [None, None]

    def __init__(self, enable_hr=False, hr_prompt="", hr_negative_prompt="", **kwargs):
        super().__init__(**kwargs)
        self.enable_hr = enable_hr
        self.hr_prompt = hr_prompt
        self.hr_negative_prompt = hr_negative_prompt
        self.hr_c = self.hr_uc = None
        self.cached_hr_uc = StableDiffusionProcessingTxt2Img.cached_hr_uc
        self.cached_hr_c = StableDiffusionProcessingTxt2Img.cached_hr_c

    def init_hires_infotext(self):
        """The webui's own per-image callables for the hires prompts (``null`` in the JSON ``info``)."""
        def hires_prompt(p, index, **_):
            return p.all_hr_prompts[index] if p.all_hr_prompts[index] != p.all_prompts[index] else None

        self.extra_generation_params["Hires prompt"] = hires_prompt

    def setup_conds(self):
        super().setup_conds()
        self.hr_c = self.hr_uc = None
        if self.enable_hr:
            self.calculate_hr_conds()

    def calculate_hr_conds(self):
        hr_prompts = prompt_parser.SdConditioning(self.hr_prompts, width=self.width, height=self.height)
        hr_negatives = prompt_parser.SdConditioning(self.hr_negative_prompts, width=self.width,
                                                    height=self.height, is_negative_prompt=True)
        self.hr_uc = self.get_conds_with_caching(prompt_parser.get_learned_conditioning, hr_negatives, self.steps,
                                                 [self.cached_hr_uc, self.cached_uc], self.steps)
        self.hr_c = self.get_conds_with_caching(prompt_parser.get_multicond_learned_conditioning, hr_prompts,
                                                self.steps, [self.cached_hr_c, self.cached_c], self.steps)

    def sample(self):
        super().sample()
        if self.enable_hr:
            if self.scripts is not None:
                self.scripts.before_hr(self)
            self.denoise(self.hr_c, self.hr_uc)


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    def __init__(self, init_images=None, denoising_strength=0.75, **kwargs):
        super().__init__(**kwargs)
        self.init_images = init_images or []
        self.denoising_strength = denoising_strength


def create_infotext(p, all_prompts, all_seeds, all_subseeds, comments=None, iteration=0, position_in_batch=0,
                    use_main_prompt=False, index=None, all_negative_prompts=None):
    if index is None:
        index = position_in_batch + iteration * p.batch_size
    skip = shared.opts.CLIP_stop_at_last_layers
    generation_params = {
        "Steps": p.steps, "Sampler": "Euler", "CFG scale": 7.0, "Seed": all_seeds[index],
        "Size": f"{p.width}x{p.height}", "Model": "stub", "Clip skip": None if skip <= 1 else skip,
        "Denoising strength": getattr(p, "denoising_strength", None),
        **p.extra_generation_params, "Version": "stub-1.10.1",
    }
    for key, value in list(generation_params.items()):
        if isinstance(value, list):
            generation_params[key] = value[index]
        elif callable(value):
            generation_params[key] = value(**locals())
    text = ", ".join(k if k == v else f"{k}: {infotext_utils.quote(v)}"
                     for k, v in generation_params.items() if v is not None)
    negative = (all_negative_prompts or p.all_negative_prompts)[index]
    negative_text = f"\nNegative prompt: {negative}" if negative else ""
    return f"{all_prompts[index]}{negative_text}\n{text}".strip()


GRAD_FREE = torch.inference_mode  # Forge; A1111 1.10 uses torch.no_grad


def process_images(p):
    if p.scripts is not None:
        p.scripts.before_process(p)
    stored = {k: shared.opts.data[k] for k in p.override_settings if k in shared.opts.data}
    try:
        for key, value in p.override_settings.items():
            shared.opts.set(key, value, is_api=True, run_callbacks=False)
        # The generation (scripts' process/process_batch, conditioning, sampling) runs without autograd. The
        # stand-in uses torch.inference_mode(), the stricter of the two modes a host may use (torch.no_grad() is
        # the other): tensors made under it cannot enter autograd later, so code that works here works in both.
        with torch.inference_mode():
            return process_images_inner(p)
    finally:
        if p.override_settings_restore_afterwards:
            for key, value in stored.items():
                setattr(shared.opts, key, value)


def _per_image(value, count):
    return list(value) if isinstance(value, list) else [value] * count


def process_images_inner(p):
    total = p.batch_size * p.n_iter
    p.all_prompts = _per_image(p.prompt, total)
    p.all_negative_prompts = _per_image(p.negative_prompt, total)
    p.all_seeds = [p.seed + i for i in range(total)]
    p.all_subseeds = list(p.all_seeds)
    if isinstance(p, StableDiffusionProcessingTxt2Img):
        p.all_hr_prompts = _per_image(p.hr_prompt or p.prompt, total)
        p.all_hr_negative_prompts = _per_image(p.hr_negative_prompt or p.negative_prompt, total)
        if p.enable_hr:
            p.init_hires_infotext()
    if p.scripts is not None:
        p.scripts.process(p)
    images, infotexts = [], []
    with GRAD_FREE():
        _batches(p, images, infotexts)
    res = Processed(p, images, infotexts)
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    p.close()
    return res


def _batches(p, images, infotexts):
    for n in range(p.n_iter):
        p.iteration = n
        window = slice(n * p.batch_size, (n + 1) * p.batch_size)
        p.prompts, p.negative_prompts = p.all_prompts[window], p.all_negative_prompts[window]
        p.seeds, p.subseeds = p.all_seeds[window], p.all_subseeds[window]
        if isinstance(p, StableDiffusionProcessingTxt2Img):
            p.hr_prompts, p.hr_negative_prompts = p.all_hr_prompts[window], p.all_hr_negative_prompts[window]
        if p.scripts is not None:
            p.scripts.before_process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
            p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
        p.setup_conds()
        p.sample()
        if p.scripts is not None:
            p.scripts.postprocess_batch(p, None, batch_number=n)
        for i in range(p.batch_size):
            images.append(Image.new("RGB", (8, 8)))
            infotexts.append(create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, None, n, i))
