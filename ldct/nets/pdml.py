"""PDML (patchwise-deep-metric-learning): a generator trained with a patch-wise metric loss.

Embeddings of patches at the same location of the input and output are pulled together (same
anatomy); the loss that pushes others apart is chosen by the trainer (`ldct.train.pdml`: the
paper's same-noise-level negatives, or CUT's output-input ones). The generator's own encoder
provides the features; small MLP heads project them (the authors' 1x1-conv heads). The output
keeps the input's band below a 2-pixel Gaussian (`HUPreservingDenoiser`), where the authors'
code keeps the input's db3 wavelet approximation at level 6 and denoises the detail bands.
"""

from __future__ import annotations

import torch
from torch import nn

from ldct.nets.blocks import HUPreservingDenoiser, shuffled_unet


def pdml_generator(context: int = 1, base: int = 16, levels: int = 3,
                   res_blocks: int = 2) -> HUPreservingDenoiser:
    """The deployable generator (the CT-number preserving wrapper keeps the low band)."""
    return HUPreservingDenoiser(shuffled_unet(context, 1, base, levels, res_blocks, gates=False),
                                context)


class PatchProjector(nn.Module):
    """Per-level MLP heads that map sampled encoder features to unit-norm embeddings."""

    def __init__(self, widths: list[int], dim: int = 64) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(w, dim), nn.ReLU(), nn.Linear(dim, dim))
                                   for w in widths)

    def forward(self, feats: list[torch.Tensor], index: list[torch.Tensor]) -> list[torch.Tensor]:
        """Embed ``feats[l]`` (B, C, H, W) at flat positions ``index[l]`` -> (B, N, dim)."""
        out = []
        for head, f, idx in zip(self.heads, feats, index):
            flat = f.flatten(2).transpose(1, 2)  # B, HW, C
            picked = flat[:, idx]
            out.append(nn.functional.normalize(head(picked), dim=-1))
        return out
