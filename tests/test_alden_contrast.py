"""ALDEN's semantic contrastive loss: the paper's direction pulls the output toward its input's
anatomy as the normal dose shows it and away from the low dose's noise; the recipe that shipped
('input') runs the other way. A constructed case where the two disagree."""

from __future__ import annotations

import math

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



def _embeddings(*vectors: tuple[float, float]) -> torch.Tensor:
    """One image (B = 1) of len(vectors) regions, each a 2-D unit vector."""
    return F.normalize(torch.tensor([vectors], dtype=torch.float64), dim=-1)


def _infonce(positive: float, negatives: list[float], tau: float = 0.07) -> float:
    """-log e^(p/tau) / (e^(p/tau) + sum e^(n/tau)), from the dot products."""
    return math.log(1.0 + sum(math.exp((n - positive) / tau) for n in negatives))


@pytest.mark.parametrize("low_vectors, low_dots", [
    (((1.0, 0.0), (0.0, 1.0)), (1.0, 1.0)),  # the output kept the low dose's noise exactly
    (((0.7, -0.51 ** 0.5), (-0.51 ** 0.5, 0.7)), (0.7, 0.7)),  # a low dose less like it
])
def test_paper_contrast_is_infonce_with_both_negatives_hand_worked(low_vectors, low_dots):
    """Two regions, tau 0.07, worked by hand: output o1 = (1, 0), o2 = (0, 1); normal dose
    n1 = (0.8, 0.6), n2 = (0.6, 0.8). Region 1: positive o1.n1 = 0.8; negatives the low
    dose's same region (o1.l1) and the normal dose's other region, o1.n2 = 0.6. Region 2 the
    same by symmetry. The loss is the mean of the two regions' InfoNCE. With the output equal
    to the low dose: log(1 + e^(0.2/0.07) + e^(-0.2/0.07)) = 2.9161; without the low-dose
    negative it would be log(1 + e^(-0.2/0.07)) = 0.0558, without the other region
    log(1 + e^(0.2/0.07)) = 2.9130."""
    out = _embeddings((1.0, 0.0), (0.0, 1.0))
    normal = _embeddings((0.8, 0.6), (0.6, 0.8))
    low = _embeddings(*low_vectors)
    expected = [_infonce(0.8, [low_dots[0], 0.6]), _infonce(0.8, [low_dots[1], 0.6])]
    if low_dots == (1.0, 1.0):
        assert expected[0] == pytest.approx(2.9161, abs=1e-4)  # the docstring's arithmetic
    got = float(semantic_contrast(out, low, normal, "paper"))
    assert got == pytest.approx(sum(expected) / 2, abs=1e-6)
    without_low = _infonce(0.8, [0.6])
    without_others = _infonce(0.8, [low_dots[0]])
    assert abs(got - without_low) > 1e-3 and abs(got - without_others) > 1e-3


def test_paper_contrast_counts_every_other_region_as_a_negative():
    """Three regions as angles of 2-D unit vectors (the dot of two is the cosine of their
    difference): output 0, 40, 80 degrees; normal dose 10, 50, 90 (the positive of each region
    10 degrees off); low dose -20, 20, 60. Region k's negatives are its low-dose region and
    BOTH other normal-dose regions."""
    out, normal, low = (0, 40, 80), (10, 50, 90), (-20, 20, 60)

    def vectors(angles: tuple[int, ...]) -> torch.Tensor:
        return _embeddings(*[(math.cos(math.radians(a)), math.sin(math.radians(a)))
                             for a in angles])

    def dot(a: float, b: float) -> float:
        return math.cos(math.radians(a - b))

    expected = [_infonce(dot(out[k], normal[k]), [dot(out[k], low[k])] + [
        dot(out[k], normal[j]) for j in range(3) if j != k]) for k in range(3)]
    got = float(semantic_contrast(vectors(out), vectors(low), vectors(normal), "paper"))
    assert got == pytest.approx(sum(expected) / 3, abs=1e-6)
