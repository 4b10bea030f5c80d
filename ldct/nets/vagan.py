"""VAGAN (vagan-visual-attention-gan): visual-attention GAN trained on simulated pairs.

A recurrent attentive block (conv + residual conv blocks + ConvLSTM, T=4) predicts where the
noise is; a RED-style encoder-decoder with additive shortcuts takes the low-dose image with
that map and outputs the result at 1/4, 1/2 and full scale (multi-scale loss); an attentive
discriminator must reproduce the map on denoised images and nothing on real normal-dose ones.

Two sizes share this code: the shipped, reduced one (``depth="reduced"``: 7 conv layers, one
conv block in the attentive block, run at 1/2 resolution through pixel-unshuffle) and the
paper's (``depth="paper"``, ``blocks=3``, ``factor=1``: :class:`DeepREDGenerator`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldct.nets.blocks import ConvLSTMCell, HUPreservingDenoiser, ResBlock

ATTENTION_STEPS = 4


class AttentiveRecurrentBlock(nn.Module):
    """T recurrent steps, each: [image, previous map] -> conv -> ``blocks`` conv blocks (two
    convs with a residual connection) -> ConvLSTM -> conv -> new map; the first map is 0.5.

    The paper has three conv blocks; the shipped reduced model has one.
    """

    def __init__(self, width: int = 8, steps: int = ATTENTION_STEPS, channels: int = 1,
                 blocks: int = 1) -> None:
        super().__init__()
        self.steps = steps
        self.body = nn.Sequential(nn.Conv2d(2 * channels, width, 3, padding=1), nn.ReLU(True),
                                  *(ResBlock(width) for _ in range(blocks)))
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


class DeepREDGenerator(nn.Module):
    """The paper's depth: 14 convolution layers, 7 encoder and 7 decoder, all 3x3 Conv+ReLU
    but the last (it outputs the signed noise), and two extra 1-channel heads.

    Where the paper is silent: the encoder's 2nd and 4th layers have stride 2 and the
    decoder's 4th and 6th upsample (``upsample``: transposed convs, the paper's
    "deconvolutional layers", or bilinear + conv), so that the decoder has the 1/4, 1/2 and
    full scales the multi-scale loss needs; RED-CNN's shortcuts every two layers, mirrored
    (encoder layers 2, 4, 6 -> decoder layers 5, 3, 1; input -> output is the denoiser's own
    residual). "The outputs of the 1st, 3rd and 5th layers" are counted from the output, as in
    the attentive GAN this design follows (Qian et al. 2018): decoder layer 7 (full scale, the
    image), 5 (1/2) and 3 (1/4), weights rising with the scale - counted from the input, the
    layers after the 5th would have no loss in the PSNR-oriented stage.
    """

    def __init__(self, cin: int = 2, base: int = 96, cout: int = 1,
                 upsample: str = "transpose") -> None:
        super().__init__()
        act = nn.ReLU(True)

        def conv(c: int = base, stride: int = 1) -> nn.Module:
            return nn.Sequential(nn.Conv2d(c, base, 3, stride, 1), act)

        def up() -> nn.Module:
            return nn.Sequential(_upsampler(base, upsample), act)

        self.encoder = nn.ModuleList([conv(cin), conv(stride=2), conv(), conv(stride=2), conv(),
                                      conv(), conv()])
        self.decoder = nn.ModuleList([conv(), conv(), conv(), up(), conv(), up()])
        self.out = nn.Conv2d(base, cout, 3, padding=1)  # decoder layer 7
        self.heads = nn.ModuleList(nn.Conv2d(base, cout, 3, padding=1) for _ in range(2))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Noise estimates at 1/4, 1/2 and full resolution."""
        skips = []
        for layer in self.encoder:
            x = layer(x)
            skips.append(x)
        shortcut = {0: skips[5], 2: skips[3], 4: skips[1]}  # decoder layer -> encoder output
        scales = []
        for k, layer in enumerate(self.decoder):
            x = layer(x)
            if k in shortcut:
                x = x + shortcut[k]
            if k in (2, 4):
                scales.append(self.heads[len(scales)](x))
        return [*scales, self.out(x)]


GENERATORS = {"reduced": REDGenerator, "paper": DeepREDGenerator}


