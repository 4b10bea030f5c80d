"""N2N-2.5D trainer: a teacher denoises the centre slice from noisy data only, then a
single-pass student is distilled from the frozen teacher on low-dose and normal-dose stacks (the
normal doses serve as unlabelled inputs, never as targets) for as many steps as the preset gives
it (none in the cpu preset, which ships the teacher).

``teacher_input`` "neighbours" (the paper preset) is the paper's stage 1: Noise2Noise across
slices, the teacher sees only the neighbours and its target is the measured centre, whose noise
is independent of theirs. Its best guess then carries the anatomy that changes between slices,
which capped it at ~+2 dB on 1.6 mm slices and made it worse than the input on 3 mm slices.
"recorrupted" (the default, what the cpu preset shipped) also shows the teacher the centre
slice, recorrupted (R2R, Pang et al. 2021): with fresh noise m of the scan's own statistics, the
input y + a m and the target y - m / a have independent noise, so the target's expectation is
the clean centre while the teacher may use the centre's exact anatomy. m is measured from the
low-dose scan alone (texture from across-slice differences in flat soft tissue, local level
from their robust spread, :mod:`ldct.noise_bank`): no simulator noise model and no normal-dose
image, so the same recipe adapts to a site's noisy scans of any kernel. (Until 2026-11 m came
from the physics simulator itself, which taught the network that simulator's Hann texture: the
best model on simulated data was the worst on real sharp-kernel scans.)

The paper's stage 2 is the distilled student (uncorrelated noise) and a motion-compensated
recursive filter across frames (correlated noise): ``recursive`` > 0 records the filter's weight
in the model's factory kwargs, and inference runs it over the denoised volume's slices
(:mod:`ldct.recursive_filter`); it trains nothing.
"""

from __future__ import annotations

import torch

from ldct.nets.blocks import hu_to_net, net_to_hu
from ldct.nets.n2n25d import MSR2AUNet, n2n25d_student
from ldct.train.method import Method, Phase, image_mse

TEACHER_INPUTS = ("recorrupted", "neighbours")


