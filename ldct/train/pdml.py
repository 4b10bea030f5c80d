"""PDML trainer: adversarial + patch-wise metric + identity losses.

Two metric losses: ``metric: "paper"`` is the paper's, as its authors' code computes it
(`ldct.train.losses.patch_metric`: negatives of the same noise level, input-input and
output-output); ``"patch_nce"`` is CUT's PatchNCE (negatives output-input), what the shipped
cpu model trained with.
"""

from __future__ import annotations

import torch

from ldct.nets.blocks import hu_to_net
from ldct.nets.encoder import soft_tissue_window as win
from ldct.nets.pdml import PatchProjector, pdml_generator
from ldct.train.losses import lsgan, patch_metric, patch_nce
from ldct.train.method import WarmStartedGAN, image_l1

METRICS = {"patch_nce": patch_nce, "paper": patch_metric}
# the authors' code (github.com/jcy132/DML_CT, options/train_options.py): 200 epochs of 3112
# slices at batch 8 (389 steps each), the last 100 with the learning rate falling linearly to 0
PAPER_STEPS = 200 * (3112 // 8)


class PDMLMethod(WarmStartedGAN):
    name = "pdml"
    # cpu (what ships): anchor 10 - with 1 the metric/identity terms pulled the generator back
    # towards the input - and CUT's PatchNCE, weight 0.5 over 64 locations.
    # paper: the authors' code - unpaired from the start, LSGAN weight 1, identity L1 weight 5,
    # the paper's metric loss weight 0.1 at temperature 0.15 over 128 locations per layer with
    # 128-wide projections, Adam 2e-4 (betas 0.5, 0.999) for generator, projections and
    # discriminator, linear decay over the second half, batch 8 of 128x128 crops; one dose and
    # one kernel in the low-dose domain (one acquisition, as the paper's quarter doses). The
    # discriminator is Cycle-GAN's full-size PatchGAN (70x70, 2.8 M parameters; the authors'
    # has spectral norm, 3x3 kernels and squeeze-excitation).
    presets = {"cpu": {"steps": 12000, "warmup_fraction": 0.75, "anchor": 10.0},
               "paper": {"steps": PAPER_STEPS, "warmup_fraction": 0.0, "anchor": 0.0,
                         "metric": "paper", "tau": 0.15, "nce": 0.1, "identity": 5.0,
                         "adversarial": 1.0, "patches": 128, "proj_dim": 128,
                         "lr_g": 2e-4, "lr_d": 2e-4, "decay": 0.5, "batch": 8, "patch": 128,
                         "doses": [0.25], "kernels": ["hann"], "d_base": 64, "d_layers": 4}}
    gan_groups = {"d": ["d"], "g": ["g", "proj"]}
    defaults = {**WarmStartedGAN.defaults, "patches": 64, "nce": 0.5, "identity": 1.0,
                "metric": "patch_nce", "tau": 0.07, "proj_dim": 64}

    def build(self):
        self.option("metric", METRICS)
        widths = [self.hp["base"] * 2**k for k in range(self.hp["levels"])]
        return {"g": pdml_generator(**self.factory_kwargs()),
                "d": self.discriminator(),
                "proj": PatchProjector(widths, self.hp["proj_dim"])}

    def deployable(self):
        return self.nets["g"]

    def _metric(self, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The metric loss averaged over the encoder's levels, at the same random locations of
        the input's and the output's features."""
        encode = self.nets["g"].core.encode
        f_in, f_out = encode(hu_to_net(source)), encode(hu_to_net(output))
        index = [torch.randperm(f.shape[-1] * f.shape[-2], device=f.device)[:self.hp["patches"]]
                 for f in f_in]
        q = self.nets["proj"](f_out, index)
        k = self.nets["proj"](f_in, index)
        loss = METRICS[self.hp["metric"]]
        return sum(loss(a, b, self.hp["tau"]) for a, b in zip(q, k)) / len(q)

    def gan_weights(self):
        metric = "patch_metric_paper" if self.hp["metric"] == "paper" else "patch_metric_nce"
        return {"g/adversarial_lsgan": self.hp["adversarial"], f"g/{metric}": self.hp["nce"],
                "g/identity_l1": self.hp["identity"], "d/lsgan": 0.5}

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

    def phases(self):
        phases = super().phases()
        if self.hp["metric"] == "paper":  # (the term's name says CUT's PatchNCE otherwise)
            phases[-1].notes.append(
                f"metric: the paper's authors' loss at temperature {self.hp['tau']:g} over "
                f"{self.hp['patches']} locations per encoder level, negatives input-input and "
                "output-output")
        return phases
