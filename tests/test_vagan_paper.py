"""`ldct train vagan --preset paper` is the VAGAN paper (its networks, losses, weights, rates,
data), while the shipped reduced model still rebuilds to the same outputs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from ldct.infer import load_network
from ldct.nets.vagan import vagan_generator
from ldct.registry import MODELS_DIR
from ldct.train.loop import build_method, describe, hyper_parameters, train
from ldct.train.losses import log_loss, lsgan
from ldct.train.method import conv_layers
from ldct.train.vagan import ATTENTION_WEIGHTS, GAN_LOSSES, SCALES, VAGANMethod

SHIPPED = MODELS_DIR / "vagan" / "model.pt"


def _shipped_state() -> dict[str, torch.Tensor]:
    return torch.load(SHIPPED, map_location="cpu", weights_only=True)["state_dict"]


def test_paper_preset_describes_the_paper():
    d = describe("vagan", "paper")
    hp = hyper_parameters("vagan", "paper")
    method = build_method("vagan", hp, None)
    core = method.nets["g"].core
    # generator: the RED backbone's 14 conv layers (7 encoder, 5 decoder convs and 2
    # deconvolutions) + 2 heads for the 1/4 and 1/2 scales; the attentive block's 1 conv,
    # 3 blocks x 2 convs, the ConvLSTM's gate conv and its output conv: 14 + 2 + 9 = 25
    assert conv_layers(core.generator) - len(core.generator.heads) == 14
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in core.generator.modules()) == 2
    assert len(core.generator.heads) == 2
    assert conv_layers(core.attention) == 1 + 3 * 2 + 1 + 1
    assert d["networks"]["g"]["conv_layers"] == d["ships"]["conv_layers"] == 25
    assert d["ships"]["kwargs"] == {"width": 32, "base": 96, "upsample": "transpose",
                                    "depth": "paper", "blocks": 3, "factor": 1, "context": 1}
    assert core.factor == 1 and core.attention.steps == len(ATTENTION_WEIGHTS) == 4
    # discriminator: eight 3x3 convs, FC 512, one output (+ the attention map's conv)
    disc = method.nets["d"]
    trunk = [m for m in (*disc.features, *disc.trunk) if isinstance(m, nn.Conv2d)]
    assert len(trunk) == 8 and all(m.kernel_size == (3, 3) for m in trunk)
    assert d["networks"]["d"]["conv_layers"] == 8 + 1
    linear = [(m.in_features, m.out_features) for m in disc.modules()
              if isinstance(m, nn.Linear)]
    assert linear == [(8 * 64 * 4 * 4, 512), (512, 1)]
    # the first step sees the initial map 0.5; every step's map is full resolution
    inputs = []
    hook = core.attention.body.register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
    with torch.no_grad():
        maps, noises = core.forward_all(torch.zeros(1, 1, 64, 64))
    hook.remove()
    assert len(inputs) == 4 and torch.equal(inputs[0][:, 1], torch.full((1, 64, 64), 0.5))
    assert len(maps) == 4 and all(m.shape == (1, 1, 64, 64) for m in maps)
    assert [n.shape[-1] for n in noises] == [16, 32, 64]
    # losses and weights
    pretrain, gan = d["phases"]
    assert (pretrain["name"], gan["name"]) == ("pretrain", "gan")
    assert pretrain["losses"] == {"g/attention_mse": 1.0, "g/multiscale_mse": 1.0}
    assert gan["losses"] == {"g/adversarial_bce": 0.005, "g/attention_mse": 1.0,
                             "g/multiscale_mse": 0.01, "g/perceptual_mse": 0.5,
                             "d/bce": 1.0, "d/attention_mse": 0.05}
    assert ATTENTION_WEIGHTS == (0.125, 0.25, 0.5, 1.0)
    assert [(f, w) for f, w in SCALES] == [(4, 0.25), (2, 0.5), (1, 1.0)]
    for phase in (pretrain, gan):
        notes = " ".join(phase["notes"])
        assert "(0.125, 0.25, 0.5, 1.0)" in notes and "(0.25, 0.5, 1.0)" in notes
    assert pretrain["trains"] == ["g"] and gan["trains"] == ["g", "d"]
    # rates, steps, data
    assert "lr 0.0002" in pretrain["notes"][-1] and "lr g 0.0001" in gan["notes"][-1]
    assert (hp["lr"], hp["lr_g"]) == (2e-4, 1e-4) and hp["gan_loss"] == "bce"
    assert pretrain["steps"] == 140_000 * 20 // 32 == 87_500
    assert gan["steps"] == 87_500 and d["steps"] == 175_000
    assert d["data"]["batch"] == 32 and d["data"]["patch"] == 64
    assert d["data"]["doses"] == [0.25] and d["data"]["sampler"] == "paired"
    assert d["supervision"] == ["paired"]


def test_cpu_preset_still_describes_what_ships():
    shipped = _shipped_state()
    d = describe("vagan", "cpu")
    assert VAGANMethod.presets["cpu"] == {"steps": 8000, "context": 3}
    assert d["ships"]["parameters"] == sum(v.numel() for v in shipped.values()) == 70312
    assert d["ships"]["kwargs"]["context"] == d["data"]["slices_per_sample"] == 3
    assert d["networks"]["g"]["conv_layers"] == 15 and d["networks"]["d"]["conv_layers"] == 5
    vagan_generator(**d["ships"]["kwargs"]).load_state_dict(shipped)  # strict: same layout
    assert [p["steps"] for p in d["phases"]] == [4000, 4000]
    assert d["phases"][1]["losses"]["d/lsgan"] == 1.0
    assert d["data"]["batch"] == 8 and d["data"]["patch"] == 64


def test_shipped_model_rebuilds_from_the_cpu_kwargs_with_the_same_outputs():
    shipped = load_network("vagan", "cpu", str(SHIPPED))
    rebuilt = vagan_generator(context=3)
    rebuilt.load_state_dict(_shipped_state())
    stack = 40 + 30 * torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(shipped(stack), rebuilt.eval()(stack))
    x = 40 + 30 * torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    # the default architecture, seeded, gives what the code before the paper variant gave
    # (ce0efdb's ldct/nets/vagan.py, same seed and input): no drift, whatever weights ship
    torch.manual_seed(0)
    seeded = vagan_generator().eval()
    with torch.no_grad():
        y = seeded(x)
    assert float((y - x).abs().double().mean()) == pytest.approx(76.602221, abs=1e-3)
    assert y[0, 0, 10, 10:14].tolist() == pytest.approx([-36.2059, 157.6305, 2.7729, 203.6481],
                                                         abs=1e-2)


@pytest.fixture(scope="module")
def tiny_pvm(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("encoder")
    train("encoder", prepared, out, overrides={"patch": 32, "batch": 4, "steps": 2,
                                               "log_every": 1, "ckpt_every": 2},
          progress=False)
    return out / "encoder.pt"


def test_paper_preset_trains_both_stages_and_ships_a_rebuildable_model(prepared, tiny_pvm,
                                                                       tmp_path):
    # the paper's networks at small widths, so that it runs on a CPU in seconds
    overrides = {"patch": 32, "batch": 2, "steps": 6, "ckpt_every": 3, "log_every": 1,
                 "pretrain_fraction": 0.5, "width": 4, "base": 8, "d_base": 8}
    train("vagan", prepared, tmp_path, preset="paper", overrides=overrides, pvm_path=tiny_pvm,
          progress=False)
    with open(tmp_path / "log.csv") as handle:
        rows = [(int(r[0]), r[2], float(r[3])) for r in csv.reader(handle)]
    pretrain = {s: v for s, term, v in rows if term == "pretrain/multiscale"}
    assert min(pretrain) == 1 and pretrain[3] == pretrain[4] == pretrain[6]  # 3 steps only
    assert {s for s, term, _ in rows if term == "g/adv"} == {4, 5, 6}
    assert {s for s, term, _ in rows if term == "d/d_att"} == {4, 5, 6}
    assert all(np.isfinite(v) for _, _, v in rows)
    blob = torch.load(tmp_path / "model.pt", weights_only=True)
    assert blob["preset"] == "paper" and blob["hp"]["gan_loss"] == "bce"
    assert blob["kwargs"] == {"width": 4, "base": 8, "upsample": "transpose", "depth": "paper",
                              "blocks": 3, "factor": 1, "context": 1}
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 6
    trained = build_method("vagan", ckpt["hp"], tiny_pvm)
    trained.nets.load_state_dict(ckpt["nets"])
    net = trained.deployable().eval()
    shipped = load_network("vagan", "cpu", str(tmp_path / "model.pt"))
    x = torch.from_numpy(np.random.default_rng(0).normal(40, 30, (2, 1, 48, 48))
                         .astype(np.float32))
    with torch.no_grad():
        assert torch.equal(net(x), shipped(x))
        assert not torch.allclose(net(x), x)  # it does something


def test_a_one_slice_model_starts_a_three_slice_one_that_learns_from_the_neighbours(
        prepared, tiny_pvm, tmp_path):
    """`--set context=3 --init ONE_SLICE.pt`: the widened model starts with the one-slice
    model's outputs exactly (the neighbours' weights start at zero); after a few steps on
    3-slice stacks the neighbours change its result, and it reloads as a 3-slice model with
    the one-slice model's calibrated gain."""
    one = vagan_generator().eval()
    torch.save({"method": "vagan", "kwargs": {}, "context": 1, "state_dict": one.state_dict(),
                "gain": 0.9}, tmp_path / "one.pt")
    overrides = {"patch": 32, "batch": 2, "steps": 4, "ckpt_every": 4, "log_every": 1,
                 "lr": 1e-3, "pretrain_fraction": 1.0, "context": 3}
    hp = hyper_parameters("vagan", "cpu", overrides, finetuning=True)
    widened_start = build_method("vagan", hp, tiny_pvm)
    widened_start.start_from(one.state_dict())
    stack = 40 + 30 * torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    other = stack.clone()
    other[:, 0] += 30 * torch.randn(2, 48, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(widened_start.deployable().eval()(stack), one(stack[:, 1:2]))
    train("vagan", prepared, tmp_path / "run", overrides=overrides, pvm_path=tiny_pvm,
          progress=False, init_weights=tmp_path / "one.pt")
    trained = load_network("vagan", "cpu", str(tmp_path / "run" / "model.pt"))
    assert trained.context == 3
    assert trained.gain == 0.9  # a calibrated model's versions keep its gain
    with torch.no_grad():
        assert not torch.allclose(trained(stack), trained(other))


def test_log_loss_and_lsgan_differ_and_push_real_up_and_fake_down():
    assert GAN_LOSSES == {"lsgan": lsgan, "bce": log_loss}
    totals = {}
    for name, loss in GAN_LOSSES.items():
        real = torch.tensor([0.2, -0.5], requires_grad=True)
        fake = torch.tensor([0.6, 0.1], requires_grad=True)
        total = loss(real, True) + loss(fake, False)
        total.backward()
        assert (real.grad < 0).all() and (fake.grad > 0).all(), name  # descent: real up
        totals[name] = float(total.detach())
    real, fake = torch.tensor([0.2, -0.5]), torch.tensor([0.6, 0.1])
    expected = float(-torch.log(torch.sigmoid(real)).mean()
                     - torch.log(1 - torch.sigmoid(fake)).mean())
    assert totals["bce"] == pytest.approx(expected, rel=1e-6)
    assert totals["bce"] != pytest.approx(totals["lsgan"], rel=1e-3)
    assert VAGANMethod({**hyper_parameters("vagan", "paper"), "width": 4, "base": 8,
                        "d_base": 8}).gan_loss is log_loss
    with pytest.raises(ValueError, match="gan_loss"):
        VAGANMethod({**hyper_parameters("vagan", "cpu"), "gan_loss": "wgan"})


def test_relative_multiscale_loss_weighs_a_sharp_kernels_noise_like_a_smooth_ones():
    """With ``relative`` the pre-training's multi-scale term is each sample's error over its
    input's: a generator that removes nothing scores the sum of the scale weights at any noise
    level, where the plain MSE grows with the noise's power (a 700 HU sharp-kernel patch would
    outweigh a 50 HU one ~200 times)."""
    scores = {}
    for relative in (False, True):
        method = VAGANMethod({"relative": relative}, nn.Identity())
        for head in method.nets["g"].core.generator.heads:  # removes nothing
            nn.init.zeros_(head.weight), nn.init.zeros_(head.bias)
        nd = torch.full((2, 1, 32, 32), 40.0)
        for sd in (50.0, 700.0):
            ld = nd + sd * torch.randn(nd.shape, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                terms = method.losses("pretrain", {"ld": ld, "nd": nd})
            scores[(relative, sd)] = float(terms["multiscale"])
    assert scores[(True, 50.0)] == pytest.approx(sum(w for _, w in SCALES), rel=1e-4)
    assert scores[(True, 700.0)] == pytest.approx(scores[(True, 50.0)], rel=1e-4)
    assert scores[(False, 700.0)] > 100 * scores[(False, 50.0)]
