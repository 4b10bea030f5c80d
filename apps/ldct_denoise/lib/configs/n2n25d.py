from lib.configs.denoiser import DenoiserConfig


class N2N25D(DenoiserConfig):
    model = "n2n25d"
