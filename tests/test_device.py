"""Device choice: the CUDA branches are chosen correctly, checked on CPU; the CUDA path's
HU and training run when a GPU is lent (benchmarks/cuda_check.sh)."""

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


def test_batches_move_to_the_device():
    tensor = dev.to_device(np.ones((2, 1, 4, 4), np.float32), torch.device("cpu"))
    assert tensor.device.type == "cpu" and tensor.dtype == torch.float32


CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="needs a CUDA GPU (runs on the device machine when lent)")


@CUDA
@pytest.mark.parametrize("name", ["alden", "n2n25d", "pan", "pdml", "vagan"])
def test_cuda_keeps_hu_within_half_a_unit(phantom, name):
    """The CUDA path (its precision policy, pinned memory) gives what float32 on the CPU
    gives: mean < 0.5 HU, max < 5 HU (tests/test_precision.py checks it emulated)."""
    from ldct.infer import denoise

    cpu = denoise(phantom.volume, name, device="cpu", ensemble=1).hu
    cuda = denoise(phantom.volume, name, device="cuda", ensemble=1).hu
    assert np.abs(cuda - cpu).mean() < 0.5 and np.abs(cuda - cpu).max() < 5.0


@CUDA
def test_training_runs_a_few_steps_on_cuda(prepared, tmp_path):
    from ldct.train.loop import train

    result = train("vagan", prepared, tmp_path, progress=False, device="cuda",
                   overrides={"patch": 32, "batch": 4, "steps": 4, "log_every": 1,
                              "ckpt_every": 2, "warmup_fraction": 0.5})
    assert result.steps == 4 and all(np.isfinite(v) for v in result.last.values())
