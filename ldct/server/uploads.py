"""An upload is only its own bytes: its header is read here, small and bounded, before any
reader (ITK, SimpleITK, pydicom) opens the file.

ITK follows references out of a file: an NRRD ``data file:`` field, a MetaImage
``ElementDataFile``, a NIfTI ``.hdr``/``.img`` pair. An upload naming one would make the server
read (and send back as voxels) any file it can read, tell a missing file from a present one, or
block forever on a FIFO. So the format is decided by the content, every reference is refused
with a message that says what to send instead, and the declared size must be within the
server's limit and plausible for the bytes sent (`ldct.io.check_declared`). The file is then
renamed to the suffix of the format found, so no reader picks another format by its name.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from pathlib import Path

from pydicom.misc import is_dicom

from ldct.io import CTInputError, check_declared, inflate_deflated, is_deflated
from ldct.messages import clip

MAX_HEADER_BYTES = 64 << 10  # a NRRD or MetaImage header is a few hundred bytes
NIFTI_HEADER_BYTES = 544  # NIfTI-2's 540 bytes and the 4-byte extension flag

NRRD_TYPES = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
        "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
        "float"),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int",
        "int64", "int64_t", "ulonglong", "unsigned long long", "unsigned long long int",
        "uint64", "uint64_t", "double"),
}
NRRD_ENCODINGS = {"raw": "raw", "txt": "text", "text": "text", "ascii": "text", "hex": "hex",
                  "gz": "packed", "gzip": "packed", "bz2": "packed", "bzip2": "packed"}
META_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
              "MET_UINT": 4, "MET_LONG": 4, "MET_ULONG": 4, "MET_FLOAT": 4,
              "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_DOUBLE": 8}
NIFTI_BITS = {2: 8, 4: 16, 8: 32, 16: 32, 64: 64, 256: 8, 512: 16, 768: 32, 1024: 64,
              1280: 64}  # datatype code -> bits per voxel (scalar types only)
ONE_FILE = ("send the volume as one file that holds its voxels: .nrrd (not a detached .nhdr), "
            ".mha (ElementDataFile = LOCAL, not .mhd + .raw), .nii or .nii.gz (not a .hdr/.img "
            "pair), a DICOM file or a zipped DICOM series")


def check_upload(path: Path, shown: str) -> Path:
    """Check the uploaded file at ``path`` (``shown``: its name in messages) and return the
    file to read: renamed to its format's suffix, or inflated when it is a deflated DICOM file.

    Raises `CTInputError` saying what is wrong and what to send instead."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(MAX_HEADER_BYTES)
    if head.startswith(b"NRRD000"):
        _check_nrrd(head, size, shown)
        return path.rename(path.with_name("upload.nrrd"))
    if head.startswith(b"\x1f\x8b"):
        _check_nifti(_gunzip_head(head, shown), size, True, shown)
        return path.rename(path.with_name("upload.nii.gz"))
    if _nifti_magic(head):
        _check_nifti(head, size, False, shown)
        return path.rename(path.with_name("upload.nii"))
    if head.startswith(b"PK\x03\x04"):
        return path.rename(path.with_name("upload.zip"))  # ldct.io checks the archive
    if is_dicom(str(path)):
        dicom = path.rename(path.with_name("upload.dcm"))
        if is_deflated(dicom):
            return inflate_deflated(dicom, dicom.with_name("inflated.dcm"), shown)
        return dicom
    if re.match(rb"\s*[A-Za-z]\w*\s*=", head):
        _check_metaimage(head, size, shown)
        return path.rename(path.with_name("upload.mha"))
    if _analyze(head):
        raise CTInputError(f"{shown}: an ANALYZE or NIfTI header without its voxels; {ONE_FILE}.")
    return path.rename(path.with_name("upload"))  # no format ldct.io reads: it refuses it


# ----------------------------------------------------------------------------- NRRD


