"""Each method trains a few steps on the phantom: its main loss falls, checkpoints reload to
identical outputs, and a resumed run matches an uninterrupted one."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from ldct.infer import load_network
from ldct.nets.blocks import gaussian_lowpass
from ldct.nets.encoder import load_pvm
from ldct.nets.n2n25d import CentreNoise
from ldct.train import loop
from ldct.train.loop import PRESETS, build_method, train

# both phases of every method in a few steps, whatever the preset
TINY = {"patch": 32, "batch": 4, "log_every": 1, "ckpt_every": 5, "lr": 1e-3, "base": 8,
        "warmup_fraction": 0.5, "teacher_fraction": 0.5}
# the term each method is mainly judged by in the first steps (group/term in log.csv)
MAIN_TERM = {"encoder": "encoder/nce", "pan": "warmup/simulated", "pdml": "warmup/simulated",
             "alden": "warmup/simulated", "n2n25d": "teacher/r2r", "vagan": "pretrain/multiscale"}
# terms of the second phase, which must be logged and finite
LATER_TERM = {"pan": "g/cycle", "pdml": "g/metric", "alden": "g/contrast",
              "n2n25d": "student/distill", "vagan": "g/perc"}


@pytest.fixture(scope="module")
def encoder(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("encoder")
    train("encoder", prepared, out, overrides={**TINY, "steps": 30}, progress=False)
    return out / "encoder.pt"


def _series(log_path, term):
    with open(log_path) as handle:
        rows = [r for r in csv.reader(handle) if r[2] == term]
    return np.array([float(r[3]) for r in rows])


@pytest.mark.parametrize("method", ["encoder", "pan", "pdml", "alden", "n2n25d", "vagan"])
def test_main_loss_goes_down_and_checkpoint_reloads(method, prepared, encoder, tmp_path):
    steps = 30
    result = train(method, prepared, tmp_path, overrides={**TINY, "steps": steps},
                   pvm_path=encoder, progress=False)
    assert result.steps == steps
    values = _series(tmp_path / "log.csv", MAIN_TERM[method])
    assert len(values) >= 8 and np.isfinite(values).all()
    assert values[-3:].mean() < values[:3].mean(), values
    if method in LATER_TERM:
        later = _series(tmp_path / "log.csv", LATER_TERM[method])
        assert len(later) >= 5 and np.isfinite(later).all()
    if method == "encoder":
        feats = load_pvm(tmp_path / "encoder.pt")(torch.zeros(1, 1, 32, 32))
        assert [f.shape[1] for f in feats] == [16, 32, 64, 128]
        return
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    rebuilt = build_method(method, ckpt["hp"], encoder)
    rebuilt.nets.load_state_dict(ckpt["nets"])
    net = rebuilt.deployable().eval()
    shipped = load_network(method, "cpu", str(tmp_path / "model.pt"))
    if method == "n2n25d":  # the shipped student keeps the band its training kept
        assert shipped.keep_sigma == net.keep_sigma == ckpt["hp"]["student_keep_sigma"] == 4.0
    x = torch.from_numpy(np.random.default_rng(0).normal(40, 30, (2, net.context, 48, 48))
                         .astype(np.float32))
    with torch.no_grad():
        assert torch.equal(net(x), shipped(x))


@pytest.mark.parametrize("method", ["encoder", "pan", "pdml", "alden", "n2n25d", "vagan"])
def test_resume_continues_exactly(method, prepared, encoder, tmp_path, monkeypatch):
    """Killed right after its step-4 checkpoint (in the first phase) and resumed, a run crosses
    the phase switch (optimisers, frozen anchors, teacher-to-student hand-over) and ends
    bit-identical to an uninterrupted one."""
    hp = {**TINY, "steps": 12, "ckpt_every": 4}
    train(method, prepared, tmp_path / "straight", overrides=hp, pvm_path=encoder,
          progress=False)
    save = loop._save_atomic

    def killed_after_first_checkpoint(obj, path):
        save(obj, path)
        if Path(path).name == "checkpoint.pt" and obj["step"] == 4:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(loop, "_save_atomic", killed_after_first_checkpoint)
        with pytest.raises(KeyboardInterrupt):
            train(method, prepared, tmp_path / "split", overrides=hp, pvm_path=encoder,
                  progress=False)
    train(method, prepared, tmp_path / "split", overrides=hp, resume=True, pvm_path=encoder,
          progress=False)
    name = "encoder.pt" if method == "encoder" else "model.pt"
    a = torch.load(tmp_path / "straight" / name, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "split" / name, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_methods_needing_a_pvm_say_how_to_get_one(prepared, tmp_path):
    with pytest.raises(FileNotFoundError, match="ldct train encoder"):
        train("vagan", prepared, tmp_path, overrides=TINY, pvm_path=tmp_path / "none.pt",
              progress=False)
    with pytest.raises(ValueError, match="unknown method"):
        train("unet", prepared, tmp_path, overrides=TINY, progress=False)


def test_torchvision_vgg19_and_resnet_state_dicts_work_as_pvm(tmp_path):
    from torchvision.models import resnet18, vgg19

    torch.save(vgg19(weights=None).state_dict(), tmp_path / "vgg19.pth")
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    x = torch.full((1, 1, 64, 64), 40.0)
    vgg = load_pvm(tmp_path / "vgg19.pth")
    assert [f.shape[1] for f in vgg(x)] == [64, 128, 256, 512]
    res = load_pvm(tmp_path / "resnet18.pth")
    assert [f.shape[1] for f in res(x)] == [64, 64, 128, 256]
    assert not any(p.requires_grad for p in vgg.parameters())
    torch.save({"weird": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="neither a CT encoder"):
        load_pvm(tmp_path / "bad.pth")


def test_n2n25d_msr2au_student_is_the_teacher_with_the_low_band_kept(prepared, tmp_path):
    """With student_arch msr2au the student is the teacher's network: when the teacher's phase
    ends it takes the teacher's weights, and so starts as the teacher with the input's low band
    kept; with no distillation steps (the cpu preset) that is what ships."""
    hp = {**TINY, "steps": 10, "student_arch": "msr2au"}
    method = build_method("n2n25d", {**PRESETS["cpu"], **hp}, None)
    switch = method.first_phase_steps("teacher_fraction")
    student = method.nets["student"].eval()
    x = torch.from_numpy(np.random.default_rng(1).normal(40, 30, (2, 5, 48, 48))
                         .astype(np.float32))

    def teacher_with_low_band(m):
        estimate = m.teacher_estimate(x)
        return estimate + gaussian_lowpass(x[:, 2:3] - estimate, 4.0)

    with torch.no_grad():
        method.at_step(switch - 1)
        assert not torch.allclose(student(x), teacher_with_low_band(method), atol=0.1)
        method.at_step(switch)
        assert torch.allclose(student(x), teacher_with_low_band(method), atol=1e-3)
    train("n2n25d", prepared, tmp_path, overrides={**hp, "teacher_fraction": 1.0},
          progress=False)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    trained = build_method("n2n25d", ckpt["hp"], None)
    trained.nets.load_state_dict(ckpt["nets"])
    shipped = load_network("n2n25d", "cpu", str(tmp_path / "model.pt"))
    assert isinstance(shipped.core, CentreNoise)
    with torch.no_grad():
        assert torch.allclose(shipped(x), teacher_with_low_band(trained), atol=1e-3)


def test_n2n25d_learns_from_low_dose_stacks_alone(prepared):
    """What ships is self-supervised: its loss is the same whatever the normal dose holds, and
    the cpu preset never reaches a distillation step (which would see normal-dose stacks)."""
    from ldct.data import PatchSampler, PreparedData
    from ldct.train.n2n25d import N2N25DMethod

    hp = {**PRESETS["cpu"], **N2N25DMethod.presets["cpu"], "base": 8}
    method = build_method("n2n25d", hp, None)
    sampler = PatchSampler(PreparedData(prepared), [0.25], patch=32, batch=2, context=5,
                           paired=False, noise=True)
    batch = {k: torch.from_numpy(v) for k, v in sampler.sample().items()}
    garbage = {**batch, "nd": torch.randn_like(batch["nd"]) * 1000}
    torch.manual_seed(0)
    plain = method.losses("teacher", batch)["total"]
    torch.manual_seed(0)
    assert torch.equal(plain, method.losses("teacher", garbage)["total"])
    assert {g for step in (0, hp["steps"] // 2, hp["steps"] - 1)
            for g in method.schedule(step)} == {"teacher"}
    relative = build_method("n2n25d", {**hp, "relative": True}, None)
    relative.nets.load_state_dict(method.nets.state_dict())
    torch.manual_seed(0)
    scaled = relative.losses("teacher", batch)["total"]
    torch.manual_seed(0)
    assert torch.equal(scaled, relative.losses("teacher", garbage)["total"])  # still no ND
    assert not torch.isclose(scaled, plain)  # each sample over its own measured noise


def test_relative_mse_weighs_every_sample_by_its_gain_not_its_noise():
    """Halving the error of a 50 HU sample counts as much as halving a 700 HU one's, and an
    output equal to its input scores 1 whatever the noise level."""
    from ldct.train.method import image_mse, relative_mse

    target = torch.zeros(2, 1, 8, 8)
    noisy = torch.stack([torch.full((1, 8, 8), 50.0), torch.full((1, 8, 8), 700.0)])
    assert float(relative_mse(noisy, target, noisy)) == pytest.approx(1.0)
    quiet_half = noisy * torch.tensor([0.5, 1.0]).view(2, 1, 1, 1)
    loud_half = noisy * torch.tensor([1.0, 0.5]).view(2, 1, 1, 1)
    assert float(relative_mse(quiet_half, target, noisy)) == pytest.approx(
        float(relative_mse(loud_half, target, noisy)))
    # plain MSE: halving the loud sample is worth 4x more than halving the quiet one
    assert float(image_mse(quiet_half, target)) > 3 * float(image_mse(loud_half, target))
