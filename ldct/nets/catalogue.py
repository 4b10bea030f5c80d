"""Registers the shipped denoiser networks in the model catalogue (see ldct.registry).

Titles and supervision strings say what the shipped training really was (README "The
denoisers"): pan, pdml and alden spend most of their steps on a supervised warm-up on simulated
low/normal-dose pairs and then a short unpaired GAN stage anchored to it (their first versions,
from which the shipped ones were retrained on four reconstruction kernels, shared one warm-up run
for pan and alden); n2n25d learns from the low-dose scans alone (its recorruption noise
measured from each scan).
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
             "first version's weights by the same two stages{rounds} (the warm-up's MSE relative "
             "to each sample's input) on 4 reconstruction kernels and doses 0.05-0.5")
# the retraining rounds on the kernel library: (warm-up steps, all steps) of each
ONE_ROUND = ((1200, 2000),)
THREE_ROUNDS = ((1200, 2000), (3000, 4000), (3000, 4000))
VAGAN_MSE_ROUNDS = 4  # vagan's final rounds without the GAN stage

# every network: the output is the input minus the high band of the predicted noise (the
# input's band below a 2-pixel Gaussian, 4 for n2n25d, passes untouched), at half resolution
# after a lossless pixel-unshuffle - no paper runs at half resolution; of the low band, only
# pdml's authors' code keeps one (a wavelet approximation)
HIGH_BAND = ("The output is the input minus the high band of the network's noise estimate "
             "(the input's band below a Gaussian of 2 pixels, 4 for n2n25d, passes untouched) "
             "and the network runs at half resolution after a lossless pixel-unshuffle; no "
             "paper runs at half resolution, and only pdml's authors' code keeps a low band "
             "(the input's db3 wavelet approximation at level 6, the network denoising the "
             "detail bands).")
DATA = ("Trained on simulated low doses of two public cases (ircadb01, tcia_pancreas001) "
        "{kernels}, not on the paper's data.")
COMMON = (HIGH_BAND, DATA.format(kernels="through 4 reconstruction kernels"))
CT_ENCODER = ("Perceptual/semantic features come from the project's 293k-parameter CT encoder "
              "(trained contrastively on simulated low/normal-dose pairs to be noise-invariant), "
              "a stand-in for the paper's ImageNet/pretrained vision model, which cannot be "
              "downloaded here (`--pvm` takes local torchvision weights).")
WARMED_UP_GAN = ("The paper trains unpaired throughout; what ships spent most of its steps on a "
                 "supervised warm-up (MSE from the simulated low dose of normal-dose patches to "
                 "that normal dose; first version {first} of {total} steps, then {retraining} "
                 "with each sample's MSE relative to its input's), and its short GAN stage is "
                 "L1-anchored to the warmed-up generator (weight {anchor}).")


def warmed_up(rounds: tuple[tuple[int, int], ...]) -> str:
    """The supervision string of a model retrained in ``rounds`` (warm-up, all steps)."""
    return WARMED_UP.format(rounds="" if len(rounds) == 1 else f" in {len(rounds)} rounds, "
                            "each from the previous one's weights")


def warmed_up_gan(first: int, total: int, anchor: float,
                  rounds: tuple[tuple[int, int], ...]) -> str:
    """The paper difference of a warmed-up GAN: the supervised share of every training."""
    each = ", ".join(f"{w} of {n}" for w, n in rounds)
    retraining = (f"this retraining {each} steps" if len(rounds) == 1 else
                  f"{len(rounds)} retraining rounds of {each} steps")
    return WARMED_UP_GAN.format(first=first, total=total, anchor=anchor, retraining=retraining)

register("pan", "Cycle-GAN with perceptual attention U-Net (after a supervised warm-up)",
         "pan-cyclegan-liver-ldct.txt",
         warmed_up(THREE_ROUNDS) + " (the first version's warm-up was shared with alden)",
         differences=(warmed_up_gan(9350, 11000, 10, THREE_ROUNDS),
                      "The second generator (normal -> low dose) starts untrained when the GAN "
                      "stage starts (1650 steps in the first version, then 800, 1000 and 1000 in "
                      "the retraining rounds: only the deployable generator carries over).",
                      "Cycle weight 2 (Cycle-GAN's is 10: with it the cycle term pulled the "
                      "generator back to the noisy input); the paper does not state its weights.",
                      "Generator and alden's are the same network (269,326 parameters); the "
                      "first versions of pan and alden shared one warm-up run (same batches) "
                      "and differed only in their GAN stage.",
                      CT_ENCODER, *COMMON))(pan_generator)
register("pdml", "Patch-wise deep metric learning (after a supervised warm-up)",
         "patchwise-deep-metric-learning.txt", warmed_up(ONE_ROUND),
         differences=(warmed_up_gan(9000, 12000, 10, ONE_ROUND),
                      "The metric loss is CUT's PatchNCE (a cross-entropy of each output "
                      "location against the input's locations, temperature 0.07), weight 0.5 "
                      "over 64 locations per image. The paper's authors' code uses the paper's "
                      "own loss - negatives of the same noise level, input-input and "
                      "output-output with the diagonal left out, in an exponential form - at "
                      "temperature 0.15, weight 0.1 over 128 locations, with identity weight 5 "
                      "and Adam 2e-4 decaying linearly: the paper preset "
                      "(`ldct.train.losses.patch_metric`).",
                      "The paper's low and normal doses come from different acquisitions, whose "
                      "CT numbers differ, and its loss is to keep the input's; here both come "
                      "from the same scans (simulated low doses), so no CT-number shift between "
                      "acquisitions was there to learn or to test that on.",
                      *COMMON))(pdml_generator)
register("alden", "Attention U-Net with a cross-attention discriminator and an input-anchored "
         "contrastive loss (after a supervised warm-up; not the paper's anatomy-aware recipe)",
         "alden-anatomy-aware.txt",
         warmed_up(THREE_ROUNDS) + " with an unrelated normal-dose patch as reference (the "
         "first version's warm-up was shared with pan)",
         differences=(warmed_up_gan(9000, 12000, 1, THREE_ROUNDS),
                      "The semantic contrastive loss runs in the reverse direction: its "
                      "positive is the same region of the low-dose input and its negatives the "
                      "input's other regions and an unrelated normal-dose patch's regions; the "
                      "paper pulls the output toward the normal dose's same region and pushes "
                      "it from the low dose's (`contrast_mode`: 'input' ships, 'paper' is the "
                      "paper preset's).",
                      "The discriminator's reference is another normal-dose patch of the batch, "
                      "not an anatomy-matched one; together with the stand-in encoder little of "
                      "'anatomy-aware' is left in what ships.",
                      "Same generator as pan (269,326 parameters); the first versions shared "
                      "one warm-up run.", CT_ENCODER, *COMMON))(alden_generator)
register("n2n25d", "MSR2AU adjacent-slice denoiser with recorrupted centre (stage 1 of the paper)",
         "msr2au-fluoroscopy-unsupervised.txt",
         "self-supervised on the low-dose scans alone: noisy 5-slice stacks predict their "
         "centre slice, with recorruption noise measured from each scan (no normal dose, no "
         "simulator noise model); the scans were simulated low doses",
         differences=("Stage 1 only: the paper's stage 2 (knowledge distillation for "
                      "uncorrelated noise, recursive filtering with motion compensation for "
                      "correlated noise) does not ship; the teacher's own network ships, as "
                      "every student distilled from it on the CPU budget ended below it (the "
                      "paper preset turns both on: `--set recursive=...`, `teacher_input`).",
                      "The teacher also sees the centre slice, recorrupted (R2R: input y + 0.5 m, "
                      "target y - 2 m), besides its neighbours; m has the texture and local "
                      "level measured from the scan's own across-slice differences "
                      "(`ldct/noise_bank.py`). The first version (git history) drew it from the "
                      "physics simulator instead.",
                      "The loss is each sample's squared error relative to its measured noise "
                      "power (one scale for every kernel and dose).",
                      "It removes a calibrated share of its noise estimate (the card's Network "
                      "line): trained on recorrupted inputs, noisier than the scans it is then "
                      "given, it smoothed past the best estimate when removing all of it (R2R "
                      "averages passes over fresh recorruptions instead; the share was chosen on "
                      "the training slabs, `benchmarks/quality/gain_n2n25d.md`).",
                      "The teacher trains on the full band but ships high-passed (the input "
                      "below a 4-pixel Gaussian kept).",
                      "The paper's pixel-wise motion fusion and its edge-preserving loss are "
                      "not implemented: the paper preset's recursive filter aligns slices by "
                      "one rigid subpixel shift per pair, and its student distils with a plain "
                      "MSE (on low-dose stacks only, as the paper needs no normal dose).",
                      "The paper denoises fluoroscopy frames; here the frames are CT slices.",
                      DATA.format(kernels="through 4 reconstruction kernels, 1-2 slices thick, "
                                  "of which only the low doses were used")
                      ))(n2n25d_student)
register("vagan", "Visual-attention GAN (reduced: fewer layers than the paper; 3 adjacent "
         "slices in; its last rounds without the GAN stage)",
         "vagan-visual-attention-gan.txt", "paired (simulated low doses 0.05-0.5 through 4 "
         "reconstruction kernels with their own normal dose; retrained three times from the "
         "first version, which had the Hann kernel with half the patches retextured, then "
         f"widened to 3 adjacent slices in: one round with the GAN stage, {VAGAN_MSE_ROUNDS} "
         "without it)",
         differences=("Reduced networks: the attentive block has 1 of the paper's 3 conv blocks, "
                      "the generator 7 conv layers against 14 (70k parameters), the "
                      "discriminator 4 convs with a patch map and a least-squares loss against "
                      "8 convs + a 512-unit fully connected layer and the log loss (the paper "
                      "preset has the paper's).",
                      "2.5D: the generator also sees the two adjacent slices, whose noise is "
                      "independent of the centre's while the anatomy is close (the attentive "
                      "block sees the centre only); the paper's network sees one image. The "
                      "one-slice weights started it, the neighbours' input weights at zero.",
                      f"Its last {VAGAN_MSE_ROUNDS} rounds trained the generator alone with the "
                      "attention and multi-scale losses (the paper's first, PSNR-oriented stage, "
                      "Adam at 5e-5), with no GAN stage after them: a GAN-ended round lost to "
                      "non-local means on the training slabs' worst case, these beat it "
                      "(`models/vagan/training_note.md`). Its texture is that stage's, smoother "
                      "than a GAN-finished model's.",
                      "The multi-scale loss trains the full band, but the network ships "
                      "high-passed (the input below a 2-pixel Gaussian kept).",
                      "8000 steps of batch 8, then 2000 + 4000 + 4000 retraining steps with the "
                      "multi-scale MSE relative to each sample's input, then 6000 (3 slices in) "
                      f"+ {VAGAN_MSE_ROUNDS} x 4000 (the paper: 20 epochs of 140,000 patches at "
                      "batch 32, then the GAN stage, plain MSE).",
                      CT_ENCODER, *COMMON))(vagan_generator)
