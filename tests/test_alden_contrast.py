"""ALDEN's semantic contrastive loss: the paper's direction pulls the output toward its input's
anatomy as the normal dose shows it and away from the low dose's noise; the recipe that shipped
('input') runs the other way. A constructed case where the two disagree."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ldct.train.alden import semantic_contrast
from ldct.train.losses import pooled_embeddings

GRID = 4
LEVELS = torch.linspace(-100.0, 200.0, 8)  # the HU of the anatomy's 8 tissues


def tissue_features(hu: torch.Tensor) -> list[torch.Tensor]:
    """A transparent stand-in PVM: a soft histogram of tissue HU (what anatomy is there) and the
    local high-frequency energy (noise and artefacts), per pixel."""
    histogram = torch.exp(-((hu - LEVELS.view(1, -1, 1, 1)) / 25.0) ** 2)
    texture = (hu - F.avg_pool2d(hu, 5, 1, 2, count_include_pad=False)).abs() / 25.0
    return [torch.cat([histogram, texture], 1)]


def embed(hu: torch.Tensor) -> torch.Tensor:
    return pooled_embeddings(tissue_features(hu), GRID)


@pytest.fixture(scope="module")
def scene():
    """A normal dose of 16 regions of different tissue, its low dose (strong noise) and an
    output whose anatomy is another image's (the regions shuffled)."""
    gen = torch.Generator().manual_seed(0)
    tissue = torch.randint(0, len(LEVELS), (2, 1, GRID, GRID), generator=gen)
    normal = F.interpolate(LEVELS[tissue].float(), scale_factor=16, mode="nearest")
    low = normal + 60.0 * torch.randn(normal.shape, generator=gen)
    shuffled = normal.flip(-1).flip(-2)
    return normal, low, shuffled


def loss(output: torch.Tensor, low: torch.Tensor, normal: torch.Tensor, mode: str) -> float:
    return float(semantic_contrast(embed(output), embed(low), embed(normal), mode))


def test_paper_direction_prefers_the_clean_anatomy_over_the_low_dose(scene):
    normal, low, _ = scene
    clean, noisy = loss(normal, low, normal, "paper"), loss(low, low, normal, "paper")
    assert clean < noisy - 0.5, (clean, noisy)


def test_shipped_input_direction_prefers_the_noisy_input_the_reverse(scene):
    normal, low, _ = scene
    clean, noisy = loss(normal, low, normal, "input"), loss(low, low, normal, "input")
    assert noisy < clean - 0.5, (clean, noisy)


def test_paper_direction_pushes_away_from_other_anatomy(scene):
    normal, low, shuffled = scene
    assert loss(normal, low, normal, "paper") < loss(shuffled, low, normal, "paper") - 0.5


def first_step(output: torch.Tensor, low: torch.Tensor, normal: torch.Tensor,
               mode: str) -> torch.Tensor:
    """``output`` after one small gradient step on the loss (at most 2 HU a pixel)."""
    output = output.clone().requires_grad_(True)
    semantic_contrast(embed(output), embed(low), embed(normal), mode).backward()
    return output.detach() - 2.0 * output.grad / output.grad.abs().max()


def test_a_gradient_step_moves_a_noisy_output_toward_the_normal_dose_only_in_paper_mode(scene):
    normal, low, _ = scene
    before = (low - normal).pow(2).mean()
    paper = (first_step(low, low, normal, "paper") - normal).pow(2).mean()
    assert paper < before, (float(before), float(paper))
    # the shipped direction moves even a perfect output toward the low dose
    start = (normal - low).pow(2).mean()
    reverse = (first_step(normal, low, normal, "input") - low).pow(2).mean()
    assert reverse < start, (float(start), float(reverse))


def test_unknown_mode_is_named():
    e = torch.nn.functional.normalize(torch.ones(1, 4, 3), dim=-1)
    with pytest.raises(ValueError, match="contrast_mode 'reversed'"):
        semantic_contrast(e, e, e, "reversed")
