"""n2n25d's paper preset follows the MSR2AU paper: a neighbours-only (Noise2Noise) teacher, a
distilled student, and a motion-compensated recursive filter across slices at inference that
keeps CT numbers and edges while it removes noise independent from slice to slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from ldct import recursive_filter as rf
from ldct.infer import denoise, load_network
from ldct.registry import get
from ldct.train.loop import build_method, describe, hyper_parameters, train

SHIPPED = get("n2n25d").shipped_weights


def _anatomy(size: int = 96) -> np.ndarray:
    """A body outline with a bright and a dark organ, edges blurred like a scan's."""
    y, x = np.mgrid[:size, :size] - size / 2
    img = np.full((size, size), -1000.0)
    img[(y / 40) ** 2 + (x / 30) ** 2 < 1] = 40.0
    img[(y + 8) ** 2 + (x - 7) ** 2 < 100] = 200.0
    img[(y - 12) ** 2 + (x + 13) ** 2 < 36] = -100.0
    return ndimage.gaussian_filter(img, 1.0)


def _drifting(slices: int = 12) -> np.ndarray:
    """Slices that are subpixel-shifted copies of one another (anatomy offset per slice)."""
    base = _anatomy()
    return np.stack([ndimage.shift(base, (0.6 * k, -0.35 * k), order=3, mode="nearest")
                     for k in range(slices)]).astype(np.float32)


def test_recursive_filter_keeps_a_constant_volume_and_is_off_at_zero():
    constant = np.full((6, 40, 40), 37.0, np.float32)
    np.testing.assert_array_equal(rf.recursive_filter(constant, 0.5), constant)
    noisy = np.random.default_rng(0).normal(40, 20, (6, 40, 40)).astype(np.float32)
    np.testing.assert_array_equal(rf.recursive_filter(noisy, 0.0), noisy)
    with pytest.raises(ValueError, match="recursive must be in"):
        rf.recursive_filter(noisy, 1.0)


def test_recursive_filter_reduces_independent_noise_without_biasing_hu():
    clean = np.repeat(_anatomy()[None], 12, 0).astype(np.float32)
    noisy = clean + np.random.default_rng(1).normal(0, 20, clean.shape).astype(np.float32)
    out = rf.recursive_filter(noisy, 0.5)
    assert (out - clean).std() < 0.7 * (noisy - clean).std()
    assert abs(float((out - clean).mean())) < 0.5  # HU: no bias


def test_recursive_filter_follows_the_anatomy_offset_and_moves_no_edge(monkeypatch):
    """Shifted copies stay within a few HU of themselves (edges of ~1000 HU); blended without
    the alignment, the same slices smear their edges several times as much."""
    drifting = _drifting()
    error = np.abs(rf.recursive_filter(drifting, 0.5) - drifting).max()
    assert error < 6.0
    noisy = drifting + np.random.default_rng(2).normal(0, 20, drifting.shape).astype(np.float32)
    edges = ndimage.morphological_gradient(drifting, size=(1, 3, 3)) > 50
    aligned = rf.recursive_filter(noisy, 0.5)
    assert (aligned - drifting).std() < 0.7 * (noisy - drifting).std()
    with monkeypatch.context() as patch:
        patch.setattr(rf, "slice_offset", lambda reference, moving: np.zeros(2))
        assert np.abs(rf.recursive_filter(drifting, 0.5) - drifting).max() > 2 * error
        unaligned = rf.recursive_filter(noisy, 0.5)
    edge_error = np.abs(aligned - drifting)[edges].mean()
    assert edge_error < 0.8 * np.abs(unaligned - drifting)[edges].mean()


def test_paper_preset_describes_the_papers_three_modules():
    paper = describe("n2n25d", "paper")
    teacher, student = paper["phases"]
    assert (teacher["name"], teacher["supervision"], teacher["losses"]) == \
        ("teacher", "self-supervised", {"n2n": 1.0})
    assert any("never the centre" in note for note in teacher["notes"])
    assert paper["networks"]["teacher"]["parameters"] > 0
    assert (student["name"], student["supervision"], student["losses"]) == \
        ("student", "distillation", {"distill": 1.0})
    assert student["steps"] > 0 and teacher["steps"] + student["steps"] == paper["steps"]
    assert paper["ships"]["kwargs"]["arch"] == "unet"
    assert paper["ships"]["kwargs"]["recursive"] == paper["inference"]["recursive_filter"] > 0