class N2N25DMethod(Method):
    name = "n2n25d"
    needs_noise = True
    scans_alone = True
    # cpu: 60000 teacher steps (~30 a second), then no distillation: the teacher's own network
    # ships, keeping the input's low band. On training-case slabs 40000 teacher steps beat the
    # former 16000 plus a distilled student by 0.2-1.3 dB, and 60000 beat 40000 by up to 0.9;
    # every student distilled from such a teacher ended below it (a lean U-Net, a wider one,
    # the teacher's network started from its weights and taught a 4-view average); see
    # models/n2n25d/training_note.md.
    # paper: its three modules - a neighbours-only (Noise2Noise) MSR2AU teacher, a student
    # distilled from it, the recursive filter. The paper gives no step counts or weights:
    # 60% of 150000 steps for the teacher; recursive 0.5, the largest weight at which the
    # current slice still weighs as much as all others together in its filtered self (slices
    # stay slices). After the shipped cpu network on 16 central slices of both prepared cases
    # (doses 0.25 and 0.1, Hann; 0.25 sharp-ee) 0.5 gained 0.2-0.9 dB PSNR over no filter and
    # never lost to 0.25; 0.75 gained more where much noise was left but lost on the cleanest.
    presets = {"cpu": {"steps": 60000, "teacher_fraction": 1.0, "student_arch": "msr2au"},
               "paper": {"steps": 150000, "teacher_input": "neighbours", "teacher_fraction": 0.6,
                         "student_arch": "unet", "recursive": 0.5, "distill_normal": False}}
    # student_keep_sigma: the student keeps the input's band below a 4-pixel Gaussian exactly;
    # the wrapper's default of 2 pixels keeps a band holding a fifth of the simulated noise SD,
    # noise that no student could then remove (measured in models/n2n25d/training_note.md)
    # student_arch "msr2au": the student is the teacher's own network, handed the teacher's
    # weights when the teacher's phase ends (at_step); with teacher_fraction 1 it is the
    # teacher itself, keeping the input's low band
    # teacher_input: "recorrupted" (centre recorrupted + neighbours) or "neighbours" (paper)
    # recursive: the weight of the recursive filter across slices at inference (0: none)
    # distill_normal: the student also mimics the teacher on normal-dose stacks (as unlabelled
    # inputs); the paper's framework needs no normal dose, so its preset distils on low doses
    defaults = {"context": 5, "base": 16, "levels": 3, "student_base": 16, "student_res_blocks": 1,
                "student_keep_sigma": 4.0, "student_arch": "unet",
                "teacher_fraction": 0.6, "recorrupt": 0.5, "relative": False,
                "teacher_input": "recorrupted", "recursive": 0.0, "distill_normal": True}

    @property
    def context(self) -> int:
        """Slices the student and the teacher see: the centre and its neighbours."""
        return self.hp["context"]

    @property
    def neighbours_only(self) -> bool:
        """Does the teacher see only the neighbours (the paper's Noise2Noise across slices)?"""
        return self.hp["teacher_input"] == "neighbours"

    def factory_kwargs(self):
        kwargs = {"context": self.context, "base": self.hp["student_base"],
                  "res_blocks": self.hp["student_res_blocks"],
                  "keep_sigma": self.hp["student_keep_sigma"], "arch": self.hp["student_arch"]}
        if self.hp["student_arch"] == "msr2au":  # the teacher's network, so the teacher's size
            kwargs.update(base=self.hp["base"], levels=self.hp["levels"])
        if self.hp["recursive"]:  # only when on: a model without it keeps its kwargs as they were
            kwargs["recursive"] = self.hp["recursive"]
        return kwargs

    def build(self):
        self.option("teacher_input", TEACHER_INPUTS)
        if self.neighbours_only and self.hp["student_arch"] == "msr2au":
            raise ValueError("n2n25d: a neighbours-only teacher cannot hand its weights to an "
                             "msr2au student, which also sees the centre; use student_arch unet")
        slices = self.context - 1 if self.neighbours_only else self.context
        return {"teacher": MSR2AUNet(slices, self.hp["base"], self.hp["levels"]),
                "student": n2n25d_student(**self.factory_kwargs())}

    def optim_groups(self):
        return {"teacher": ["teacher"], "student": ["student"]}

    def schedule(self, step):
        teacher = step < self.first_phase_steps("teacher_fraction")
        return ["teacher"] if teacher else ["student"]

    def at_step(self, step):
        if step == self.first_phase_steps("teacher_fraction") and \
                self.hp["student_arch"] == "msr2au":
            self.nets["student"].core.estimator.load_state_dict(
                self.nets["teacher"].state_dict())

    def deployable(self):
        return self.nets["student"]

    def start_from(self, state_dict):
        """The shipped network is the teacher's own (student_arch msr2au): the teacher, which
        is what trains, starts from it too (else it would start untrained and hand its
        weights to the student at the end)."""
        super().start_from(state_dict)
        if self.hp["student_arch"] == "msr2au":
            self.nets["teacher"].load_state_dict(
                self.nets["student"].core.estimator.state_dict())

    def recorrupted(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(stack with the centre recorrupted, the centre's independent-noise target), in HU.

        The stored noise image gets a random sign per sample (both signs have its statistics).
        """
        ld, a = batch["ld"], self.hp["recorrupt"]
        sign = torch.randint(0, 2, (ld.shape[0], 1, 1, 1), device=ld.device) * 2 - 1
        m = sign * batch["noise"]
        c = ld.shape[1] // 2
        noisier = torch.cat([ld[:, :c], ld[:, c:c + 1] + a * m, ld[:, c + 1:]], 1)
        return noisier, ld[:, c:c + 1] - m / a

    def teacher_estimate(self, stack: torch.Tensor) -> torch.Tensor:
        """The teacher's estimate of the clean centre slice (HU) from a stack of slices (a
        neighbours-only teacher never sees its centre)."""
        if self.neighbours_only:
            c = stack.shape[1] // 2
            stack = torch.cat([stack[:, :c], stack[:, c + 1:]], 1)
        return net_to_hu(self.nets["teacher"](hu_to_net(stack)))

    def losses(self, group, batch):
        if group == "teacher":
            if self.neighbours_only:  # the measured centre: its noise is not in the input
                c = batch["ld"].shape[1] // 2
                stack, target, term = batch["ld"], batch["ld"][:, c:c + 1], "n2n"
            else:
                (stack, target), term = self.recorrupted(batch), "r2r"
            # relative: over each sample's measured noise power (target + noise: its input)
            loss = self.image_loss(self.teacher_estimate(stack), target,
                                   target + batch["noise"])
            return {"total": loss, term: loss}
        # the student mimics the teacher on the very stack it sees (the plain low dose): taught
        # from single recorrupted-input estimates instead, it ended ~1 dB below the teacher on
        # training-case slices. It also mimics it on normal-dose stacks: taught on the low doses
        # alone it left scans quieter than its training doses almost as noisy as they came.
        stack = torch.cat([batch["ld"], batch["nd"]]) if self.hp["distill_normal"] \
            else batch["ld"]
        with torch.no_grad():
            target = self.teacher_estimate(stack)
        loss = image_mse(self.nets["student"](stack), target)
        return {"total": loss, "distill": loss}

    def phases(self):
        teacher_steps = self.first_phase_steps("teacher_fraction")
        k = self.context
        if self.neighbours_only:
            teacher_notes = [f"input: the {k - 1} slices around the centre, never the centre",
                             "target: the measured low-dose centre slice, whose noise is "
                             "independent of its neighbours' (Noise2Noise across slices)"]
        else:
            a = self.hp["recorrupt"]
            teacher_notes = [f"input: the {k - 1} neighbours and the centre recorrupted, y + {a:g}"
                             " m, with m fresh noise measured from the low-dose scan itself "
                             "(across-slice differences in flat tissue; random sign)",
                             f"target: y - m / {a:g}, whose noise is independent of the input's"
                             " (Recorrupted-to-Recorrupted)"]
        if self.hp["relative"]:
            teacher_notes.append("loss: each sample's squared error over its measured noise "
                                 "power")
        teacher = Phase("teacher", teacher_steps, "self-supervised", ["teacher"],
                        {"n2n" if self.neighbours_only else "r2r": 1.0},
                        f"low-dose stacks of {k} slices; no normal dose", teacher_notes)
        student_notes = [f"student: {self.hp['student_arch']} on all {k} slices, one pass",
                         "target: the frozen teacher's estimate from the same stack, on low-dose "
                         + ("and normal-dose stacks (normal doses as unlabelled inputs only)"
                            if self.hp["distill_normal"] else "stacks only (no normal dose)"),
                         f"keeps the input's band below a {self.hp['student_keep_sigma']:g}-pixel "
                         "Gaussian exactly"]
        if self.hp["student_arch"] == "msr2au":
            student_notes.append("starts from the teacher's weights")
        student = Phase("student", self.hp["steps"] - teacher_steps, "distillation",
                        ["student"], {"distill": 1.0},
                        "low-dose and normal-dose stacks, never paired"
                        if self.hp["distill_normal"] else "low-dose stacks only", student_notes)
        return [teacher, student]

    def describe(self):
        description = super().describe()
        if self.hp["recursive"]:  # trains nothing: part of what ships
            description["inference"] = {
                "recursive_filter": self.hp["recursive"],
                "notes": ["after the network, across the whole denoised volume: out[k] = den[k] "
                          "+ r w (out[k-1] shifted onto slice k - den[k]), the shift a subpixel "
                          "phase correlation of adjacent slices, w falling where they differ "
                          "beyond the noise; run down and up the slices and averaged"]}
        return description
