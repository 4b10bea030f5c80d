"""Registers the shipped denoiser networks in the model catalogue (see ldct.registry).

Titles and supervision strings say what the shipped training really was (README "The
denoisers"): pan, pdml and alden spend most of their steps on a supervised warm-up on simulated
low/normal-dose pairs and then a short unpaired GAN stage anchored to it (their first versions,
from which the shipped ones were retrained on four reconstruction kernels, shared one warm-up run
for pan and alden); the shipped n2n25d's recorruption noise came from the physics simulator
(its recipe now measures it from each scan, a retraining that did not ship yet).
"""

from __future__ import annotations

from ldct.nets.alden import alden_generator
from ldct.nets.n2n25d import n2n25d_student
from ldct.nets.pan import pan_generator
from ldct.nets.pdml import pdml_generator
from ldct.nets.vagan import vagan_generator
from ldct.registry import register

WARMED_UP = ("supervised warm-up on simulated low/normal-dose pairs (most steps), then a short "
             "unpaired GAN stage L1-anchored to the warmed-up generator; retrained from the "
             "first version's weights by the same two stages (the warm-up's MSE relative to "
             "each sample's input) on 4 reconstruction kernels and doses 0.05-0.5")

register("pan", "Cycle-GAN with perceptual attention U-Net (after a supervised warm-up)",
         "pan-cyclegan-liver-ldct.txt",
         WARMED_UP + " (the first version's warm-up was shared with alden)")(pan_generator)
register("pdml", "Patch-wise deep metric learning (after a supervised warm-up)",
         "patchwise-deep-metric-learning.txt", WARMED_UP)(pdml_generator)
register("alden", "Anatomy-aware discriminator + semantic contrastive loss (after a supervised "
         "warm-up)", "alden-anatomy-aware.txt",
         WARMED_UP + " with a normal-dose reference (the first version's warm-up was shared with "
         "pan)")(alden_generator)
register("n2n25d", "MSR2AU adjacent-slice denoiser with recorrupted centre (stage 1 of the paper)",
         "msr2au-fluoroscopy-unsupervised.txt",
         "no clean targets (noisy stacks predict their centre slice), but the shipped weights' "
         "recorruption noise was drawn from the physics simulator (Hann kernel), not measured "
         "from the scans (the recipe now measures it; that retraining did not ship yet)"
         )(n2n25d_student)
register("vagan", "Visual-attention GAN (reduced: fewer layers than the paper)",
         "vagan-visual-attention-gan.txt", "paired (simulated low dose, Hann kernel, half the "
         "patches retextured to a sharper kernel)")(vagan_generator)