def test_cpu_preset_describes_the_shipped_teacher():
    cpu = describe("n2n25d", "cpu")
    [teacher] = cpu["phases"]
    assert (teacher["name"], teacher["steps"], teacher["losses"]) == ("teacher", 60000,
                                                                      {"r2r": 1.0})
    assert cpu["supervision"] == ["self-supervised"] and "inference" not in cpu
    blob = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert cpu["ships"]["parameters"] == sum(v.numel() for v in blob["state_dict"].values())
    assert cpu["ships"]["kwargs"] == blob["kwargs"]


def test_neighbours_only_teacher_never_sees_the_centre():
    def teacher_outputs(teacher_input):
        hp = {**hyper_parameters("n2n25d", "paper"), "base": 8, "teacher_input": teacher_input}
        torch.manual_seed(0)
        method = build_method("n2n25d", hp, None)
        x = torch.from_numpy(np.random.default_rng(3).normal(40, 30, (2, 5, 32, 32))
                             .astype(np.float32))
        other = x.clone()
        other[:, 2] += 300.0
        with torch.no_grad():
            return method.teacher_estimate(x), method.teacher_estimate(other)

    same, changed = teacher_outputs("neighbours")
    assert torch.equal(same, changed)
    seen, changed = teacher_outputs("recorrupted")  # the default teacher does see it
    assert not torch.allclose(seen, changed)
    with pytest.raises(ValueError, match="use student_arch unet"):
        build_method("n2n25d", {**hyper_parameters("n2n25d", "paper"),
                                "student_arch": "msr2au"}, None)


def test_paper_preset_trains_and_infers_with_the_recursive_filter(prepared, phantom, tmp_path):
    overrides = {"patch": 32, "batch": 2, "steps": 6, "ckpt_every": 3, "log_every": 1,
                 "teacher_fraction": 0.5, "base": 8}
    train("n2n25d", prepared, tmp_path, preset="paper", overrides=overrides, progress=False)
    log = (tmp_path / "log.csv").read_text()
    assert "teacher/n2n" in log and "student/distill" in log
    blob = torch.load(tmp_path / "model.pt", weights_only=True)
    assert blob["kwargs"]["recursive"] == 0.5
    net = load_network("n2n25d", "cpu", str(tmp_path / "model.pt"))
    assert net.recursive == 0.5
    volume = phantom.volume
    filtered = denoise(volume, "n2n25d", weights=tmp_path / "model.pt", device="cpu")
    assert filtered.same_geometry(volume)
    off = tmp_path / "off" / "model.pt"
    off.parent.mkdir()
    torch.save({**blob, "kwargs": {k: v for k, v in blob["kwargs"].items()
                                   if k != "recursive"}}, off)
    plain = denoise(volume, "n2n25d", weights=off, device="cpu")
    assert np.abs(filtered.hu - plain.hu).max() > 1.0
    np.testing.assert_allclose(filtered.hu, rf.recursive_filter(plain.hu, 0.5), atol=1e-3)
    half = denoise(volume, "n2n25d", strength=0.5, weights=tmp_path / "model.pt", device="cpu")
    np.testing.assert_allclose(half.hu - volume.hu, 0.5 * (filtered.hu - volume.hu), atol=1e-2)


def test_shipped_model_infers_exactly_as_before(phantom):
    """The shipped n2n25d asks for no filter: denoise is one network pass per slice on the
    slice and its four neighbours, nothing more. Past the volume's ends the neighbour is the
    slice mirrored about the centre (so the centre and its noise never appear twice); the
    stacks of the phantom's 6 slices, written out:"""
    stacks = {0: [2, 1, 0, 1, 2], 1: [3, 0, 1, 2, 3], 2: [0, 1, 2, 3, 4], 3: [1, 2, 3, 4, 5],
              4: [2, 3, 4, 5, 2], 5: [3, 4, 5, 4, 3]}
    net = load_network("n2n25d", "cpu", str(SHIPPED))
    assert net.recursive == 0.0
    volume = phantom.volume
    assert volume.hu.shape[0] == len(stacks)
    out = denoise(volume, "n2n25d", weights=SHIPPED, device="cpu")
    with torch.inference_mode():
        for k, picks in stacks.items():
            x = torch.from_numpy(volume.hu[picks].astype(np.float32))[None]
            expected = net(x)[0, 0].numpy()
            np.testing.assert_allclose(out.hu[k], expected, atol=1e-3, err_msg=f"slice {k}")
