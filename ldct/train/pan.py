"""PAN trainer: Cycle-GAN with cycle, adversarial, identity and perceptual (cycle) losses."""

from __future__ import annotations

import torch

from ldct.nets.encoder import soft_tissue_window as win
from ldct.nets.pan import pan_generator
from ldct.train.losses import lsgan, perceptual
from ldct.train.method import WarmStartedGAN, image_l1


class PANMethod(WarmStartedGAN):
    name = "pan"
    needs_pvm = True
    # anchor 10: with 1 the cycle loss, which must rebuild the noisy input from the output,
    # pulled the generator back to the noisy input. With anchor 10 and cycle 10 the cpu run
    # still lost ~1 dB in its 1050 GAN steps, so the cpu preset weighs the cycle 2 (the anchor
    # dominates) and gives the warm-up 9350 steps (at 5950 it was still improving).
    # paper: unpaired Cycle-GAN from the start (no warm-up, no anchor), as the paper trains
    # on real unpaired scans. It states the losses (adversarial, cycle, identity, perceptual)
    # but not their weights: cycle 10 and identity 5 are Cycle-GAN's (identity 0.5 x cycle),
    # perceptual 1 on the cycle reconstructions; 100000 steps of batch 16 (silent too). As
    # Cycle-GAN: Adam 2e-4 (betas 0.5, 0.999) for generators and discriminators, constant for
    # the first half and falling linearly to 0 over the second, and its 70x70 PatchGAN
    # (2.8 M parameters). The low-dose domain is one dose and one kernel: a deterministic
    # inverse generator cannot map a normal dose onto a mix of 6 doses x 4 kernels, and the
    # cycle loss would then reward leaking the noise through the denoised image.
    presets = {"cpu": {"steps": 11000, "warmup_fraction": 0.85, "anchor": 10.0, "cycle": 2.0},
               "paper": {"steps": 100000, "batch": 16, "warmup_fraction": 0.0, "anchor": 0.0,
                         "cycle": 10.0, "identity": 5.0, "perceptual": 1.0,
                         "lr_g": 2e-4, "lr_d": 2e-4, "decay": 0.5, "doses": [0.25],
                         "kernels": ["hann"], "d_base": 64, "d_layers": 4}}
    gan_groups = {"d": ["d_nd", "d_ld"], "g": ["g", "f"]}
    defaults = {**WarmStartedGAN.defaults, "cycle": 10.0, "identity": 1.0,
                "perceptual": 1.0}

    def build(self):
        return {"g": pan_generator(**self.factory_kwargs()),  # low -> normal dose
                "f": pan_generator(**self.factory_kwargs()),  # normal -> low dose
                "d_nd": self.discriminator(), "d_ld": self.discriminator()}

    def deployable(self):
        return self.nets["g"]

    def gan_weights(self):
        return {"g/adversarial_lsgan": self.hp["adversarial"], "g/cycle_l1": self.hp["cycle"],
                "g/identity_l1": self.hp["identity"], "g/perceptual_cycle": self.hp["perceptual"],
                "d/lsgan": 0.5}

    def gan_losses(self, group, batch):
        n = self.nets
        ld, nd = batch["ld"], batch["nd"]
        if group == "d":
            with torch.no_grad():
                fake_nd, fake_ld = n["g"](ld), n["f"](nd)
            d = (lsgan(n["d_nd"](win(nd)), True) + lsgan(n["d_nd"](win(fake_nd.detach())), False)
                 + lsgan(n["d_ld"](win(ld)), True) + lsgan(n["d_ld"](win(fake_ld.detach())), False))
            return {"total": 0.5 * d}
        fake_nd, fake_ld = n["g"](ld), n["f"](nd)
        adv = lsgan(n["d_nd"](win(fake_nd)), True) + lsgan(n["d_ld"](win(fake_ld)), True)
        back_ld, back_nd = n["f"](fake_nd), n["g"](fake_ld)
        cycle = image_l1(back_ld, ld) + image_l1(back_nd, nd)
        identity = image_l1(n["g"](nd), nd) + image_l1(n["f"](ld), ld)
        perc = perceptual(self.pvm, back_ld, ld) + perceptual(self.pvm, back_nd, nd)
        total = (self.hp["adversarial"] * adv + self.hp["cycle"] * cycle
                 + self.hp["identity"] * identity
                 + self.hp["perceptual"] * perc)
        return {"total": total, "adv": adv, "cycle": cycle, "identity": identity, "perc": perc}
