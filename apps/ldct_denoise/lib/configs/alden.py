from lib.configs.denoiser import DenoiserConfig


class ALDEN(DenoiserConfig):
    model = "alden"
