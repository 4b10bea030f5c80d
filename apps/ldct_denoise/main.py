"""MONAI Label app serving the ldct denoisers (one infer task per model, all via ldct.infer).

conf: ``models`` = ``all`` or ``name,name`` (default all); ``preload`` = ``true`` loads every
network at start-up. Models without trained weights are left out with a log line.
With ``--studies http(s)://.../dicom-web`` the datastore is the PACS, and an infer request with
``write_back: true`` stores the denoised volume in the same study as a derived series.
At start-up the server is reduced to the app's routes behind the token guard (lib/security.py).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil

import lib.configs
from lib.configs.denoiser import DenoiserConfig
from lib.datastores.pacs import PacsDatastore
from lib.routes import InferenceQueue, app_router
from lib.security import secure
from lib.study_api import study_router
from lib.trainers.finetune import FineTuneTask
from monailabel.interfaces.app import MONAILabelApp

from ldct import __version__, registry
from ldct.infer import load_network
from ldct.serve import server_settings
from ldct.study.service import StudyService, study_root

logger = logging.getLogger(__name__)


def discover_configs() -> dict[str, DenoiserConfig]:
    """Every DenoiserConfig subclass in lib/configs, by model name."""
    found = {}
    for module_info in pkgutil.iter_modules(lib.configs.__path__):
        module = importlib.import_module(f"lib.configs.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, DenoiserConfig) and cls.model:
                found[cls.model] = cls()
    return found


class LowDoseCTDenoiseApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        configs = discover_configs()
        wanted = conf.get("models", "all")
        names = list(configs) if wanted == "all" else [n.strip() for n in wanted.split(",")]
        unknown = [n for n in names if n not in configs]
        if unknown:
            raise ValueError(f"--conf models: unknown {unknown}; known: {sorted(configs)}")
        self.configs = {}
        for name in names:
            if registry.get(name).available():
                self.configs[name] = configs[name]
            else:
                logger.warning("model %s has no trained weights yet; not served", name)
        if conf.get("preload", "false").lower() == "true":
            for name in self.configs:
                if registry.get(name).kind == "network":
                    load_network(name, "cuda" if _cuda() else "cpu")
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="ldct_denoise",
                         description="Low-dose liver CT denoising (HU and geometry preserved)",
                         version=__version__)

    def init_infers(self):
        store = self.datastore()  # made before the infers (MONAILabelApp.__init__)
        write_back = store.write_back if isinstance(store, PacsDatastore) else None
        return {name: config.infer(write_back) for name, config in self.configs.items()}

    def on_init_complete(self):
        """Lock the server down to the app's routes (and the reader studies under /study/)
        behind the token guard; runs before the server accepts a request, not in training
        workers."""
        super().on_init_complete()
        from monailabel.app import app as server

        service = StudyService(study_root(), datastore=self.datastore())
        for study in service.resume_unfinished():
            logger.warning("study %s was being created when the server stopped; resuming", study)
        settings = server_settings()
        secure(server, [app_router(self, InferenceQueue(settings.queue_limit)),
                        study_router(service)], settings, health=lambda: {"status": "ok"})

    def init_trainers(self):
        """A fine-tuning task for every served network (baselines have nothing to train)."""
        return {name: FineTuneTask(name) for name in self.configs
                if registry.get(name).kind == "network"}

    def _init_dicomweb_datastore(self) -> PacsDatastore:
        return PacsDatastore(self.studies)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
