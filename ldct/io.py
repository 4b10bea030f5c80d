"""CT volume input/output in Hounsfield units with exact geometry.

Every reader returns a :class:`CTVolume` (HU float32 array, shape (slices, rows, columns), plus
spacing/origin/direction in ITK's LPS convention) and every writer takes one, so the rest of
the project never sees file formats. Geometry is what makes a denoised volume overlay its
original: it is carried through unchanged and checked by the round-trip tests.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import gzip
import math
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.misc import is_dicom
from pydicom.uid import generate_uid

from ldct.derived import SOFTWARE, Derivation, match_sources, write_derived_series

ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
ITK_FORMATS = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
PICTURE_FORMATS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
# The largest volume one server decodes: 512x512 pixels x 1024 slices (chest to pelvis at
# 0.6 mm; a longer scan is split into slabs). Reading, denoising and writing peaked at about 35
# bytes per voxel in the server (benchmarks/upload_memory.md), so some 9.4 GB: what a 16 GB
# server holds, one volume at a time.
MAX_VOXELS = 512 * 512 * 1024
MAX_INPLANE = 4096  # pixels per row or column: CT slices have 512, at most 1024 or 2048
MAX_ZIP_MEMBERS = 20000  # files in a zipped series (a CT series has hundreds to a few thousand)
MAX_ZIP_RATIO = 100  # unpacked bytes per packed byte: DICOM packs 2-5x, a zip bomb 1000x
# Declared voxel bytes per stored byte of a compressed volume or deflated DICOM file: CT packs
# a few times with gzip (air has noise too); a bomb packs 1000x. Below UNCHECKED_BYTES (a
# 1024^2 x 8 int16 volume) any ratio goes: a constant test volume packs far more, costs little.
MAX_PACK_RATIO = 50
UNCHECKED_BYTES = 16 << 20
DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
MIN_INPLANE = 16

# DICOM tags of the patient, study, frame-of-reference and equipment modules that a derived
# series keeps from its source, so that a PACS files it next to the original.
KEPT_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientWeight",
    "PatientIdentityRemoved", "DeidentificationMethod",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
    "ReferringPhysicianName", "StudyDescription",
    "FrameOfReferenceUID", "PositionReferenceIndicator",
    "Manufacturer", "ManufacturerModelName", "InstitutionName", "StationName",
    "BodyPartExamined", "KVP", "ConvolutionKernel", "PatientPosition", "ContrastBolusAgent",
)


class CTInputError(ValueError):
    """The input cannot be used as a CT volume; the message says why and what to do."""


@dataclass
class CTVolume:
    """A CT volume in HU with its patient-space geometry (ITK/LPS conventions).

    ``hu`` has shape (slices, rows, columns); ``spacing`` and ``origin`` are (x, y, z) in mm;
    ``direction`` is a 3x3 matrix whose columns are the x, y, z axes in patient space.
    ``dicom`` keeps one source header (when read from DICOM) so derived series can keep
    patient/study tags; ``sources`` every slice's header (no pixels), so that each derived
    slice can point at its source instance.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    dicom: Dataset | None = None
    sources: tuple[Dataset, ...] = ()

    def with_hu(self, hu: np.ndarray) -> CTVolume:
        """The same geometry and header with new voxel values (e.g. a denoised result)."""
        if hu.shape != self.hu.shape:
            raise ValueError(f"shape {hu.shape} does not match the volume's {self.hu.shape}")
        return replace(self, hu=np.asarray(hu, dtype=np.float32))

    def same_geometry(self, other: CTVolume, atol: float = 0.0) -> bool:
        """True when both volumes cover the same voxels in patient space."""
        return (
            self.hu.shape == other.hu.shape
            and np.allclose(self.spacing, other.spacing, rtol=0, atol=atol)
            and np.allclose(self.origin, other.origin, rtol=0, atol=atol)
            and np.allclose(self.direction, other.direction, rtol=0, atol=atol)
        )


# ----------------------------------------------------------------------------- validation


