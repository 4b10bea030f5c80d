"""VAGAN trainer (paired, simulated), in the paper's two stages.

Stage 1 (PSNR-oriented): attention + multi-scale loss. Stage 2 (GAN, from the stage-1
generator, fresh optimizers at a lower rate): 0.005 GAN + attention + 0.01 multi-scale + 0.5
perceptual (feature MSE) for the generator; the attentive discriminator adds its attention loss
with weight 0.05 (the map of a denoised image must match the generator's last map M_T, that of
a normal-dose image must be zero).

The ``paper`` preset is the paper's setup: its generator depth (``depth="paper"``: 14-layer
RED backbone, three conv blocks in the attentive block, full resolution), its discriminator
(eight 3x3 convs, FC 512, sigmoid: ``discriminator="paper"``), the log loss, batch 32 of 64x64
patches of simulated quarter dose with their own normal dose, Adam at 2e-4 for 20 epochs of
140,000 patches (87,500 steps), then the GAN stage at 1e-4. Where the paper is silent:
- the GAN stage's length: as long as stage 1 (20 epochs, 87,500 steps), since the paper gives
  one epoch count; the discriminator's rate: the generator's, 1e-4;
- the generator's GAN term is the non-saturating -log D(G(x)) (the paper writes
  log(1 - D(G(x))), whose gradient vanishes while D rejects G's images; same fixed point);
- widths: 32 channels in the attentive block (as the attentive GAN of Qian et al. 2018 it
  follows), 96 in the generator (RED-CNN's), discriminator from 64 (SRGAN's);
- Adam's betas are the shared loop's (0.5, 0.999);
- the perceptual network: a VGG19 pretrained on ImageNet in the paper; here the frozen CT
  encoder PVM stands in (no ImageNet weights are downloaded) unless ``--pvm`` gives torchvision
  VGG19 weights; the feature MSE is averaged over its four stages (relu1_2 .. relu4_4 for VGG19),
  the paper does not say which layer;
- the attention target M is 1 where |LD - ND| exceeds its image mean (the paper's residual
  thresholded at its mean; the absolute value since noise raises and lowers pixels alike);
- the discriminator sees the liver window [-160, 240] HU (the paper's display window);
- kernels: every one the data was prepared with (the Mayo data came with its own);
- the attentive block's conv blocks are the shared ResBlock (conv, instance norm, LeakyReLU,
  conv, instance norm, + identity);
- as every denoiser here, the generator predicts the noise and the shipped wrapper
  (HUPreservingDenoiser) subtracts only its part above a 2-pixel Gaussian, keeping the input's
  low band (mean CT numbers) exactly; the multi-scale loss is on the raw noise estimates.
The ``cpu`` preset is what ships (reduced network, PatchGAN discriminator, least-squares GAN,
the generator also seeing the two adjacent slices: ``context`` 3; the paper preset sees one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ldct.nets.blocks import HU_SCALE, hu_to_net
from ldct.nets.encoder import soft_tissue_window as win
from ldct.nets.vagan import (
    AttentiveDiscriminator,
    PaperAttentiveDiscriminator,
    downsample,
    noise_mask,
    vagan_generator,
    widened,
)
from ldct.train.losses import log_loss, lsgan, perceptual
from ldct.train.method import Method, Phase

ATTENTION_WEIGHTS = (0.125, 0.25, 0.5, 1.0)  # one per recurrent step
SCALES = ((4, 0.25), (2, 0.5), (1, 1.0))  # (downsampling factor, weight)
GAN_LOSSES = {"lsgan": lsgan, "bce": log_loss}  # "bce": the paper's log loss
DISCRIMINATORS = {"patch": "4-conv PatchGAN, attention map from its 2nd conv (reduced)",
                  "paper": "eight 3x3 convs, FC 512, FC 1, attention map from the 4th conv"}
PAPER_STAGE_STEPS = 140_000 * 20 // 32  # 20 epochs of 140,000 patches at batch 32: 87,500


class VAGANMethod(Method):
    name = "vagan"
    paired = True
    needs_pvm = True
    # cpu: the reduced networks with the two adjacent slices in (what ships); paper: one image
    presets = {"cpu": {"steps": 8000, "context": 3},
               "paper": {"steps": 2 * PAPER_STAGE_STEPS, "pretrain_fraction": 0.5,
                         "patch": 64, "batch": 32, "lr": 2e-4, "lr_g": 1e-4, "lr_d": 1e-4,
                         "doses": [0.25], "width": 32, "base": 96, "upsample": "transpose",
                         "depth": "paper", "blocks": 3, "factor": 1, "discriminator": "paper",
                         "d_base": 64, "gan_loss": "bce", "gan": 0.005, "multiscale": 0.01,
                         "perceptual": 0.5, "d_attention": 0.05}}
    # a trained generator adapts as the shipped one was last trained: the generator alone with
    # the attention and multi-scale losses at 5e-5 (rounds ending in the GAN stage lost on the
    # worst case, models/vagan/training_note.md)
    finetune = {"pretrain_fraction": 1.0, "lr": 5e-5}
    defaults = {"width": 8, "base": 32, "upsample": "bilinear", "depth": "reduced",
                "blocks": 1, "factor": 2, "discriminator": "patch", "d_base": 16,
                "gan_loss": "lsgan", "gan": 0.005, "multiscale": 0.01, "perceptual": 0.5,
                "d_attention": 0.05, "pretrain_fraction": 0.5,
                "lr_g": 1e-4, "lr_d": 1e-4, "relative": False, "context": 1}

    def __init__(self, hp, pvm=None):
        super().__init__(hp, pvm)
        self.gan_loss = GAN_LOSSES[self.option("gan_loss", GAN_LOSSES)]

    @property
    def context(self) -> int:
        """Adjacent slices the generator sees (1: the paper's single image)."""
        return self.hp["context"]

    def factory_kwargs(self):
        return {k: self.hp[k] for k in ("width", "base", "upsample", "depth", "blocks",
                                        "factor", "context")}

    def start_from(self, state_dict):
        """A one-slice model's weights also start a model of more slices (`widened`)."""
        super().start_from(widened(state_dict, self.deployable().state_dict()))

    def build(self):
        kind = self.option("discriminator", DISCRIMINATORS)
        d = (PaperAttentiveDiscriminator(self.hp["d_base"], self.hp["patch"]) if kind == "paper"
             else AttentiveDiscriminator(self.hp["d_base"]))
        return {"g": vagan_generator(**self.factory_kwargs()), "d": d}

    def optim_groups(self):
        return {"pretrain": ["g"], "d": ["d"], "g": ["g"]}

    def schedule(self, step):
        pretraining = step < self.first_phase_steps("pretrain_fraction")
        return ["pretrain"] if pretraining else ["d", "g"]

    def deployable(self):
        return self.nets["g"]

    def phases(self):
        first = self.first_phase_steps("pretrain_fraction")
        hp, gan = self.hp, self.hp["gan_loss"]
        doses = hp["doses"] or "every prepared dose"
        data = (f"simulated low dose (doses: {doses}) -> its own normal dose at the same place, "
                f"{hp['patch']}x{hp['patch']} patches, batch {hp['batch']}")
        if self.context > 1:
            data += (f"; stacks of {self.context} adjacent slices in, the centre slice's "
                     "normal dose the target")
        terms = [f"attention_mse: MSE of each recurrent map to M (1 where |LD - ND| > its "
                 f"mean), step weights {ATTENTION_WEIGHTS}",
                 ("multiscale_mse: image MSE (each sample's relative to its input's) at scales "
                  if hp["relative"] else "multiscale_mse: image MSE at scales ")
                 + f"1/4, 1/2, 1 with weights {tuple(w for _, w in SCALES)}"]
        pretrain = Phase("pretrain", first, "paired", ["g"],
                         {"g/attention_mse": 1.0, "g/multiscale_mse": 1.0}, data,
                         [*terms, f"Adam, lr {hp.get('lr_pretrain', hp['lr'])}"])
        pvm = "none" if self.pvm is None else self.pvm.source.split(":")[0]
        adversarial = Phase(
            "gan", hp["steps"] - first, "paired", ["g", "d"],
            {f"g/adversarial_{gan}": hp["gan"], "g/attention_mse": 1.0,
             "g/multiscale_mse": hp["multiscale"], "g/perceptual_mse": hp["perceptual"],
             f"d/{gan}": 1.0, "d/attention_mse": hp["d_attention"]}, data,
            [*terms, f"perceptual_mse: feature MSE of the frozen PVM ({pvm})",
             "d/attention_mse: MSE(D_map(G(x)), M_T) + MSE(D_map(y), 0)",
             f"discriminator: {DISCRIMINATORS[hp['discriminator']]}",
             "the generator starts from its pretrained weights",
             f"Adam, lr g {hp['lr_g']}, d {hp['lr_d']}"])
        return [pretrain, adversarial]

    def losses(self, group, batch):
        g, d = self.nets["g"], self.nets["d"]
        with torch.set_grad_enabled(group != "d"):
            maps, noises = g.core.forward_all(hu_to_net(batch["ld"]))
            fake = g.remove(batch["ld"], noises[-1])
        ld, nd = g.centre(batch["ld"]), g.centre(batch["nd"])  # what is denoised, its target
        target = noise_mask(ld, nd)
        if group == "d":
            logits_fake, map_fake = d(win(fake.detach()))
            logits_real, map_real = d(win(nd))
            att = (F.mse_loss(map_fake, downsample(maps[-1].detach(), d.map_scale))
                   + F.mse_loss(map_real, torch.zeros_like(map_real)))
            loss = self.gan_loss(logits_real, True) + self.gan_loss(logits_fake, False)
            return {"total": loss + self.hp["d_attention"] * att, "d_att": att}
        attention = sum(w * F.mse_loss(m, target) for w, m in zip(ATTENTION_WEIGHTS, maps))
        # relative: each sample's error over its input's at that scale (a kernel mix's sharp
        # doses otherwise dominate, as they did pdml's warm-up)
        multiscale = sum(w * self.image_loss(downsample(ld, f) - n * HU_SCALE, downsample(nd, f),
                                             downsample(ld, f))
                         for (f, w), n in zip(SCALES, noises))
        if group == "pretrain":
            return {"total": attention + multiscale, "attention": attention,
                    "multiscale": multiscale}
        perc = perceptual(self.pvm, fake, nd, distance=F.mse_loss)
        adv = self.gan_loss(d(win(fake))[0], True)
        total = (self.hp["gan"] * adv + attention + self.hp["multiscale"] * multiscale
                 + self.hp["perceptual"] * perc)
        return {"total": total, "adv": adv, "attention": attention, "multiscale": multiscale,
                "perc": perc}
