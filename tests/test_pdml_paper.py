"""The pdml and pan paper presets against the paper's authors' code and Cycle-GAN, and what
`--describe` prints for every method. Answer keys: the authors' loss written out by hand on a
constructed batch, their options (github.com/jcy132/DML_CT, options/train_options.py) and
Cycle-GAN's PatchGAN counted by hand."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch

from ldct.train import METHODS
from ldct.train.loop import build_method, describe, hyper_parameters
from ldct.train.method import learning_rate
from ldct.train.pdml import METRICS

TAU = 0.15  # the authors' metric_T
# Cycle-GAN's 70x70 PatchGAN (ndf 64, 3 strided layers), 4x4 kernels, instance norm with
# affine weights: convs 1->64, 64->128, 128->256, 256->512, 512->1 with biases, 3 norms
PATCHGAN = (16 * 64 + 64) + (16 * 64 * 128 + 128) + (16 * 128 * 256 + 256) \
    + (16 * 256 * 512 + 512) + (16 * 512 + 1) + 2 * (128 + 256 + 512)


def constructed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """One image, two locations, 2-D unit embeddings: q (output) = e1, e2; k (input) =
    (0.6, 0.8), (0.8, 0.6). Then q_i.k_i = 0.6 for both, k0.k1 = 0.96, q0.q1 = 0."""
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    k = torch.tensor([[[0.6, 0.8], [0.8, 0.6]]])
    return q, k


def test_the_paper_presets_metric_is_the_authors_loss_on_a_constructed_batch():
    method = build_method("pdml", hyper_parameters("pdml", "paper"), None)
    assert method.hp["tau"] == TAU
    q, k = constructed_batch()
    # authors: -mean exp(pos/T) + mean exp(kk/T) + mean exp(qq/T), diagonal out, / dim;
    # means over the 2 positives and the 2 x 2 pairs
    positive = math.exp(0.6 / TAU)
    input_pairs = 2 * math.exp(0.96 / TAU) / 4
    output_pairs = 2 * math.exp(0.0 / TAU) / 4
    hand = (-positive + input_pairs + output_pairs) / 2
    loss = METRICS[method.hp["metric"]](q, k, method.hp["tau"])
    assert float(loss) == pytest.approx(hand, rel=1e-6)
    # CUT's PatchNCE on the same batch is another number altogether: log(1 + e^((0.8-0.6)/T))
    cut = math.log1p(math.exp(0.2 / TAU))
    assert abs(float(loss) - cut) > 100.0


def test_the_negatives_stay_within_each_image():
    q, k = constructed_batch()
    q2, k2 = torch.cat([q, k]), torch.cat([k, q])  # a second image: the roles swapped
    loss = METRICS["paper"](q2, k2, TAU)
    # image 2 has the same positives (0.6) and its pairs swapped: the mean over both images
    # equals image 1's value; pairs across the two images (e.g. q0 of 1 with q0 of 2) are
    # never negatives, else exp(0.6/T) terms would enter the negatives
    one = (-math.exp(0.6 / TAU) + 2 * math.exp(0.96 / TAU) / 4 + 2 / 4) / 2
    assert float(loss) == pytest.approx(one, rel=1e-6)


def test_cli_describe_shows_the_papers_terms_weights_and_optimizers(ldct_command):
    done = subprocess.run([*ldct_command, "train", "pdml", "--preset", "paper", "--describe"],
                          capture_output=True, text=True, check=True)
    described = json.loads(done.stdout)
    (phase,) = described["phases"]
    assert phase["losses"] == {"g/adversarial_lsgan": 1.0, "g/patch_metric_paper": 0.1,
                               "g/identity_l1": 5.0, "d/lsgan": 0.5}
    assert any("temperature 0.15" in n and "input-input and output-output" in n
               and "128 locations" in n for n in phase["notes"])
    assert described["steps"] == 200 * 389  # 200 epochs of 3112 slices at batch 8
    for group in ("g", "d"):
        optimizer = described["optimizers"][group]
        assert optimizer["lr"] == 2e-4 and optimizer["betas"] == [0.5, 0.999]
        assert "linear to 0 over the last 38900 of 77800 steps" in optimizer["schedule"]
    assert described["optimizers"]["g"]["nets"] == ["g", "proj"]  # projections at the g rate
    assert described["discriminators"]["d"]["parameters"] == PATCHGAN
    assert described["data"]["batch"] == 8 and described["data"]["patch"] == 128
    assert described["data"]["doses"] == [0.25] and described["data"]["kernels"] == ["hann"]


def test_pan_paper_preset_has_cycle_gans_rate_schedule_and_patchgan_on_one_acquisition():
    described = describe("pan", "paper")
    for group in ("g", "d"):
        assert described["optimizers"][group]["lr"] == 2e-4
        assert "over the last 50000 of 100000 steps" in described["optimizers"][group]["schedule"]
    assert {name: d["parameters"] for name, d in described["discriminators"].items()} == \
        {"d_nd": PATCHGAN, "d_ld": PATCHGAN}
    assert described["data"]["doses"] == [0.25] and described["data"]["kernels"] == ["hann"]


def test_learning_rate_falls_linearly_to_zero_as_cycle_gan_schedules_it():
    hp = {"lr": 2e-4, "steps": 100, "decay": 0.5}  # 50 constant steps, then 50 decaying
    # Cycle-GAN: factor 1 - max(0, step - 50) / 51
    assert learning_rate(hp, "g", 0) == learning_rate(hp, "g", 50) == 2e-4
    assert learning_rate(hp, "g", 75) == pytest.approx(2e-4 * (1 - 25 / 51))
    assert learning_rate(hp, "g", 99) == pytest.approx(2e-4 * (1 - 49 / 51))
    assert learning_rate({**hp, "lr_d": 1e-4}, "d", 75) == pytest.approx(1e-4 * (1 - 25 / 51))
    assert learning_rate({"lr": 2e-4, "steps": 100}, "g", 99) == 2e-4  # no decay: constant


@pytest.mark.parametrize("name", sorted(set(METHODS) - {"encoder"}))
def test_describe_prints_rates_schedules_and_discriminators_for_every_method(name):
    described = describe(name, "paper")
    assert described["optimizers"]
    for optimizer in described["optimizers"].values():
        assert optimizer["lr"] > 0 and optimizer["schedule"].startswith("constant")
    gans = {"pan": {"d_nd", "d_ld"}, "pdml": {"d"}, "alden": {"d"}, "vagan": {"d"},
            "n2n25d": set()}
    assert set(described["discriminators"]) == gans[name]


def test_n2n25d_paper_student_distils_from_low_dose_stacks_only():
    """A normal-dose stack of NaNs would poison the distillation loss if the student saw it:
    the paper's framework needs no normal dose."""
    hp = {**hyper_parameters("n2n25d", "paper"), "base": 8, "student_base": 8}
    method = build_method("n2n25d", hp, None)
    low = 40.0 + 20.0 * torch.randn(2, 5, 32, 32, generator=torch.Generator().manual_seed(0))
    batch = {"ld": low, "nd": torch.full_like(low, float("nan"))}
    assert torch.isfinite(method.losses("student", batch)["total"])
    cpu = build_method("n2n25d", {**hyper_parameters("n2n25d", "cpu"), "base": 8,
                                  "student_base": 8}, None)
    assert torch.isnan(cpu.losses("student", batch)["total"])  # what ships distils on both
    assert describe("n2n25d", "paper")["phases"][1]["data"] == "low-dose stacks only"
