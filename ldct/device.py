"""Device choice and numeric precision, shared by training and inference.

The CUDA precision policy, measured on the CPU by emulating each candidate on simulated
quarter-dose ircadb17 slices for every shipped network (benchmarks/precision_cpu.md; the bound:
mean < 0.5, max < 5 HU from float32; tests/test_precision.py keeps it): inference runs in IEEE
float32, because bfloat16 moved HU by mean 1.1-2.0 / max 12-50 HU, float16 by max up to 10.6 HU
and TF32 convolutions (PyTorch's float32 default) by max up to 11.6 HU; these networks are
small, so float32 costs little. Training runs under float16 autocast with a gradient scaler:
its 10-bit mantissa put the HU the losses see about 8x closer to float32 than bfloat16's 7 bits
(mean 0.13-0.26 HU against 1.1-2.0 HU), and the losses are reduced in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Precision:
    """How CUDA computes: the autocast dtype (None: float32 throughout) and whether float32
    convolutions may use TF32 (10-bit mantissa inputs, float32 sums)."""

    dtype: torch.dtype | None
    tf32: bool


INFERENCE = Precision(dtype=None, tf32=False)
TRAINING = Precision(dtype=torch.float16, tf32=True)


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; an explicit 'cuda' without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but no CUDA device is available; use cpu")
    return torch.device(device)


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A numpy array as a tensor on ``device``, through pinned memory on CUDA."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    return tensor


@contextlib.contextmanager
def precision(device: torch.device, policy: Precision) -> Iterator[None]:
    """Compute inside in ``policy``'s precision on CUDA; plain float32 on the CPU."""
    if device.type != "cuda":
        with torch.autocast("cpu", enabled=False):
            yield
        return
    cudnn = torch.backends.cudnn
    with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                     deterministic=cudnn.deterministic, allow_tf32=policy.tf32), \
            torch.autocast("cuda", dtype=policy.dtype or torch.float32,
                           enabled=policy.dtype is not None):
        yield


def grad_scaler(device: torch.device, policy: Precision = TRAINING) -> torch.amp.GradScaler:
    """A gradient scaler, on where float16 autocast could underflow small gradients."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda"
                                and policy.dtype == torch.float16)


CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)


def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 values rounded to TF32's 10-bit mantissa (what tensor cores read)."""
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


@contextlib.contextmanager
def emulated_on_cpu(net: nn.Module, policy: Precision) -> Iterator[None]:
    """What ``policy`` computes on CUDA, computed on the CPU, to check it without a GPU: its
    autocast dtype, and TF32 as the network's convolutions on TF32-rounded inputs and
    weights (float32 sums)."""
    hooks, weights = [], []
    if policy.dtype is None and policy.tf32:
        for module in net.modules():
            if isinstance(module, CONVOLUTIONS):
                weights.append((module.weight, module.weight.data))
                module.weight.data = round_to_tf32(module.weight.data)
                hooks.append(module.register_forward_pre_hook(
                    lambda _, args: (round_to_tf32(args[0]), *args[1:])))
    try:
        with torch.autocast("cpu", dtype=policy.dtype or torch.float32,
                            enabled=policy.dtype is not None):
            yield
    finally:
        for hook in hooks:
            hook.remove()
        for weight, data in weights:
            weight.data = data