def _header_lines(head: bytes, size: int, shown: str, what: str) -> tuple[list[str], int]:
    """The header's lines up to the blank line that ends it, and the data's offset."""
    end = head.find(b"\n\n")
    end_crlf = head.find(b"\r\n\r\n")
    if end < 0 and end_crlf < 0:
        if size <= len(head):
            raise CTInputError(f"{shown}: a {what} header with no voxels after it (a detached "
                               f"header); {ONE_FILE}.")
        raise CTInputError(f"{shown}: the {what} header is longer than {MAX_HEADER_BYTES:,} "
                           "bytes or never ends; write the volume with a standard tool.")
    cut, offset = min(((e, e + n) for e, n in ((end, 2), (end_crlf, 4)) if e >= 0))
    text = head[:cut].decode("latin-1")
    return [line.strip() for line in text.splitlines()], offset


def _check_nrrd(head: bytes, size: int, shown: str) -> None:
    lines, offset = _header_lines(head, size, shown, "NRRD")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if not line or line.startswith("#") or ":=" in line.split(": ", 1)[0]:
            continue  # comments and key/value pairs
        key, separator, value = line.partition(":")
        if not separator:
            raise CTInputError(f"{shown}: NRRD header line {clip(line)!r} is not 'field: value'")
        fields[" ".join(key.lower().split())] = value.strip()
    if "data file" in fields or "datafile" in fields:
        raise CTInputError(f"{shown}: a NRRD header that names a separate data file (a detached "
                           f"header); the server reads no file but the upload: {ONE_FILE}.")
    dimension = _int(fields.get("dimension", ""), "NRRD dimension", shown)
    if dimension not in (2, 3):
        raise CTInputError(f"{shown}: a {dimension}D NRRD; expected a 3D CT volume.")
    sizes = [_int(s, "NRRD sizes", shown) for s in fields.get("sizes", "").split()]
    if len(sizes) != dimension:
        raise CTInputError(f"{shown}: NRRD sizes {clip(fields.get('sizes', ''))!r} do not give "
                           f"{dimension} numbers")
    kind = " ".join(fields.get("type", "").lower().split())
    width = next((w for w, names in NRRD_TYPES.items() if kind in names), 0)
    encoding = NRRD_ENCODINGS.get(fields.get("encoding", "").lower())
    if not width or encoding is None:
        raise CTInputError(f"{shown}: NRRD type {clip(kind)!r} / encoding "
                           f"{clip(fields.get('encoding', ''))!r} is not a scalar volume in "
                           "raw, gzip, bzip2, text or hex encoding")
    skip = _int(fields.get("byte skip", "0"), "NRRD byte skip", shown, low=-1)
    _int(fields.get("line skip", "0"), "NRRD line skip", shown, low=0)
    check_declared(sizes, width, max(size - offset - max(skip, 0), 0), encoding, shown)


# ----------------------------------------------------------------------------- MetaImage


def _check_metaimage(head: bytes, size: int, shown: str) -> None:
    """MetaIO reads ``Key = Value`` lines up to ElementDataFile, which must be LOCAL."""
    fields: dict[str, str] = {}
    offset = 0
    for raw in head.splitlines(keepends=True):
        offset += len(raw)
        key, separator, value = raw.decode("latin-1").partition("=")
        if not separator:
            raise CTInputError(f"{shown}: MetaImage header line {clip(raw.decode('latin-1'))!r}"
                               " is not 'Key = Value'")
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            break
    else:
        raise CTInputError(f"{shown}: a MetaImage header without ElementDataFile = LOCAL in its "
                           f"first {MAX_HEADER_BYTES:,} bytes; {ONE_FILE}.")
    if fields["elementdatafile"].upper() != "LOCAL":
        raise CTInputError(f"{shown}: a MetaImage header whose voxels are in another file "
                           "(ElementDataFile is not LOCAL); the server reads no file but the "
                           f"upload: {ONE_FILE}.")
    dimension = _int(fields.get("ndims", ""), "MetaImage NDims", shown)
    sizes = [_int(s, "MetaImage DimSize", shown) for s in fields.get("dimsize", "").split()]
    if dimension not in (2, 3) or len(sizes) != dimension:
        raise CTInputError(f"{shown}: a MetaImage of NDims {dimension} and DimSize "
                           f"{clip(fields.get('dimsize', ''))!r}; expected a 3D CT volume.")
    width = META_TYPES.get(fields.get("elementtype", "").upper(), 0)
    if not width or fields.get("elementnumberofchannels", "1") != "1":
        raise CTInputError(f"{shown}: MetaImage ElementType "
                           f"{clip(fields.get('elementtype', ''))!r} with "
                           f"{clip(fields.get('elementnumberofchannels', '1'))} channel(s); a "
                           "CT volume has one scalar (e.g. MET_SHORT, MET_FLOAT) per voxel.")
    packed = fields.get("compresseddata", "false").lower() == "true"
    text = fields.get("binarydata", "true").lower() == "false"
    skip = _int(fields.get("headersize", "0"), "MetaImage HeaderSize", shown, low=-1)
    check_declared(sizes, width, max(size - offset - max(skip, 0), 0),
                   "packed" if packed else "text" if text else "raw", shown)


