from lib.configs.denoiser import DenoiserConfig


class Gaussian(DenoiserConfig):
    model = "ldct-gauss"
