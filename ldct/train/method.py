"""What a training method provides to the shared loop: networks, optimizer groups, losses."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ldct.nets.blocks import HUPreservingDenoiser
from ldct.nets.encoder import FeatureExtractor

WINDOW_HU = 400.0  # image losses are measured in liver-window widths


class Method:
    """Base class: subclasses build their nets and losses; the loop does everything else.

    ``hp`` holds the method's hyper-parameters (preset values merged with overrides); ``pvm``
    is the frozen feature extractor for perceptual/semantic losses (None if unused).
    """

    name = "method"
    paired = False  # does the sampler give normal-dose patches at the same place?
    context = 1  # adjacent slices stacked as input channels
    needs_pvm = False
    defaults: dict[str, Any] = {}
    presets: dict[str, dict[str, Any]] = {}  # per-preset values that override the loop's

    def __init__(self, hp: dict[str, Any], pvm: FeatureExtractor | None = None) -> None:
        self.hp = {**self.defaults, **hp}
        self.pvm = pvm
        self.nets = nn.ModuleDict(self.build())

    def build(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def optim_groups(self) -> dict[str, list[str]]:
        """Optimizer group -> names of the nets it updates (stepped in this order)."""
        raise NotImplementedError

    def schedule(self, step: int) -> list[str]:
        """The groups updated at ``step`` (all by default; two-phase methods override)."""
        return list(self.optim_groups())

    def losses(self, group: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named loss terms for ``group``; the key 'total' is what is minimized."""
        raise NotImplementedError

    def deployable(self) -> HUPreservingDenoiser:
        """The network that ships (HU in, HU out)."""
        raise NotImplementedError

    def factory_kwargs(self) -> dict[str, Any]:
        """Arguments that rebuild :meth:`deployable` from the registry's factory."""
        raise NotImplementedError


def image_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 distance of HU images in liver-window widths."""
    return (a - b).abs().mean() / WINDOW_HU


def image_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MSE of HU images in liver-window widths."""
    return ((a - b) / WINDOW_HU).pow(2).mean()
