"""`ldct train METHOD --describe`: what a preset would train, pinned to each paper where the
paper states it, and what shipped, as each card states it."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import torch

from ldct import registry
from ldct.cards import shipped_recipe, training_metadata
from ldct.data import PatchSampler, PreparedData
from ldct.infer import load_network
from ldct.train.loop import build_method, describe, hyper_parameters, train

GANS = ("pan", "pdml", "alden")
TINY = {"patch": 32, "batch": 2, "steps": 6, "base": 8, "d_base": 8, "log_every": 1,
        "ckpt_every": 3}


def test_cli_describe_prints_json_and_trains_nothing(ldct_command, tmp_path):
    result = subprocess.run([*ldct_command, "train", "pan", "--preset", "paper", "--describe"],
                            capture_output=True, text=True, cwd=tmp_path, check=True)
    described = json.loads(result.stdout)
    assert described["method"] == "pan" and described["preset"] == "paper"
    assert not any(tmp_path.iterdir())  # no run folder, no checkpoint


def test_train_without_data_says_only_describe_runs_without_it(ldct_command):
    result = subprocess.run([*ldct_command, "train", "pan"], capture_output=True, text=True)
    assert result.returncode != 0 and "--data is required" in result.stderr


@pytest.mark.parametrize("name", ["pan", "pdml"])
def test_paper_presets_of_the_unpaired_papers_train_unpaired_from_the_start(name):
    described = describe(name, "paper")
    assert described["supervision"] == ["unpaired"]
    assert [p["name"] for p in described["phases"]] == ["gan"]  # no supervised warm-up
    # pan: the paper is silent (100000); pdml: its authors' 200 epochs of 389 steps
    assert described["phases"][0]["steps"] == described["steps"] == \
        {"pan": 100000, "pdml": 77800}[name]
    assert not any("anchor" in term for term in described["phases"][0]["losses"])
    assert described["data"]["sampler"] == "unpaired" and "anchor" not in described["networks"]


def test_pan_paper_preset_has_cycle_gans_weights_and_both_generators_the_same_size():
    described = describe("pan", "paper")
    losses = described["phases"][0]["losses"]
    assert losses["g/cycle_l1"] == 10.0 and losses["g/identity_l1"] == 5.0
    assert losses["g/perceptual_cycle"] == 1.0 and losses["g/adversarial_lsgan"] == 1.0
    nets = described["networks"]
    assert nets["g"] == nets["f"] and described["ships"]["parameters"] == nets["g"]["parameters"]


def test_alden_paper_preset_contrasts_toward_the_anatomy_matched_normal_dose():
    described = describe("alden", "paper")
    assert described["supervision"] == ["paired"] and described["data"]["sampler"] == "paired"
    assert "g/semantic_contrast_paper" in described["phases"][0]["losses"]
    cpu = describe("alden", "cpu")
    assert "g/semantic_contrast_input" in cpu["phases"][1]["losses"]
    assert cpu["supervision"] == ["paired", "unpaired"]  # warm-up on pairs, then the GAN stage


@pytest.mark.parametrize("name", ["pan", "pdml"])
def test_unpaired_paper_presets_never_read_the_simulated_pair(name, prepared):
    """The GAN losses run on a batch without 'nd_sim' (the normal dose's own simulated low
    dose): the paper presets pair nothing."""
    method = build_method(name, {**hyper_parameters(name, "paper", TINY), "doses": [0.25],
                                 "kernels": None}, None)
    sampler = PatchSampler(PreparedData(prepared), [0.25], 32, 2, 3, method.paired, seed=0)
    batch = {k: torch.from_numpy(v) for k, v in sampler.sample().items() if k != "nd_sim"}
    for group in method.schedule(0):
        assert torch.isfinite(method.losses(group, batch)["total"])


@pytest.mark.parametrize("name", GANS)
def test_paper_presets_train_a_few_steps_on_cpu_and_load(name, prepared, tmp_path):
    result = train(name, prepared, tmp_path, preset="paper", overrides=TINY, progress=False)
    assert result.steps == TINY["steps"] and all(torch.isfinite(torch.tensor(v))
                                                 for v in result.last.values())
    net = load_network(name, "cpu", str(tmp_path / "model.pt"))
    x = torch.full((1, net.context, 32, 32), 40.0)
    with torch.no_grad():
        assert net(x).shape == (1, 1, 32, 32)


@pytest.mark.parametrize("name", ["alden", "n2n25d", "pan", "pdml", "vagan"])
def test_each_card_states_the_recipe_its_weights_were_trained_with(name):
    """The card's recipe is `--describe` of the run that made the shipped weights (its preset
    and recorded overrides), with the shipped network's own parameter count."""
    info = registry.get(name)
    card = json.loads((info.folder / "card.json").read_text())
    train_meta = training_metadata(info.weights)
    recipe = shipped_recipe(name, train_meta)
    assert card["recipe"]["phases"] == recipe["phases"]
    assert recipe["ships"]["parameters"] == train_meta["parameters"]
    assert card["differences_from_paper"] == list(info.differences) and info.differences


# How a label names each kind of supervision, as whole words (hyphenated words are one word,
# so "self-supervised" is not "supervised" and "unpaired" is not "paired")
NAMES = {"paired": {"paired", "pairs", "supervised"}, "unpaired": {"unpaired"},
         "self-supervised": {"self-supervised", "unsupervised"},
         "distillation": {"distilled", "distillation"}}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text.lower()))


def test_whole_word_labels_tell_paired_from_unpaired():
    assert NAMES["paired"].isdisjoint(_words("Unpaired Cycle-GAN: learns from unpaired scans"))
    assert "supervised" not in _words("self-supervised on the scans alone")
    assert "paired" in _words("paired (simulated low doses) and unpaired")


@pytest.mark.parametrize("name", ["alden", "n2n25d", "pan", "pdml", "vagan"])
def test_no_shipped_model_is_called_unpaired_or_self_supervised_beyond_its_training(name):
    """The title and supervision line name every kind of supervision the shipped recipe used
    and no other, word for word; a title calling a model unpaired or self-supervised also
    names its paired training."""
    info = registry.get(name)
    supervision = set(shipped_recipe(name, training_metadata(info.weights))["supervision"])
    said = _words(f"{info.title} {info.supervision}")
    for kind, words in NAMES.items():
        if kind in supervision:
            assert said & words, f"{name}: its {kind} training is not named ({sorted(words)})"
        else:
            assert not said & words, f"{name} is called {sorted(said & words)}; it was not"
    title = _words(info.title)  # shown alone in lists: it must not claim less supervision
    if title & (NAMES["unpaired"] | NAMES["self-supervised"]) and "paired" in supervision:
        assert title & NAMES["paired"], f"{name}'s title leaves out its paired training"
    if "self-supervised" in supervision and name == "n2n25d":
        assert said & {"simulator", "measured"}  # where its recorruption noise came from
