"""The CUDA precision policy keeps CT numbers: every shipped network, run as the policy in
`ldct.device` computes on a GPU (emulated on the CPU: its autocast dtype, TF32 as rounded
convolution inputs), stays within mean 0.5 / max 5 HU of float32 on simulated quarter-dose
slices - so the bound holds without a GPU; tests/test_device.py's CUDA tests run when one is
lent. The bound is the project's (issue 33); the reference is plain float32 on the CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from ldct.device import INFERENCE, TRAINING, Precision, emulated_on_cpu, precision, round_to_tf32
from ldct.infer import context_stack, load_network
from ldct.io import read_volume
from ldct.phantom import make_phantom
from ldct.simulate import LowDoseParams, simulate_low_dose

MODELS = Path(__file__).resolve().parents[1] / "models"
NETWORKS = sorted(p.parent.name for p in MODELS.glob("*/model.pt"))  # what the project ships
MEAN_HU, MAX_HU = 0.5, 5.0
HALF = 2  # context slices each side: the widest network (n2n25d) takes 5


def _quarter_dose(volume, slices: slice, rows: slice = slice(None), cols: slice = slice(None)):
    part = dataclasses.replace(volume, hu=volume.hu[slices, rows, cols].astype(np.float32))
    return simulate_low_dose(part, LowDoseParams(dose=0.25), seed=2, progress=False).hu


@pytest.fixture(scope="module")
def phantom_slices() -> np.ndarray:
    return _quarter_dose(make_phantom(size=256, slices=2 * HALF + 1, seed=4).volume,
                         slice(None))


@pytest.fixture(scope="module")
def real_slices(shared_data) -> np.ndarray:
    """Five slices of ircadb17 through the liver, the 256x256 pixels around the liver and
    body edge (where reduced precision moved HU the most), at quarter dose."""
    volume = read_volume(shared_data / "ct" / "ircadb17" / "dicom")
    return _quarter_dose(volume, slice(60 - HALF, 61 + HALF), slice(150, 406), slice(60, 316))


def _worst(name: str, slabs: np.ndarray, policy: Precision) -> tuple[float, float]:
    """(mean, max) |HU - float32 HU| of the centre slice, ``policy`` emulated."""
    net = load_network(name, "cpu")
    x = torch.from_numpy(context_stack(slabs, HALF, net.context)[None].copy())
    with torch.inference_mode():
        reference = net(x)
        with emulated_on_cpu(net, policy):
            d = (net(x).float() - reference).abs()
    return float(d.mean()), float(d.max())


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("slabs", ["phantom_slices", "real_slices"])
def test_cuda_inference_precision_keeps_ct_numbers(name, slabs, request):
    mean, worst = _worst(name, request.getfixturevalue(slabs), INFERENCE)
    assert mean < MEAN_HU and worst < MAX_HU, (
        f"{name} under {INFERENCE}: mean {mean:.3f} HU, max {worst:.2f} HU from float32")


def test_every_shipped_network_is_checked():
    assert NETWORKS == ["alden", "n2n25d", "pan", "pdml", "vagan"]


def test_tf32_keeps_ten_mantissa_bits():
    x = torch.tensor([1 + 2**-10, 1 + 2**-11 + 2**-12, 1 + 2**-12, -3.0], dtype=torch.float32)
    expected = torch.tensor([1 + 2**-10, 1 + 2**-10, 1.0, -3.0])
    assert torch.equal(round_to_tf32(x), expected)


def test_inference_turns_tf32_convolutions_off_on_cuda_only_while_it_runs():
    with precision(torch.device("cuda"), INFERENCE):
        assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 is True  # PyTorch's default, restored


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU (runs on the device machine when lent)")
def test_inference_runs_in_float32_and_training_in_float16_on_cuda():
    cuda = torch.device("cuda")
    with precision(cuda, INFERENCE):
        assert not torch.is_autocast_enabled("cuda")
    with precision(cuda, TRAINING):
        assert torch.get_autocast_dtype("cuda") == torch.float16
        assert torch.is_autocast_enabled("cuda")
