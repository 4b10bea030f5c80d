"""CT encoder trainer (contrastive on simulated pairs, so supervised by the pairing): the PVM
for perceptual and semantic losses.

Two views of the same anatomy - a simulated low-dose patch and its normal-dose original, same
place, same flip/rotation - must embed close together and far from the other patches of the
batch (symmetric InfoNCE). Anatomy drives the deep features; the shallow stages still see
texture, which the perceptual losses use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldct.nets.encoder import CTEncoder
from ldct.train.losses import symmetric_info_nce
from ldct.train.method import Method, Phase


class EncoderMethod(Method):
    name = "encoder"
    paired = True
    defaults = {"widths": (16, 32, 64, 128), "dim": 64, "tau": 0.1}
    presets = {"cpu": {"steps": 1500, "batch": 32}, "paper": {"steps": 20000, "batch": 128}}

    def build(self):
        widths = tuple(self.hp["widths"])
        head = nn.Sequential(nn.Linear(sum(widths), 128), nn.ReLU(), nn.Linear(128, self.hp["dim"]))
        return {"encoder": CTEncoder(widths), "head": head}

    def optim_groups(self):
        return {"encoder": ["encoder", "head"]}

    def embed(self, hu: torch.Tensor) -> torch.Tensor:
        feats = self.nets["encoder"](hu)
        pooled = torch.cat([f.mean(dim=(-2, -1)) for f in feats], 1)
        return F.normalize(self.nets["head"](pooled), dim=-1)

    def losses(self, group, batch):
        loss = symmetric_info_nce(self.embed(batch["ld"]), self.embed(batch["nd"]),
                                  self.hp["tau"])
        return {"total": loss, "nce": loss}

    def deployable(self):
        """What ships: the encoder (the projection head only serves its card's check)."""
        return self.nets["encoder"]

    def factory_kwargs(self):
        return {"widths": list(self.hp["widths"])}

    def phases(self):
        return [Phase("encoder", self.hp["steps"], "paired", ["encoder", "head"],
                      {"encoder/symmetric_info_nce": 1.0},
                      "a simulated low-dose patch and its own normal dose (same place, same "
                      "flip/rotation) as the positive pair, the batch's other patches as "
                      "negatives", [f"temperature {self.hp['tau']}"])]

    def export_blob(self) -> dict:
        """The checkpoint format `ldct.nets.encoder.load_pvm` reads (the projection head is
        kept for the held-out retrieval check of the model card)."""
        return {"kind": "ct_encoder", "config": {"widths": list(self.hp["widths"])},
                "state_dict": self.nets["encoder"].state_dict(),
                "head": self.nets["head"].state_dict()}
