"""ALDEN (alden-anatomy-aware): anatomy-aware discriminator + semantic contrastive learning.

The discriminator fuses PVM features of a reference normal-dose image through cross-attention
(queries from the discriminator's own features, keys/values from the reference), so it judges
realism tissue by tissue. The generator is the shared attention U-Net.
"""

from __future__ import annotations

import torch
from torch import nn

from ldct.nets.blocks import HUPreservingDenoiser, shuffled_unet
from ldct.nets.encoder import soft_tissue_window


def alden_generator(context: int = 1, base: int = 16, levels: int = 3,
                    res_blocks: int = 2) -> HUPreservingDenoiser:
    return HUPreservingDenoiser(shuffled_unet(context, 1, base, levels, res_blocks), context)


class CrossAttention(nn.Module):
    """Multi-head attention from discriminator features (queries) to reference PVM features."""

    def __init__(self, channels: int, ref_channels: int, heads: int = 4) -> None:
        super().__init__()
        self.ref = nn.Conv2d(ref_channels, channels, 1)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.norm(x.flatten(2).transpose(1, 2))
        kv = self.ref(ref).flatten(2).transpose(1, 2)
        fused, _ = self.attn(q, kv, kv, need_weights=False)
        return x + fused.transpose(1, 2).reshape(b, c, h, w)


class AnatomyAwareDiscriminator(nn.Module):
    """PatchGAN whose middle features attend to hierarchical PVM features of the reference."""

    def __init__(self, ref_widths: list[int], base: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, base, 4, 2, 1), nn.LeakyReLU(0.2, True),
                                  nn.Conv2d(base, 2 * base, 4, 2, 1),
                                  nn.InstanceNorm2d(2 * base, affine=True), nn.LeakyReLU(0.2, True))
        self.fuse = nn.ModuleList(CrossAttention(2 * base, w) for w in ref_widths)
        self.head = nn.Sequential(nn.Conv2d(2 * base, 4 * base, 4, 1, 1),
                                  nn.InstanceNorm2d(4 * base, affine=True), nn.LeakyReLU(0.2, True),
                                  nn.Conv2d(4 * base, 1, 4, 1, 1))

    def forward(self, hu: torch.Tensor, ref_feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.stem(soft_tissue_window(hu))
        for fuse, ref in zip(self.fuse, ref_feats):
            pooled = nn.functional.adaptive_avg_pool2d(ref, (8, 8))  # a fixed token budget
            x = fuse(x, pooled)
        return self.head(x)
