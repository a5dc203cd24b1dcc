"""Cost of every method as a ratio to the text-encoder pass on the same batch, measured in one run.

For each encoder (the bundled one and a random-weight text model with CLIP
ViT-L/14 shapes, the cost of SD1.x's encoder) and each batch size, the
encoder pass and every method are timed interleaved (the order rotates every
repeat) after warm-up; the report gives medians and ratios. The sanitizer is
timed on embeddings that are already encoded, so a ratio is exactly what the
method adds on top of the encoder pass. The concept subspace is built once
per concept list before timing (it is cached in real use).
"""
from __future__ import annotations

import copy
import gc
import math
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..es_model import ESConfig, EmbeddingSanitizerNet
from ..prompt_detector import pooling_for
from ..sanitize import Sanitizer
from ..settings import Settings

BATCHES = (1, 8, 32)
METHODS = {
    "es": dict(mode="es"),
    "fast": dict(mode="safree", detector="fast"),
    "loo": dict(mode="safree", detector="loo", eos_policy="keep"),
    "es+fast": dict(mode="es+safree", detector="fast"),
}
LABELS = {"encode": "text-encoder pass", "es": "ES (learned)", "es_unedited": "ES, prompt left unedited",
          "es_pooled": "ES with the pooled stage (edited chunk encoded again)",
          "fast": "projection, fast detector", "loo": "SAFREE leave-one-out (released)",
          "es+fast": "ES then projection"}
TARGET_RATIO = 0.05
ES_TARGET_RATIO = 0.02  # issue 12: ES at or below 2% of a CLIP ViT-L/14-shaped text pass at batch 1
SAMPLE_PROMPTS = (  # written for this project: typical prompt lengths (about 8 to 40 tokens)
    "a photo of a cat sleeping on a wooden chair",
    "portrait of a woman on a beach at sunset, golden hour, 35mm film, shallow depth of field",
    "a knight in shining armour standing in a burning village, dramatic lighting, concept art, highly detailed",
    "an old fisherman mending nets in a small harbour, oil painting",
    "a futuristic city skyline at night with flying cars and neon signs, cyberpunk, 8k, trending on artstation",
    "two children flying a kite in a green park on a windy day",
    "still life of fruit and flowers on a marble table, baroque style, chiaroscuro, masterpiece",
    "a red bicycle leaning against a brick wall",
)


def vit_l14_text_encoder(seed: int = 0, device: str = "cpu"):
    """A random-weight CLIP text model with ViT-L/14 shapes (SD1.x's encoder: 12 layers, 768 wide)."""
    try:
        from ..encoders.clip_text import CLIPTextEncoder

        encoder = CLIPTextEncoder.tiny_random(width=768, layers=12, heads=12, seed=seed, intermediate=3072)
        encoder.name = "clip-vit-l14-text-random"
        encoder.model.to(device)
        return encoder
    except (ImportError, AttributeError, FileNotFoundError, TypeError) as exc:
        raise RuntimeError(f"cannot build the ViT-L/14-shaped CLIP text encoder: {exc}") from exc


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_mb() -> float:
    scale = 1024.0 if sys.platform != "darwin" else 1024.0 * 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _tensor_mb(*tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)) / 2 ** 20


