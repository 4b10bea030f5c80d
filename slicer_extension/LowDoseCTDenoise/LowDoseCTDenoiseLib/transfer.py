"""The upload file: a gzip NRRD written slice by slice (standard library only).

Each slice is compressed straight from the volume's own voxels, so an int16 CT of 315 MB is
sent without any full-size copy and at about a third of its size. The server (SimpleITK) reads
it like any NRRD; the self-test's fake server reads it with :func:`read_nrrd`.
"""

from __future__ import annotations

import gzip
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

# numpy's integer dtype names are NRRD's type names; NRRD calls float32/float64 float/double
NRRD_TYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
              "float", "double")
GZIP_LEVEL = 1  # higher levels take several times as long for a few per cent smaller files
ITK_TYPES = {"short": "int16", "unsigned short": "uint16", "float": "float"}  # SimpleITK's names
CHUNK = 1 << 20  # bytes read from the result file at a time
Vector = tuple[float, float, float]


@dataclass(frozen=True)
class NrrdHeader:
    """What the server needs besides the voxels: type, size and geometry in LPS (as ITK)."""

    type: str
    sizes: tuple[int, int, int]  # columns, rows, slices: the fastest axis first
    directions: tuple[Vector, Vector, Vector]  # mm per voxel step along each axis (LPS)
    origin: Vector  # the first voxel's centre (LPS, mm)
    endian: str = sys.byteorder

    def encode(self) -> bytes:
        """The header as NRRD text; ``repr`` floats read back bit for bit."""
        if self.type not in NRRD_TYPES:
            raise ValueError(f"NRRD cannot hold voxels of type {self.type!r}")

        def vector(v: Iterable[float]) -> str:
            return "(" + ",".join(repr(float(x)) for x in v) + ")"

        lines = ["NRRD0004", f"type: {self.type}", "dimension: 3",
                 "space: left-posterior-superior", "sizes: " + " ".join(map(str, self.sizes)),
                 "space directions: " + " ".join(vector(d) for d in self.directions),
                 "kinds: domain domain domain", "encoding: gzip",
                 f"space origin: {vector(self.origin)}"]
        if not self.type.endswith("int8"):  # NRRD wants the byte order of multi-byte types
            lines.insert(-2, f"endian: {self.endian}")
        return ("\n".join(lines) + "\n\n").encode("ascii")

    @classmethod
    def decode(cls, text: str) -> NrrdHeader:
        """The fields :meth:`encode` writes (only gzip NRRDs in LPS: this module's own)."""
        fields = dict(line.split(": ", 1) for line in text.splitlines()[1:]
                      if ": " in line and not line.startswith("#"))
        if fields.get("encoding") != "gzip" or fields.get("space") != "left-posterior-superior":
            raise ValueError("not a gzip NRRD in LPS space")

        def vectors(value: str) -> list[Vector]:
            return [tuple(float(x) for x in v.strip(" ()").split(","))
                    for v in value.split(") (")]

        sizes = tuple(int(n) for n in fields["sizes"].split())
        return cls(ITK_TYPES.get(fields["type"], fields["type"]), sizes,
                   tuple(vectors(fields["space directions"])),
                   vectors(fields["space origin"])[0], fields.get("endian", sys.byteorder))


def write_nrrd(path: str | Path, header: NrrdHeader, slices: Iterable[Any],
               on_slice: Optional[Callable[[float], None]] = None) -> Path:
    """``header``, then the ``slices`` (buffers: numpy slices, bytes) gzip-compressed one at a
    time, to ``path``: complete or absent, never partial. ``on_slice(fraction done)`` may raise
    to stop (a cancelled request)."""
    path = Path(path)
    partial = path.with_name(path.name + ".part")
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # a gzip stream
    try:
        with open(partial, "wb") as sink:
            sink.write(header.encode())
            for k, voxels in enumerate(slices, start=1):
                sink.write(packer.compress(voxels))
                if on_slice is not None:
                    on_slice(k / header.sizes[2])
            sink.write(packer.flush())
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return path


def read_nrrd(path: str | Path) -> tuple[NrrdHeader, bytes]:
    """A file :func:`write_nrrd` wrote: its header and its raw voxels."""
    head, _, packed = Path(path).read_bytes().partition(b"\n\n")
    return NrrdHeader.decode(head.decode("ascii")), gzip.decompress(packed)


def read_nrrd_into(path: str | Path, allocate: Callable[[NrrdHeader], memoryview]
                   ) -> NrrdHeader:
    """A gzip NRRD (this module's, or SimpleITK's as the server writes it): its header, and its
    voxels decompressed straight into the buffer ``allocate(header)`` returns (e.g. a new
    image's own array; it may raise to refuse the header): no copy of the whole file or of
    the voxels is made."""
    with open(path, "rb") as source:
        head = b""
        while b"\n\n" not in head:
            chunk = source.read(4096)
            if not chunk or len(head) > 65536:
                raise ValueError(f"{path}: no NRRD header")
            head += chunk
        head, _, rest = head.partition(b"\n\n")
        header = NrrdHeader.decode(head.decode("ascii"))
        target = allocate(header)
        unpacker = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out, filled = target.cast("B"), 0
        while rest:
            data = unpacker.decompress(rest, len(out) - filled + 1)
            if filled + len(data) > len(out):
                raise ValueError(f"{path}: more voxels than its header says")
            out[filled:filled + len(data)] = data
            filled += len(data)
            rest = unpacker.unconsumed_tail or source.read(CHUNK)
        if filled != len(out):
            raise ValueError(f"{path}: {filled} bytes of voxels, {len(out)} expected")
    return header
