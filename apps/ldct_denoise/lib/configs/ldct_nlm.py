from lib.configs.denoiser import DenoiserConfig


class NonLocalMeans(DenoiserConfig):
    model = "ldct-nlm"
