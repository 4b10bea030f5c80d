"""Base of the per-model configs: a registry name is all a denoiser needs (one infer path)."""

from __future__ import annotations

from lib.infers.denoise import DenoiseInfer


class DenoiserConfig:
    """A denoiser served by the app; subclasses set ``model`` to a name in `ldct.registry`."""

    model = ""

    def infer(self) -> DenoiseInfer:
        return DenoiseInfer(self.model)
