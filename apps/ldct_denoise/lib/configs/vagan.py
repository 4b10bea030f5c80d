from lib.configs.denoiser import DenoiserConfig


class VAGAN(DenoiserConfig):
    model = "vagan"
