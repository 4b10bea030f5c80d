"""Training and test data: the prepared dose series of the real volumes, and patch sampling.

``prepare`` turns the real volumes of ``../shared/data`` into a cached folder with, per case,
the normal-dose volume and simulated low-dose volumes, plus a ``manifest.json`` recording the
split (test = ircadb17, which has liver/tumour masks; train = the others), the simulation
settings, and the unpaired split (low-dose and normal-dose slices drawn from disjoint slabs).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ldct.io import CTVolume, read_mask, read_volume, write_volume
from ldct.metrics import body_mask, noise_sd
from ldct.phantom import make_phantom
from ldct.simulate import LowDoseParams, retexture, simulate_low_dose

if TYPE_CHECKING:
    from ldct.noise_bank import NoiseImages

DEFAULT_DOSES = (0.5, 0.25, 0.10)
UNPAIRED_SLAB = 8  # slices per slab when alternating low-dose and normal-dose slabs


@dataclass(frozen=True)
class Case:
    """A real volume in the shared data folder and its role in the split."""

    name: str
    image: str  # relative to the data folder
    role: str  # "train" or "test"
    masks: tuple[str, ...] = ()  # relative paths of NIfTI masks (test case)


CASES = (
    Case("ircadb17", "ct/ircadb17/dicom", "test",
         ("ct/ircadb17/masks/liver.nii.gz", "ct/ircadb17/masks/livertumor1.nii.gz",
          "ct/ircadb17/masks/livertumor2.nii.gz", "ct/ircadb17/masks/portalvein.nii.gz")),
    Case("ircadb01", "ct/ircadb01/image.nii.gz", "train"),
    Case("tcia_pancreas001", "ct/tcia_pancreas001/dicom", "train"),
)


def dose_key(dose: float) -> str:
    """File-name key of a dose, e.g. 0.25 -> 'dose_0.25', 1 -> 'nd'."""
    return "nd" if dose >= 1.0 else f"dose_{dose:g}"


def _mask_name(relative: str) -> str:
    return Path(relative).name.split(".")[0]


def unpaired_split(slices: int, slab: int = UNPAIRED_SLAB) -> tuple[list[int], list[int]]:
    """Disjoint slice sets for unpaired training: alternating slabs, low dose first.

    Slabs shrink for short volumes so that both sets hold at least two slabs.
    """
    slab = max(1, min(slab, slices // 4))
    low = [k for k in range(slices) if (k // slab) % 2 == 0]
    normal = [k for k in range(slices) if (k // slab) % 2 == 1]
    return low, normal


def crop_slices(volume: CTVolume, max_slices: int | None) -> tuple[CTVolume, slice]:
    """The central ``max_slices`` slices (all when None), for quick runs and tests."""
    n = volume.hu.shape[0]
    if max_slices is None or max_slices >= n:
        return volume, slice(0, n)
    start = (n - max_slices) // 2
    window = slice(start, start + max_slices)
    direction = np.asarray(volume.direction)
    origin = np.asarray(volume.origin) + start * volume.spacing[2] * direction[:, 2]
    cropped = CTVolume(hu=volume.hu[window].copy(), spacing=volume.spacing,
                       origin=tuple(origin), direction=direction, dicom=volume.dicom)
    return cropped, window


def demo_case(data_dir: Path | None, slices: int) -> tuple[str, CTVolume, np.ndarray]:
    """What the demos show: a central slab of the test case with its liver mask when the data
    is there, else the phantom at clinical pixel size. Returns (name, volume, liver mask)."""
    case = CASES[0]
    if data_dir is not None and (data_dir / case.image).exists():
        volume, window = crop_slices(read_volume(data_dir / case.image), slices)
        liver = read_mask(data_dir / case.masks[0])[window]
        return f"{case.name}_slab", volume, liver
    phantom = make_phantom(size=480, slices=slices, pixel_mm=0.78)
    return "phantom", phantom.volume, phantom.masks["liver"]


def prepare(data_dir: str | Path, out_dir: str | Path, doses: Sequence[float] = DEFAULT_DOSES,
            params: LowDoseParams = LowDoseParams(), seed: int = 0,
            max_slices: int | None = None, cases: Iterable[str] | None = None,
            progress: bool = True, catalogue: Sequence[Case] = CASES) -> dict:
    """Build (or reuse) the prepared dataset and return its manifest.

    Each (case, dose) file is written once; a rerun with the same settings only re-reads the
    manifest. Changing the simulation settings rebuilds the affected files. ``catalogue``
    names the volumes (default: the shared data's cases; fine-tuning passes a site's scans).
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    chosen = [c for c in catalogue if cases is None or c.name in set(cases)]
    missing = [c.name for c in chosen if not (data_dir / c.image).exists()]
    if missing:
        raise FileNotFoundError(f"{data_dir}: missing {', '.join(missing)}; expected the layout "
                                "of ../shared/data (see its README).")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    settings = {"params": {k: v for k, v in asdict(params).items() if k != "dose"},
                "seed": seed, "max_slices": max_slices}
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    reuse = old.get("settings") == settings
    manifest = {"settings": settings, "doses": sorted(set(doses) | set(old.get("doses", [])
                                                                        if reuse else []),
                                                      reverse=True),
                "cases": old.get("cases", {}) if reuse else {}}
    for case in chosen:
        entry = manifest["cases"].get(case.name, {"files": {}})
        case_dir = out_dir / case.name
        nd_path = case_dir / "nd.nrrd"
        volume = None
        if not (reuse and nd_path.exists()):
            volume, window = crop_slices(read_volume(data_dir / case.image), max_slices)
            write_volume(volume, nd_path)
            masks = {}
            for relative in case.masks:
                mask = read_mask(data_dir / relative)[window]
                mask_path = case_dir / "masks" / f"{_mask_name(relative)}.nrrd"
                write_volume(volume.with_hu(mask.astype(np.float32)), mask_path)
                masks[_mask_name(relative)] = str(mask_path.relative_to(out_dir))
            low, normal = unpaired_split(volume.hu.shape[0])
            entry = {"role": case.role, "source": case.image, "slices": volume.hu.shape[0],
                     "spacing": list(volume.spacing), "masks": masks,
                     "files": {"nd": str(nd_path.relative_to(out_dir))},
                     "unpaired": {"low_dose_slices": low, "normal_dose_slices": normal}}
        for dose in doses:
            key = dose_key(dose)
            path = case_dir / f"{key}.nrrd"
            if reuse and key in entry["files"] and path.exists():
                continue
            if volume is None:
                volume = read_volume(nd_path)
            case_seed = seed + zlib.crc32(f"{case.name}:{dose:g}".encode())
            low_dose = simulate_low_dose(volume, LowDoseParams(**{**asdict(params), "dose": dose}),
                                         seed=case_seed, progress=progress)
            write_volume(low_dose, path)
            entry["files"][key] = str(path.relative_to(out_dir))
        manifest["cases"][case.name] = entry
        manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


