"""`POST /train/{model}`: fine-tune a network on the datastore's scans (`ldct.finetune`).

The app's /train route runs it in a worker thread (lib/routes.py); the new version is written
under ``$LDCT_SITE_MODELS`` (default: beside the shipped weights), recorded in the model's
version manifest, and the server's next infer request uses it.
"""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from ldct import registry
from ldct.finetune import DEFAULTS, check_settings, finetune


class FineTuneTask(TrainTask):
    """Fine-tune one network on (up to ``max_images`` of) the datastore's images."""

    def __init__(self, model: str) -> None:
        super().__init__(f"fine-tune {model} on this site's scans (simulated lower doses)")
        self.model = model

    def config(self) -> dict[str, Any]:
        return {**DEFAULTS, "device": ["auto", "cuda", "cpu"]}

    def stats(self) -> dict[str, Any]:
        info = registry.get(self.model)
        return {"version": info.version(), "versions": [p.name for p in info.versions()]}

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        settings = check_settings(request)
        ids = datastore.list_images()[: settings["max_images"]]
        images = [datastore.get_image_uri(image_id) for image_id in ids]
        version = finetune(self.model, images, steps=settings["steps"],
                           doses=[float(d) for d in settings["doses"]],
                           max_slices=settings["max_slices"], device=settings["device"])
        return {"model": self.model, "version": version.name, "images": ids}
