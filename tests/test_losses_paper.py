"""The loss each paper preset's trainer minimizes, on a constructed batch, against the paper's
formula written out here with its weights as literals.

The networks' outputs (generator, discriminators, the frozen feature extractor) are taken as
they are; everything the loss does with them - which images are compared, with which distance,
at which scale, with which weight - is written here by hand from the papers (vagan: its eq. for
the generator, 0.005 GAN + attention + 0.01 multi-scale + 0.5 perceptual, attention steps
0.125/0.25/0.5/1, scales 1/4, 1/2, 1 at 0.25/0.5/1, the discriminator's attention loss 0.05;
pan: Cycle-GAN's cycle 10 and identity 0.5 x 10; alden: the anatomy-matched normal dose as
reference and the dual negatives; n2n25d: Noise2Noise across slices, then distillation).
pdml's paper loss is pinned by its own tests.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ldct.train.loop import build_method, hyper_parameters

WINDOW = 400.0  # HU: image losses are in liver-window widths (the loop's stated unit)
ATOL = 1e-6


def _scene(batch: int, slices: int, size: int, seed: int) -> dict[str, torch.Tensor]:
    """Low and normal dose of ``batch`` different smooth 'anatomies' (disks of liver, fat and
    vessel HU on water), the low dose with 40 HU noise; (B, slices, size, size) HU."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    normal = torch.zeros(batch, slices, size, size)
    for b in range(batch):
        for s in range(slices):
            image = torch.full((size, size), 0.0)
            for hu in (60.0, -100.0, 180.0):
                cy, cx = torch.randint(8, size - 8, (2,), generator=gen).tolist()
                r = int(torch.randint(4, size // 3, (1,), generator=gen))
                image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = hu
            normal[b, s] = image
    low = normal + 40.0 * torch.randn(normal.shape, generator=gen)
    return {"ld": low, "nd": normal}


def _method(name: str, **overrides):
    torch.manual_seed(0)
    method = build_method(name, hyper_parameters(name, "paper", overrides), None)
    method.nets.eval()  # no dropout or batch statistics: the same outputs on every call
    return method


def _window(hu: torch.Tensor) -> torch.Tensor:
    """The discriminators' input: the liver window [-160, 240] HU as [0, 1] (clamped to
    [-1, 2] as the networks' docstring states)."""
    return ((hu + 160.0) / 400.0).clamp(-1.0, 2.0)


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).mean()


def _l1_window(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().mean() / WINDOW


def _features_distance(pvm, a, b, distance) -> torch.Tensor:
    fa, fb = pvm(a), pvm(b)
    return sum(distance(x, y) for x, y in zip(fa, fb)) / len(fa)


def _lsgan(logits: torch.Tensor, target: float) -> torch.Tensor:
    return ((logits - target) ** 2).mean()


def _log_loss_real(logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(logit), the GAN log loss of an image called real."""
    return F.softplus(-logits).mean()


def _log_loss_fake(logits: torch.Tensor) -> torch.Tensor:
    """-log(1 - sigmoid(logit))."""
    return F.softplus(logits).mean()


# --------------------------------------------------------------------------------- vagan

@pytest.fixture(scope="module")
def vagan():
    method = _method("vagan")
    batch = _scene(2, 1, 64, seed=1)
    g = method.nets["g"]
    ld, nd = batch["ld"], batch["nd"]
    with torch.no_grad():
        maps, noises = g.core.forward_all((ld + 1000.0) / 2000.0)  # the network's own units
        fake = g(ld)
    residual = (ld - nd).abs()
    target = (residual > residual.mean(dim=(-2, -1), keepdim=True)).float()  # the paper's M
    attention = (0.125 * _mse(maps[0], target) + 0.25 * _mse(maps[1], target)
                 + 0.5 * _mse(maps[2], target) + 1.0 * _mse(maps[3], target))
    # multi-scale: the denoised image (input minus its noise estimate) at 1/4, 1/2 and 1 of
    # the resolution against the normal dose average-pooled to that resolution
    multiscale = sum(w * _mse(F.avg_pool2d(ld, f) - n * 2000.0, F.avg_pool2d(nd, f)) / WINDOW**2
                     for f, w, n in ((4, 0.25, noises[0]), (2, 0.5, noises[1]),
                                     (1, 1.0, noises[2])))
    return method, batch, {"maps": maps, "fake": fake, "attention": attention,
                           "multiscale": multiscale}


def test_vagan_paper_pretraining_minimizes_attention_plus_multiscale(vagan):
    method, batch, hand = vagan
    with torch.no_grad():
        got = method.losses("pretrain", batch)
    expected = hand["attention"] + hand["multiscale"]
    assert float(got["total"]) == pytest.approx(float(expected), abs=ATOL, rel=1e-6)


def test_vagan_paper_generator_loss_is_the_papers_weighted_sum(vagan):
    method, batch, hand = vagan
    nd = batch["nd"]
    with torch.no_grad():
        adversarial = _log_loss_real(method.nets["d"](_window(hand["fake"]))[0])
        perceptual = _features_distance(method.pvm, hand["fake"], nd, _mse)
        got = method.losses("g", batch)
    expected = (0.005 * adversarial + 1.0 * hand["attention"] + 0.01 * hand["multiscale"]
                + 0.5 * perceptual)
    assert float(got["total"]) == pytest.approx(float(expected), abs=ATOL, rel=1e-6)


def test_vagan_paper_discriminator_loss_has_its_attention_term_at_005(vagan):
    method, batch, hand = vagan
    d = method.nets["d"]
    with torch.no_grad():
        logits_fake, map_fake = d(_window(hand["fake"]))
        logits_real, map_real = d(_window(batch["nd"]))
        # the map of a denoised image must match the generator's last map M_T (at the
        # discriminator's map resolution, 1/4), that of a normal dose must be zero
        attention = (_mse(map_fake, F.avg_pool2d(hand["maps"][-1], 4))
                     + _mse(map_real, torch.zeros_like(map_real)))
        got = method.losses("d", batch)
    expected = _log_loss_real(logits_real) + _log_loss_fake(logits_fake) + 0.05 * attention
    assert float(got["total"]) == pytest.approx(float(expected), abs=ATOL, rel=1e-6)


# ----------------------------------------------------------------------------------- pan

@pytest.fixture(scope="module")
def pan():
    # 3-slice samples (the GAN stage uses the centre slice); small networks keep it fast, the
    # weights under test are the paper preset's
    return _method("pan", base=8), _scene(2, 3, 32, seed=2)


def test_pan_paper_generator_loss_is_cycle_gans_weighted_sum(pan):
    method, batch = pan
    n, pvm = method.nets, method.pvm
    ld, nd = batch["ld"][:, 1:2], batch["nd"][:, 1:2]
    with torch.no_grad():
        fake_nd, fake_ld = n["g"](ld), n["f"](nd)
        back_ld, back_nd = n["f"](fake_nd), n["g"](fake_ld)
        adversarial = (_lsgan(n["d_nd"](_window(fake_nd)), 1.0)
                       + _lsgan(n["d_ld"](_window(fake_ld)), 1.0))
        cycle = _l1_window(back_ld, ld) + _l1_window(back_nd, nd)
        identity = _l1_window(n["g"](nd), nd) + _l1_window(n["f"](ld), ld)
        perceptual = (_features_distance(pvm, back_ld, ld, F.l1_loss)
                      + _features_distance(pvm, back_nd, nd, F.l1_loss))
        got = method.losses("g", batch)
    # Cycle-GAN: lambda_cycle 10, identity 0.5 x lambda = 5; adversarial and perceptual 1
    expected = 1.0 * adversarial + 10.0 * cycle + 5.0 * identity + 1.0 * perceptual
    assert float(got["total"]) == pytest.approx(float(expected), abs=ATOL, rel=1e-6)


def test_pan_paper_discriminators_loss_is_half_the_lsgan_sum(pan):
    method, batch = pan
    n = method.nets
    ld, nd = batch["ld"][:, 1:2], batch["nd"][:, 1:2]
    with torch.no_grad():
        fake_nd, fake_ld = n["g"](ld), n["f"](nd)
        expected = 0.5 * (_lsgan(n["d_nd"](_window(nd)), 1.0)
                          + _lsgan(n["d_nd"](_window(fake_nd)), 0.0)
                          + _lsgan(n["d_ld"](_window(ld)), 1.0)
                          + _lsgan(n["d_ld"](_window(fake_ld)), 0.0))
        got = method.losses("d", batch)
    assert float(got["total"]) == pytest.approx(float(expected), abs=ATOL, rel=1e-6)


# --------------------------------------------------------------------------------- alden

def _region_embeddings(features: list[torch.Tensor], grid: int) -> torch.Tensor:
    """(B, grid*grid, D): each feature map's mean over each of grid x grid cells (row-major),
    the stages' means concatenated, scaled to unit length."""
    cells = []
    for f in features:
        b, c, h, w = f.shape
        cells.append(f.reshape(b, c, grid, h // grid, grid, w // grid).mean((3, 5))
                     .reshape(b, c, grid * grid))
    e = torch.cat(cells, 1).transpose(1, 2)
    return e / e.norm(dim=-1, keepdim=True)


def _paper_contrast(out: torch.Tensor, low: torch.Tensor, normal: torch.Tensor,
                    tau: float = 0.07) -> torch.Tensor:
    """The paper's semantic contrast, one region at a time: anchor = the output's region,
    positive = the normal dose's same region, negatives = the low dose's same region and
    every other region of the normal dose; InfoNCE at temperature 0.07, averaged."""
    terms = []
    for b in range(out.shape[0]):
        for r in range(out.shape[1]):
            anchor = out[b, r]
            positive = math.exp(float(anchor @ normal[b, r]) / tau)
            negatives = [low[b, r]] + [normal[b, k] for k in range(out.shape[1]) if k != r]
            below = positive + sum(math.exp(float(anchor @ v) / tau) for v in negatives)
            terms.append(-math.log(positive / below))
    return torch.tensor(sum(terms) / len(terms))


@pytest.fixture(scope="module")
def alden():
    return _method("alden", base=8), _scene(2, 3, 64, seed=3)


def test_alden_paper_generator_loss_uses_the_anatomy_matched_reference(alden):
    method, batch = alden
    g, d, pvm = method.nets["g"], method.nets["d"], method.pvm
    ld, nd = batch["ld"][:, 1:2], batch["nd"][:, 1:2]
    grid = 4
    with torch.no_grad():
        fake = g(ld)
        reference = pvm(nd)  # each low dose's OWN normal dose (anatomy-matched)
        adversarial = _lsgan(d(fake, reference), 1.0)
        contrast = _paper_contrast(_region_embeddings(pvm(fake), grid),
                                   _region_embeddings(pvm(ld), grid),
                                   _region_embeddings(reference, grid))
        pixel = _mse(fake, nd) / WINDOW**2
        got = method.losses("g", batch)
    # the preset's stated weights: pixel MSE 1, adversarial 0.01, contrast 0.1, no identity
    expected = 0.01 * adversarial + 0.1 * contrast + 1.0 * pixel
    assert float(got["total"]) == pytest.approx(float(expected), abs=1e-4, rel=1e-4)


def test_alden_paper_discriminator_reads_each_low_doses_own_normal_dose(alden):
    method, batch = alden
    g, d, pvm = method.nets["g"], method.nets["d"], method.pvm
    ld, nd = batch["ld"][:, 1:2], batch["nd"][:, 1:2]
    with torch.no_grad():
        reference = pvm(nd)
        expected = 0.5 * (_lsgan(d(nd, reference), 1.0) + _lsgan(d(g(ld), reference), 0.0))
        got = method.losses("d", batch)
    assert float(got["total"]) == pytest.approx(float(expected), abs=ATOL, rel=1e-6)


# -------------------------------------------------------------------------------- n2n25d

@pytest.fixture(scope="module")
def n2n25d():
    batch = _scene(2, 5, 32, seed=4)
    # fresh noise of the scan's statistics (the loop supplies it; the paper's N2N ignores it)
    batch["noise"] = 40.0 * torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    return _method("n2n25d", base=8, student_base=8), batch


def test_n2n25d_paper_teacher_predicts_the_measured_centre_from_its_neighbours(n2n25d):
    """Stage 1 (Noise2Noise across slices): the teacher sees slices 0, 1, 3, 4 of the
    low-dose stack, never slice 2, and its loss is the MSE to the measured slice 2."""
    method, batch = n2n25d
    ld = batch["ld"]
    with torch.no_grad():
        neighbours = torch.cat([ld[:, :2], ld[:, 3:]], 1)
        estimate = method.nets["teacher"]((neighbours + 1000.0) / 2000.0) * 2000.0 - 1000.0
        expected = _mse(estimate, ld[:, 2:3]) / WINDOW**2
        got = method.losses("teacher", batch)
    assert float(got["total"]) == pytest.approx(float(expected), abs=ATOL, rel=1e-6)


def test_n2n25d_paper_student_is_distilled_from_the_teacher_on_low_doses_only(n2n25d):
    """The paper's framework needs no normal dose: its preset's student distils on the
    low-dose stacks alone (issue 37), so the normal-dose half of the batch plays no part."""
    method, batch = n2n25d
    stacks = batch["ld"]
    with torch.no_grad():
        neighbours = torch.cat([stacks[:, :2], stacks[:, 3:]], 1)
        target = method.nets["teacher"]((neighbours + 1000.0) / 2000.0) * 2000.0 - 1000.0
        expected = _mse(method.nets["student"](stacks), target) / WINDOW**2
        got = method.losses("student", batch)
    assert float(got["total"]) == pytest.approx(float(expected), abs=ATOL, rel=1e-6)
