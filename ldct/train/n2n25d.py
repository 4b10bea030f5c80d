"""N2N-2.5D trainer: a teacher denoises the centre slice from its neighbours and a recorrupted
copy of itself (noisy data only), then a single-pass student is distilled from the frozen teacher
on low-dose and normal-dose stacks (the normal doses serve as unlabelled inputs, never as targets)
for as many steps as the preset gives it (none in the cpu preset, which ships the teacher).

The paper's teacher sees only the neighbours (Noise2Noise across slices); its best guess then
carries the anatomy that changes between slices, which capped it at ~+2 dB on 1.6 mm slices
and made it worse than the input on 3 mm slices. Here the teacher also sees the centre slice,
recorrupted (R2R, Pang et al. 2021): with fresh noise m of the scan's own statistics, the
input y + a m and the target y - m / a have independent noise, so the target's expectation is
the clean centre while the teacher may use the centre's exact anatomy. m is measured from the
low-dose scan alone (texture from across-slice differences in flat soft tissue, local level
from their robust spread, :mod:`ldct.noise_bank`): no simulator noise model and no normal-dose
image, so the same recipe adapts to a site's noisy scans of any kernel. (Until 2026-11 m came
from the physics simulator itself, which taught the network that simulator's Hann texture: the
best model on simulated data was the worst on real sharp-kernel scans.)
"""

from __future__ import annotations

import torch

from ldct.nets.blocks import hu_to_net, net_to_hu
from ldct.nets.n2n25d import MSR2AUNet, n2n25d_student
from ldct.train.method import Method, image_mse


class N2N25DMethod(Method):
    name = "n2n25d"
    needs_noise = True
    scans_alone = True
    # cpu: 60000 teacher steps (~30 a second), then no distillation: the teacher's own network
    # ships, keeping the input's low band. On training-case slabs 40000 teacher steps beat the
    # former 16000 plus a distilled student by 0.2-1.3 dB, and 60000 beat 40000 by up to 0.9;
    # every student distilled from such a teacher ended below it (a lean U-Net, a wider one,
    # the teacher's network started from its weights and taught a 4-view average); see
    # models/n2n25d/training_note.md. The paper preset keeps the paper's distilled student.
    presets = {"cpu": {"steps": 60000, "teacher_fraction": 1.0, "student_arch": "msr2au"},
               "paper": {"steps": 150000}}
    # student_keep_sigma: the student keeps the input's band below a 4-pixel Gaussian exactly;
    # the wrapper's default of 2 pixels keeps a band holding a fifth of the simulated noise SD,
    # noise that no student could then remove (measured in models/n2n25d/training_note.md)
    # student_arch "msr2au": the student is the teacher's own network, handed the teacher's
    # weights when the teacher's phase ends (at_step); with teacher_fraction 1 it is the
    # teacher itself, keeping the input's low band
    defaults = {"context": 5, "base": 16, "levels": 3, "student_base": 16, "student_res_blocks": 1,
                "student_keep_sigma": 4.0, "student_arch": "unet",
                "teacher_fraction": 0.6, "recorrupt": 0.5, "relative": False}

    @property
    def context(self) -> int:
        """Slices the student and the teacher see: the centre and its neighbours."""
        return self.hp["context"]

    def factory_kwargs(self):
        kwargs = {"context": self.context, "base": self.hp["student_base"],
                  "res_blocks": self.hp["student_res_blocks"],
                  "keep_sigma": self.hp["student_keep_sigma"], "arch": self.hp["student_arch"]}
        if self.hp["student_arch"] == "msr2au":  # the teacher's network, so the teacher's size
            kwargs.update(base=self.hp["base"], levels=self.hp["levels"])
        return kwargs

    def build(self):
        return {"teacher": MSR2AUNet(self.context, self.hp["base"], self.hp["levels"]),
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
        """The teacher's estimate of the clean centre slice (HU) from a stack of slices."""
        return net_to_hu(self.nets["teacher"](hu_to_net(stack)))

    def losses(self, group, batch):
        if group == "teacher":
            noisier, target = self.recorrupted(batch)
            # relative: over each sample's measured noise power (target + noise: its input)
            loss = self.image_loss(self.teacher_estimate(noisier), target,
                                   target + batch["noise"])
            return {"total": loss, "r2r": loss}
        # the student mimics the teacher on the very stack it sees (the plain low dose): taught
        # from single recorrupted-input estimates instead, it ended ~1 dB below the teacher on
        # training-case slices. It also mimics it on normal-dose stacks: taught on the low doses
        # alone it left scans quieter than its training doses almost as noisy as they came.
        stack = torch.cat([batch["ld"], batch["nd"]])
        with torch.no_grad():
            target = self.teacher_estimate(stack)
        loss = image_mse(self.nets["student"](stack), target)
        return {"total": loss, "distill": loss}
