"""Base of the per-model configs: a registry name is all a denoiser needs (one infer path)."""

from __future__ import annotations

from lib.infers.denoise import DenoiseInfer, WriteBack


class DenoiserConfig:
    """A denoiser served by the app; subclasses set ``model`` to a name in `ldct.registry`."""

    model = ""

    def infer(self, store: WriteBack | None = None) -> DenoiseInfer:
        """The infer task; ``store``: where ``write_back: true`` stores results (a PACS)."""
        return DenoiseInfer(self.model, store)
