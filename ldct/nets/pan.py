"""PAN (pan-cyclegan-liver-ldct): Cycle-GAN whose generators are attention U-Nets.

U-Net for multi-scale features, attention gates fusing the skips, residual blocks transforming
the bottleneck; trained unpaired with cycle, adversarial, identity and perceptual losses.
"""

from __future__ import annotations

from ldct.nets.blocks import HUPreservingDenoiser, shuffled_unet


def pan_generator(context: int = 1, base: int = 16, levels: int = 3,
                  res_blocks: int = 2) -> HUPreservingDenoiser:
    """One direction of the cycle (low -> normal dose, or back)."""
    core = shuffled_unet(context, 1, base, levels, res_blocks, gates=True)
    return HUPreservingDenoiser(core, context)