# ----------------------------------------------------------------------------- NIfTI


def _nifti_magic(head: bytes) -> bytes:
    """The NIfTI magic (b'n+1', b'ni1', b'n+2', b'ni2') or b'' when it is not NIfTI."""
    if len(head) >= 348 and head[344:347] in (b"n+1", b"ni1"):
        return head[344:347]
    if len(head) >= 12 and head[4:7] in (b"n+2", b"ni2"):
        return head[4:7]
    return b""


def _analyze(head: bytes) -> bool:
    return len(head) >= 4 and 348 in struct.unpack("<i", head[:4]) + struct.unpack(">i", head[:4])


def _gunzip_head(head: bytes, shown: str) -> bytes:
    """The first bytes of a gzip file's content, without inflating the rest."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, NIFTI_HEADER_BYTES)
    except zlib.error as exc:
        raise CTInputError(f"{shown}: a damaged gzip file ({exc}).") from exc


def _check_nifti(head: bytes, size: int, packed: bool, shown: str) -> None:
    magic = _nifti_magic(head)
    if not magic:
        raise CTInputError(f"{shown}: a gzip file that is not a NIfTI volume; {ONE_FILE}.")
    if magic in (b"ni1", b"ni2"):
        raise CTInputError(f"{shown}: the header of a NIfTI .hdr/.img pair (its voxels are in "
                           f"another file); {ONE_FILE}.")
    two = magic == b"n+2"
    order = "<" if struct.unpack("<i", head[:4])[0] in (348, 540) else ">"
    if two:
        datatype, bits = struct.unpack(order + "hh", head[12:16])
        dims = struct.unpack(order + "8q", head[16:80])
        offset = struct.unpack(order + "q", head[168:176])[0]
    else:
        dims = struct.unpack(order + "8h", head[40:56])
        datatype, bits = struct.unpack(order + "hh", head[70:74])
        offset = struct.unpack(order + "f", head[108:112])[0]
    if not (math.isfinite(offset) and (544 if two else 352) <= offset
            and (packed or offset <= size)):
        raise CTInputError(f"{shown}: a NIfTI header whose voxels start at byte {offset} of a "
                           f"{size:,}-byte file; {ONE_FILE}.")
    offset = int(offset)
    count = dims[0]
    if not 2 <= count <= 7 or any(d != 1 for d in dims[4:count + 1]):
        raise CTInputError(f"{shown}: a NIfTI image of {count} dimensions "
                           f"{list(dims[1:count + 1]) if 0 < count < 8 else ''}; expected a 3D "
                           "CT volume.")
    if NIFTI_BITS.get(datatype) != bits:
        raise CTInputError(f"{shown}: NIfTI datatype {datatype} ({bits} bits) is not a scalar "
                           "volume (a CT volume has one number per voxel).")
    sizes = list(dims[1:min(count, 3) + 1])
    available = size if packed else size - offset
    check_declared(sizes, bits // 8, available, "packed" if packed else "raw", shown)


# ----------------------------------------------------------------------------- helpers


def _int(text: str, what: str, shown: str, low: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise CTInputError(f"{shown}: {what} {clip(text)!r} is not a whole number") from None
    if value < low:
        raise CTInputError(f"{shown}: {what} {value} is below {low}")
    return value

