"""Losses under mixed precision: similarities and reductions stay float32 inside autocast.

CPU bfloat16 autocast stands in for CUDA's (the same rounding of matmul inputs to 8 bits of
mantissa). The answer key is each loss's formula written out here in float64.
"""

from __future__ import annotations

import math

import torch

from ldct.train.losses import info_nce, lsgan, patch_nce, symmetric_info_nce
from ldct.train.method import image_l1, relative_mse

BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def close_pair(gap: float = 8.4e-4, dim: int = 64) -> tuple[torch.Tensor, ...]:
    """A query, a positive and a negative whose cosines to it differ by ``gap`` (alden's
    low-dose negative: 8.4e-4 below the positive), near 0.9 where bfloat16 steps are 4e-3."""
    g = torch.Generator().manual_seed(0)
    q = unit(torch.randn(dim, generator=g, dtype=torch.float64))
    other = unit(torch.randn(dim, generator=g, dtype=torch.float64))
    other = unit(other - (other @ q) * q)  # orthogonal to q
    cos_pos, cos_neg = 0.9, 0.9 - gap
    pos = cos_pos * q + math.sqrt(1 - cos_pos ** 2) * other
    neg = cos_neg * q - math.sqrt(1 - cos_neg ** 2) * other
    return q, pos, neg


def test_info_nce_keeps_a_gap_smaller_than_bfloat16_rounding():
    q, pos, neg = close_pair()
    tau = 0.07
    # -log(e^(cos+/tau) / (e^(cos+/tau) + e^(cos-/tau))) = log(1 + e^(-gap/tau))
    expected = math.log1p(math.exp(-8.4e-4 / tau))
    with torch.autocast(**BF16):
        loss = info_nce(q.float()[None], pos.float()[None], neg.float()[None, None], tau)
    assert loss.dtype == torch.float32
    assert abs(float(loss) - expected) < 2e-5, (float(loss), expected)


def hard_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two locations: q0 sits 8.4e-4 closer to its positive k0 than to k1; q1 is k1 itself."""
    q, pos, neg = close_pair()
    return torch.stack([q, neg]), torch.stack([pos, neg])


def nce_rows(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """-log softmax of each row's own column, in float64: the loss written out."""
    logits = q @ k.T / tau
    return torch.logsumexp(logits, -1) - logits.diagonal()


def test_patch_nce_under_autocast_equals_its_float64_formula():
    q, k = hard_batch()
    expected = float(nce_rows(q, k, 0.07).mean())
    with torch.autocast(**BF16):
        loss = patch_nce(q.float()[None], k.float()[None], 0.07)
    assert loss.dtype == torch.float32
    assert abs(float(loss) - expected) < 2e-5, (float(loss), expected)


def test_symmetric_info_nce_and_reductions_are_float32_under_autocast():
    a, b = hard_batch()
    expected = 0.5 * float(nce_rows(a, b, 0.1).mean() + nce_rows(b, a, 0.1).mean())
    g = torch.Generator().manual_seed(2)
    x = 40.0 + torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    y = 40.0 + torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    with torch.autocast(**BF16):
        nce = symmetric_info_nce(a.float(), b.float(), 0.1)
        l1 = image_l1(x.float().bfloat16(), y.float())
        gan = lsgan(torch.full((2, 1), 0.999, dtype=torch.bfloat16), True)
        rel = relative_mse(x.float(), y.float(), (y + 30.0).float())
    assert all(v.dtype == torch.float32 for v in (nce, l1, gan, rel))
    assert abs(float(nce) - expected) < 2e-5, (float(nce), expected)
    # a bfloat16 input is rounded once (x to 8 bits); everything after it is float32
    l1_expected = float((x.float().bfloat16().double() - y).abs().mean() / 400.0)
    assert abs(float(l1) - l1_expected) < 1e-7
    gan_expected = (float(torch.tensor(0.999).bfloat16()) - 1.0) ** 2
    assert abs(float(gan) - gan_expected) < 1e-9
    rel_expected = float(((x - y) ** 2).mean((1, 2, 3)).div(900.0).mean())
    assert abs(float(rel) - rel_expected) < 1e-6
