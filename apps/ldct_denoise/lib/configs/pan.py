from lib.configs.denoiser import DenoiserConfig


class PAN(DenoiserConfig):
    model = "pan"
