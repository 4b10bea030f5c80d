"""Pretrained vision models (PVMs) for perceptual and semantic losses.

No ImageNet weights can be downloaded here, so the project trains its own small CT encoder
(`ldct train encoder`, shipped in models/ct_encoder/). A local torchvision-format VGG19 or
ResNet state dict can be used instead (`--pvm PATH`). Every PVM is wrapped as a frozen
:class:`FeatureExtractor` that takes HU and returns a list of feature maps.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def soft_tissue_window(hu: torch.Tensor) -> torch.Tensor:
    """HU -> the liver window [-160, 240] scaled to [0, 1], extended linearly (clamped at +-1)."""
    return ((hu + 160.0) / 400.0).clamp(-1.0, 2.0)


class CTEncoder(nn.Module):
    """A small VGG-style encoder (four stages); returns the feature map of every stage."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.widths = widths
        stages, c = [], 1
        for w in widths:
            stages.append(nn.Sequential(nn.Conv2d(c, w, 3, padding=1), nn.ReLU(inplace=True),
                                        nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True)))
            c = w
        self.stages = nn.ModuleList(stages)

    def forward(self, hu: torch.Tensor) -> list[torch.Tensor]:
        x = soft_tissue_window(hu)
        feats = []
        for k, stage in enumerate(self.stages):
            x = stage(x if k == 0 else F.max_pool2d(x, 2))
            feats.append(x)
        return feats


class _TorchvisionFeatures(nn.Module):
    """A torchvision VGG19 or ResNet trunk, grey CT fed as RGB with ImageNet statistics."""

    def __init__(self, trunk: nn.Module, taps: list[nn.Module]) -> None:
        super().__init__()
        self.trunk, self.taps = trunk, taps
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, hu: torch.Tensor) -> list[torch.Tensor]:
        x = (soft_tissue_window(hu).expand(-1, 3, -1, -1) - self.mean) / self.std
        feats = []
        for part in self.taps:
            x = part(x)
            feats.append(x)
        return feats


def _vgg19(state: dict) -> nn.Module:
    from torchvision.models import vgg19

    net = vgg19(weights=None)
    net.load_state_dict(state)
    f = net.features
    # relu1_2, relu2_2, relu3_4, relu4_4: the usual perceptual-loss taps
    taps = [f[:4], f[4:9], f[9:18], f[18:27]]
    return _TorchvisionFeatures(f[:27], taps)


def _resnet(state: dict) -> nn.Module:
    from torchvision import models

    blocks = max(int(k.split(".")[1]) for k in state if k.startswith("layer3.")) + 1
    bottleneck = any(".conv3." in k for k in state)
    depth = {(6, True): "resnet50", (23, True): "resnet101", (36, True): "resnet152",
             (2, False): "resnet18", (6, False): "resnet34"}.get((blocks, bottleneck))
    if depth is None:
        raise ValueError(f"unrecognised ResNet layout ({blocks} blocks in layer3)")
    net = getattr(models, depth)(weights=None)
    net.load_state_dict(state)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu)
    taps = [stem, nn.Sequential(net.maxpool, net.layer1), net.layer2, net.layer3]
    return _TorchvisionFeatures(nn.Sequential(*taps), taps)


class FeatureExtractor(nn.Module):
    """A frozen PVM: HU in, a list of feature maps out (gradients flow to the input only)."""

    def __init__(self, net: nn.Module, source: str) -> None:
        super().__init__()
        self.net, self.source = net.eval(), source
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> FeatureExtractor:  # always stays in eval mode
        return self

    def forward(self, hu: torch.Tensor) -> list[torch.Tensor]:
        return self.net(hu)


def load_pvm(path: str | Path) -> FeatureExtractor:
    """Load a PVM from a local file: the project's CT encoder, or a torchvision VGG19/ResNet
    state dict (detected from its keys)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such PVM weights file. Train one with `ldct train "
                                "encoder` or give a torchvision VGG19/ResNet state dict.")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(blob, dict) and blob.get("kind") == "ct_encoder":
        net = CTEncoder(tuple(blob["config"]["widths"]))
        net.load_state_dict(blob["state_dict"])
        return FeatureExtractor(net, f"ct_encoder:{path}")
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict")
    if "features.0.weight" in state:
        return FeatureExtractor(_vgg19(state), f"vgg19:{path}")
    if "conv1.weight" in state and any(k.startswith("layer3.") for k in state):
        return FeatureExtractor(_resnet(state), f"resnet:{path}")
    raise ValueError(f"{path}: neither a CT encoder checkpoint nor a torchvision VGG19/ResNet "
                     "state dict (looked for 'features.0.weight' or 'conv1.weight').")