def check_voxels(shape: Sequence[int], source: str, max_voxels: int = MAX_VOXELS) -> None:
    """Refuse a volume larger than the limit, or with a size below 1 (a header's signed size
    would otherwise make the product small); called on the header, before any pixel is read."""
    if any(int(n) < 1 for n in shape):
        raise CTInputError(f"{source}: a volume of {tuple(shape)} voxels; every size must be at "
                           "least 1.")
    count = math.prod(int(n) for n in shape)
    if count > max_voxels:
        raise CTInputError(f"{source}: {count:,} voxels ({tuple(shape)}) exceed the limit of "
                           f"{max_voxels:,}. Crop the volume or split it into slabs first.")


def check_declared(sizes: Sequence[int], width: int, available: int, encoding: str,
                   source: str) -> None:
    """Refuse, from a header alone, a volume over the limits or one its file cannot hold.

    ``sizes``: x, y(, z) as the header declares them; ``width``: bytes per voxel;
    ``available``: the bytes of data the file holds; ``encoding``: raw, hex, text or packed
    (gzip, bzip2, deflate: at most `MAX_PACK_RATIO` times the bytes sent)."""
    check_voxels(sizes, source)
    if max(sizes[:2]) > MAX_INPLANE:
        raise CTInputError(f"{source}: slices of {sizes[0]}x{sizes[1]} pixels; CT slices have at "
                           f"most {MAX_INPLANE} per row and column.")
    voxels = math.prod(int(n) for n in sizes)
    declared = voxels * width
    needed = {"raw": declared, "hex": 2 * declared, "text": voxels}.get(encoding, 0)
    if available < needed:
        raise CTInputError(f"{source}: the header declares {tuple(sizes)} voxels ({declared:,} "
                           f"bytes) but the file holds {available:,} bytes of data; send the "
                           "whole volume.")
    if encoding == "packed" and declared > max(UNCHECKED_BYTES, MAX_PACK_RATIO * available):
        raise CTInputError(f"{source}: {available:,} compressed bytes declare {declared:,} bytes "
                           f"of voxels ({declared // max(available, 1):,} times more; CT packs a "
                           "few times, a compression bomb 1000 times). Refused unread; send the "
                           "volume uncompressed or compressed by a standard tool.")


def validate_ct(hu: np.ndarray, source: str = "input", max_voxels: int = MAX_VOXELS) -> None:
    """Refuse arrays that cannot be a CT volume in HU, saying what is wrong and what to do."""
    if hu.ndim != 3:
        raise CTInputError(f"{source}: expected a 3D volume (slices, rows, columns), got shape "
                           f"{hu.shape}. Give a CT series, a volume file, or a single CT slice.")
    if min(hu.shape[1:]) < MIN_INPLANE:
        raise CTInputError(f"{source}: slices of {hu.shape[1]}x{hu.shape[2]} pixels are too small "
                           f"to be CT images (need at least {MIN_INPLANE}x{MIN_INPLANE}).")
    check_voxels(hu.shape, source, max_voxels)
    finite = np.isfinite(hu)
    if not finite.all():
        bad = int(hu.size - np.count_nonzero(finite))
        raise CTInputError(f"{source}: {bad} voxels are NaN or infinite. CT values must be finite "
                           "HU; fix or mask the source volume before denoising.")
    lo, hi = float(hu.min()), float(hu.max())
    if lo > -150.0:
        hint = (" It looks like raw stored values without the rescale intercept, or an image "
                "normalized to [0, 1]." if lo >= 0 else "")
        raise CTInputError(f"{source}: values span [{lo:.1f}, {hi:.1f}], which is not a CT volume "
                           f"in Hounsfield units (no air or fat below -150 HU).{hint} Give the CT "
                           "in HU (e.g. the DICOM series itself, which carries the rescale).")
    if lo < -10000 or hi > 40000:
        raise CTInputError(f"{source}: values span [{lo:.0f}, {hi:.0f}], far outside any CT range "
                           "in HU; check the rescale slope/intercept of the source.")


# ----------------------------------------------------------------------------- reading


