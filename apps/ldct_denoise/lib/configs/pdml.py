from lib.configs.denoiser import DenoiserConfig


class PDML(DenoiserConfig):
    model = "pdml"
