"""Losses shared by the trainers: adversarial, perceptual, patch-wise metric, contrastive.

Every loss here runs in float32 with autocast off (`in_float32`), also inside a mixed-precision
step: bfloat16 keeps 8 bits of mantissa, so a cosine similarity is rounded by up to ~2e-3
(measured 6e-4 on alden's embeddings) - as large as the gap a contrastive negative carries - and
a mean over a batch loses its small terms. The networks that feed them still run in reduced
precision.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ldct.nets.encoder import FeatureExtractor


def _float32(value: Any) -> Any:
    """Floating tensors (also inside lists and tuples) as float32; anything else as given."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_float32(v) for v in value)
    return value


def in_float32(loss: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``loss`` run with autocast off and its floating tensor arguments in float32."""
    @functools.wraps(loss)
    def run(*args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return loss(*_float32(args), **{k: _float32(v) for k, v in kwargs.items()})
    return run


@in_float32
def lsgan(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (stable for small batches): push logits to 1 (real) or 0."""
    return F.mse_loss(logits, torch.full_like(logits, 1.0 if real else 0.0))


def perceptual(pvm: FeatureExtractor, test: torch.Tensor, reference: torch.Tensor,
               distance=F.l1_loss) -> torch.Tensor:
    """Distance of PVM features (HU inputs), averaged over the PVM's stages (the PVM runs as
    the step does, the distances in float32)."""
    ft, fr = pvm(test), pvm(reference)
    distance = in_float32(distance)
    return sum(distance(a, b) for a, b in zip(ft, fr)) / len(ft)


@in_float32
def info_nce(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
             tau: float = 0.07) -> torch.Tensor:
    """InfoNCE over unit vectors: query (..., D), positive (..., D), negatives (..., K, D)."""
    pos = (query * positive).sum(-1, keepdim=True)
    neg = torch.einsum("...d,...kd->...k", query, negatives)
    logits = torch.cat([pos, neg], -1) / tau
    target = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


@in_float32
def patch_nce(q: torch.Tensor, k: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """CUT's PatchNCE: q, k (B, N, D) embeddings of N locations of the output and input.

    Cross-entropy of each output location against the input's locations: positive the same
    location, negatives the input's other N-1 locations (output against input). What the
    shipped pdml trained with; the paper's own loss is :func:`patch_metric`.
    """
    logits = torch.bmm(q, k.transpose(1, 2)) / tau  # B, N, N: diagonal = positives
    target = torch.arange(q.shape[1], device=q.device).expand(q.shape[0], -1)
    return F.cross_entropy(logits.reshape(-1, q.shape[1]), target.reshape(-1))


@in_float32
def patch_metric(q: torch.Tensor, k: torch.Tensor, tau: float = 0.15) -> torch.Tensor:
    """The patch-wise deep metric learning paper's loss, as its authors' code computes it.

    q, k (B, N, D): unit embeddings of N locations of the output and of the input. The
    positive pair is a location's output and input (same anatomy); the negatives are pairs of
    different locations of the same image at the same noise level - input with input and
    output with output (the diagonal, a location with itself, left out) - never output with
    input as in CUT's PatchNCE. Its form is not a softmax cross-entropy but
    (-mean exp(q_i.k_i / tau) + mean exp(k_i.k_j / tau) + mean exp(q_i.q_j / tau)) / D, the
    means over the B x N positives and the B x N x N pairs (the diagonal counting 0).
    """
    positive = torch.exp((q * k).sum(-1) / tau).mean()
    off_diagonal = ~torch.eye(q.shape[1], dtype=torch.bool, device=q.device)

    def negatives(x: torch.Tensor) -> torch.Tensor:
        return (torch.exp(x @ x.transpose(1, 2) / tau) * off_diagonal).mean()

    return (negatives(k) + negatives(q) - positive) / q.shape[-1]


@in_float32
def pooled_embeddings(feats: list[torch.Tensor], grid: int = 4) -> torch.Tensor:
    """Unit-norm region embeddings (B, grid*grid, D) from PVM feature maps: one per cell."""
    pooled = [F.adaptive_avg_pool2d(f, grid).flatten(2) for f in feats]
    return F.normalize(torch.cat(pooled, 1).transpose(1, 2), dim=-1)


@in_float32
def log_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """The original GAN's log loss on logits (the sigmoid inside, numerically stable):
    -log D for real, -log(1 - D) for fake."""
    return F.binary_cross_entropy_with_logits(
        logits, torch.full_like(logits, 1.0 if real else 0.0))


@in_float32
def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """CLIP-style InfoNCE of paired unit embeddings a, b (N, D): row i of a matches row i of
    b, against the other rows, in both directions."""
    logits = a @ b.t() / tau
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
