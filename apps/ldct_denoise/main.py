"""MONAI Label app serving the ldct denoisers (one infer task per model, all via ldct.infer).

conf: ``models`` = ``all`` or ``name,name`` (default all); ``preload`` = ``true`` loads every
network at start-up. Models without trained weights are left out with a log line.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil

import lib.configs
from lib.configs.denoiser import DenoiserConfig
from monailabel.interfaces.app import MONAILabelApp

from ldct import __version__, registry
from ldct.infer import load_network

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
        return {name: config.infer() for name, config in self.configs.items()}

    def init_trainers(self):
        return {}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
