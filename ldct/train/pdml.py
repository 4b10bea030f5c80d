"""PDML trainer: adversarial + patch-wise metric (contrastive) + identity losses."""

from __future__ import annotations

import torch

from ldct.nets.blocks import PatchDiscriminator, hu_to_net
from ldct.nets.encoder import soft_tissue_window as win
from ldct.nets.pdml import PatchProjector, pdml_generator
from ldct.train.losses import lsgan, patch_nce
from ldct.train.method import WarmStartedGAN, image_l1


class PDMLMethod(WarmStartedGAN):
    name = "pdml"
    # anchor 10: with 1 the metric/identity terms pulled the generator back towards the input
    # paper: unpaired from the start (no warm-up, no anchor). The abstract gives the idea
    # (positives: same anatomy; negatives: same noise level, i.e. other places of the same
    # image) but no weights: metric weight 1 and 256 locations per image follow contrastive
    # unpaired translation (CUT), which patch-wise metric learning builds on.
    presets = {"cpu": {"steps": 12000, "warmup_fraction": 0.75, "anchor": 10.0},
               "paper": {"steps": 100000, "warmup_fraction": 0.0, "anchor": 0.0, "nce": 1.0,
                         "patches": 256}}
    gan_groups = {"d": ["d"], "g": ["g", "proj"]}
    defaults = {**WarmStartedGAN.defaults, "patches": 64, "nce": 0.5,
                "identity": 1.0}

    def build(self):
        widths = [self.hp["base"] * 2**k for k in range(self.hp["levels"])]
        return {"g": pdml_generator(**self.factory_kwargs()), "d": PatchDiscriminator(),
                "proj": PatchProjector(widths)}

    def deployable(self):
        return self.nets["g"]

    def _metric(self, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        encode = self.nets["g"].core.encode
        f_in, f_out = encode(hu_to_net(source)), encode(hu_to_net(output))
        index = [torch.randperm(f.shape[-1] * f.shape[-2], device=f.device)[:self.hp["patches"]]
                 for f in f_in]
        q = self.nets["proj"](f_out, index)
        k = self.nets["proj"](f_in, index)
        return sum(patch_nce(a, b) for a, b in zip(q, k)) / len(q)

    def gan_weights(self):
        return {"g/adversarial_lsgan": self.hp["adversarial"],
                "g/patch_metric_nce": self.hp["nce"], "g/identity_l1": self.hp["identity"],
                "d/lsgan": 0.5}

    def gan_losses(self, group, batch):
        ld, nd = batch["ld"], batch["nd"]
        if group == "d":
            with torch.no_grad():
                fake = self.nets["g"](ld)
            d = (lsgan(self.nets["d"](win(nd)), True)
                 + lsgan(self.nets["d"](win(fake.detach())), False))
            return {"total": 0.5 * d}
        fake = self.nets["g"](ld)
        adv = lsgan(self.nets["d"](win(fake)), True)
        metric = self._metric(ld, fake)
        identity = image_l1(self.nets["g"](nd), nd)
        total = (self.hp["adversarial"] * adv + self.hp["nce"] * metric
                 + self.hp["identity"] * identity)
        return {"total": total, "adv": adv, "metric": metric, "identity": identity}