def bench_encoder(encoder, es_model: EmbeddingSanitizerNet, *, batches=BATCHES, repeats: int = 7, warmup: int = 2,
                  concepts: str | None = None, methods=tuple(METHODS), progress=None,
                  loo_max_batch: int | None = None) -> dict:
    """Median times (ms) and ratios to the encoder pass for every batch size."""
    device = encoder.device
    sanitizer = Sanitizer(encoder, es_model.to(device).eval(), {"file": "bench"})
    base = Settings(concepts=concepts) if concepts else Settings()
    settings = {k: base.replace(**v) for k, v in METHODS.items() if k in methods}
    subspace = sanitizer.subspace(base.concept_list, device)  # built once, as cached in real use
    quiet = Sanitizer(encoder, unedited_copy(es_model).to(device).eval(), {"file": "bench"}) if "es" in methods \
        else None
    # weights without a pooled head skip the pooled stage on CLIP (EOS pooling); calibration fits one when it
    # helps on held-out prompts, and then every edited chunk is encoded once more: time that path too
    pooled = None
    if "es" in methods and es_model.pooled_head() is None and pooling_for(encoder.layout) == "eos":
        pooled = Sanitizer(encoder, with_pooled_head(es_model).to(device).eval(), {"file": "bench"})
    out = {"encoder": encoder.name, "width": encoder.width, "device": str(device), "batches": {},
           "memory": {"es_parameters_mb": round(_tensor_mb(*es_model.parameters(), *es_model.buffers()), 2),
                      "concept_subspace_mb": round(_tensor_mb(*[v for v in vars(subspace).values()]), 2),
                      "encoder_parameters_mb": round(_tensor_mb(*encoder.model.parameters()), 1)}}
    prompts = list(SAMPLE_PROMPTS)
    for batch in batches:
        texts = [prompts[i % len(prompts)] for i in range(batch)]
        ids = encoder.tokenize(texts).ids[:, : encoder.layout.chunk_length].to(device)
        with torch.inference_mode():
            tokens = encoder.encode(ids).tokens

        def run_encode():
            with torch.inference_mode():
                encoder.encode(ids)

        jobs = {"encode": run_encode}
        for key, s in settings.items():
            if key == "loo" and loo_max_batch is not None and batch > loo_max_batch:
                continue
            jobs[key] = (lambda s=s: sanitizer.sanitize(tokens, ids, encoder.layout, s))
        if quiet is not None:
            run_quiet = (lambda: quiet.sanitize(tokens, ids, encoder.layout, settings["es"]))
            if not bool((run_quiet().weights > 0).any()):  # timed only when it really edits nothing
                jobs["es_unedited"] = run_quiet
        if pooled is not None:
            run_pooled = (lambda: pooled.sanitize(tokens, ids, encoder.layout, settings["es"]))
            if bool((run_pooled().weights > 0).any()):  # timed only when it edits (and so encodes again)
                jobs["es_pooled"] = run_pooled
        times = {k: [] for k in jobs}
        peaks = {}
        order = list(jobs)
        for rep in range(warmup + repeats):
            rotated = order[rep % len(order):] + order[: rep % len(order)]
            for key in rotated:
                if device.type == "cuda" and rep == warmup:
                    torch.cuda.reset_peak_memory_stats(device)
                    before = torch.cuda.memory_allocated(device)
                _sync(device)
                start = time.perf_counter()
                jobs[key]()
                _sync(device)
                elapsed = time.perf_counter() - start
                if device.type == "cuda" and rep == warmup:
                    peaks[key] = round((torch.cuda.max_memory_allocated(device) - before) / 2 ** 20, 2)
                if rep >= warmup:
                    times[key].append(elapsed * 1000.0)
            if progress is not None:
                progress.update(1)
        medians = {k: statistics.median(v) for k, v in times.items()}
        words = int((ids != encoder.layout.pad_id).sum() / max(batch, 1)) - 2
        entry = {"median_ms": {k: round(v, 3) for k, v in medians.items()},
                 "ratio": {k: round(medians[k] / medians["encode"], 4) for k in medians if k != "encode"},
                 "skipped": [k for k in settings if k not in jobs],
                 "repeats": repeats, "mean_words": words}
        if peaks:
            entry["peak_extra_mb"] = peaks
        out["batches"][str(batch)] = entry
    out["memory"]["process_peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return out


def unedited_copy(model: EmbeddingSanitizerNet) -> EmbeddingSanitizerNet:
    """A copy of ``model`` that scores every word and chunk benign (its score head and whole-prompt detector
    biased far down): the path a prompt takes when nothing in it is edited, which is most prompts with
    calibrated weights (the shipped weights leave every COCO caption untouched). The random-init ES the
    bench uses for CLIP edits the sample prompts, so without this the bench times only the edited path."""
    quiet = copy.deepcopy(model)
    with torch.no_grad():
        quiet.score_head[-1].bias.sub_(40.0)
        quiet.prompt_platt[1].sub_(60.0)
    return quiet


def calibration_throughput(encoder, n_prompts: int = 200, epochs: int = 1) -> dict:
    """Time a small calibration with ``embedding_sanitizer.train.calibrate`` when it exists."""
    try:
        from .. import train
    except ImportError:
        return {"status": "train.py not available"}
    n_unsafe = n_prompts // 2
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        try:
            summary = train.calibrate(encoder, ["nudity", "violence"], Path(tmp) / "bench.safetensors",
                                      n_unsafe=n_unsafe, n_benign=n_prompts - n_unsafe, epochs=epochs,
                                      cache_dir=None, device=str(encoder.device))
        except Exception as exc:  # noqa: BLE001 - report, never crash the bench
            return {"status": f"calibrate failed: {type(exc).__name__}: {exc}"}
        wall = time.perf_counter() - start
    numbers = {k: v for k, v in (summary or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    timing = {k: v for k, v in (summary or {}).items() if isinstance(v, dict) and "time" in k.lower()}
    return {"status": "ok", "prompts": n_prompts, "epochs": epochs, "wall_s": round(wall, 2),
            "prompts_per_s": round(n_prompts / wall, 2), "ms_per_1000_prompts_s": round(wall / n_prompts * 1000, 1),
            "summary_numbers": numbers, "summary_timings": timing}


def with_pooled_head(model: EmbeddingSanitizerNet) -> EmbeddingSanitizerNet:
    """A copy of ``model`` that has a pooled-erasure head (zero weights: its prediction is only the fallback
    when a chunk cannot be encoded again), so that an edited chunk takes the pooled stage: one more encoder
    pass over the edited chunk without its edited words, then the detector correction."""
    headed = copy.deepcopy(model)
    headed.config.pooled_head = True
    return headed


def es_for(encoder, weights_path: Path | None) -> tuple[EmbeddingSanitizerNet, str]:
    """Shipped/selected weights when they fit the encoder, else a random ES of the default architecture."""
    if weights_path is not None:
        from ..weights_io import load_es

        model, meta = load_es(weights_path, encoder_name=encoder.name, encoder_fingerprint=encoder.fingerprint,
                              width=encoder.width)
        return model, weights_path.name
    config, source = ESConfig(width=encoder.width), "random init, ESConfig defaults"
    try:  # the architecture calibration builds by default, when train.py is there
        import inspect

        from .. import train

        defaults = {k: v.default for k, v in inspect.signature(train.calibrate).parameters.items()}
        config = ESConfig(width=encoder.width, hidden=int(defaults.get("hidden", config.hidden)),
                          layers=int(defaults.get("layers", config.layers)), heads=int(defaults.get("heads", config.heads)))
        source = f"random init, calibration's default architecture (hidden {config.hidden}, {config.layers} layers)"
    except Exception:  # noqa: BLE001 - fall back to the ESConfig defaults
        pass
    torch.manual_seed(0)
    model = EmbeddingSanitizerNet(config)
    # calibration always fits a whole-prompt detector: time one (random direction)
    model.config.prompt_pooling = pooling_for(encoder.layout)
    with torch.no_grad():
        model.prompt_direction.normal_()
        model.prompt_platt.copy_(torch.tensor([1.0, 0.0]))
    return model.eval(), source + ", with a whole-prompt detector"


def run_bench(encoders: list[tuple[str, object, Path | None]], *, repeats: int, warmup: int, batches=BATCHES,
              calibration: bool = True, calibration_prompts: int = 200, calibration_encoders: int | None = None,
              show_progress: bool = True, loo_max_batch: int | None = None) -> dict:
    from tqdm.auto import tqdm

    results = {"environment": {"torch": torch.__version__, "python": platform.python_version(),
                               "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
               "runs": [], "calibration": {}}
    total = len(encoders) * len(batches) * (warmup + repeats)
    with tqdm(total=total, desc="bench", unit="rep", disable=not show_progress) as bar:
        for label, encoder, weights in encoders:
            es_model, es_source = es_for(encoder, weights)
            bar.set_postfix_str(f"{label} on {encoder.device}")
            run = bench_encoder(encoder, es_model, batches=batches, repeats=repeats, warmup=warmup, progress=bar,
                                 loo_max_batch=loo_max_batch)
            run["label"] = label
            run["es_weights"] = es_source
            results["runs"].append(run)
            gc.collect()
    if calibration:
        for label, encoder, _ in encoders[:calibration_encoders]:
            results["calibration"][label] = calibration_throughput(encoder, calibration_prompts)
    results["targets"] = targets(results)
    return results


def targets(results: dict) -> list[dict]:
    out = []
    for run in results["runs"]:
        if "vit-l14" not in run["encoder"]:
            continue
        b1 = run["batches"].get("1")
        if not b1:
            continue
        for key, goal in (("es", TARGET_RATIO), ("fast", TARGET_RATIO), ("loo", None), ("es", ES_TARGET_RATIO),
                          ("es_unedited", ES_TARGET_RATIO), ("es_pooled", None)):
            if key not in b1["ratio"]:
                continue
            ratio = b1["ratio"].get(key)
            status = "measured" if goal is None else ("pass" if ratio is not None and ratio <= goal else "fail")
            out.append({"target": f"{LABELS[key]} at batch 1 on {run['label']}",
                        "goal": "as measured" if goal is None else f"<= {goal:.0%} of the encoder pass",
                        "value": ratio, "status": status})
    return out


def markdown(results: dict, command: str, date: str) -> str:
    env = results["environment"]
    lines = ["# Embedding Sanitizer: cost benchmark", "",
             f"Date {date} · torch {env['torch']} · {env['threads']} CPU threads · CUDA {'yes' if env['cuda'] else 'no'}",
             "", f"Command: `{command}`", "",
             "Each cell: median time of the method on already-encoded embeddings, as a share of the median "
             "text-encoder pass on the same batch (77-token chunks), measured interleaved in one run after warm-up.",
             "", "## Targets", "", "| target | goal | value | status |", "|---|---|---|---|"]
    for t in results.get("targets", []):
        value = "–" if t["value"] is None else f"{t['value']:.2%}"
        lines.append(f"| {t['target']} | {t['goal']} | {value} | {t['status'].upper()} |")
    for run in results["runs"]:
        keys = [k for k in LABELS if k != "encode" and k in next(iter(run["batches"].values()))["ratio"]]
        lines += ["", f"## {run['label']} ({run['encoder']}, width {run['width']}, {run['device']})", "",
                  f"ES weights: {run['es_weights']}. Memory: ES parameters {run['memory']['es_parameters_mb']} MB, "
                  f"concept subspace {run['memory']['concept_subspace_mb']} MB, encoder parameters "
                  f"{run['memory']['encoder_parameters_mb']} MB, process peak RSS "
                  f"{run['memory']['process_peak_rss_mb']} MB.", "",
                  "| batch | encoder pass (ms) | " + " | ".join(f"{LABELS[k]} (ms, ratio)" for k in keys) + " |",
                  "|---|---|" + "---|" * len(keys)]
        for batch, entry in run["batches"].items():
            cells = [f"{entry['median_ms'][k]:.2f} ({entry['ratio'][k]:.1%})" if k in entry["ratio"] else "not timed"
                     for k in keys]
            lines.append(f"| {batch} | {entry['median_ms']['encode']:.2f} | " + " | ".join(cells) + " |")
        peak = {b: e.get("peak_extra_mb") for b, e in run["batches"].items() if e.get("peak_extra_mb")}
        if peak:
            lines += ["", "Peak extra GPU memory per call (MB): " + "; ".join(
                f"batch {b}: " + ", ".join(f"{k} {v}" for k, v in p.items()) for b, p in peak.items())]
    if results.get("calibration"):
        lines += ["", "## Calibration throughput (small corpus, 1 epoch)", "",
                  "| encoder | status | prompts | wall (s) | prompts/s |", "|---|---|---|---|---|"]
        for label, c in results["calibration"].items():
            lines.append(f"| {label} | {c['status']} | {c.get('prompts', '–')} | {c.get('wall_s', '–')} | "
                         f"{c.get('prompts_per_s', '–')} |")
    return "\n".join(lines) + "\n"


def console(results: dict) -> str:
    lines = []
    for run in results["runs"]:
        lines.append(f"{run['label']} ({run['encoder']}, {run['device']}; ES: {run['es_weights']})")
        for batch, entry in run["batches"].items():
            cells = ", ".join(f"{k} {entry['ratio'][k]:.1%}" for k in entry["ratio"])
            lines.append(f"  batch {batch:>2}: encoder {entry['median_ms']['encode']:.1f} ms; added: {cells}")
    for label, c in results.get("calibration", {}).items():
        lines.append(f"calibration {label}: {c['status']}" + (f", {c['prompts_per_s']} prompts/s "
                                                             f"({c['wall_s']} s for {c['prompts']})"
                                                             if c.get("status") == "ok" else ""))
    lines.append("Targets:")
    for t in results.get("targets", []):
        value = "–" if t["value"] is None else f"{t['value']:.2%}"
        lines.append(f"  [{t['status'].upper():>8}] {t['target']}: {value} (goal {t['goal']})")
    return "\n".join(lines)
