"""VAGAN (vagan-visual-attention-gan): visual-attention GAN trained on simulated pairs.

A recurrent attentive block (conv + ConvLSTM, T=4) predicts where the noise is; a RED-style
encoder-decoder with additive shortcuts takes the low-dose image with that map and outputs the
result at 1/4, 1/2 and full scale (multi-scale loss); an attentive discriminator must reproduce
the map on denoised images and nothing on real normal-dose ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldct.nets.blocks import ConvLSTMCell, HUPreservingDenoiser, ResBlock

ATTENTION_STEPS = 4


class AttentiveRecurrentBlock(nn.Module):
    """T recurrent steps, each: [image, previous map] -> convs -> ConvLSTM -> new map."""

    def __init__(self, width: int = 8, steps: int = ATTENTION_STEPS, channels: int = 1) -> None:
        super().__init__()
        self.steps = steps
        self.body = nn.Sequential(nn.Conv2d(2 * channels, width, 3, padding=1), nn.ReLU(True),
                                  ResBlock(width))
        self.lstm = ConvLSTMCell(width, width)
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        m = torch.full_like(x, 0.5)
        state, maps = None, []
        for _ in range(self.steps):
            h, state = self.lstm(self.body(torch.cat([x, m], 1)), state)
            m = torch.sigmoid(self.out(h))
            maps.append(m)
        return maps


def _upsampler(channels: int, mode: str) -> nn.Module:
    if mode == "transpose":
        return nn.ConvTranspose2d(channels, channels, 4, 2, 1)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"),
                         nn.Conv2d(channels, channels, 3, padding=1))


class REDGenerator(nn.Module):
    """Conv encoder / upsampling decoder with additive (RED-CNN style) shortcuts, three outputs.

    ``upsample="bilinear"`` upsamples then convolves; ``"transpose"`` uses RED-CNN's
    deconvolutions, which left a checkerboard texture after the GAN stage.
    """

    def __init__(self, cin: int = 2, base: int = 32, cout: int = 1,
                 upsample: str = "bilinear") -> None:
        super().__init__()
        act = nn.LeakyReLU(0.2, True)
        self.e1 = nn.Sequential(nn.Conv2d(cin, base, 3, padding=1), act)
        self.e2 = nn.Sequential(nn.Conv2d(base, base, 3, stride=2, padding=1), act)
        self.e3 = nn.Sequential(nn.Conv2d(base, base, 3, stride=2, padding=1), act,
                                nn.Conv2d(base, base, 3, padding=1), act)
        self.d3 = nn.Sequential(_upsampler(base, upsample), act)
        self.d2 = nn.Sequential(_upsampler(base, upsample), act)
        self.d1 = nn.Sequential(nn.Conv2d(base, base, 3, padding=1), act)
        self.heads = nn.ModuleList(nn.Conv2d(base, cout, 3, padding=1) for _ in range(3))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Noise estimates at 1/4, 1/2 and full resolution."""
        f1 = self.e1(x)
        f2 = self.e2(f1)
        f3 = self.e3(f2)
        u2 = self.d3(f3) + f2
        u1 = self.d2(u2) + f1
        u0 = self.d1(u1) + f1
        return [self.heads[0](f3), self.heads[1](u2), self.heads[2](u0)]


class VAGANCore(nn.Module):
    """Attentive block + generator at 1/factor resolution (pixel-unshuffled, lossless).

    ``forward_all`` returns the T attention maps and the 1/4, 1/2, full-scale noise estimates
    (full image resolution); ``forward`` gives the full-scale noise for inference.
    """

    def __init__(self, width: int = 8, base: int = 32, factor: int = 2,
                 upsample: str = "bilinear") -> None:
        super().__init__()
        self.factor = factor
        f2 = factor * factor
        self.attention = AttentiveRecurrentBlock(width, channels=f2)
        self.generator = REDGenerator(2 * f2, base, f2, upsample)

    def forward_all(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        small = F.pixel_unshuffle(x, self.factor)
        maps = self.attention(small)
        noises = self.generator(torch.cat([small, maps[-1]], 1))
        return ([F.pixel_shuffle(m, self.factor) for m in maps],
                [F.pixel_shuffle(n, self.factor) for n in noises])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = F.pixel_unshuffle(x, self.factor)
        maps = self.attention(small)
        return F.pixel_shuffle(self.generator(torch.cat([small, maps[-1]], 1))[-1], self.factor)


def vagan_generator(width: int = 8, base: int = 32,
                    upsample: str = "bilinear") -> HUPreservingDenoiser:
    return HUPreservingDenoiser(VAGANCore(width, base, upsample=upsample), context=1)


class AttentiveDiscriminator(nn.Module):
    """Discriminator that predicts an attention map mid-way and weights its features by it."""

    def __init__(self, base: int = 16) -> None:
        super().__init__()
        act = nn.LeakyReLU(0.2, True)
        self.features = nn.Sequential(nn.Conv2d(1, base, 4, 2, 1), act,
                                      nn.Conv2d(base, 2 * base, 4, 2, 1), act)
        self.attention = nn.Conv2d(2 * base, 1, 3, padding=1)
        self.head = nn.Sequential(nn.Conv2d(2 * base, 4 * base, 4, 2, 1), act,
                                  nn.Conv2d(4 * base, 1, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        m = torch.sigmoid(self.attention(f))
        return self.head(f * m), m


def noise_mask(low: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """VAGAN's binary attention target: 1 where |LD - ND| exceeds its image mean."""
    r = (low - normal).abs()
    return (r > r.mean(dim=(-2, -1), keepdim=True)).to(low.dtype)


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    return x if factor == 1 else F.avg_pool2d(x, factor)
