"""The denoiser networks, one module per method, plus shared blocks and the PVMs."""