class PreparedData:
    """Read access to a prepared folder: volumes by case and dose, masks, the split."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.exists():
            raise FileNotFoundError(f"{self.root}: no manifest.json; run `ldct prepare --out "
                                    f"{self.root}` first.")
        self.manifest = json.loads(path.read_text())

    def cases(self, role: str | None = None) -> list[str]:
        """Case names, optionally only those of one role ('train' or 'test')."""
        return [n for n, e in self.manifest["cases"].items() if role in (None, e["role"])]

    def volume(self, case: str, dose: float = 1.0) -> CTVolume:
        """The normal-dose (dose 1) or simulated low-dose volume of a case."""
        files = self.manifest["cases"][case]["files"]
        key = dose_key(dose)
        if key not in files:
            raise KeyError(f"{case}: dose {dose:g} not prepared (have {sorted(files)}); rerun "
                           f"`ldct prepare --doses ...` with it.")
        return read_volume(self.root / files[key])

    def simulation(self, dose: float, kernel: str | None = None) -> LowDoseParams:
        """The low-dose physics this folder was prepared with, at ``dose`` (and optionally
        another reconstruction ``kernel``): what simulates more draws like its own."""
        prepared = self.manifest["settings"]["params"]
        return LowDoseParams(**{**prepared, "dose": dose, "kernel": kernel or prepared["kernel"]})

    def masks(self, case: str) -> dict[str, np.ndarray]:
        """The case's label masks as booleans (empty for cases without masks)."""
        return {name: read_mask(self.root / rel)
                for name, rel in self.manifest["cases"][case]["masks"].items()}

    def unpaired(self, case: str) -> tuple[list[int], list[int]]:
        """Slice indices for unpaired training: (low-dose slices, normal-dose slices)."""
        split = self.manifest["cases"][case]["unpaired"]
        return split["low_dose_slices"], split["normal_dose_slices"]


