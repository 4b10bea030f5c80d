"""Training and test data: the prepared dose series of the real volumes, and patch sampling.

``prepare`` turns the real volumes of ``../shared/data`` into a cached folder with, per case,
the normal-dose volume and simulated low-dose volumes, plus a ``manifest.json`` recording the
split (test = ircadb17, which has liver/tumour masks; train = the others), the simulation
settings, and the unpaired split (low-dose and normal-dose slices drawn from disjoint slabs).
"""

from __future__ import annotations

import itertools
import json
import logging
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ldct.io import CTVolume, read_mask, read_volume, write_volume
from ldct.metrics import body_mask, noise_sd
from ldct.noise_bank import OWN, ScanNoise, own_textured
from ldct.phantom import make_phantom
from ldct.simulate import LowDoseParams, retexture, simulate_low_dose

DEFAULT_DOSES = (0.5, 0.25, 0.10)
# what a scanner stores (12-bit range from -3024 HU): a sharp kernel's noise at a low dose
# reaches -10000 HU in air, which no scan holds
STORED_HU = (-3024.0, 3071.0)
logger = logging.getLogger(__name__)
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


def dose_key(dose: float, kernel: str | None = None) -> str:
    """File-name key of a dose and, when not the simulation's own, a reconstruction kernel:
    0.25 -> 'dose_0.25', (0.25, 'sharp-ee') -> 'dose_0.25_sharp-ee', 1 -> 'nd'."""
    if dose >= 1.0:
        return "nd"
    return f"dose_{dose:g}" + (f"_{kernel}" if kernel else "")


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
            progress: bool = True, catalogue: Sequence[Case] = CASES,
            kernels: Sequence[str] = ()) -> dict:
    """Build (or reuse) the prepared dataset and return its manifest.

    Each (case, dose) file is written once; a rerun with the same settings only re-reads the
    manifest. Changing the simulation settings rebuilds the affected files. ``catalogue``
    names the volumes (default: the shared data's cases; fine-tuning passes a site's scans).
    ``kernels`` adds, per dose, the low dose as other reconstruction kernels give it: the
    same projection noise with another kernel's texture and level (:func:`retexture`), or
    with the scan's own measured texture for ``OWN`` (:func:`ldct.noise_bank.own_textured`).
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
                "cases": old.get("cases", {}) if reuse else {},
                "kernels": [params.kernel] + sorted(
                    (set(kernels) | set(old.get("kernels", []) if reuse else []))
                    - {params.kernel})}
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
        simulated = None
        for dose, kernel in itertools.product(doses, manifest["kernels"][1:]):
            key = dose_key(dose, kernel)
            path = case_dir / f"{key}.nrrd"
            if reuse and key in entry["files"] and path.exists():
                continue
            if volume is None:
                volume = read_volume(nd_path)
            if simulated is None or simulated[0] != dose:  # each dose's file read once
                simulated = dose, read_volume(case_dir / f"{dose_key(dose)}.nrrd")
            normal = volume.hu
            added = simulated[1].hu - normal
            if kernel != OWN:
                added = retexture(added, kernel, params.kernel)
            else:
                try:
                    added = own_textured(added, normal, dose)
                except ValueError as error:  # a noiseless scan has no texture to copy
                    logger.warning("%s: %s; its dose %g keeps the simulator's texture",
                                   case.name, error, dose)
            write_volume(simulated[1].with_hu(np.clip(normal + added, *STORED_HU)), path)
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

    def kernels(self) -> list[str]:
        """The reconstruction kernels prepared, the simulation's own first."""
        return self.manifest.get("kernels") or [self.manifest["settings"]["params"]["kernel"]]

    def volume(self, case: str, dose: float = 1.0, kernel: str | None = None) -> CTVolume:
        """The normal-dose (dose 1) or simulated low-dose volume of a case, with the
        simulation's own kernel or another prepared ``kernel``."""
        files = self.manifest["cases"][case]["files"]
        key = dose_key(dose, None if kernel in (None, self.kernels()[0]) else kernel)
        if key not in files:
            raise KeyError(f"{case}: {key} not prepared (have {sorted(files)}); rerun "
                           f"`ldct prepare --doses ... --kernels ...` with it.")
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

    Each sample draws a case, a dose from ``doses`` and a reconstruction kernel from
    ``kernels`` (ranges, so one model serves them all; default: the simulation's kernel; a
    kernel listed twice is drawn twice as often), a
    slice and a location inside the body. ``paired`` gives the normal-dose patch at the same
    place; unpaired gives a normal-dose patch from the disjoint normal-dose slab set of any
    training case, plus ``nd_sim``: the simulated low dose of that normal-dose patch at the same
    dose and kernel (what a site can always make from its normal-dose scans with the physics
    simulator; no low-dose scan is paired with its normal dose). ``context`` adjacent slices are
    stacked as channels (centre in the middle). ``noise`` adds 'noise': fresh noise with the
    statistics of the low-dose scan the centre slice comes from, measured from that scan alone
    (:class:`ldct.noise_bank.ScanNoise`). Low doses are held as whole HU (int16), as scans are.
    ``thickness`` (slices, default 1): each sample draws one; t > 1 makes every slice of the
    sample the mean of t adjacent ones and its neighbours t slices apart - the same scan
    reconstructed t times thicker (noise SD about 1/sqrt(t), anatomy averaged along z), for the
    low dose, the normal dose and the noise alike.
    """

    def __init__(self, data: PreparedData, doses: Sequence[float], patch: int = 64,
                 batch: int = 16, context: int = 1, paired: bool = True, seed: int = 0,
                 cases: Sequence[str] | None = None, noise: bool = False,
                 kernels: Sequence[str] | None = None,
                 thickness: Sequence[int] = (1,)) -> None:
        if not thickness or any(int(t) != t or t < 1 for t in thickness):
            raise ValueError(f"thickness takes whole numbers of slices >= 1, got {thickness}")
        self.patch, self.batch, self.context, self.paired = patch, batch, context, paired
        self.thickness = [int(t) for t in thickness]
        self.rng = np.random.default_rng(seed)
        self.doses = list(doses)
        self.kernels = list(kernels or data.kernels()[:1])
        if isinstance(kernels, str) or not set(self.kernels) <= set(data.kernels()):
            raise ValueError(
                f"kernels takes a list of the prepared kernels {data.kernels()}, got "
                f"{kernels!r}: e.g. --set 'kernels=[\"hann\", \"hann\", \"ram-lak\"]' (JSON; a "
                "kernel listed twice is drawn twice as often), or prepare the data with "
                "`ldct prepare --kernels ...`")
        names = list(cases) if cases else data.cases("train")
        if not names:
            raise ValueError(f"{data.root}: no training cases prepared")
        self.normal = {c: data.volume(c).hu for c in names}
        self.low = {(c, d, k): np.rint(data.volume(c, d, k).hu).astype(np.int16)
                    for c in names for d in self.doses for k in self.kernels}
        self.split = {c: data.unpaired(c) for c in names}
        self.cases = names
        self.centres: dict[tuple[str, str], np.ndarray] = {}
        for case, volume in self.normal.items():
            everywhere = self._body_centres(volume)
            low, normal = self.split[case]
            self.centres[(case, "all")] = everywhere
            self.centres[(case, "low")] = everywhere[np.isin(everywhere[:, 0], low)]
            self.centres[(case, "normal")] = everywhere[np.isin(everywhere[:, 0], normal)]
        self.noise: dict[tuple[str, float, str], ScanNoise] = {}
        if noise:
            self.noise = {key: ScanNoise(volume) for key, volume in self.low.items()}

    def _body_centres(self, volume: np.ndarray) -> np.ndarray:
        """(slice, row, col) positions inside the body where a patch fits."""
        half, r = self.patch // 2, self.context // 2
        body = volume[:, half:volume.shape[1] - half:4, half:volume.shape[2] - half:4] > -300
        body[:r], body[volume.shape[0] - r:] = False, False
        idx = np.argwhere(body)
        idx[:, 1:] = idx[:, 1:] * 4 + half
        return idx

    def _crop(self, volume: np.ndarray, k: int, i: int, j: int,
              thickness: int = 1) -> np.ndarray:
        """The context stack around slice k, each slice ``thickness`` thin slices averaged
        (slices past the volume's ends repeat its first or last)."""
        r, h = self.context // 2, self.patch // 2
        if thickness == 1:
            return volume[k - r:k + r + 1, i - h:i + h, j - h:j + h]
        first = k - r * thickness - thickness // 2
        index = np.clip(first + np.arange(self.context * thickness), 0, len(volume) - 1)
        slab = volume[index, i - h:i + h, j - h:j + h].astype(np.float32)
        return slab.reshape(self.context, thickness, 2 * h, 2 * h).mean(1)

    def _position(self, case: str, subset: str) -> tuple[int, int, int]:
        """A random patch centre of ``case`` in the slice subset 'all', 'low' or 'normal'."""
        centres = self.centres[(case, subset)]
        return tuple(int(v) for v in centres[self.rng.integers(len(centres))])

    def _pick(self, items: list) -> object:
        return items[self.rng.integers(len(items))]

    def sample(self) -> dict[str, np.ndarray]:
        """A batch: 'ld' and 'nd' (B, context, P, P) HU float32 and 'dose' (B,); unpaired
        batches also hold 'nd_sim', and samplers with ``noise`` 'noise' (B, 1, P, P)."""
        low, normal, simulated, noises, doses = [], [], [], [], []
        for _ in range(self.batch):
            case, dose, kernel = self._pick(self.cases), self._pick(self.doses), \
                self._pick(self.kernels)
            # one thickness draw only when there is a choice: the default keeps earlier runs'
            # random streams
            t = self._pick(self.thickness) if len(self.thickness) > 1 else self.thickness[0]
            k, i, j = self._position(case, "all" if self.paired else "low")
            crops = [self._crop(self.low[(case, dose, kernel)], k, i, j, t)]
            if self.paired:
                crops.append(self._crop(self.normal[case], k, i, j, t))
            if self.noise:  # t independent draws averaged, as t thin slices' noise
                bank = self.noise[(case, dose, kernel)]
                crops.append(sum(bank.patch(k, i, j, self.patch, self.rng)
                                 for _ in range(t)) / t)
            crops = augment(crops, self.rng)
            low.append(crops[0])
            if self.noise:
                noises.append(crops[-1])
            if self.paired:
                normal.append(crops[1])
            else:
                other = self._pick(self.cases)
                k, i, j = self._position(other, "normal")
                nd, nd_sim = augment([self._crop(self.normal[other], k, i, j, t),
                                      self._crop(self.low[(other, dose, kernel)], k, i, j, t)],
                                     self.rng)
                normal.append(nd)
                simulated.append(nd_sim)
            doses.append(dose)
        batch = {"ld": np.stack(low).astype(np.float32),
                 "nd": np.stack(normal).astype(np.float32),
                 "dose": np.asarray(doses, dtype=np.float32)}
        if simulated:
            batch["nd_sim"] = np.stack(simulated).astype(np.float32)
        if noises:
            batch["noise"] = np.stack(noises).astype(np.float32)
        return batch
