"""N2N-2.5D trainer: teacher predicts the centre slice from its neighbours (noisy data only),
then a single-pass student is distilled from the frozen teacher."""

from __future__ import annotations

from ldct.nets.blocks import hu_to_net, net_to_hu
from ldct.nets.n2n25d import MSR2AUNet, n2n25d_student, neighbours_of
from ldct.train.method import Method, image_mse


class N2N25DMethod(Method):
    name = "n2n25d"
    presets = {"cpu": {"steps": 10000}, "paper": {"steps": 150000}}
    defaults = {"context": 5, "base": 16, "levels": 3, "student_base": 16, "student_res_blocks": 1,
                "teacher_fraction": 0.6}

    @property
    def context(self) -> int:
        """Slices the student sees: the centre and its neighbours (the teacher sees only these)."""
        return self.hp["context"]

    def factory_kwargs(self):
        return {"context": self.context, "base": self.hp["student_base"],
                "res_blocks": self.hp["student_res_blocks"]}

    def build(self):
        return {"teacher": MSR2AUNet(self.context - 1, self.hp["base"], self.hp["levels"]),
                "student": n2n25d_student(**self.factory_kwargs())}

    def optim_groups(self):
        return {"teacher": ["teacher"], "student": ["student"]}

    def schedule(self, step):
        return ["teacher"] if step < self.hp["teacher_fraction"] * self.hp["steps"] else ["student"]

    def deployable(self):
        return self.nets["student"]

    def teacher_estimate(self, ld):
        """The teacher's prediction of the centre slice (HU) from the neighbours alone."""
        return net_to_hu(self.nets["teacher"](hu_to_net(neighbours_of(ld))))

    def losses(self, group, batch):
        ld = batch["ld"]
        centre = self.nets["student"].centre(ld)
        if group == "teacher":
            loss = image_mse(self.teacher_estimate(ld), centre)  # Noise2Noise across slices
            return {"total": loss, "n2n": loss}
        target = self.teacher_estimate(ld).detach()
        loss = image_mse(self.nets["student"](ld), target)
        return {"total": loss, "distill": loss}
