"""Registers the shipped denoiser networks in the model catalogue (see ldct.registry)."""

from __future__ import annotations

from ldct.nets.alden import alden_generator
from ldct.nets.n2n25d import n2n25d_student
from ldct.nets.pan import pan_generator
from ldct.nets.pdml import pdml_generator
from ldct.nets.vagan import vagan_generator
from ldct.registry import register

register("pan", "Cycle-GAN with perceptual attention U-Net", "pan-cyclegan-liver-ldct.txt",
         "unpaired low/normal dose; generator warmed up on simulated low dose")(pan_generator)
register("pdml", "Patch-wise deep metric learning", "patchwise-deep-metric-learning.txt",
         "unpaired low/normal dose; generator warmed up on simulated low dose")(pdml_generator)
register("alden", "Anatomy-aware discriminator + semantic contrastive learning",
         "alden-anatomy-aware.txt",
         "unpaired low/normal dose reference; generator warmed up on simulated low dose"
         )(alden_generator)
register("n2n25d", "Adjacent-slice Noise2Noise (MSR2AU, recorrupted centre)",
         "msr2au-fluoroscopy-unsupervised.txt", "none (noisy scans only)")(n2n25d_student)
register("vagan", "Visual-attention GAN", "vagan-visual-attention-gan.txt",
         "paired (simulated low dose)")(vagan_generator)
