"""Device choice and mixed precision, shared by training and inference."""

from __future__ import annotations

import torch


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; an explicit 'cuda' without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but no CUDA device is available; use cpu")
    return torch.device(device)


def autocast(device: torch.device):
    """Mixed precision on CUDA (bfloat16 where supported), plain float32 on the CPU."""
    if device.type != "cuda":
        return torch.autocast("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)