def read_volume(path: str | Path, series_uid: str | None = None) -> CTVolume:
    """Read a DICOM series folder, a DICOM file, a zip of a DICOM series, NRRD or NIfTI into HU."""
    path = Path(path)
    if not path.exists():
        raise CTInputError(f"{path}: no such file or folder.")
    name = path.name.lower()
    if path.is_dir():
        return read_dicom_series(path, series_uid)
    if name.endswith(PICTURE_FORMATS):
        raise CTInputError(f"{path}: a 2D picture file is not a CT volume. Export the CT as DICOM, "
                           "NRRD or NIfTI (values in HU) instead.")
    if name.endswith(ITK_FORMATS):
        return _read_itk(path)
    if zipfile.is_zipfile(path):
        with tempfile.TemporaryDirectory(prefix="ldct-zip-") as tmp:
            with zipfile.ZipFile(path) as archive:
                _check_zip(archive, path)
                _safe_extract(archive, Path(tmp))
            return read_dicom_series(Path(tmp), series_uid)
    if is_dicom(str(path)):  # the DICM marker after the preamble, as pydicom reads files
        return read_dicom_series([path], series_uid)
    raise CTInputError(f"{path}: unrecognised file type. Supported: a DICOM series folder, a DICOM "
                       "file, a .zip of a DICOM series, .nrrd, .nii/.nii.gz, .mha.")


def _check_zip(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse, from the archive's directory and before extracting anything, a zip with too many
    members, more bytes than the largest volume allowed, or a zip-bomb expansion ratio."""
    members = archive.infolist()
    linked = [m.filename for m in members if (m.external_attr >> 16) & 0o170000 == 0o120000]
    if linked:
        raise CTInputError(f"{path}: the zip holds symbolic links ({', '.join(linked[:3])}); "
                           "zip the DICOM files themselves (e.g. `zip -r series.zip FOLDER`).")
    if len(members) > MAX_ZIP_MEMBERS:
        raise CTInputError(f"{path}: {len(members):,} files in the zip (at most "
                           f"{MAX_ZIP_MEMBERS:,}); send one series.")
    unpacked = sum(m.file_size for m in members)
    if unpacked > 2 * MAX_VOXELS + MAX_ZIP_MEMBERS * 65536:  # int16 pixels plus headers
        raise CTInputError(f"{path}: unpacks to {unpacked:,} bytes, more than any volume within "
                           f"the limit of {MAX_VOXELS:,} voxels.")
    packed = max(path.stat().st_size, 1)
    if unpacked > MAX_ZIP_RATIO * packed:
        raise CTInputError(f"{path}: would unpack {unpacked // packed:,} times its size (a zip "
                           f"bomb?); a DICOM series packs at most a few times. Refused unread.")


def _safe_extract(archive: zipfile.ZipFile, dest: Path) -> None:
    """Extract a zip refusing members that would land outside ``dest``."""
    root = dest.resolve()
    for member in archive.namelist():
        target = (dest / member).resolve()
        if root not in target.parents and target != root:
            raise CTInputError(f"zip member {member!r} points outside the archive; refusing it.")
    archive.extractall(dest)


def is_deflated(path: Path) -> bool:
    """True for a DICOM file in the deflated transfer syntax (its file meta says so; nothing
    after the meta is read)."""
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:  # noqa: BLE001 - not DICOM with a file meta: the readers decide
        return False
    return meta.get("TransferSyntaxUID") == DEFLATED


def inflate_deflated(path: Path, dest: Path, source: str) -> Path:
    """``path`` (deflated DICOM) rewritten to ``dest`` as explicit VR little endian, inflated
    chunk by chunk to disk and refused once it passes `MAX_PACK_RATIO` times its size (at
    least `UNCHECKED_BYTES`): pydicom itself would inflate it whole in memory, however large."""
    meta = pydicom.filereader.read_file_meta_info(path)
    with open(path, "rb") as packed:
        pydicom.filereader.read_preamble(packed, False)
        pydicom.filereader._read_file_meta_info(packed)
        start = packed.tell()
        limit = max(UNCHECKED_BYTES, MAX_PACK_RATIO * (path.stat().st_size - start))
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        inflater, written = zlib.decompressobj(-zlib.MAX_WBITS), 0
        with open(dest, "wb") as out:
            out.write(b"\0" * 128 + b"DICM")
            pydicom.filewriter.write_file_meta_info(pydicom.filebase.DicomFileLike(out), meta)
            pending = packed.read(1 << 16)
            while pending and not inflater.eof:
                data = inflater.decompress(pending, 1 << 20)  # at most 1 MiB at a time
                pending = inflater.unconsumed_tail or packed.read(1 << 16)
                written += len(data)
                if written > limit:
                    out.close()
                    dest.unlink()
                    raise CTInputError(f"{source}: a deflated DICOM file that inflates to more "
                                       f"than {limit:,} bytes from {path.stat().st_size:,} (a "
                                       "compression bomb?); refused unread. Send it in an "
                                       "uncompressed transfer syntax.")
                out.write(data)
    return dest


def _read_itk(path: Path) -> CTVolume:
    """NRRD, NIfTI, MHA: the header is checked (components, dimension, voxel count) before a
    single voxel is decoded, so a small file claiming a huge volume costs nothing."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        components, dimension = reader.GetNumberOfComponents(), reader.GetDimension()
        if components != 1:
            raise CTInputError(f"{path}: has {components} components per voxel (colour?); a CT "
                               "volume has one value per voxel.")
        if dimension not in (2, 3):
            raise CTInputError(f"{path}: a {dimension}D image; expected a 3D CT volume.")
        check_voxels(reader.GetSize(), str(path))
        image = reader.Execute()
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise CTInputError(f"{path}: cannot be read ({reason}).") from exc
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    validate_ct(hu, str(path))
    return CTVolume(hu=hu, spacing=tuple(image.GetSpacing()), origin=tuple(image.GetOrigin()),
                    direction=np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3))


