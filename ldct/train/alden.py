"""ALDEN trainer: anatomy-aware adversarial loss + semantic contrastive loss (dual negatives).

Two recipes, chosen by ``contrast_mode`` (the paper preset uses "paper"):

- "paper" (alden-anatomy-aware): trained on low-dose patches with their own normal dose, the
  anatomy-matched reference. The discriminator's cross-attention reads the PVM features of that
  normal dose; the contrastive anchor is a region of the denoised image, its positive the same
  region of the normal dose (this anatomy, clean), its dual negatives the same region of the
  low-dose input (this anatomy with its noise and artefacts) and the normal dose's other regions
  (clean, other anatomy). The abstract names no pixel loss and no weights: an image MSE
  (weight 1) keeps the paired training stable, with a small adversarial weight (0.01, as paired
  GANs such as VAGAN weigh theirs) and contrast 0.1 - our choices.
- "input" (what the cpu preset shipped; unpaired GAN stage after the supervised warm-up): the
  positive is the same region of the low-dose input, the negatives its other regions and the
  regions of an unrelated normal-dose patch, which is also the discriminator's reference. This
  pulls the output toward its input - the reverse of the paper's direction (with the warm-up's
  anchor holding the denoising), and the reference is not anatomy-matched.
"""

from __future__ import annotations

import torch

from ldct.nets.alden import AnatomyAwareDiscriminator, alden_generator
from ldct.train.losses import info_nce, lsgan, pooled_embeddings
from ldct.train.method import WarmStartedGAN, image_l1, image_mse

CONTRAST_MODES = ("paper", "input")


def other_regions(embeddings: torch.Tensor) -> torch.Tensor:
    """For each of R regions (B, R, D) the other R-1 regions' embeddings (B, R, R-1, D)."""
    b, regions, dim = embeddings.shape
    others = ~torch.eye(regions, dtype=torch.bool, device=embeddings.device)
    return embeddings[:, None].expand(-1, regions, -1, -1)[:, others].view(
        b, regions, regions - 1, dim)


def semantic_contrast(output: torch.Tensor, low: torch.Tensor, normal: torch.Tensor,
                      mode: str = "paper") -> torch.Tensor:
    """The semantic contrastive loss on unit region embeddings (B, R, D) of the denoised
    output, the low-dose input and the normal-dose reference (see the module docstring).

    "paper": positive = the normal dose's same region; negatives = the low dose's same region
    and the normal dose's other regions. "input": positive = the low dose's same region;
    negatives = its other regions and every region of the (unrelated) normal dose.
    """
    if mode == "paper":
        negatives = torch.cat([low[:, :, None], other_regions(normal)], 2)
        return info_nce(output, normal, negatives)
    if mode == "input":
        clean = normal[:, None].expand(-1, normal.shape[1], -1, -1)
        return info_nce(output, low, torch.cat([other_regions(low), clean], 2))
    raise ValueError(f"unknown contrast_mode {mode!r}; use one of {CONTRAST_MODES}")


class ALDENMethod(WarmStartedGAN):
    name = "alden"
    needs_pvm = True
    presets = {"cpu": {"steps": 12000, "warmup_fraction": 0.75},
               "paper": {"steps": 100000, "warmup_fraction": 0.0, "anchor": 0.0,
                         "contrast_mode": "paper", "pixel": 1.0, "adversarial": 0.01,
                         "contrast": 0.1, "identity": 0.0}}
    gan_groups = {"d": ["d"], "g": ["g"]}
    defaults = {**WarmStartedGAN.defaults, "contrast": 0.5, "identity": 1.0, "pixel": 0.0,
                "grid": 4, "contrast_mode": "input"}

    @property
    def paired(self) -> bool:
        """The paper's recipe needs each low dose's own normal dose (anatomy-matched)."""
        return self.hp["contrast_mode"] == "paper"

    def build(self):
        self.option("contrast_mode", CONTRAST_MODES)
        probe = self.pvm(torch.zeros(1, 1, 64, 64))
        return {"g": alden_generator(**self.factory_kwargs()),
                "d": AnatomyAwareDiscriminator([f.shape[1] for f in probe])}

    def deployable(self):
        return self.nets["g"]

    def gan_weights(self):
        weights = {"g/adversarial_lsgan": self.hp["adversarial"],
                   f"g/semantic_contrast_{self.hp['contrast_mode']}": self.hp["contrast"],
                   "g/identity_l1": self.hp["identity"], "g/pixel_mse": self.hp["pixel"],
                   "d/lsgan": 0.5}
        return {k: float(v) for k, v in weights.items() if v}

    def gan_losses(self, group, batch):
        ld, nd = batch["ld"], batch["nd"]
        reference = nd if self.paired else torch.roll(nd, 1, dims=0)  # anatomy-matched or not
        with torch.no_grad():
            ref_feats = self.pvm(reference)
        d = self.nets["d"]
        if group == "d":
            with torch.no_grad():
                fake = self.nets["g"](ld)
            loss = lsgan(d(nd, ref_feats), True) + lsgan(d(fake.detach(), ref_feats), False)
            return {"total": 0.5 * loss}
        fake = self.nets["g"](ld)
        adv = lsgan(d(fake, ref_feats), True)
        grid = self.hp["grid"]
        with torch.no_grad():
            low = pooled_embeddings(self.pvm(ld), grid)
            clean = pooled_embeddings(ref_feats, grid)
        contrast = semantic_contrast(pooled_embeddings(self.pvm(fake), grid), low, clean,
                                     self.hp["contrast_mode"])
        terms = {"adv": adv, "contrast": contrast}
        total = self.hp["adversarial"] * adv + self.hp["contrast"] * contrast
        if self.hp["identity"]:
            terms["identity"] = image_l1(self.nets["g"](nd), nd)
            total = total + self.hp["identity"] * terms["identity"]
        if self.hp["pixel"]:
            terms["pixel"] = image_mse(fake, nd)
            total = total + self.hp["pixel"] * terms["pixel"]
        return {"total": total, **terms}
