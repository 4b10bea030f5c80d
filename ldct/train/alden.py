"""ALDEN trainer: anatomy-aware adversarial loss + semantic contrastive loss (dual negatives).

Unpaired adaptation: the reference for the discriminator's cross-attention is another
normal-dose patch; the contrastive anchor is a region of the denoised image, its positive the
same region of the low-dose input (same anatomy, PVM features of a noise-robust encoder), its
negatives the other regions of the input (other anatomy) and regions of a normal-dose
reference (clean texture that is not this anatomy).
"""

from __future__ import annotations

import torch

from ldct.nets.alden import AnatomyAwareDiscriminator, alden_generator
from ldct.train.losses import info_nce, lsgan, pooled_embeddings
from ldct.train.method import WarmStartedGAN, image_l1


class ALDENMethod(WarmStartedGAN):
    name = "alden"
    needs_pvm = True
    presets = {"cpu": {"steps": 12000, "warmup_fraction": 0.75}, "paper": {"steps": 100000}}
    gan_groups = {"d": ["d"], "g": ["g"]}
    defaults = {**WarmStartedGAN.defaults, "contrast": 0.5, "identity": 1.0,
                "grid": 4}

    def build(self):
        probe = self.pvm(torch.zeros(1, 1, 64, 64))
        return {"g": alden_generator(**self.factory_kwargs()),
                "d": AnatomyAwareDiscriminator([f.shape[1] for f in probe])}

    def deployable(self):
        return self.nets["g"]

    def gan_losses(self, group, batch):
        ld, nd = batch["ld"], batch["nd"]
        reference = torch.roll(nd, 1, dims=0)  # another normal-dose patch
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
        anchor = pooled_embeddings(self.pvm(fake), grid)  # B, R, D
        with torch.no_grad():
            source = pooled_embeddings(self.pvm(ld), grid)
            clean = pooled_embeddings(ref_feats, grid)
        regions = anchor.shape[1]
        others = ~torch.eye(regions, dtype=torch.bool, device=anchor.device)
        neg_anatomy = source[:, None].expand(-1, regions, -1, -1)[:, others].view(
            source.shape[0], regions, regions - 1, -1)
        neg_clean = clean[:, None].expand(-1, regions, -1, -1)
        negatives = torch.cat([neg_anatomy, neg_clean], 2)
        contrast = info_nce(anchor, source, negatives)
        identity = image_l1(self.nets["g"](nd), nd)
        total = (self.hp["adversarial"] * adv + self.hp["contrast"] * contrast
                 + self.hp["identity"] * identity)
        return {"total": total, "adv": adv, "contrast": contrast, "identity": identity}
