"""The one training loop every method shares: sampling, optimizers, AMP, checkpoints, logs.

`ldct train METHOD --data DIR [--preset cpu|paper] [--resume] [--nproc N]` runs :func:`train`.
Runs are resumable (a checkpoint every ``ckpt_every`` steps holds nets, optimizers, RNG states and
the wall time so far) and deterministic for a seed on the CPU; with several processes the same
loop runs under DistributedDataParallel (`ldct.train.ddp`).
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ldct import registry
from ldct.data import PatchSampler, PreparedData
from ldct.device import TRAINING, grad_scaler, precision, to_device
from ldct.nets.encoder import load_pvm
from ldct.train import METHODS, ddp
from ldct.train.method import ADAM_BETAS, Method, learning_rate

PRESETS: dict[str, dict[str, Any]] = {
    # fits the 2-core CPU budget (<= 90 min per method); patches as in VAGAN (64x64)
    # doses, kernels: None = every dose and reconstruction kernel the data was prepared with
    # thickness: slices averaged per sample, drawn from the list (1: the prepared slices)
    "cpu": {"patch": 64, "batch": 8, "steps": 3000, "lr": 2e-4, "ckpt_every": 250,
            "log_every": 10, "doses": None, "kernels": None, "thickness": [1], "seed": 0},
    # the papers' scale, for a GPU
    "paper": {"patch": 64, "batch": 32, "steps": 60000, "lr": 2e-4, "ckpt_every": 2000,
              "log_every": 50, "doses": None, "kernels": None, "thickness": [1], "seed": 0,
              "base": 32},
}


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    wall_s: float
    last: dict[str, float]


def method_class(name: str) -> type[Method]:
    """The trainer class of a method name, or an error listing the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def hyper_parameters(method_name: str, preset: str, overrides: dict[str, Any] | None = None,
                     finetuning: bool = False) -> dict[str, Any]:
    """The loop's preset, the method's values for that preset, its fine-tuning values when
    starting from trained weights, then the command's overrides (later ones win)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    cls = method_class(method_name)
    return {**PRESETS[preset], **cls.presets.get(preset, {}),
            **(cls.finetune if finetuning else {}), **(overrides or {})}


def describe(method_name: str, preset: str = "cpu", overrides: dict[str, Any] | None = None,
             pvm_path: str | Path | None = None, finetuning: bool = False) -> dict[str, Any]:
    """What `ldct train` would train (networks, phases, losses, data) as JSON-ready data.

    Doses and kernels stay None where the preset takes every one the data was prepared with.
    """
    hp = hyper_parameters(method_name, preset, overrides, finetuning)
    method = build_method(method_name, hp, pvm_path)
    return {**method.describe(), "preset": preset, "overrides": dict(overrides or {})}


def build_method(name: str, hp: dict[str, Any], pvm_path: str | Path | None) -> Method:
    """Instantiate a method with its PVM when it needs one."""
    cls = method_class(name)
    pvm = None
    if cls.needs_pvm:
        path = Path(pvm_path) if pvm_path else registry.ENCODER_DIR / "encoder.pt"
        if not path.exists():
            raise FileNotFoundError(f"{name} needs a PVM: {path} is missing. Run `ldct train "
                                    "encoder` first, or pass --pvm with a local VGG19/ResNet.")
        pvm = load_pvm(path)
    return cls(hp, pvm)


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(method_name: str, data_dir: str | Path, out_dir: str | Path, preset: str = "cpu",
          overrides: dict[str, Any] | None = None, resume: bool = False,
          pvm_path: str | Path | None = None, device: str = "auto",
          progress: bool = True, init_weights: str | Path | None = None,
          nproc: int = 1) -> TrainResult:
    """Train ``method_name`` on the prepared data; writes checkpoint, log.csv and model.pt.

    ``init_weights`` (a model.pt) starts the deployable network from trained weights - the
    fine-tuning case; the method's ``finetune`` overrides then skip its from-scratch stages.
    ``nproc`` > 1 trains on that many local processes (DDP); ``batch`` stays the global batch.
    """
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        batch = hyper_parameters(method_name, preset, overrides, bool(init_weights))["batch"]
        if batch % nproc:
            raise ValueError(f"--batch {batch} (the global batch) does not split over --nproc "
                             f"{nproc}; give a multiple of {nproc}")
        return ddp.launch(nproc, method_name=method_name, data_dir=data_dir, out_dir=out_dir,
                          preset=preset, overrides=overrides, resume=resume, pvm_path=pvm_path,
                          device=device, progress=progress, init_weights=init_weights)
    hp = hyper_parameters(method_name, preset, overrides, bool(init_weights))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rank = ddp.setup(device)
    dev = rank.device
    torch.manual_seed(hp["seed"])
    method = build_method(method_name, hp, pvm_path)
    if init_weights:
        blob = torch.load(init_weights, map_location="cpu", weights_only=True)
        method.start_from(blob["state_dict"])
        # a calibrated model's gain stays with its retrained or site-adapted versions (written
        # with the weights; training itself runs at gain 1, what the losses were chosen for)
        method.hp["gain"] = float(blob.get("gain", 1.0))
    method.nets.to(dev)
    if method.pvm is not None:
        method.pvm.to(dev)
    hp = method.hp
    hp["overrides"] = dict(overrides or {})  # what the command changed (cards state it)
    hp["init"] = str(init_weights) if init_weights else None
    optims = {g: torch.optim.Adam([p for n in nets for p in method.nets[n].parameters()],
                                  lr=learning_rate(hp, g, step=0), betas=ADAM_BETAS)
              for g, nets in method.optim_groups().items()}
    scaler = grad_scaler(dev)
    data = PreparedData(data_dir)
    hp["doses"] = hp["doses"] or data.manifest["doses"]  # default: every prepared dose
    hp["kernels"] = hp["kernels"] or data.kernels()
    sampler = PatchSampler(data, hp["doses"], hp["patch"], hp["batch"],
                           method.sample_context or method.context, method.paired,
                           seed=hp["seed"], noise=method.needs_noise, kernels=hp["kernels"],
                           thickness=hp["thickness"])
    ckpt_path = out_dir / "checkpoint.pt"
    step, wall = 0, 0.0
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=dev, weights_only=False)
        method.nets.load_state_dict(ckpt["nets"])
        for g, state in ckpt["optims"].items():
            optims[g].load_state_dict(state)
        sampler.rng.bit_generator.state = ckpt["sampler_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        step, wall = ckpt["step"], ckpt["wall_s"]
    elif rank.main and (out_dir / "log.csv").exists():
        (out_dir / "log.csv").unlink()  # a fresh run starts a fresh log

    def checkpoint() -> None:
        _save_atomic({"step": step, "wall_s": wall, "hp": hp, "nets": method.nets.state_dict(),
                      "optims": {g: o.state_dict() for g, o in optims.items()},
                      "sampler_rng": sampler.rng.bit_generator.state,
                      "torch_rng": torch.get_rng_state()}, ckpt_path)

    log_file = open(out_dir / "log.csv", "a", newline="") if rank.main else None
    writer = csv.writer(log_file) if log_file else None
    last: dict[str, float] = {}
    bar = tqdm(total=hp["steps"], initial=step, desc=f"train {method_name}", unit="step",
               disable=not (progress and rank.main))
    losses = ddp.losses_of(method, rank)
    method.nets.train()
    try:
        while step < hp["steps"]:
            start = time.perf_counter()
            batch = {k: to_device(v, dev) for k, v in rank.shard(sampler.sample()).items()}
            method.at_step(step)
            for group in method.schedule(step):
                optims[group].zero_grad(set_to_none=True)
                for settings in optims[group].param_groups:  # the schedule (--describe's)
                    settings["lr"] = learning_rate(hp, group, step)
                with precision(dev, TRAINING):
                    terms = losses(group, batch)
                scaler.scale(terms["total"].float()).backward()  # the sum in float32
                scaler.step(optims[group])
                scaler.update()
                last.update({f"{group}/{k}": float(v.detach()) for k, v in terms.items()})
            step += 1
            wall += time.perf_counter() - start
            if step % hp["log_every"] == 0 or step == hp["steps"]:
                last = rank.mean(last)
                if writer:
                    for key, value in last.items():
                        writer.writerow([step, f"{wall:.1f}", key, f"{value:.6g}"])
                    log_file.flush()
                bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in last.items()
                                 if k.endswith("total")})
            if rank.main and (step % hp["ckpt_every"] == 0 or step == hp["steps"]):
                checkpoint()
            bar.update(1)
    finally:
        bar.close()
        if log_file:
            log_file.close()
    method.at_step(step)
    if rank.main:
        export(method, method_name, hp, preset, step, wall, out_dir)
    rank.close()
    return TrainResult(out_dir, step, wall, last)


def export(method: Method, name: str, hp: dict[str, Any], preset: str, step: int, wall: float,
           out_dir: Path) -> Path:
    """Write the deployable weights (or the encoder) with what rebuilds and describes them."""
    method.nets.cpu()
    if name == "encoder":
        path = out_dir / "encoder.pt"
        _save_atomic({**method.export_blob(), "steps": step, "wall_s": wall}, path)
        return path
    net = method.deployable()
    path = out_dir / "model.pt"
    _save_atomic({"method": name, "kwargs": method.factory_kwargs(), "context": method.context,
                  "normalization": "(HU + 1000) / 2000", "state_dict": net.state_dict(),
                  "gain": hp.get("gain", 1.0),
                  "steps": step, "wall_s": wall, "preset": preset,
                  "hp": {k: v for k, v in hp.items() if not isinstance(v, torch.Tensor)}}, path)
    return path