def read_dicom_series(source: Path | Sequence[Path], series_uid: str | None = None) -> CTVolume:
    """Read the CT slices of one series (a folder searched recursively, or given files)."""
    files = sorted(p for p in Path(source).rglob("*") if p.is_file()) \
        if isinstance(source, Path) else list(source)
    with tempfile.TemporaryDirectory(prefix="ldct-inflated-") as scratch:
        return _read_series(files, source, series_uid, Path(scratch))


def _read_series(files: list[Path], source: Path | Sequence[Path], series_uid: str | None,
                 scratch: Path) -> CTVolume:
    """`read_dicom_series` of ``files``; deflated ones are inflated (bounded) into ``scratch``."""
    headers: dict[str, list[tuple[Path, Dataset]]] = {}
    for k, path in enumerate(files):
        try:
            if is_deflated(path):
                path = inflate_deflated(path, scratch / f"{k}.dcm", str(path.name))
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except CTInputError:
            raise
        except Exception:
            continue
        if "PixelData" not in ds and not hasattr(ds, "Rows"):
            continue
        headers.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((path, ds))
    where = source if isinstance(source, Path) else (files[0] if files else "input")
    if not headers:
        raise CTInputError(f"{where}: no DICOM images found.")
    if series_uid is not None:
        if series_uid not in headers:
            raise CTInputError(f"{where}: series {series_uid} not found; present: "
                               f"{sorted(headers)}")
        chosen = headers[series_uid]
    elif len(headers) > 1:
        listing = ", ".join(f"{uid} ({len(v)} images, {v[0][1].get('Modality', '?')})"
                            for uid, v in headers.items())
        raise CTInputError(f"{where}: holds {len(headers)} series: {listing}. Pick one "
                           "(series_uid / --series) or give a folder with one series.")
    else:
        chosen = next(iter(headers.values()))
    first = chosen[0][1]
    modality = first.get("Modality", "")
    if modality != "CT":
        raise CTInputError(f"{where}: modality is {modality or 'missing'}, not CT. These denoisers "
                           "are trained on CT in Hounsfield units only.")
    enhanced = first.get("SOPClassUID") == ENHANCED_CT_IMAGE_STORAGE
    if enhanced or int(first.get("NumberOfFrames", 1)) > 1:
        raise CTInputError(f"{where}: a multi-frame (enhanced) CT object; convert it to a classic "
                           "single-frame CT series first.")
    rows, columns = int(first.get("Rows", 0)), int(first.get("Columns", 0))
    check_voxels((len(chosen), rows, columns), str(where))
    if max(rows, columns) > MAX_INPLANE:
        raise CTInputError(f"{where}: slices of {rows}x{columns} pixels; CT slices have at most "
                           f"{MAX_INPLANE} per row and column.")
    return _stack_slices(chosen, str(where))


