"""Each method trains a few steps on the phantom: its main loss falls, checkpoints reload to
identical outputs, and a resumed run matches an uninterrupted one."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from ldct.infer import load_network
from ldct.nets.encoder import load_pvm
from ldct.train.loop import build_method, train

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


def test_resume_continues_exactly(prepared, tmp_path):
    hp = {**TINY, "steps": 8, "ckpt_every": 4}
    train("encoder", prepared, tmp_path / "straight", overrides=hp, progress=False)
    train("encoder", prepared, tmp_path / "split", overrides={**hp, "steps": 4}, progress=False)
    train("encoder", prepared, tmp_path / "split", overrides=hp, resume=True, progress=False)
    a = torch.load(tmp_path / "straight" / "encoder.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "split" / "encoder.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


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
