"""Which text-encoder streams of a ComfyUI CLIP the sanitizer covers, and their chunk layouts.

ComfyUI's ``cond_stage_model`` is a family wrapper (``SD1ClipModel``,
``SDXLClipModel``, ``SD3ClipModel``, ``FluxClipModel``...) holding one inner
``SDClipModel`` per stream under a fixed attribute (``clip_l``, ``clip_g``,
``clip_h``, ``t5xxl``). Families are recognised by class name in the MRO so
that nothing here imports ComfyUI.
"""
from __future__ import annotations

from embedding_sanitizer.layout import SD1_CLIP_L, SD2_CLIP_H, SDXL_CLIP_G, SDXL_CLIP_L, T5, ChunkLayout

# family class name -> (family label, stream attributes it combines)
FAMILIES = {
    "SDXLRefinerClipModel": ("sdxl-refiner", ("clip_g",)),
    "SD2ClipModel": ("sd2", ("clip_h",)),
    "SDXLClipModel": ("sdxl", ("clip_l", "clip_g")),
    "SD3ClipModel": ("sd3", ("clip_l", "clip_g", "t5xxl")),
    "FluxClipModel": ("flux", ("clip_l", "t5xxl")),
    "SD1ClipModel": ("sd1", ("clip_l",)),
}

# What a family's conditioning carries that the sanitizer does not edit (stated in every report).
NOT_COVERED = {
    "sd1": ["pooled_output (CLIP-L pooled vector; SD1 UNets do not use it)"],
    "sd2": ["pooled_output (CLIP-H pooled vector; SD2 UNets do not use it)"],
    "sd3": ["t5xxl stream: training-free projection only (no learned ES weights for T5)"],
    "flux": ["t5xxl stream: training-free projection only (no learned ES weights for T5)"],
}

# Families whose diffusion model conditions on a pooled vector: the streams whose pooled
# output the family passes on, and what it is. Each stream's pooled output is sanitized in
# its own pooled concept span (``embedding_sanitizer.pooled``) before the family combines
# them, so SD3's CLIP-L + CLIP-G concatenation gets both halves cleaned separately.
POOLED = {
    "sdxl": (("clip_g",), "pooled_output (CLIP-G projected pooled vector, part of SDXL's 'vector' conditioning)"),
    "sdxl-refiner": (("clip_g",), "pooled_output (CLIP-G projected pooled vector)"),
    "sd3": (("clip_l", "clip_g"), "pooled_output (CLIP-L + CLIP-G pooled vectors, SD3's 'y' conditioning)"),
    "flux": (("clip_l",), "pooled_output (CLIP-L pooled vector, Flux's 'vector' conditioning)"),
}


def family_of(model) -> tuple[str | None, tuple[str, ...]]:
    """(family label, stream attributes) of a ``cond_stage_model``, or (None, ()) when unknown."""
    names = [cls.__name__ for cls in type(model).__mro__]
    for cls_name in names:
        if cls_name in FAMILIES:
            label, streams = FAMILIES[cls_name]
            if label == "sd1":
                # SD1ClipModel is also the base of single-stream wrappers with another clip name.
                clip_attr = getattr(model, "clip", "clip_l")
                if clip_attr != "clip_l":
                    return None, ()
            present = tuple(s for s in streams if getattr(model, s, None) is not None)
            return label, present
    return None, ()


def layout_for(family: str, stream: str, sub_model) -> ChunkLayout:
    """The core chunk layout of one stream, checked against the model's own special tokens."""
    special = dict(getattr(sub_model, "special_tokens", {}) or {})
    if stream == "t5xxl":
        base = T5
    elif stream == "clip_g":
        base = SDXL_CLIP_G
    elif stream == "clip_h":
        base = SD2_CLIP_H
    elif family == "sd1":
        base = SD1_CLIP_L
    else:
        base = SDXL_CLIP_L
    start, end, pad = special.get("start"), special.get("end", base.eos_id), special.get("pad", base.pad_id)
    if (start, end, pad) != (base.bos_id, base.eos_id, base.pad_id):
        # A variant with other special tokens: keep the stream covered with its real ids.
        base = ChunkLayout(f"{base.name}-custom", base.chunk_length if start is not None else None,
                           start, end, pad, base.mask_id)
    return base