def _stack_slices(items: list[tuple[Path, Dataset]], where: str) -> CTVolume:
    first = items[0][1]
    iop = np.array(first.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), dtype=np.float64)
    other = [path.name for path, ds in items
             if not np.allclose(np.array(ds.get("ImageOrientationPatient", iop), np.float64),
                                iop, atol=1e-4)]
    if other:
        raise CTInputError(f"{where}: slices in more than one orientation: "
                           f"{', '.join(other[:5])}{' ...' if len(other) > 5 else ''} differ from "
                           f"{items[0][0].name} ({' '.join(f'{v:g}' for v in iop)}). Give one "
                           "series acquired in one orientation.")
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)

    def position(ds: Dataset) -> np.ndarray:
        return np.array(ds.get("ImagePositionPatient", [0, 0, 0]), dtype=np.float64)

    items = sorted(items, key=lambda item: float(position(item[1]) @ normal))
    distances = np.array([position(ds) @ normal for _, ds in items])
    if len(items) > 1:
        gaps = np.diff(distances)
        if np.any(gaps <= 1e-6):
            raise CTInputError(f"{where}: several slices share one position (duplicates or "
                               "several acquisitions mixed); give one series.")
        if np.ptp(gaps) > max(0.01 * gaps.mean(), 1e-3):
            raise CTInputError(f"{where}: slice spacing varies ({gaps.min():.3f} to "
                               f"{gaps.max():.3f} mm); resample to uniform spacing first.")
        dz = float(gaps.mean())
    else:
        dz = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)) or 1.0)
    rows, cols = int(first.Rows), int(first.Columns)
    hu = np.empty((len(items), rows, cols), dtype=np.float32)
    for k, (path, _) in enumerate(items):
        ds = pydicom.dcmread(path)
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise CTInputError(f"{path}: {ds.Rows}x{ds.Columns} pixels, unlike the series' "
                               f"{rows}x{cols}.")
        try:
            pixels = ds.pixel_array
        except Exception as exc:
            syntax = ds.file_meta.get("TransferSyntaxUID", "?")
            raise CTInputError(f"{path}: pixel data cannot be decoded (transfer syntax {syntax}: "
                               f"{exc}).") from exc
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        hu[k] = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    validate_ct(hu, where)
    spacing_rc = [float(v) for v in first.get("PixelSpacing", [1.0, 1.0])]
    direction = np.stack([row_dir, col_dir, normal], axis=1)
    return CTVolume(hu=hu, spacing=(spacing_rc[1], spacing_rc[0], dz),
                    origin=tuple(float(v) for v in position(items[0][1])),
                    direction=direction, dicom=first, sources=tuple(ds for _, ds in items))


def read_mask(path: str | Path, like: CTVolume | None = None) -> np.ndarray:
    """Read a label mask (NIfTI/NRRD) as a boolean array in the (slices, rows, columns) layout."""
    image = sitk.ReadImage(str(path))
    mask = sitk.GetArrayFromImage(image) > 0
    if like is not None and mask.shape != like.hu.shape:
        raise CTInputError(f"{path}: mask shape {mask.shape} differs from the volume's "
                           f"{like.hu.shape}.")
    return mask


# ----------------------------------------------------------------------------- writing


