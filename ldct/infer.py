"""Volume inference: every denoiser (network or baseline) through one path.

Slices are stacked with their neighbours (mirrored about the centre at the ends) as the
model's context, batched, run on CUDA when available (else the CPU) in IEEE float32 (the
measured policy in `ldct.device`: reduced precision moved CT numbers), averaged over flipped
and rotated views of the slices (self-ensemble), filtered across slices when the model asks
for it (n2n25d's recursive filter), and blended with the input by ``strength`` - or by the
strength that leaves a ``target_noise`` (`denoise_to_noise`). The result has the input's
geometry; a network is loaded once per process and device. Memory beyond the input and the
result is a batch's and a slab's, whatever the number of slices: the network writes into the
result, and the recursive filter and the blend work in it in place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ldct import registry
from ldct.device import INFERENCE, Precision, pick_device, precision, to_device
from ldct.io import CTVolume
from ldct.nets.blocks import HUPreservingDenoiser
from ldct.noise_level import NoiseMatch, blend, match_noise
from ldct.recursive_filter import recursive_filter

StopCheck = Callable[[], bool]  # True once the caller wants the work stopped
BatchDone = Callable[[int, int], None]  # (slices done, slices in all)


class DenoiseCancelled(RuntimeError):
    """The caller stopped the denoising (``stop`` answered True); nothing was returned."""

# Views of a slice as (quarter turns, mirror left-right), in the order the self-ensemble uses
# them: its first 2 or 4 already pair each view with a differently oriented one.
DIHEDRAL_VIEWS = ((0, False), (2, True), (1, False), (3, True),
                  (2, False), (0, True), (3, False), (1, True))
# Views averaged per slice by default: one pass keeps every network at or under 0.3 s per
# 512x512 slice on a 2-core CPU (benchmarks/infer_speed.md); more views (--ensemble 4) trade
# 3-4x the time for a little less noise.
DEFAULT_ENSEMBLE = 1


def load_network(name: str, device: str = "cpu", weights: str | None = None
                 ) -> HUPreservingDenoiser:
    """The trained network ``name`` on ``device``: ``weights``, else the version in use.

    Loaded once per process and weights file, so a newly fine-tuned version is picked up by
    the next call while the current one stays cached.
    """
    info = registry.get(name)
    if info.kind != "network":
        raise ValueError(f"{name} is a baseline, not a network")
    return _load_weights(name, device, str(Path(weights) if weights else info.weights))


@functools.lru_cache(maxsize=16)
def _load_weights(name: str, device: str, weights: str) -> HUPreservingDenoiser:
    info = registry.get(name)
    path = Path(weights)
    if not path.exists():
        raise FileNotFoundError(f"model {name!r} has no trained weights at {path}; train it "
                                f"with `ldct train {name} --data DIR` and copy model.pt there.")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    net = info.build(**blob["kwargs"])
    net.load_state_dict(blob["state_dict"])
    net.gain = float(blob.get("gain", 1.0))  # its calibration, when it has one
    return net.to(device).eval()


def context_stack(hu: np.ndarray, index: int, context: int) -> np.ndarray:
    """Slices index-c//2 .. index+c//2 of a volume; past an end, the slice mirrored about the
    centre is used (so the centre slice - and its noise - never appears twice, which a
    network trained on independent neighbours would take for anatomy); volumes too short for
    that repeat their edge slices."""
    half = context // 2
    picks = np.arange(index - half, index + half + 1)
    outside = (picks < 0) | (picks >= hu.shape[0])
    picks[outside] = 2 * index - picks[outside]
    return hu[np.clip(picks, 0, hu.shape[0] - 1)]


def _view(x: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    x = torch.rot90(x, turns, dims=(-2, -1))
    return x.flip(-1) if mirror else x


def _unview(y: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    y = y.flip(-1) if mirror else y
    return torch.rot90(y, -turns, dims=(-2, -1))


def self_ensemble(net: HUPreservingDenoiser, x: torch.Tensor, strength: float,
                  views: int, stop: StopCheck | None = None) -> torch.Tensor:
    """The mean of the network's outputs over ``views`` flipped/rotated copies of the batch,
    each turned back: the part of its error that is not tied to the anatomy's orientation
    (texture it invents, noise it takes for structure) averages out; HU and geometry are kept
    because every view is an exact pixel permutation. ``stop`` is asked before each view."""
    outputs = []
    for turns, mirror in DIHEDRAL_VIEWS[:views]:
        if stop is not None and stop():
            raise DenoiseCancelled("denoising was cancelled")
        outputs.append(_unview(net(_view(x, turns, mirror), strength), turns, mirror).float())
    return torch.stack(outputs).mean(0)


def _run_network(net: HUPreservingDenoiser, hu: np.ndarray, strength: float,
                 device: torch.device, batch_size: int, ensemble: int,
                 progress: bool, stop: StopCheck | None = None,
                 batch_done: BatchDone | None = None,
                 policy: Precision = INFERENCE) -> np.ndarray:
    """The network's result for every slice; ``policy``: how CUDA computes (benchmarks time
    the others)."""
    out = np.empty_like(hu, dtype=np.float32)
    starts = range(0, hu.shape[0], batch_size)
    with torch.inference_mode():
        for start in tqdm(starts, desc="denoise", unit="batch", disable=not progress):
            end = min(start + batch_size, hu.shape[0])
            stack = np.stack([context_stack(hu, k, net.context) for k in range(start, end)])
            x = to_device(stack.astype(np.float32), device)
            with precision(device, policy):
                y = self_ensemble(net, x, strength, ensemble, stop)
            out[start:end] = y[:, 0].cpu().numpy()
            if batch_done is not None:
                batch_done(end, hu.shape[0])
    return out


def denoise(volume: CTVolume, model: str, strength: float = 1.0, device: str = "auto",
            batch_size: int = 8, weights: str | Path | None = None,
            progress: bool = False, ensemble: int = DEFAULT_ENSEMBLE,
            stop: StopCheck | None = None, batch_done: BatchDone | None = None) -> CTVolume:
    """Denoise a CT volume with a registered model; HU and geometry of the input are kept.

    ``strength`` blends between the input (0) and the full result (1); a network averages
    ``ensemble`` (1-8) flipped/rotated views of each slice (baselines need none: they are
    symmetric already). ``stop`` is asked between network passes (a server's cancel: it then
    raises `DenoiseCancelled` within one pass); ``batch_done`` hears the slices done.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if ensemble not in range(1, len(DIHEDRAL_VIEWS) + 1):
        raise ValueError(f"ensemble must be a whole number of views from 1 (one pass, fastest) "
                         f"to {len(DIHEDRAL_VIEWS)}, got {ensemble!r}")
    info = registry.get(model)
    if strength == 0.0:
        return volume.with_hu(volume.hu.copy())
    if info.kind == "baseline":
        result = info.build(volume.hu, (volume.spacing[0], volume.spacing[1]))
    else:
        dev = pick_device(device)
        net = load_network(model, str(dev), str(weights) if weights else None)
        recursive = getattr(net, "recursive", 0.0)  # across slices, before the blend
        if not recursive:
            return volume.with_hu(_run_network(net, volume.hu, strength, dev, batch_size,
                                               ensemble, progress, stop, batch_done))
        result = _run_network(net, volume.hu, 1.0, dev, batch_size, ensemble, progress, stop,
                              batch_done)
        recursive_filter(result, recursive, out=result)
    return volume.with_hu(blend(volume.hu, result, strength, out=result))


def denoise_to_noise(volume: CTVolume, model: str, target_noise: float, **options
                     ) -> tuple[CTVolume, NoiseMatch]:
    """Denoise to a noise level instead of a strength: the full result once, then the blend
    with the input whose measured noise (HU, flat soft tissue) is ``target_noise``
    (`ldct.noise_level.match_noise`, with the model's calibration for the weights used).
    ``options`` are `denoise`'s. The returned match says the input's noise, the strength
    used (`denoise` at that strength gives the same result) and the result's noise."""
    full = denoise(volume, model, 1.0, **options)
    calibration = registry.get(model).noise_calibration(options.get("weights"))
    strength, match = match_noise(volume.hu, full.hu, target_noise, calibration=calibration)
    return volume.with_hu(blend(volume.hu, full.hu, strength, out=full.hu)), match
