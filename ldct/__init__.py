"""Low-dose liver CT denoising: I/O, simulation, metrics, denoisers and their inference."""

__version__ = "0.1.0"