def summarize(data: PreparedData) -> list[dict]:
    """Per case and dose: slices, HU range and noise SD (low dose - normal dose).

    The noise SD is measured in the liver mask when the case has one, else in soft tissue
    (normal-dose 0..100 HU inside the body).
    """
    rows = []
    for case in data.cases():
        nd = data.volume(case)
        masks = data.masks(case)
        region = masks.get("liver")
        region_name = "liver"
        if region is None:
            region = (nd.hu > 0) & (nd.hu < 100) & body_mask(nd.hu)
            region_name = "soft tissue"
        for dose in [1.0] + list(data.manifest["doses"]):
            try:
                vol = nd if dose >= 1.0 else data.volume(case, dose)
            except KeyError:
                continue
            rows.append({"case": case, "role": data.manifest["cases"][case]["role"],
                         "dose": dose, "slices": vol.hu.shape[0],
                         "hu_min": float(vol.hu.min()), "hu_max": float(vol.hu.max()),
                         "region": region_name,
                         "sd_region": noise_sd(vol.hu, region),
                         "added_noise_sd": noise_sd(vol.hu, region, nd.hu)})
    return rows


def augment(patches: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flip / 90-degree rotation for every array (HU values untouched)."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for p in patches:
        p = np.rot90(p, k, axes=(-2, -1))
        out.append(np.ascontiguousarray(p[..., ::-1] if flip else p))
    return out


class PatchSampler:
    """Random training patches from the prepared training cases, held in memory.

    Each sample draws a case, a dose from ``doses`` (a range, so one model serves them all),
    a slice and a location inside the body. ``paired`` gives the normal-dose patch at the same
    place; unpaired gives a normal-dose patch from the disjoint normal-dose slab set of any
    training case, plus ``nd_sim``: the simulated low dose of that normal-dose patch (what a
    site can always make from its normal-dose scans with the physics simulator; no low-dose
    scan is paired with its normal dose). ``context`` adjacent slices are stacked as channels
    (centre in the middle). ``noise`` adds 'noise': an independent noise image with the
    low-dose centre slice's statistics at the same place (see :mod:`ldct.noise_bank`).
    ``texture`` is the share of low-dose patches whose simulated noise gets a random sharper
    kernel's texture (:func:`ldct.simulate.retexture`): real scans come from many kernels.
    The noise image's added part gets the same texture, so it keeps the low dose's statistics.
    """

    def __init__(self, data: PreparedData, doses: Sequence[float], patch: int = 64,
                 batch: int = 16, context: int = 1, paired: bool = True, seed: int = 0,
                 cases: Sequence[str] | None = None, noise: bool = False,
                 texture: float = 0.0) -> None:
        self.patch, self.batch, self.context, self.paired = patch, batch, context, paired
        self.texture = texture
        self.rng = np.random.default_rng(seed)
        self.doses = list(doses)
        names = list(cases) if cases else data.cases("train")
        if not names:
            raise ValueError(f"{data.root}: no training cases prepared")
        self.normal = {c: data.volume(c).hu for c in names}
        self.low = {(c, d): data.volume(c, d).hu for c in names for d in self.doses}
        self.split = {c: data.unpaired(c) for c in names}
        self.cases = names
        self.centres: dict[tuple[str, str], np.ndarray] = {}
        for case, volume in self.normal.items():
            everywhere = self._body_centres(volume)
            low, normal = self.split[case]
            self.centres[(case, "all")] = everywhere
            self.centres[(case, "low")] = everywhere[np.isin(everywhere[:, 0], low)]
            self.centres[(case, "normal")] = everywhere[np.isin(everywhere[:, 0], normal)]
        self.noise: dict[tuple[str, float], NoiseImages] = {}
        if noise:
            from ldct.noise_bank import noise_images  # it builds on this module

            for case in names:
                used = np.unique(self.centres[(case, "all" if paired else "low")][:, 0])
                for dose in self.doses:
                    self.noise[(case, dose)] = noise_images(data, case, dose, used.tolist())

    def _body_centres(self, volume: np.ndarray) -> np.ndarray:
        """(slice, row, col) positions inside the body where a patch fits."""
        half, r = self.patch // 2, self.context // 2
        body = volume[:, half:volume.shape[1] - half:4, half:volume.shape[2] - half:4] > -300
        body[:r], body[volume.shape[0] - r:] = False, False
        idx = np.argwhere(body)
        idx[:, 1:] = idx[:, 1:] * 4 + half
        return idx

    def _crop(self, volume: np.ndarray, k: int, i: int, j: int) -> np.ndarray:
        r, h = self.context // 2, self.patch // 2
        return volume[k - r:k + r + 1, i - h:i + h, j - h:j + h]

    def _position(self, case: str, subset: str) -> tuple[int, int, int]:
        """A random patch centre of ``case`` in the slice subset 'all', 'low' or 'normal'."""
        centres = self.centres[(case, subset)]
        return tuple(int(v) for v in centres[self.rng.integers(len(centres))])

    def _crops(self, case: str, dose: float, subset: str, normal: bool) -> list[np.ndarray]:
        """Unaugmented crops at a random place: low dose, then the normal dose if ``normal``,
        then the noise image's added and scan parts if the sampler has them."""
        k, i, j = self._position(case, subset)
        crops = [self._crop(self.low[(case, dose)], k, i, j)]
        if normal:
            crops.append(self._crop(self.normal[case], k, i, j))
        if self.noise:
            h = self.patch // 2
            crops.extend(part[k:k + 1, i - h:i + h, j - h:j + h]
                         for part in self.noise[(case, dose)])
        return crops

    def _textured(self, low: np.ndarray, normal: np.ndarray,
                  added: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``low`` itself, or (with probability ``texture``) with its simulated noise
        (low - normal) given the texture of a random sharper kernel at 0.75-1.5 times its SD;
        ``added`` (a noise image's added part) gets the very same filter and scale."""
        if not (self.texture and self.rng.random() < self.texture):
            return low, added
        noise = low - normal
        sharpness = self.rng.uniform(0.0, 1.0)
        sharper = retexture(noise, sharpness)
        scale = self.rng.uniform(0.75, 1.5) * noise.std() / max(float(sharper.std()), 1e-6)
        return (normal + sharper * scale,
                None if added is None else retexture(added, sharpness) * scale)

    def _low_and_noise(self, crops: list[np.ndarray]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(low dose, its normal dose, the noise image or None), augmented and textured alike."""
        ld, nd, *parts = augment(crops, self.rng)
        added, scan = parts or (None, None)
        ld, added = self._textured(ld, nd, added)
        return ld, nd, None if added is None else added + scan

    def sample(self) -> dict[str, np.ndarray]:
        """A batch: 'ld' and 'nd' (B, context, P, P) HU float32 and 'dose' (B,); unpaired
        batches also hold 'nd_sim', and samplers with ``noise`` 'noise' (B, 1, P, P)."""
        low, normal, simulated, noises, doses = [], [], [], [], []
        for _ in range(self.batch):
            case = self.cases[self.rng.integers(len(self.cases))]
            dose = self.doses[self.rng.integers(len(self.doses))]
            if self.paired:
                ld, nd, noise = self._low_and_noise(self._crops(case, dose, "all", True))
            else:
                # the low dose's own normal dose only serves to retexture its noise
                ld, _, noise = self._low_and_noise(self._crops(case, dose, "low", True))
                other = self.cases[self.rng.integers(len(self.cases))]
                k, i, j = self._position(other, "normal")
                nd, nd_sim = augment([self._crop(self.normal[other], k, i, j),
                                      self._crop(self.low[(other, dose)], k, i, j)], self.rng)
                simulated.append(self._textured(nd_sim, nd)[0])
            low.append(ld)
            normal.append(nd)
            if noise is not None:
                noises.append(noise)
            doses.append(dose)
        batch = {"ld": np.stack(low).astype(np.float32),
                 "nd": np.stack(normal).astype(np.float32),
                 "dose": np.asarray(doses, dtype=np.float32)}
        if simulated:
            batch["nd_sim"] = np.stack(simulated).astype(np.float32)
        if noises:
            batch["noise"] = np.stack(noises).astype(np.float32)
        return batch
