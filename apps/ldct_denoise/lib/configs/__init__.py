"""One small config per denoiser; the app discovers every `DenoiserConfig` subclass here."""
