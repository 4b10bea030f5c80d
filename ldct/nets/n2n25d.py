"""N2N-2.5D (msr2au-fluoroscopy-unsupervised): self-supervised across adjacent slices.

A multi-scale recurrent attention U-Net (MSR2AU) teacher estimates the centre slice from its
neighbours alone (the paper's Noise2Noise across slices) or from its neighbours and a
recorrupted copy of the centre, trained against a target whose noise is independent of all its
inputs (see :mod:`ldct.train.n2n25d`). What ships is a "student" (:func:`n2n25d_student`): the
paper's lean single-pass network distilled from the teacher, or the teacher's own network with
the input's low band kept (the cpu preset's choice), optionally followed across the volume by
the paper's motion-compensated recursive filter (:mod:`ldct.recursive_filter`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldct.nets.blocks import KEEP_SIGMA, AttentionGate, HUPreservingDenoiser, shuffled_unet


class RecurrentResidualBlock(nn.Module):
    """R2 unit: a 1x1 projection, then a 3x3 conv applied ``steps`` times recurrently, residual."""

    def __init__(self, cin: int, cout: int, steps: int = 2) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1)
        self.conv = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, padding_mode="reflect"),
                                  nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.2, True))
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        h = self.conv(x)
        for _ in range(self.steps - 1):
            h = self.conv(x + h)
        return x + h


class MSR2AUNet(nn.Module):
    """Multi-scale (image pyramid fed to every level) recurrent residual attention U-Net.

    Input: a stack of slices (B, n, H, W) in network units; output: the centre slice.
    Runs at 1/factor resolution after a lossless pixel-unshuffle, like the students.
    """

    def __init__(self, slices: int = 5, base: int = 16, levels: int = 3,
                 factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        widths = [base * 2**k for k in range(levels)]
        self.down, c = nn.ModuleList(), 0
        for w in widths:
            self.down.append(RecurrentResidualBlock(c + slices * factor**2, w))
            c = w
        self.gates, self.up = nn.ModuleList(), nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.gates.append(AttentionGate(w, c, max(w // 2, 4)))
            self.up.append(RecurrentResidualBlock(c + w, w))
            c = w
        self.head = nn.Conv2d(c, factor**2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, h = [], None
        small = F.pixel_unshuffle(x, self.factor)  # half resolution, every pixel kept
        for k, block in enumerate(self.down):
            scaled = small if k == 0 else F.avg_pool2d(small, 2**k)
            h = block(scaled if h is None else torch.cat([F.avg_pool2d(h, 2), scaled], 1))
            feats.append(h)
        y = feats[-1]
        for gate, block, skip in zip(self.gates, self.up, reversed(feats[:-1])):
            fused = gate(skip, y)
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, fused], 1))
        return x.mean(1, keepdim=True) + F.pixel_shuffle(self.head(y), self.factor)


class SliceFilteredDenoiser(HUPreservingDenoiser):
    """A denoiser whose whole-volume output is then filtered across slices at inference
    (:func:`ldct.recursive_filter.recursive_filter` with weight ``recursive``; 0: none)."""

    def __init__(self, core: nn.Module, context: int, keep_sigma: float,
                 recursive: float) -> None:
        super().__init__(core, context, keep_sigma)
        self.recursive = recursive


class CentreNoise(nn.Module):
    """Turns a network that estimates the clean centre slice into one that predicts its noise
    (what :class:`HUPreservingDenoiser` subtracts), both in network units."""

    def __init__(self, estimator: nn.Module) -> None:
        super().__init__()
        self.estimator = estimator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1] // 2
        return x[:, c:c + 1] - self.estimator(x)


def n2n25d_student(context: int = 3, base: int = 16, levels: int = 3, res_blocks: int = 1,
                   keep_sigma: float = KEEP_SIGMA, arch: str = "unet",
                   recursive: float = 0.0) -> SliceFilteredDenoiser:
    """The distilled single-pass student that ships (sees the centre and its neighbours).

    ``keep_sigma``: the Gaussian (pixels) whose low band of the input is kept exactly.
    ``arch``: "unet", a lean pixel-shuffled U-Net, or "msr2au", the teacher's own network
    (then it can start from the teacher's weights; ``res_blocks`` is unused).
    ``recursive``: the weight of the recursive filter across the denoised volume's slices
    that inference then applies (0: none).
    """
    if arch == "msr2au":
        core: nn.Module = CentreNoise(MSR2AUNet(context, base, levels))
    elif arch == "unet":
        core = shuffled_unet(context, 1, base, levels, res_blocks)
    else:
        raise ValueError(f"unknown n2n25d student arch {arch!r}: use 'unet' or 'msr2au'")
    return SliceFilteredDenoiser(core, context, keep_sigma, recursive)
