"""SDXL conditioning: the conditioner's dict {crossattn, vector} (stand-in)."""
import torch

from modules import devices, shared


def get_learned_conditioning(self, batch):
    for embedder in self.conditioner.embedders:
        embedder.ucg_rate = 0.0
    width = getattr(batch, "width", 1024) or 1024
    height = getattr(batch, "height", 1024) or 1024
    negative = getattr(batch, "is_negative_prompt", False)
    n = len(batch)
    conds = {
        "txt": batch,
        "original_size_as_tuple": torch.tensor([height, width], device=devices.device).repeat(n, 1),
        "crop_coords_top_left": torch.tensor([shared.opts.sdxl_crop_top, shared.opts.sdxl_crop_left],
                                             device=devices.device).repeat(n, 1),
        "target_size_as_tuple": torch.tensor([height, width], device=devices.device).repeat(n, 1),
    }
    force_zero = ["txt"] if negative and all(x == "" for x in batch) else []
    return self.conditioner(conds, force_zero_embeddings=force_zero)
