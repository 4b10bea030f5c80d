"""The synthetic phantom: HU values and masks agree, lesions have their stated contrast."""

from __future__ import annotations

import numpy as np
import pytest

from ldct.phantom import HU, LESION_CONTRASTS, make_phantom, water_cylinder


def test_tissues_have_their_hu_and_masks_do_not_overlap(phantom):
    hu, masks = phantom.volume.hu, phantom.masks
    for name, tissue in (("fat", "fat"), ("muscle", "muscle"), ("liver", "liver"),
                         ("vessels", "vessel"), ("kidneys", "kidney")):
        assert masks[name].any(), name
        assert np.all(hu[masks[name]] == HU[tissue]), name
    assert not (masks["liver"] & masks["lesions"]).any()
    assert not (masks["liver"] & masks["vessels"]).any()
    assert (hu[~masks["body"]] == HU["air"]).all()


def test_lesions_have_known_contrast(phantom):
    for label, contrast in enumerate(LESION_CONTRASTS, start=1):
        lesion = phantom.masks[f"lesion{label}"]
        assert lesion.sum() > 20
        assert np.all(phantom.volume.hu[lesion] == HU["liver"] + contrast)


@pytest.mark.parametrize("size", [64, 512])
def test_any_size_keeps_the_field_of_view(size):
    p = make_phantom(size=size, slices=2)
    assert p.volume.hu.shape == (2, size, size)
    assert p.volume.spacing[0] * size == pytest.approx(380.0)
    assert p.masks["liver"].any() and p.masks["spine"].any()


def test_water_cylinder_is_water_in_air():
    v = water_cylinder(size=64, pixel_mm=2.0)
    assert set(np.unique(v.hu)) == {HU["air"], 0.0}
    assert v.hu[0, 32, 32] == 0.0 and v.hu[0, 0, 0] == HU["air"]
