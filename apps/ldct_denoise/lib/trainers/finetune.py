"""`POST /train/{model}`: fine-tune a network on the datastore's scans (`ldct.finetune`).

MONAI Label runs it in a subprocess; the new version is written next to the shipped weights
(or under ``$LDCT_SITE_MODELS``) and the server's next infer request uses it.
"""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from ldct import registry
from ldct.finetune import FINETUNE_DOSES, finetune


class FineTuneTask(TrainTask):
    """Fine-tune one network on (up to ``max_images`` of) the datastore's images."""

    def __init__(self, model: str) -> None:
        super().__init__(f"fine-tune {model} on this site's scans (simulated lower doses)")
        self.model = model

    def config(self) -> dict[str, Any]:
        return {"steps": 200, "max_images": 20, "max_slices": 32,
                "doses": list(FINETUNE_DOSES), "device": ["auto", "cuda", "cpu"]}

    def stats(self) -> dict[str, Any]:
        info = registry.get(self.model)
        return {"version": info.version(), "versions": [p.name for p in info.versions()]}

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        settings = {**self.config(), **request}
        ids = datastore.list_images()[: int(settings["max_images"])]
        images = [datastore.get_image_uri(image_id) for image_id in ids]
        device = settings["device"] if isinstance(settings["device"], str) else "auto"
        version = finetune(self.model, images, steps=int(settings["steps"]),
                           doses=[float(d) for d in settings["doses"]],
                           max_slices=int(settings["max_slices"]), device=device)
        return {"model": self.model, "version": version.name, "images": ids}
