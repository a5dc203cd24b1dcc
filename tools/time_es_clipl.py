"""CPU cost of calibrating ES for a CLIP ViT-L/14-shaped text model (SD1.x), random weights.

    python tools/time_es_clipl.py [--prompts 400] [--threads 2]
    python tools/time_es_clipl.py --threads 2 --budget-run [SECONDS] [--host-padding]

The second form runs one whole ``calibrate`` with the default corpus under the hosts' default time
budget (``calibration_run.DEFAULT_TIME_BUDGET_S``) and reports its wall time and phases;
``--host-padding`` encodes every chunk at the full 77 tokens, as the ComfyUI and A1111 adapters do.

Reports: corpus encoding seconds per 1,000 corpus prompts (every unique chunk of
the unsafe, anchor and benign prompts), seconds per training step and per
epoch of the default corpus, a short real ``calibrate`` run, and the cost of
``apply_es`` against one CLIP-L text pass at batch 1 (the sanitizer must stay
within ~5% of it). Random weights have the real FLOPs; quality is meaningless.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedding_sanitizer.corpus import CorpusGenerator, tokenize_samples  # noqa: E402
from embedding_sanitizer.encoders.clip_text import CLIPTextEncoder  # noqa: E402
from embedding_sanitizer.es_model import ESConfig, EmbeddingSanitizerNet, apply_es  # noqa: E402
from embedding_sanitizer.layout import token_roles  # noqa: E402
from embedding_sanitizer.settings import DEFAULT_CONCEPTS  # noqa: E402
from embedding_sanitizer.calibration_run import DEFAULT_TIME_BUDGET_S  # noqa: E402
from embedding_sanitizer.train import calibrate, corpus_sizes, encode_chunks  # noqa: E402


def median_time(fn, repeats=7):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=400, help="corpus prompts to encode for the timing")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--budget-run", type=float, nargs="?", const=DEFAULT_TIME_BUDGET_S, default=None,
                    help="run one default calibration under this time budget (default: the hosts' default)")
    ap.add_argument("--host-padding", action="store_true", help="encode chunks at 77 tokens, as the hosts do")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    enc = CLIPTextEncoder.tiny_random(width=768, layers=12, heads=12, intermediate=3072)
    enc.name = "clip-vit-l14-random"
    if args.budget_run is not None:
        return budget_run(enc, args)
    gen = CorpusGenerator(list(DEFAULT_CONCEPTS), seed=0)
    n_u, n_b = corpus_sizes(gen, None, None)
    out = {"threads": torch.get_num_threads(), "default_corpus_prompts": n_u + n_b}
    samples = gen.generate(args.prompts // 2, args.prompts - args.prompts // 2)
    cs = tokenize_samples(samples, enc)
    t = time.perf_counter()
    encode_chunks(enc, cs.chunks)
    dt = time.perf_counter() - t
    out["encode"] = {"prompts": args.prompts, "chunks": len(cs.chunks), "seconds": round(dt, 1),
                     "s_per_1000_prompts": round(1000 * dt / args.prompts, 1),
                     "s_per_1000_chunks": round(1000 * dt / len(cs.chunks), 1)}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        summary = calibrate(enc, list(DEFAULT_CONCEPTS), Path(tmp) / "es.safetensors", n_unsafe=args.prompts // 2,
                            n_benign=args.prompts - args.prompts // 2, epochs=2, cache_dir=None)
        steps = summary["examples"] * 0.9 / 128 * summary["epochs"]
        out["calibrate_small"] = {"time_s": summary["time_s"], "examples": summary["examples"],
                                  "train_s_per_step_est": round(summary["time_s"]["train"] / max(1, steps), 3)}
        full_examples = summary["examples"] * (n_u + n_b) / args.prompts
        per_epoch = summary["time_s"]["train"] / summary["epochs"] * full_examples / summary["examples"]
        out["default_corpus_estimate"] = {"encode_s": round(out["encode"]["s_per_1000_prompts"] * (n_u + n_b) / 1000),
                                          "train_s_per_epoch": round(per_epoch), "train_s_10_epochs": round(10 * per_epoch)}
    # apply_es vs one CLIP-L pass at batch 1 (77 tokens)
    model = EmbeddingSanitizerNet(ESConfig(width=768, hidden=128, layers=2)).eval()
    ids = enc.tokenize(["a photo of a woman on a beach, highly detailed"]).ids
    roles = token_roles(ids, enc.layout)
    rows = enc.encode(ids).tokens
    t_enc = median_time(lambda: enc.encode(ids))
    t_es = median_time(lambda: apply_es(model, rows, roles, 1.0, 77))
    out["cost_batch1"] = {"clip_pass_ms": round(1000 * t_enc, 2), "apply_es_ms": round(1000 * t_es, 2),
                          "ratio": round(t_es / t_enc, 4)}
    print(json.dumps(out, indent=2))
    return 0


class HostPadded:
    """Encodes every chunk padded to the full chunk length (what the host adapters do), then cuts it back."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_chunks(self, ids):
        from embedding_sanitizer.encoders.base import EncoderOutput

        length, full = ids.shape[1], self.inner.layout.chunk_length
        if length < full:
            ids = torch.cat([ids, ids.new_full((ids.shape[0], full - length), self.inner.layout.pad_id)], 1)
        out = self.inner.encode_chunks(ids)
        return EncoderOutput(out.tokens[:, :length], out.pooled)


def budget_run(enc, args) -> int:
    import platform

    if args.device != "cpu":
        enc.model.to(args.device)
    encoder = HostPadded(enc) if args.host_padding else enc
    lines = []

    def log_line(text):
        lines.append(text)
        print(text, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = calibrate(encoder, list(DEFAULT_CONCEPTS), Path(tmp) / "es.safetensors",
                            time_budget_s=args.budget_run, cache_dir=None, device=args.device, log_line=log_line)
        wall = time.perf_counter() - started
    summary.pop("history", None)
    print(json.dumps({"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                      "load_average_1min": round(os.getloadavg()[0], 2), "device": args.device,
                      "machine": platform.processor() or platform.machine(), "host_padding": args.host_padding,
                      "budget_s": args.budget_run, "wall_s": round(wall, 1), "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
