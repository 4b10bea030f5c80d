"""`ldct train --nproc 2` (DistributedDataParallel, gloo on the CPU): the same weights as one
process with the same global batch, and a run SIGKILLed mid-way resumes exactly."""

from __future__ import annotations

import csv
import os
import signal
import subprocess

import numpy as np
import pytest
import torch

from ldct.infer import load_network
from ldct.train.loop import train

# pdml: a warm-up, then its GAN stage (discriminator and generator steps, a frozen anchor)
HP = {"patch": 32, "batch": 4, "log_every": 1, "ckpt_every": 2, "lr": 1e-3, "base": 8,
      "warmup_fraction": 0.5, "steps": 8}


def _weights(folder) -> dict[str, torch.Tensor]:
    return torch.load(folder / "model.pt", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def two_ranks(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp-2")
    result = train("pdml", prepared, out, overrides=HP, progress=False, nproc=2)
    return out, result


def test_two_processes_take_the_steps_of_one_with_the_same_global_batch(prepared, two_ranks,
                                                                          tmp_path):
    """Same losses step by step and the same network to rounding. Not bit-equal weights:
    biases ahead of an instance norm have a zero gradient up to rounding, which Adam turns into
    +-lr steps that the norm then removes; the GAN stage amplifies rounding a little more."""
    out, result = two_ranks
    assert result.steps == HP["steps"]
    train("pdml", prepared, tmp_path, overrides=HP, progress=False)
    one, two = _log(tmp_path), _log(out)
    assert one.keys() == two.keys() and len(one) >= 2 * HP["steps"]
    for key, value in one.items():
        assert two[key] == pytest.approx(value, rel=1e-2), key
    x = torch.from_numpy(np.random.default_rng(0).normal(40, 30, (2, 3, 48, 48))
                         .astype(np.float32))
    with torch.no_grad():
        y1 = load_network("pdml", "cpu", str(tmp_path / "model.pt"))(x[:, 1:2])
        y2 = load_network("pdml", "cpu", str(out / "model.pt"))(x[:, 1:2])
    change = (y1 - x[:, 1:2]).abs().mean()
    assert change > 100  # the steps did change the network
    assert (y2 - y1).abs().max() < 0.01 * change


def _log(folder) -> dict[tuple[str, str], float]:
    """(step, term) -> value of a run's log.csv."""
    with open(folder / "log.csv") as handle:
        return {(row[0], row[2]): float(row[3]) for row in csv.reader(handle)}


def test_a_run_killed_mid_way_resumes_exactly(prepared, two_ranks, tmp_path, ldct_command):
    """The CLI with --nproc 2, its process group SIGKILLed once a checkpoint exists and before
    the end; --resume then ends bit-identical to the uninterrupted two-process run."""
    straight, _ = two_ranks
    options = ["--steps", str(HP["steps"]), "--batch", str(HP["batch"]), "--set",
               *(f"{k}={v}" for k, v in HP.items() if k not in ("steps", "batch"))]
    command = [*ldct_command, "train", "pdml", "--data", str(prepared), "--out", str(tmp_path),
               "--nproc", "2", *options]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    checkpoint = tmp_path / "checkpoint.pt"
    try:
        while not checkpoint.exists():  # waiting for the first checkpoint: the condition itself
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "model.pt").exists(), "the run ended before the kill"
    step = torch.load(checkpoint, weights_only=False)["step"]
    assert 0 < step < HP["steps"]
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    a, b = _weights(straight), _weights(tmp_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_global_batch_that_does_not_split_is_refused_before_any_process_starts(prepared,
                                                                                  tmp_path):
    with pytest.raises(ValueError, match="--batch 3 .* does not split over --nproc 2"):
        train("pdml", prepared, tmp_path, overrides={**HP, "batch": 3}, progress=False, nproc=2)
    assert not any(tmp_path.iterdir())
