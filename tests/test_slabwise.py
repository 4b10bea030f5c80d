"""Large volumes are processed slab by slab: the blend, the recursive filter, the int16
result, `denoise` and the NRRD writer allocate, besides the input and the result, arrays
bounded by a slab of slices, not by the volume (issue 32). Checked by structure - what numpy
allocates during one call, traced by tracemalloc (deterministic byte counts, not RSS or
time); the memory of whole runs is measured in benchmarks/slab_memory.py."""

from __future__ import annotations

import tracemalloc

import numpy as np
import SimpleITK as sitk

from ldct import recursive_filter as rf
from ldct.infer import denoise
from ldct.io import CTVolume, whole_hu, write_volume
from ldct.noise_level import blend


def _peak(call):
    """(call's result, the most bytes numpy and Python held at once during it, beyond what
    was held before)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        return result, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_blend_in_place_holds_no_volume_sized_temporary():
    low = np.zeros((256, 16, 16), np.float32)
    full = np.full_like(low, 10.0)
    out, peak = _peak(lambda: blend(low, full, 0.3, out=full))
    assert out is full
    np.testing.assert_allclose(out, 3.0, rtol=1e-6)  # 0 + 0.3 * (10 - 0), by hand
    assert peak < low.nbytes / 4, f"{peak:,} bytes beyond the volumes ({low.nbytes:,} each)"


def test_the_recursive_filter_works_in_the_volume_it_is_given():
    rng = np.random.default_rng(4)
    noisy = (np.linspace(-100, 100, 24)[None, None] + rng.normal(0, 20, (256, 24, 24))
             ).astype(np.float32)
    apart = rf.recursive_filter(noisy.copy(), 0.5)
    inside = noisy.copy()
    out, peak = _peak(lambda: rf.recursive_filter(inside, 0.5, out=inside))
    assert out is inside
    np.testing.assert_array_equal(out, apart)  # in place or not: the same numbers
    assert peak < noisy.nbytes / 4, f"{peak:,} bytes beyond the volume ({noisy.nbytes:,})"


def test_whole_hu_rounds_and_clips_without_float_copies_of_the_volume():
    hu = np.zeros((256, 16, 16), np.float32)
    hu[0, 0, :6] = [-40000, -0.5, 0.5, 1.5, 2.4, 40000]
    voxels, peak = _peak(lambda: whole_hu(hu))
    assert voxels.dtype == np.int16
    assert voxels[0, 0, :6].tolist() == [-32768, 0, 0, 2, 2, 32767]  # round half to even
    assert peak < voxels.nbytes + hu.nbytes / 4, f"{peak:,} bytes ({voxels.nbytes:,} written)"


def test_denoise_holds_the_result_and_a_slab_at_a_time():
    hu = np.random.default_rng(5).normal(40, 20, (256, 32, 32)).astype(np.float32)
    volume = CTVolume(hu, (0.7, 0.7, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    denoise(CTVolume(hu[:2], volume.spacing), "ldct-gauss", strength=0.5)  # imports done
    result, peak = _peak(lambda: denoise(volume, "ldct-gauss", strength=0.5))
    assert result.hu.shape == hu.shape and result.hu.std() < hu.std()
    assert peak < 1.25 * hu.nbytes, f"{peak:,} bytes for a {hu.nbytes:,}-byte result"


def test_a_nrrd_result_is_written_a_slab_at_a_time_and_reads_back_exactly(tmp_path):
    """What writing holds does not grow from 64 to 256 slices (zlib's state and a slab's
    bytes are the same for both); ITK's reader is the answer key for what was written."""
    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    hu = np.random.default_rng(6).normal(0, 300, (256, 64, 64)).astype(np.float32)
    for dtype, compress in (("float32", True), ("int16", False)):
        peaks = {}
        for slices in (64, 256):
            volume = CTVolume(hu[:slices], (0.7, 0.8, 2.5), (-10.5, 20.25, 3.0), direction)
            path = tmp_path / f"{dtype}-{slices}.nrrd"
            _, peaks[slices] = _peak(lambda: write_volume(volume, path, dtype=dtype,
                                                          compress=compress))
        assert peaks[256] < peaks[64] + hu[:64].nbytes / 4, (dtype, peaks)
        image = sitk.ReadImage(str(path))
        expected = hu if dtype == "float32" else np.clip(np.rint(hu), -32768, 32767)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected)
        assert image.GetSpacing() == (0.7, 0.8, 2.5)
        assert image.GetOrigin() == (-10.5, 20.25, 3.0)
        np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), direction)
