"""Overhead of a sanitized encode vs a plain one, in the real ComfyUI (CPU), SD1.5-shaped CLIP-L.

Run: python tests/comfyui/bench_encode.py   (from the repository root; not collected by pytest)
Prints medians over repeated CLIPTextEncode calls, after one warm-up encode (concept subspace cached).

``--concepts-only N [--repeats R] [--threads T]``: instead, the time from running the Embedding Sanitizer (CLIP)
node with a list of N concepts to the end of the first CLIPTextEncode through it (the concept list encoded
for the first time), median of R runs: on fresh caches (the neutral reference rows included) and for a second
list on the same encoder.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.comfyui import host  # noqa: E402
from tests.support.comfyui_tree import comfyui_root  # noqa: E402


def interleaved(fn_a, fn_b, repeats=15):
    """Median ms of a and b, measured alternately (the machine is shared: load changes over time)."""
    fn_a(), fn_b()
    times_a, times_b, ratios = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        fn_a()
        mid = time.perf_counter()
        fn_b()
        end = time.perf_counter()
        times_a.append((mid - start) * 1000)
        times_b.append((end - mid) * 1000)
        ratios.append((end - mid) / (mid - start))
    return statistics.median(times_a), statistics.median(times_b), statistics.median(ratios)


def concepts_only(pack, nodes, clip, n: int, repeats: int) -> dict:
    from embedding_sanitizer.concepts import DEFAULT_CACHE
    from embedding_sanitizer.evaluation.concept_bench import concept_list

    concepts = concept_list(n)
    node = pack.NODE_CLASS_MAPPINGS["EmbeddingSanitizerCLIP"]()
    settings = dict(enabled=True, mode="safree", preset="medium", intensity=1.0, weights="auto", detector="fast",
                    eos_policy="project", schedule="off")
    encode = nodes.CLIPTextEncode().encode

    def node_and_encode(listed):
        start = time.perf_counter()
        patched = node.patch(clip, concepts=", ".join(listed), **settings)[0]
        encode(patched, "a naked woman on a beach at sunset")
        return time.perf_counter() - start

    first, later = [], []
    for _ in range(repeats):
        DEFAULT_CACHE.clear()
        first.append(node_and_encode(concepts))
        later.append(node_and_encode(tuple(reversed(concepts))))
    import torch

    return {"host": "ComfyUI (in-process, CPU)", "encoder": "SD1.5 CLIP-L, random weights", "concepts": n,
            "repeats": repeats, "threads": torch.get_num_threads(), "load_average_1min": round(os.getloadavg()[0], 2),
            "first_list_s": round(statistics.median(first), 2), "later_list_s": round(statistics.median(later), 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts-only", type=int, default=None, metavar="N")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="es_bench_"))
    root = comfyui_root()
    host.prepare_tree(root)
    nodes = host.enter_inprocess(root, host.write_torchvision_placeholder(tmp / "tv"), tmp)
    pack = sys.modules[host.load_pack(nodes, tmp / "custom_nodes")]
    import comfy.sd
    import torch

    torch.set_num_threads(args.threads)
    ckpt = host.build_tiny_sd15(tmp / "tiny.safetensors")
    clip = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=False, output_clipvision=False)[1]
    if args.concepts_only is not None:
        print(json.dumps(concepts_only(pack, nodes, clip, args.concepts_only, args.repeats)))
        ckpt.unlink()
        return
    text = "a naked woman on a beach at sunset, photo, detailed, 35mm"
    encode = nodes.CLIPTextEncode().encode
    base = dict(enabled=True, mode="safree", preset="medium", intensity=1.0,
                concepts=pack.nodes.schema.settings_inputs()["concepts"][1]["default"], weights="auto",
                detector="fast", eos_policy="project", schedule="off")
    for detector in ("fast", "loo"):
        patched = pack.NODE_CLASS_MAPPINGS["EmbeddingSanitizerCLIP"]().patch(clip, **{**base, "detector": detector})[0]
        plain, sanitized, ratio = interleaved(lambda: encode(clip, text), lambda: encode(patched, text))
        print(f"detector {detector}: plain CLIPTextEncode {plain:.1f} ms, sanitized {sanitized:.1f} ms "
              f"(medians of 15 interleaved pairs); median per-pair ratio x{ratio:.2f}")
    ckpt.unlink()


if __name__ == "__main__":
    main()