class VAGANCore(nn.Module):
    """Attentive block + generator at 1/factor resolution (pixel-unshuffled, lossless).

    Input: a stack of ``context`` adjacent slices (B, context, H, W), the centre one denoised.
    The attentive block sees the centre slice; the generator sees it with the final attention
    map and, when ``context`` > 1, the neighbours too (their noise is independent of the
    centre's while the anatomy barely changes; the paper's network sees one image).
    ``forward_all`` returns the T attention maps and the 1/4, 1/2, full-scale noise estimates
    (full image resolution); ``forward`` gives the full-scale noise for inference.
    """

    def __init__(self, width: int = 8, base: int = 32, factor: int = 2,
                 upsample: str = "bilinear", depth: str = "reduced", blocks: int = 1,
                 context: int = 1) -> None:
        super().__init__()
        if depth not in GENERATORS:
            raise ValueError(f"vagan depth {depth!r}: choose from {', '.join(GENERATORS)}")
        if context < 1 or context % 2 == 0:
            raise ValueError(f"vagan context {context}: give an odd number of slices (1, 3, ..)")
        self.factor, self.context = factor, context
        f2 = factor * factor
        self.attention = AttentiveRecurrentBlock(width, channels=f2, blocks=blocks)
        # input channels: centre, attention map, then the neighbours (appended last, so that a
        # one-slice model's weights fill the first ones: see `widened`)
        self.generator = GENERATORS[depth]((context + 1) * f2, base, f2, upsample)

    def _run(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Attention maps and noise estimates at 1/factor resolution."""
        c = self.context // 2
        small = F.pixel_unshuffle(x[:, c:c + 1], self.factor)
        maps = self.attention(small)
        neighbours = [F.pixel_unshuffle(torch.cat([x[:, :c], x[:, c + 1:]], 1), self.factor)
                      ] if self.context > 1 else []
        return maps, self.generator(torch.cat([small, maps[-1], *neighbours], 1))

    def forward_all(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        maps, noises = self._run(x)
        return ([F.pixel_shuffle(m, self.factor) for m in maps],
                [F.pixel_shuffle(n, self.factor) for n in noises])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self._run(x)[1][-1], self.factor)


def widened(state_dict: dict[str, torch.Tensor],
            own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A one-slice vagan's weights for a model of more context slices (``own``: its state
    dict): the generator's first convolution gets zero weights on the neighbours' channels,
    so the wider model starts as the trained one-slice model and learns to use them."""
    out = {}
    for key, value in state_dict.items():
        shape = own[key].shape if key in own else value.shape
        if value.dim() == 4 and value.shape[1] < shape[1] and value.shape[2:] == shape[2:]:
            value = F.pad(value, (0, 0, 0, 0, 0, shape[1] - value.shape[1]))
        out[key] = value
    return out


def vagan_generator(width: int = 8, base: int = 32, upsample: str = "bilinear",
                    depth: str = "reduced", blocks: int = 1, factor: int = 2,
                    context: int = 1) -> HUPreservingDenoiser:
    """The reduced model by default; the paper's: width 32, base 96, upsample "transpose",
    depth "paper", blocks 3, factor 1 (one slice)."""
    return HUPreservingDenoiser(VAGANCore(width, base, factor, upsample, depth, blocks, context),
                                context=context)


class AttentiveDiscriminator(nn.Module):
    """The reduced (cpu) discriminator: a PatchGAN that predicts an attention map mid-way
    (1/4 resolution) and weights its features by it."""

    map_scale = 4

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


class PaperAttentiveDiscriminator(nn.Module):
    """The paper's: eight 3x3 conv layers, a fully connected layer of 512, one logit (the
    sigmoid is in the log loss); an attention map from interior features multiplies them.

    Where the paper is silent: SRGAN's eight-conv pattern (widths base, base, 2, 2, 4, 4, 8,
    8 x base, every second conv stride 2, LeakyReLU 0.2, no normalization), the map from the
    4th conv's features (1/4 resolution) by one more 3x3 conv + sigmoid, fed back as those
    features times the map into the 5th conv; ``patch`` (a multiple of 16) sizes the FC layer.
    """

    map_scale = 4

    def __init__(self, base: int = 64, patch: int = 64) -> None:
        super().__init__()
        if patch % 16:
            raise ValueError(f"the paper discriminator needs patches a multiple of 16, "
                             f"got {patch}")
        act = nn.LeakyReLU(0.2, True)
        widths = [base, base, 2 * base, 2 * base, 4 * base, 4 * base, 8 * base, 8 * base]
        convs, c = [], 1
        for k, w in enumerate(widths):
            convs += [nn.Conv2d(c, w, 3, 1 + k % 2, 1), act]
            c = w
        self.features = nn.Sequential(*convs[:8])
        self.attention = nn.Conv2d(2 * base, 1, 3, padding=1)
        self.trunk = nn.Sequential(*convs[8:])
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * (patch // 16) ** 2, 512),
                                        act, nn.Linear(512, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        m = torch.sigmoid(self.attention(f))
        return self.classifier(self.trunk(f * m)), m


def noise_mask(low: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """VAGAN's binary attention target: 1 where |LD - ND| exceeds its image mean."""
    r = (low - normal).abs()
    return (r > r.mean(dim=(-2, -1), keepdim=True)).to(low.dtype)


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    return x if factor == 1 else F.avg_pool2d(x, factor)
