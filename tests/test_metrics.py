"""Metrics checked against values known by construction."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from ldct import metrics


def test_psnr_of_a_constant_offset_is_known():
    ref = np.zeros((2, 32, 32), np.float32)
    assert metrics.psnr(ref + 40.0, ref) == pytest.approx(20.0)  # offset 40 HU = 0.1 window
    assert metrics.psnr(ref, ref) == float("inf")


def test_psnr_uses_the_liver_window():
    ref = np.full((1, 16, 16), -1000.0)
    assert metrics.psnr(ref - 500.0, ref) == float("inf")  # both clip to the window floor


def test_ssim_is_one_for_identical_and_drops_with_noise():
    rng = np.random.default_rng(0)
    ref = ndimage.gaussian_filter(rng.normal(40, 80, (2, 64, 64)), 3)
    assert metrics.ssim(ref, ref) == pytest.approx(1.0)
    assert metrics.ssim(ref + rng.normal(0, 40, ref.shape), ref) < 0.9


def test_rmse_bias_and_noise_in_masks():
    ref = np.zeros((1, 20, 20))
    test = ref.copy()
    mask = np.zeros_like(ref, bool)
    mask[0, :10] = True
    test[0, :10] = 3.0
    test[0, 10:] = 100.0
    assert metrics.rmse_hu(test, ref, mask) == pytest.approx(3.0)
    assert metrics.hu_bias(test, ref, mask) == pytest.approx(3.0)
    assert metrics.noise_sd(test, mask) == pytest.approx(0.0)
    alt = np.where(np.indices(ref.shape)[2] % 2 == 0, 5.0, -5.0)
    assert metrics.noise_sd(alt, mask) == pytest.approx(5.0)
    assert metrics.noise_sd(ref + alt, mask, reference=ref) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="empty"):
        metrics.hu_bias(test, ref, np.zeros_like(mask))


def test_cnr_by_construction():
    """A +-10 HU checkerboard (SD exactly 10 HU) with a lesion 50 HU brighter: CNR exactly 5."""
    rows, cols = np.indices((100, 100))
    image = np.where((rows + cols) % 2 == 0, 10.0, -10.0)[None]
    lesion = np.zeros_like(image, bool)
    lesion[0, 40:60, 40:60] = True
    image[lesion] += 50.0
    assert metrics.cnr(image, lesion, ~lesion) == pytest.approx(5.0, abs=1e-9)


def test_cnr_divides_by_the_backgrounds_sd_not_the_lesions():
    """Background: a +-10 HU checkerboard around 0 HU (SD 10); lesion: a +-30 HU checkerboard
    around 60 HU (SD 30). CNR = |60 - 0| / 10 = 6 (with the lesion's SD it would be 2, with
    the RMS of both SDs 60 / sqrt(500) = 2.68, with all pixels' SD about 3)."""
    rows, cols = np.indices((100, 100))
    sign = np.where((rows + cols) % 2 == 0, 1.0, -1.0)[None]
    lesion = np.zeros(sign.shape, bool)
    lesion[0, 40:60, 40:60] = True
    image = np.where(lesion, 60.0 + 30.0 * sign, 10.0 * sign)
    assert metrics.cnr(image, lesion, ~lesion) == pytest.approx(6.0, abs=1e-9)
    # a darker lesion has the same CNR (the absolute contrast)
    dark = np.where(lesion, -60.0 + 30.0 * sign, 10.0 * sign)
    assert metrics.cnr(dark, lesion, ~lesion) == pytest.approx(6.0, abs=1e-9)


def test_auc_counts_ties_as_half_by_hand():
    """Scores of 4 diseased and 5 healthy cases, the 20 pairs counted by hand: 5 beats all 5
    (5); each 4 ties the healthy 4 and beats the other 4 (4.5 + 4.5); 2 beats the two 1s and
    ties the 2 (2.5): 16.5 / 20 = 0.825. Swapped, 1 - 0.825 = 0.175; a second reader scoring
    all cases alike has 0.5; no case of a kind is an error."""
    diseased, healthy = [5, 4, 4, 2], [4, 3, 1, 1, 2]
    assert metrics.auc(np.array(diseased), np.array(healthy)) == pytest.approx(0.825, abs=1e-12)
    assert metrics.auc(np.array(healthy), np.array(diseased)) == pytest.approx(0.175, abs=1e-12)
    readers = metrics.auc(np.array([diseased, [3] * 4]), np.array([healthy, [3] * 5]))
    np.testing.assert_allclose(readers, [0.825, 0.5], atol=1e-12)
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        metrics.auc(np.array(diseased), np.array([]))


def test_cnr_of_a_noiseless_phantom_is_infinite_without_a_warning():
    """A 100 HU lesion in a flat 40 HU background with no noise: contrast 60 HU over an SD
    of 0, the limit of 60 / sigma as sigma falls, infinity (no divide-by-zero warning); no
    contrast and no noise is 0/0, refused."""
    image = np.full((1, 32, 32), 40.0)
    lesion = np.zeros(image.shape, bool)
    lesion[0, 10:20, 10:20] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.cnr(np.where(lesion, 100.0, image), lesion, ~lesion) == float("inf")
        with pytest.raises(ValueError, match="CNR is undefined"):
            metrics.cnr(image, lesion, ~lesion)


def test_nps_of_white_noise_is_flat_and_integrates_to_the_variance():
    """White noise of SD 20 HU on 0.5 mm pixels: NPS = sigma^2 dx dy = 100 HU^2 mm^2 in every
    ring, rings 1 / (64 x 0.5 mm) apart. TG-233's mean frequency sum f NPS / sum NPS of a flat
    NPS over rings k / 32 cycles/mm, k = 1..31 (ring 0 is the removed mean) is the rings' own
    mean, 16 / 32 = 0.5 cycles/mm (not 21 / 32 = 0.656, rings weighted by circumference, nor
    0.765, the mean |f| over the whole 2D grid)."""
    rng = np.random.default_rng(2)
    sigma, pixel = 20.0, 0.5
    noise = rng.normal(0, sigma, (40, 128, 128))
    spectrum = metrics.nps(noise, (pixel, pixel), roi=64)
    assert spectrum.variance == pytest.approx(sigma**2, rel=0.02)
    assert np.allclose(spectrum.power[1:], 100.0, rtol=0.1)
    assert spectrum.frequency[1] == pytest.approx(1.0 / 32)
    assert spectrum.mean_frequency == pytest.approx(0.5, rel=0.01)


def test_nps_of_a_sinusoid_sits_at_its_frequency():
    """10 HU cos(2 pi x / 4 mm) on 0.5 mm pixels: all its power is at 0.25 cycles/mm (ring 8
    of 64-pixel ROIs, 8 whole periods each), so the mean and the peak frequency are 0.25 and
    the variance is 10^2 / 2 = 50 HU^2."""
    x = np.arange(128) * 0.5
    image = np.broadcast_to(10.0 * np.cos(2 * np.pi * x / 4.0)[None, :], (2, 128, 128))
    spectrum = metrics.nps(image, (0.5, 0.5), roi=64)
    assert spectrum.mean_frequency == pytest.approx(0.25, abs=1e-9)
    assert spectrum.peak_frequency == pytest.approx(0.25, abs=1e-9)
    assert spectrum.variance == pytest.approx(50.0, rel=1e-9)


def test_nps_of_filtered_noise_is_its_squared_transfer_function():
    """White noise through H(f) = exp(-2 pi^2 a^2 f^2) (a Gaussian of SD a pixels, applied as
    a periodic filter): NPS = sigma^2 dx^2 H^2."""
    rng = np.random.default_rng(6)
    sigma, pixel, a = 10.0, 0.5, 1.5
    white = rng.normal(0, sigma, (60, 128, 128))
    f = np.hypot(np.fft.fftfreq(128)[:, None], np.fft.fftfreq(128)[None, :])
    h = np.exp(-2 * np.pi ** 2 * a ** 2 * f ** 2)
    noise = np.fft.ifft2(np.fft.fft2(white) * h).real
    spectrum = metrics.nps(noise, (pixel, pixel), roi=64)
    cycles_per_pixel = spectrum.frequency * pixel
    expected = sigma ** 2 * pixel ** 2 * np.exp(-4 * np.pi ** 2 * a ** 2 * cycles_per_pixel ** 2)
    strong = expected > 0.1 * expected.max()
    assert np.allclose(spectrum.power[1:][strong[1:]], expected[1:][strong[1:]], rtol=0.12)


def test_nps_peak_of_band_pass_noise_is_found():
    rng = np.random.default_rng(3)
    white = rng.normal(0, 1, (8, 128, 128))
    band = np.stack([ndimage.gaussian_filter(w, 1.0) - ndimage.gaussian_filter(w, 3.0)
                     for w in white])
    spectrum = metrics.nps(band, (1.0, 1.0), roi=64)
    # DoG response exp(-2 pi^2 f^2 s1^2) - exp(-2 pi^2 f^2 s2^2) peaks at this frequency:
    s1, s2 = 1.0, 3.0
    f_peak = np.sqrt(np.log(s2**2 / s1**2) / (2 * np.pi**2 * (s2**2 - s1**2)))
    assert spectrum.peak_frequency == pytest.approx(f_peak, abs=1.5 * spectrum.frequency[1])
    with pytest.raises(ValueError, match="no 64x64 region"):
        metrics.nps(band, (1.0, 1.0), roi=64, mask=np.zeros(band.shape, bool))


def test_body_mask_fills_the_patient():
    """Every pixel of the patient's disk, bowel gas inside it included, and nothing else: the
    air around it and a gas pocket open to the outside stay out; each slice on its own (gas
    that is enclosed in one slice is filled there although it opens into air on the next)."""
    yy, xx = np.indices((50, 50))
    disk = (yy - 25) ** 2 + (xx - 25) ** 2 < 400
    image = np.full((2, 50, 50), -1000.0)
    image[:, disk] = 40.0
    image[0, 22:29, 22:29] = -1000.0  # bowel gas inside the body
    notch = (yy >= 23) & (yy < 27) & (xx < 25)  # an opening from the air into the body
    image[1][notch] = -1000.0
    image[1, 22:29, 22:29] = -1000.0  # gas reaching the opening: open to the outside here
    mask = metrics.body_mask(image)
    gas = (yy >= 22) & (yy < 29) & (xx >= 22) & (xx < 29)
    for got, expected in ((mask[0], disk), (mask[1], disk & ~notch & ~gas),
                          (metrics.body_mask(image[0]), disk)):  # a 2-D slice alike
        assert got.shape == expected.shape and (got != expected).sum() == 0, (
            f"{(got & ~expected).sum()} pixels too many, {(expected & ~got).sum()} missing")
