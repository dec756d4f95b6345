"""Procedural training textures: the frequencies, periods and ranges they promise."""

import numpy as np
import pytest

from n2s_tf import synthetic_textures as st


def test_grating_has_its_frequency_and_orientation():
    image = st.grating(np.random.default_rng(0), (128, 128), frequency=0.125, angle=0.0, phase=0.3, sharpness=0)
    spectrum = np.abs(np.fft.fft2(image))
    ky, kx = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    assert (ky, kx) in ((0, 16), (0, 128 - 16))  # 0.125 cycles/px along x: bin 16 of 128
    assert image.min() >= -1 and image.max() <= 1


def test_sharp_grating_is_near_square():
    image = st.grating(np.random.default_rng(0), (64, 64), frequency=0.1, angle=0.0, phase=0.0, sharpness=8)
    assert np.mean(np.abs(image) > 0.9) > 0.7


def test_tiled_pattern_repeats_its_motif():
    rng = np.random.default_rng(1)
    image = st.tiled(rng, (96, 96))
    period = next(p for p in range(4, 25) if np.array_equal(image[:, p:], image[:, :-p]))
    assert 4 <= period <= 24


def test_woven_threads_alternate_over_and_under():
    image = st.woven(np.random.default_rng(2), (128, 128))
    assert image.shape == (128, 128) and np.abs(image).max() <= 1
    assert image.std() > 0.3


@pytest.mark.parametrize("kind", st.KINDS)
def test_every_kind_is_a_pure_function_of_its_generator(kind):
    a = st.texture(np.random.default_rng(5), (48, 64), kind)
    b = st.texture(np.random.default_rng(5), (48, 64), kind)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (48, 64) and a.std() > 0


def test_texture_image_is_on_the_8_bit_scale_and_blends_with_a_natural_image():
    natural = np.full((64, 64), 200.0)
    image = st.texture_image(np.random.default_rng(4), (64, 64), natural=natural)
    assert image.dtype == np.float32 and image.min() >= 0 and image.max() <= 255
    alone = st.texture_image(np.random.default_rng(4), (64, 64))
    assert not np.array_equal(image, alone)
