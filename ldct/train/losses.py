"""Losses shared by the trainers: adversarial, perceptual, patch-wise metric, contrastive."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ldct.nets.encoder import FeatureExtractor


def lsgan(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (stable for small batches): push logits to 1 (real) or 0."""
    return F.mse_loss(logits, torch.full_like(logits, 1.0 if real else 0.0))


def perceptual(pvm: FeatureExtractor, test: torch.Tensor, reference: torch.Tensor,
               distance=F.l1_loss) -> torch.Tensor:
    """Distance of PVM features (HU inputs), averaged over the PVM's stages."""
    ft, fr = pvm(test), pvm(reference)
    return sum(distance(a, b) for a, b in zip(ft, fr)) / len(ft)


def info_nce(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
             tau: float = 0.07) -> torch.Tensor:
    """InfoNCE over unit vectors: query (..., D), positive (..., D), negatives (..., K, D)."""
    pos = (query * positive).sum(-1, keepdim=True)
    neg = torch.einsum("...d,...kd->...k", query, negatives)
    logits = torch.cat([pos, neg], -1) / tau
    target = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def patch_nce(q: torch.Tensor, k: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Patch-wise metric loss: q, k (B, N, D) embeddings of N locations of the output and input.

    Positive: the same location (same anatomy); negatives: the other N-1 locations of the same
    image (same noise level), as in the patch-wise deep metric learning paper.
    """
    logits = torch.bmm(q, k.transpose(1, 2)) / tau  # B, N, N: diagonal = positives
    target = torch.arange(q.shape[1], device=q.device).expand(q.shape[0], -1)
    return F.cross_entropy(logits.reshape(-1, q.shape[1]), target.reshape(-1))


def pooled_embeddings(feats: list[torch.Tensor], grid: int = 4) -> torch.Tensor:
    """Unit-norm region embeddings (B, grid*grid, D) from PVM feature maps: one per cell."""
    pooled = [F.adaptive_avg_pool2d(f, grid).flatten(2) for f in feats]
    return F.normalize(torch.cat(pooled, 1).transpose(1, 2), dim=-1)


def log_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """The original GAN's log loss on logits (the sigmoid inside, numerically stable):
    -log D for real, -log(1 - D) for fake."""
    return F.binary_cross_entropy_with_logits(
        logits, torch.full_like(logits, 1.0 if real else 0.0))