def write_volume(volume: CTVolume, path: str | Path, dtype: str = "float32",
                 compress: bool = True, **dicom_options) -> Path:
    """Write by extension: .nrrd/.nii/.nii.gz/.mha as HU (float32, or int16 rounded to whole
    HU; ``compress`` False writes the raw voxels, whose size depends only on the shape), a
    folder (no suffix) as a DICOM series (always int16 + rescale)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(ITK_FORMATS):
        path.parent.mkdir(parents=True, exist_ok=True)
        if dtype not in ("float32", "int16"):
            raise ValueError(f"dtype must be float32 or int16, got {dtype!r}")
        if name.endswith(".nrrd"):
            _write_nrrd(volume, path, dtype, compress)
            return path
        voxels = whole_hu(volume.hu) if dtype == "int16" else volume.hu
        sitk.WriteImage(to_sitk(volume, voxels), str(path), useCompression=compress)
        return path
    if path.suffix in ("", ".dcm", ".dicom"):
        write_dicom_series(volume, path, **dicom_options)
        return path
    raise CTInputError(f"{path}: unknown output format; use .nrrd, .nii.gz, .mha or a folder "
                       "name for a DICOM series.")


WRITE_SLAB = 16  # slices per step when a result is converted for writing


NRRD_TYPES = {"float32": ("float", "<f4"), "int16": ("short", "<i2")}


def _slabs(hu: np.ndarray) -> list[slice]:
    return [slice(start, start + WRITE_SLAB) for start in range(0, len(hu), WRITE_SLAB)]


def _whole(hu: np.ndarray) -> np.ndarray:
    rounded = np.rint(hu)  # the one float temporary, rounded and clipped in place
    np.clip(rounded, -32768, 32767, out=rounded)
    return rounded.astype(np.int16)


def whole_hu(hu: np.ndarray) -> np.ndarray:
    """``hu`` rounded to whole HU in int16 (clipped to its range), a slab at a time: the only
    volume-sized array is the int16 result."""
    out = np.empty(hu.shape, np.int16)
    for part in _slabs(hu):
        out[part] = _whole(hu[part])
    return out


def _write_nrrd(volume: CTVolume, path: Path, dtype: str, compress: bool) -> None:
    """A NRRD file (one file: header, then the voxels raw or gzipped) written a slab at a time,
    so that writing a result costs no copy of it (SimpleITK's writer takes a whole image)."""
    kind, stored = NRRD_TYPES[dtype]
    axes = np.asarray(volume.direction, float) * np.asarray(volume.spacing, float)  # columns

    def vector(values: Sequence[float]) -> str:
        return "(" + ",".join(repr(float(v)) for v in values) + ")"

    slices, rows, columns = volume.hu.shape
    header = (f"NRRD0004\ntype: {kind}\ndimension: 3\nspace: left-posterior-superior\n"
              f"sizes: {columns} {rows} {slices}\n"
              f"space directions: {' '.join(vector(axes[:, i]) for i in range(3))}\n"
              f"kinds: domain domain domain\nendian: little\n"
              f"encoding: {'gzip' if compress else 'raw'}\n"
              f"space origin: {vector(volume.origin)}\n\n")
    with open(path, "wb") as file:
        file.write(header.encode("ascii"))
        sink = gzip.GzipFile(fileobj=file, mode="wb", compresslevel=6) if compress else file
        with sink if compress else contextlib.nullcontext():
            for part in _slabs(volume.hu):
                voxels = _whole(volume.hu[part]) if dtype == "int16" else volume.hu[part]
                sink.write(memoryview(np.ascontiguousarray(voxels, stored)))  # no copy


def to_sitk(volume: CTVolume, voxels: np.ndarray | None = None) -> sitk.Image:
    """The volume (or ``voxels`` in its place, e.g. `whole_hu`'s) as a SimpleITK image with
    its geometry."""
    voxels = np.ascontiguousarray(volume.hu if voxels is None else voxels)
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing(tuple(float(s) for s in volume.spacing))
    image.SetOrigin(tuple(float(o) for o in volume.origin))
    image.SetDirection(tuple(float(d) for d in np.asarray(volume.direction).ravel()))
    return image


def _ds_number(value: float) -> str:
    """Format a number in at most 16 characters (DICOM DS), keeping as many digits as fit."""
    text = repr(float(value))
    if len(text) <= 16:
        return text
    for digits in range(15, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot format {value} as a DICOM decimal string")


def write_dicom_series(volume: CTVolume, folder: str | Path, description: str = "ldct derived",
                       derivation: str = "", series_number: int | None = None,
                       reference: Dataset | None = None,
                       made_by: Derivation | None = None) -> list[Path]:
    """Write ``volume`` as a derived CT series (`ldct.derived`: int16 rounded, DERIVED).

    Read from a DICOM series (and still slice for slice its geometry), each slice keeps its
    source slice's header and points at it (Source Image Sequence). Otherwise the header is
    made here: patient/study tags of ``reference`` (or ``volume.dicom``), else placeholders
    and a new study. ``made_by`` (e.g. :func:`ldct.derived.denoising`) says what made it;
    without it, ``description`` and ``derivation`` do.
    """
    made_by = made_by or Derivation(description, derivation or f"written by {SOFTWARE}")
    hu = volume.hu
    sources: list[Dataset] = []
    if reference is None and volume.sources:
        direction = np.asarray(volume.direction, dtype=np.float64)
        try:
            sources = match_sources(volume.sources, volume.origin,
                                    direction * np.asarray(volume.spacing), hu.shape[0])
        except ValueError:  # cropped or resampled since it was read: no slice-for-slice source
            sources = []
    referenced = bool(sources)
    if not referenced:
        sources = _slice_headers(volume, reference if reference is not None else volume.dicom)
    return write_derived_series(hu, sources, folder, made_by, series_number, referenced)


def _slice_headers(volume: CTVolume, source: Dataset | None) -> list[Dataset]:
    """A CT image header per slice for a volume without its own DICOM slices: ``source``'s
    patient, study and equipment tags (or placeholders and a new study), the volume's
    geometry, and every Type 1 and 2 attribute of the CT Image IOD."""
    now = datetime.datetime.now()
    base = Dataset()
    base.SpecificCharacterSet = "ISO_IR 100"
    base.Modality = "CT"
    if source is not None:
        for keyword in KEPT_TAGS:
            if keyword in source:
                setattr(base, keyword, source.data_element(keyword).value)
    for keyword, value in (
            ("PatientName", "Anonymous"), ("PatientID", "ldct-anonymous"),
            ("StudyInstanceUID", generate_uid()), ("StudyDate", now.strftime("%Y%m%d")),
            ("StudyTime", now.strftime("%H%M%S")), ("FrameOfReferenceUID", generate_uid()),
            ("PatientBirthDate", ""), ("PatientSex", ""), ("ReferringPhysicianName", ""),
            ("StudyID", ""), ("AccessionNumber", ""), ("Manufacturer", ""),
            ("PositionReferenceIndicator", ""), ("PatientPosition", ""), ("KVP", ""),
            ("AcquisitionNumber", ""), ("Laterality", ""),
            ("ImageType", ["ORIGINAL", "PRIMARY", "AXIAL"]),
            ("RescaleIntercept", "0"), ("RescaleSlope", "1"), ("RescaleType", "HU"),
            ("WindowCenter", "40"), ("WindowWidth", "400")):
        if keyword not in base:
            setattr(base, keyword, value)
    direction = np.asarray(volume.direction, dtype=np.float64)
    origin = np.asarray(volume.origin, dtype=np.float64)
    headers = []
    for k in range(volume.hu.shape[0]):
        ds = copy.deepcopy(base)
        position = origin + k * volume.spacing[2] * direction[:, 2]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds_number(v) for v in position]
        ds.ImageOrientationPatient = [_ds_number(v) for v in
                                      np.concatenate([direction[:, 0], direction[:, 1]])]
        ds.SliceLocation = _ds_number(float(position @ direction[:, 2]))
        ds.PixelSpacing = [_ds_number(volume.spacing[1]), _ds_number(volume.spacing[0])]
        ds.SliceThickness = _ds_number(volume.spacing[2])
        ds.SpacingBetweenSlices = _ds_number(volume.spacing[2])
        headers.append(ds)
    return headers
