"""What a training method provides to the shared loop: networks, optimizer groups, losses."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ldct.nets.blocks import HUPreservingDenoiser, PatchDiscriminator
from ldct.nets.encoder import FeatureExtractor
from ldct.train.losses import in_float32

WINDOW_HU = 400.0  # image losses are measured in liver-window widths
SUPERVISION = ("paired", "unpaired", "self-supervised", "distillation")


@dataclass
class Phase:
    """One stage of a method's training as `ldct train --describe` reports it.

    ``supervision``: "paired" (low dose -> its own normal dose), "unpaired" (low-dose and
    normal-dose slabs never paired), "self-supervised" (noisy scans alone) or "distillation"
    (a frozen network's outputs as targets). ``losses``: term -> weight in the minimized total.
    """

    name: str
    steps: int
    supervision: str
    trains: list[str]
    losses: dict[str, float]
    data: str
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.supervision not in SUPERVISION:
            raise ValueError(f"phase {self.name!r}: supervision {self.supervision!r} is not one "
                             f"of {SUPERVISION}")


class Method:
    """Base class: subclasses build their nets and losses; the loop does everything else.

    ``hp`` holds the method's hyper-parameters (preset values merged with overrides); ``pvm``
    is the frozen feature extractor for perceptual/semantic losses (None if unused).
    """

    name = "method"
    paired = False  # does the sampler give normal-dose patches at the same place?
    context = 1  # adjacent slices stacked as the network's input channels
    sample_context: int | None = None  # slices per training sample, when more than context
    needs_pvm = False
    needs_noise = False  # batches with 'noise': fresh noise of the low dose's statistics
    scans_alone = False  # learns from noisy scans alone: no normal dose, no simulated dose
    defaults: dict[str, Any] = {}
    presets: dict[str, dict[str, Any]] = {}  # per-preset values that override the loop's
    finetune: dict[str, Any] = {}  # overrides when starting from trained weights

    def __init__(self, hp: dict[str, Any], pvm: FeatureExtractor | None = None) -> None:
        self.hp = {**self.defaults, **hp}
        self.pvm = pvm
        self.nets = nn.ModuleDict(self.build())

    def build(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def option(self, key: str, options: Iterable[str]) -> str:
        """``hp[key]``, which must be one of ``options``: a wrong value fails when the method
        is built, naming the choices, not hours into its training."""
        value, options = self.hp[key], tuple(options)
        if value not in options:
            raise ValueError(f"{self.name} {key} {value!r}: choose from {', '.join(options)}")
        return value

    def optim_groups(self) -> dict[str, list[str]]:
        """Optimizer group -> names of the nets it updates (stepped in this order)."""
        raise NotImplementedError

    def schedule(self, step: int) -> list[str]:
        """The groups updated at ``step`` (all by default; two-phase methods override)."""
        return list(self.optim_groups())

    def at_step(self, step: int) -> None:
        """Called at every step boundary: before each step's updates and once after the last
        (a two-phase method hands weights from one phase to the next here)."""

    def first_phase_steps(self, fraction: str) -> int:
        """Steps of a two-phase method's first phase, from the fraction of all steps in
        ``hp[fraction]`` (rounded up, so that a fraction > 0 always gives a step)."""
        return math.ceil(self.hp[fraction] * self.hp["steps"])

    def losses(self, group: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named loss terms for ``group``; the key 'total' is what is minimized."""
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        """The training's stages with their steps, supervision and weighted losses (for
        `--describe`, the cards and the tests that pin each paper preset to its paper)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What this method with these hyper-parameters would train, without training."""
        nets = {name: {"parameters": parameter_count(net), "conv_layers": conv_layers(net)}
                for name, net in self.nets.items()}
        phases = [asdict(p) for p in self.phases() if p.steps > 0]
        return {"method": self.name, "networks": nets,
                "ships": {"parameters": parameter_count(self.deployable()),
                          "conv_layers": conv_layers(self.deployable()),
                          "kwargs": self.factory_kwargs()},
                "pvm": None if self.pvm is None else {
                    "parameters": parameter_count(self.pvm), "frozen": True,
                    "kind": type(self.pvm).__name__},
                "phases": phases,
                "optimizers": self.optimizers(),
                "discriminators": self.discriminators(),
                "supervision": sorted({p["supervision"] for p in phases}),
                "data": {"patch": self.hp["patch"], "batch": self.hp["batch"],
                         "doses": self.hp["doses"], "kernels": self.hp["kernels"],
                         "thickness_slices": self.hp.get("thickness", [1]),
                         "slices_per_sample": self.sample_context or self.context,
                         "sampler": "paired" if self.paired else "unpaired"},
                "steps": self.hp["steps"]}

    def optimizers(self) -> dict[str, dict[str, Any]]:
        """Per optimizer group: the nets it updates, Adam's learning rate and betas (what
        the loop builds) and the learning-rate schedule."""
        decay = round(self.hp.get("decay", 0.0) * self.hp["steps"])
        schedule = ("constant" if not decay else
                    f"constant, then linear to 0 over the last {decay} of {self.hp['steps']} "
                    "steps")
        return {group: {"nets": nets, "lr": learning_rate(self.hp, group, 0),
                        "betas": list(ADAM_BETAS), "schedule": schedule}
                for group, nets in self.optim_groups().items()}

    def discriminators(self) -> dict[str, dict[str, Any]]:
        """The networks that judge real from fake ('d', 'd_*'): kind and size."""
        return {name: {"kind": type(net).__name__, "parameters": parameter_count(net),
                       "conv_layers": conv_layers(net)}
                for name, net in self.nets.items() if name == "d" or name.startswith("d_")}

    def deployable(self) -> HUPreservingDenoiser:
        """The network that ships (HU in, HU out)."""
        raise NotImplementedError

    def image_loss(self, output: torch.Tensor, target: torch.Tensor,
                   noisy: torch.Tensor) -> torch.Tensor:
        """The image loss: MSE, or with ``relative`` in ``hp`` each sample's squared error
        over its input's (:func:`relative_mse`)."""
        return (relative_mse(output, target, noisy) if self.hp.get("relative")
                else image_mse(output, target))

    def start_from(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Start from trained deployable weights (fine-tuning, or retraining from a model.pt)."""
        self.deployable().load_state_dict(state_dict)

    def factory_kwargs(self) -> dict[str, Any]:
        """Arguments that rebuild :meth:`deployable` from the registry's factory."""
        raise NotImplementedError


ADAM_BETAS = (0.5, 0.999)  # every optimizer (Cycle-GAN's, the GAN papers' and their code's)


def learning_rate(hp: dict[str, Any], group: str, step: int) -> float:
    """The learning rate of optimizer ``group`` at ``step``: its own (``lr_<group>``) or the
    run's, constant, then with ``decay`` > 0 falling linearly to 0 over that last fraction of
    the steps (Cycle-GAN's schedule: 1 - max(0, step - start) / (decay steps + 1))."""
    decay = round(hp.get("decay", 0.0) * hp["steps"])
    factor = 1.0 - max(0, step - (hp["steps"] - decay)) / (decay + 1)
    return hp.get(f"lr_{group}", hp["lr"]) * factor


def parameter_count(net: nn.Module) -> int:
    """Trainable and frozen parameters of a network."""
    return sum(p.numel() for p in net.parameters())


def conv_layers(net: nn.Module) -> int:
    """Convolution layers of a network (transposed ones included), as papers count them."""
    return sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in net.modules())


@in_float32
def image_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 distance of HU images in liver-window widths."""
    return (a - b).abs().mean() / WINDOW_HU


@in_float32
def image_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MSE of HU images in liver-window widths."""
    return ((a - b) / WINDOW_HU).pow(2).mean()


@in_float32
def relative_mse(output: torch.Tensor, target: torch.Tensor,
                 noisy: torch.Tensor) -> torch.Tensor:
    """Each sample's squared error over its input's (``noisy`` - ``target``), averaged: every
    sample weighs by its PSNR gain, so a sharp kernel's 700 HU noise at dose 0.05 does not drown
    a Hann quarter dose's 50 HU (plain MSE over such a mix cost pdml 2.6 dB on Hann)."""
    dims = tuple(range(1, output.dim()))
    error = (output - target).pow(2).mean(dims)
    reference = (noisy - target).pow(2).mean(dims).clamp_min(1.0)  # HU^2
    return (error / reference).mean()


class WarmStartedGAN(Method):
    """An unpaired GAN whose generator ``g`` is first warmed up, then trained adversarially.

    Warm-up (``warmup``):
    - ``simulated`` (default): MSE from the simulated low dose of normal-dose patches to the
      normal dose (``relative``: each sample's MSE over its input's, :func:`relative_mse`).
      A site can always simulate low dose from its own normal-dose scans (as
      VAGAN trains); no low-dose scan is ever paired with its normal dose, and the real
      low-dose images reach the generator only in the unpaired GAN stage.
    - ``n2n``: adjacent-slice Noise2Noise (slice k in, slices k-1 and k+1 as targets: their
      noise is independent of slice k's), which needs only noisy scans. On CPU budgets it
      reached only ~+1.9 dB (pdml, 4000-16000 steps), short of the +3 dB target.
    Then the method's own GAN losses (``gan_losses``) on the centre slices, with fresh
    optimizers, plus an ``anchor`` term: L1 to a frozen copy of the warmed-up generator.
    Without it the identity/cycle/metric terms, all measured against the noisy input, pull the
    generator back to the noisy input within a few hundred steps (seen for pan, pdml and alden).
    """

    sample_context = 3
    gan_groups: dict[str, list[str]] = {}
    finetune = {"warmup_fraction": 0.0}  # a trained generator needs no warm-up
    # d_base, d_layers: the PatchGAN's width and depth (16, 3: 42k parameters; 64, 4 is
    # Cycle-GAN's 70x70 PatchGAN)
    defaults = {"warmup": "simulated", "warmup_fraction": 0.5, "lr_d": 5e-5, "lr_g": 5e-5,
                "base": 16, "levels": 3, "res_blocks": 2, "adversarial": 1.0, "anchor": 1.0,
                "relative": False, "d_base": 16, "d_layers": 3}

    def __init__(self, hp, pvm=None):
        super().__init__(hp, pvm)
        if self.hp["anchor"]:
            self.nets["anchor"] = copy.deepcopy(self.nets["g"]).requires_grad_(False)

    def factory_kwargs(self):
        """The shared attention U-Net generator's size."""
        return {k: self.hp[k] for k in ("base", "levels", "res_blocks")}

    def optim_groups(self):
        return {"warmup": ["g"], **self.gan_groups}

    def schedule(self, step):
        if step < self.first_phase_steps("warmup_fraction"):
            return ["warmup"]
        if step == self.first_phase_steps("warmup_fraction") and self.hp["anchor"]:
            self.nets["anchor"].load_state_dict(self.nets["g"].state_dict())
        return list(self.gan_groups)

    def losses(self, group, batch):
        if group == "warmup" and self.hp["warmup"] == "simulated":
            low, normal = batch["nd_sim"][:, 1:2], batch["nd"][:, 1:2]
            loss = self.image_loss(self.nets["g"](low), normal, low)
            return {"total": loss, "simulated": loss}
        if group == "warmup":
            ld = batch["ld"]
            out = self.nets["g"](ld[:, 1:2])
            loss = 0.5 * (image_mse(out, ld[:, :1]) + image_mse(out, ld[:, 2:]))
            return {"total": loss, "n2n": loss}
        centre = {**batch, "ld": batch["ld"][:, 1:2], "nd": batch["nd"][:, 1:2]}
        terms = self.gan_losses(group, centre)
        if group == "g" and self.hp["anchor"]:
            with torch.no_grad():
                target = self.nets["anchor"](centre["ld"])
            anchor = image_l1(self.nets["g"](centre["ld"]), target)
            terms = {**terms, "total": terms["total"] + self.hp["anchor"] * anchor,
                     "anchor": anchor}
        return terms

    def discriminator(self) -> PatchDiscriminator:
        """A PatchGAN of the run's size (``d_base``, ``d_layers``)."""
        return PatchDiscriminator(base=self.hp["d_base"], layers=self.hp["d_layers"])

    def gan_losses(self, group: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def gan_weights(self) -> dict[str, float]:
        """The GAN stage's loss terms ('net/term') and their weights, as :meth:`gan_losses`
        sums them (the discriminators' terms included)."""
        raise NotImplementedError

    def phases(self):
        warmup = self.first_phase_steps("warmup_fraction")
        simulated = self.hp["warmup"] == "simulated"
        loss = ("relative_" if self.hp["relative"] and simulated else "") + \
            ("simulated_mse" if simulated else "n2n_mse")
        warm = Phase("warmup", warmup, "paired" if simulated else "self-supervised", ["g"],
                     {f"g/{loss}": 1.0},
                     "simulated low dose of normal-dose patches -> that normal dose" if simulated
                     else "slice k of a low-dose stack -> slices k-1 and k+1")
        weights = dict(self.gan_weights())
        notes = []
        if self.hp["anchor"]:
            weights["g/anchor_l1"] = float(self.hp["anchor"])
            notes.append("anchor: L1 to a frozen copy of the generator as the warm-up left it, "
                         "so the stage stays tied to the supervised warm-up")
        data = ("low-dose patches with the normal dose at the same place" if self.paired else
                "low-dose slabs and normal-dose slabs of disjoint slice sets, never paired")
        gan = Phase("gan", self.hp["steps"] - warmup, "paired" if self.paired else "unpaired",
                    [net for nets in self.gan_groups.values() for net in nets], weights, data,
                    notes)
        return [warm, gan]
