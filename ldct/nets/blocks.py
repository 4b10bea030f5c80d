"""Building blocks shared by the denoisers: conv blocks, residual blocks, attention gates,
ConvLSTM, PatchGAN discriminators, and the HU-preserving output wrapper."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HU_OFFSET, HU_SCALE = 1000.0, 2000.0  # network units: (HU + 1000) / 2000, the same everywhere
KEEP_SIGMA = 2.0  # pixels: the input band below this Gaussian passes a denoiser untouched


def hu_to_net(hu: torch.Tensor) -> torch.Tensor:
    """HU -> the networks' normalized units (air 0, water 0.5)."""
    return (hu + HU_OFFSET) / HU_SCALE


def net_to_hu(x: torch.Tensor) -> torch.Tensor:
    """The networks' normalized units -> HU."""
    return x * HU_SCALE - HU_OFFSET


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions with instance norm and leaky ReLU."""

    def __init__(self, cin: int, cout: int, norm: bool = True) -> None:
        layers: list[nn.Module] = []
        for c in (cin, cout):
            layers.append(nn.Conv2d(c, cout, 3, padding=1, padding_mode="reflect"))
            if norm:
                layers.append(nn.InstanceNorm2d(cout, affine=True))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Residual block (conv-norm-act-conv-norm + identity), the bottleneck of PAN."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect"),
            nn.InstanceNorm2d(channels, affine=True), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect"),
            nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al.): the decoder signal weights the skip features."""

    def __init__(self, skip: int, gate: int, inner: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(skip, inner, 1)
        self.phi = nn.Conv2d(gate, inner, 1)
        self.psi = nn.Conv2d(inner, 1, 1)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        g = F.interpolate(self.phi(gate), size=skip.shape[-2:], mode="bilinear",
                          align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(self.theta(skip) + g)))
        return skip * alpha


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell: the recurrent unit of VAGAN's attentive block and MSR2AU."""

    def __init__(self, cin: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(cin + hidden, 4 * hidden, 3, padding=1)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = torch.chunk(self.gates(torch.cat([x, h], 1)), 4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class AttentionUNet(nn.Module):
    """U-Net with attention-gated skips and residual blocks at the bottleneck.

    ``levels`` resolutions starting at ``base`` channels; input/output channel counts are free.
    The encoder features are returned by :meth:`encode` for patch-wise losses.
    """

    def __init__(self, cin: int = 1, cout: int = 1, base: int = 16, levels: int = 3,
                 res_blocks: int = 2, gates: bool = True) -> None:
        super().__init__()
        widths = [base * 2**k for k in range(levels)]
        self.down = nn.ModuleList()
        c = cin
        for w in widths:
            self.down.append(ConvBlock(c, w))
            c = w
        self.bottleneck = nn.Sequential(*[ResBlock(c) for _ in range(res_blocks)])
        self.up = nn.ModuleList()
        self.gates = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.gates.append(AttentionGate(w, c, max(w // 2, 4)) if gates else nn.Identity())
            self.up.append(ConvBlock(c + w, w))
            c = w
        self.head = nn.Conv2d(c, cout, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features at every level (full resolution first)."""
        feats = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else F.avg_pool2d(x, 2))
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encode(x)
        y = self.bottleneck(feats[-1])
        for gate, block, skip in zip(self.gates, self.up, reversed(feats[:-1])):
            fused = gate(skip, y) if isinstance(gate, AttentionGate) else skip
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, fused], 1))
        return self.head(y)


class Shuffled(nn.Module):
    """Runs a core at 1/factor resolution losslessly: pixel-unshuffle in, pixel-shuffle out.

    Cuts the cost of full-resolution convolutions by factor^2 while every input pixel still
    reaches the network (as channels): the way to keep a 512x512 slice well under a second
    on a CPU.
    """

    def __init__(self, core: nn.Module, factor: int = 2) -> None:
        super().__init__()
        self.core, self.factor = core, factor

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.core.encode(F.pixel_unshuffle(x, self.factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.core(F.pixel_unshuffle(x, self.factor)), self.factor)


def shuffled_unet(cin: int, cout: int, base: int, levels: int, res_blocks: int,
                  gates: bool = True, factor: int = 2) -> Shuffled:
    """An attention U-Net working at 1/factor resolution (see :class:`Shuffled`)."""
    f2 = factor * factor
    return Shuffled(AttentionUNet(cin * f2, cout * f2, base, levels, res_blocks, gates), factor)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator: a map of real/fake logits, one per ~overlapping patch."""

    def __init__(self, cin: int = 1, base: int = 16, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(cin, base, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = base
        for k in range(1, layers):
            w = base * min(2**k, 8)
            mods += [nn.Conv2d(c, w, 4, 2 if k < layers - 1 else 1, 1),
                     nn.InstanceNorm2d(w, affine=True), nn.LeakyReLU(0.2, True)]
            c = w
        self.features = nn.Sequential(*mods)
        self.head = nn.Conv2d(c, 1, 4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def gaussian_lowpass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (reflect padding): the low-frequency band of ``x``."""
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class HUPreservingDenoiser(nn.Module):
    """Wraps a core network that predicts the noise of the centre slice, in network units.

    Output HU = input HU - highpass(predicted noise) * gain * strength: the low-frequency band
    of the input is kept exactly (the CT-number preserving idea of the metric-learning paper),
    so a denoiser cannot shift mean CT numbers, only remove high-frequency content. ``gain``
    is the share of its estimate a trained network removes at full strength: 1 unless a
    calibration on training slabs (``benchmarks/calibrate_gain.py``, stored in model.pt) found
    that it systematically removes too much or too little.
    """

    def __init__(self, core: nn.Module, context: int = 1, keep_sigma: float = KEEP_SIGMA) -> None:
        super().__init__()
        self.core, self.context, self.keep_sigma = core, context, keep_sigma
        self.gain = 1.0

    def centre(self, hu: torch.Tensor) -> torch.Tensor:
        """The centre slice (B, 1, H, W) of a (B, context, H, W) stack."""
        return hu[:, self.context // 2: self.context // 2 + 1]

    def remove(self, hu: torch.Tensor, raw: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """Subtract the high-pass part of a raw core output (network units) from the centre."""
        noise = raw * HU_SCALE
        if self.keep_sigma > 0:
            noise = noise - gaussian_lowpass(noise, self.keep_sigma)
        return self.centre(hu) - strength * self.gain * noise

    def forward(self, hu: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        return self.remove(hu, self.core(hu_to_net(hu)), strength)
