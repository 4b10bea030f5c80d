"""Device choice and mixed precision: the CUDA branches are chosen correctly, checked on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldct import device as dev


def test_auto_picks_cpu_here_and_cuda_when_present(monkeypatch):
    assert dev.pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dev.pick_device("auto") == torch.device("cuda")
    assert dev.pick_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_asking_for_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match="no CUDA device is available"):
        dev.pick_device("cuda")


def test_cpu_runs_in_float32_and_cuda_in_reduced_precision(monkeypatch):
    with dev.autocast(torch.device("cpu")):
        y = torch.nn.Linear(4, 4)(torch.ones(1, 4))
    assert y.dtype == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    ctx = dev.autocast(torch.device("cuda"))
    assert ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert dev.autocast(torch.device("cuda")).fast_dtype == torch.float16


def test_batches_move_to_the_device():
    tensor = dev.to_device(np.ones((2, 1, 4, 4), np.float32), torch.device("cpu"))
    assert tensor.device.type == "cpu" and tensor.dtype == torch.float32
