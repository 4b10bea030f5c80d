"""VAGAN trainer (paired, simulated), in the paper's two stages.

Stage 1 (PSNR-oriented): attention + multi-scale loss. Stage 2 (GAN, fresh optimizer at a
lower rate): 0.005 GAN + attention + 0.01 multi-scale + 0.5 perceptual (feature MSE) for the
generator; the attentive discriminator adds its attention loss with weight 0.05 (the map of a
denoised image must match the generator's, that of a normal-dose image must be zero).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ldct.nets.blocks import HU_SCALE, hu_to_net
from ldct.nets.encoder import soft_tissue_window as win
from ldct.nets.vagan import AttentiveDiscriminator, downsample, noise_mask, vagan_generator
from ldct.train.losses import lsgan, perceptual
from ldct.train.method import Method, image_mse

ATTENTION_WEIGHTS = (0.125, 0.25, 0.5, 1.0)
SCALES = ((4, 0.25), (2, 0.5), (1, 1.0))  # (downsampling factor, weight)


class VAGANMethod(Method):
    name = "vagan"
    paired = True
    needs_pvm = True
    presets = {"cpu": {"steps": 8000}, "paper": {"steps": 120000}}
    finetune = {"pretrain_fraction": 0.0}  # a trained generator goes straight to its GAN stage
    defaults = {"width": 8, "base": 32, "upsample": "bilinear", "gan": 0.005, "multiscale": 0.01,
                "perceptual": 0.5,
                "d_attention": 0.05, "pretrain_fraction": 0.5,
                "lr_g": 1e-4, "lr_d": 1e-4}

    def factory_kwargs(self):
        return {"width": self.hp["width"], "base": self.hp["base"],
                "upsample": self.hp["upsample"]}

    def build(self):
        return {"g": vagan_generator(**self.factory_kwargs()), "d": AttentiveDiscriminator()}

    def optim_groups(self):
        return {"pretrain": ["g"], "d": ["d"], "g": ["g"]}

    def schedule(self, step):
        pretraining = step < self.first_phase_steps("pretrain_fraction")
        return ["pretrain"] if pretraining else ["d", "g"]

    def deployable(self):
        return self.nets["g"]

    def losses(self, group, batch):
        ld, nd = batch["ld"], batch["nd"]
        g = self.nets["g"]
        with torch.set_grad_enabled(group != "d"):
            maps, noises = g.core.forward_all(hu_to_net(ld))
            fake = g.remove(ld, noises[-1])
        target = noise_mask(ld, nd)
        if group == "d":
            logits_fake, map_fake = self.nets["d"](win(fake.detach()))
            logits_real, map_real = self.nets["d"](win(nd))
            att = (F.mse_loss(map_fake, downsample(maps[-1].detach(), 4))
                   + F.mse_loss(map_real, torch.zeros_like(map_real)))
            loss = lsgan(logits_real, True) + lsgan(logits_fake, False)
            return {"total": loss + self.hp["d_attention"] * att, "d_att": att}
        attention = sum(w * F.mse_loss(m, target) for w, m in zip(ATTENTION_WEIGHTS, maps))
        multiscale = sum(w * image_mse(downsample(ld, f) - n * HU_SCALE, downsample(nd, f))
                         for (f, w), n in zip(SCALES, noises))
        if group == "pretrain":
            return {"total": attention + multiscale, "attention": attention,
                    "multiscale": multiscale}
        perc = perceptual(self.pvm, fake, nd, distance=F.mse_loss)
        adv = lsgan(self.nets["d"](win(fake))[0], True)
        total = (self.hp["gan"] * adv + attention + self.hp["multiscale"] * multiscale
                 + self.hp["perceptual"] * perc)
        return {"total": total, "adv": adv, "attention": attention, "multiscale": multiscale,
                "perc": perc}
