"""Tests of collaborative filtering: the transforms and block sums by hand, block matching
against a brute-force search, and what the refinement is for (a pattern a smoothing erased)."""

import numpy as np
import pytest
from scipy import ndimage

from n2s_tf import collaborative


def psnr(x, clean):
    return 10 * np.log10(255.0**2 / np.mean((x - clean) ** 2))


def test_dct_matrix_is_orthonormal_and_its_first_row_is_the_mean():
    d = collaborative.dct_matrix(8)
    np.testing.assert_allclose(d @ d.T, np.eye(8), atol=1e-6)
    np.testing.assert_allclose(d[0], np.full(8, 1 / np.sqrt(8)), atol=1e-7)
    # Row 1 by hand: sqrt(2/8) cos(pi (2i + 1) / 16).
    np.testing.assert_allclose(d[1], 0.5 * np.cos(np.pi * (2 * np.arange(8) + 1) / 16), atol=1e-6)


def test_reference_axes_cover_the_image_and_end_flush():
    rows, cols = collaborative.reference_axes((21, 16), block=8, stride=4)
    assert rows.tolist() == [0, 4, 8, 12, 13]
    assert cols.tolist() == [0, 4, 8]


def test_block_sums_by_hand():
    values = np.arange(60, dtype=np.float32).reshape(10, 6)
    corners = np.array([0, 2])  # every 2 rows, block 4: rows 0-3 and 2-5 ...
    sums = collaborative._block_sums(values, corners, block=4, stride=2, axis=0)
    np.testing.assert_allclose(sums, [values[0:4].sum(0), values[2:6].sum(0)])
    wide = np.arange(70, dtype=np.float32).reshape(10, 7)  # 7 columns: the last corner, 3, is off the grid
    sums = collaborative._block_sums(wide, np.array([0, 2, 3]), block=4, stride=2, axis=1)
    np.testing.assert_allclose(sums, np.stack([wide[:, 0:4].sum(1), wide[:, 2:6].sum(1), wide[:, 3:7].sum(1)], 1))


def test_block_matching_finds_the_brute_force_nearest_blocks():
    guide = np.random.default_rng(0).normal(size=(40, 37)).astype(np.float32)
    rows, cols = collaborative.match_blocks(guide, block=8, stride=4, radius=5, group=6)
    references = [(r, c) for r in collaborative.reference_axes(guide.shape)[0]
                  for c in collaborative.reference_axes(guide.shape)[1]]
    assert rows.shape == (len(references), 6)
    for k, (r, c) in enumerate(references):
        block = guide[r:r + 8, c:c + 8]
        distances = {(i, j): float(np.sum((guide[i:i + 8, j:j + 8] - block) ** 2))
                     for i in range(max(0, r - 5), min(40 - 8, r + 5) + 1)
                     for j in range(max(0, c - 5), min(37 - 8, c + 5) + 1)}
        nearest = sorted(distances.values())[:6]
        found = sorted(distances[(i, j)] for i, j in zip(rows[k], cols[k]))
        np.testing.assert_allclose(found, nearest, rtol=1e-4, atol=1e-3)
        assert (rows[k][0], cols[k][0]) == (r, c)  # itself first, then the others nearest first
        np.testing.assert_allclose([distances[(i, j)] for i, j in zip(rows[k], cols[k])], nearest, rtol=1e-4,
                                   atol=1e-3)


def test_tiny_images_repeat_the_reference_when_candidates_run_out():
    guide = np.random.default_rng(1).normal(size=(9, 9)).astype(np.float32)  # 4 block positions
    rows, cols = collaborative.match_blocks(guide, group=16)
    assert rows.shape == (4, 16) and rows.max() <= 1 and cols.max() <= 1


def test_keeping_every_coefficient_gives_back_the_image():
    image = np.random.default_rng(2).normal(size=(32, 28)).astype(np.float32)
    groups = collaborative.match_blocks(image)
    # Threshold 0 keeps every coefficient: each block comes back as it was, so every average of
    # its copies is the pixel itself. A Wiener gain of 1 (sigma tiny) does the same.
    np.testing.assert_allclose(collaborative.collaborative_filter(image, groups, 1.0, threshold=0.0), image,
                               atol=1e-4)
    np.testing.assert_allclose(collaborative.collaborative_filter(image, groups, 1e-4, pilot=image + 5.0), image,
                               atol=1e-4)


def test_the_hard_threshold_keeps_a_flat_image_and_removes_its_noise():
    noise = np.random.default_rng(4).normal(0, 10.0, (64, 64)).astype(np.float32)
    groups = collaborative.match_blocks(np.zeros((64, 64), np.float32))
    out = collaborative.collaborative_filter(100.0 + noise, groups, 10.0)
    assert abs(out.mean() - 100.0) < 1.0 and (out - 100.0).std() < 0.3 * noise.std()


def test_refinement_brings_back_a_pattern_a_smoothing_erased():
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:96, :96]
    clean = 128.0 + 60.0 * np.sign(np.sin(2 * np.pi * xx / 3.0 + 0.4))  # stripes 3 px apart
    noisy = (clean + rng.normal(0, 20.0, clean.shape)).astype(np.float32)
    smoothed = ndimage.uniform_filter(noisy, 3)  # a "network" that erased the stripes
    refined = collaborative.refine(noisy, smoothed, 20.0)
    assert psnr(smoothed, clean) < psnr(noisy, clean)
    assert psnr(refined, clean) > psnr(noisy, clean) + 3.0
    assert psnr(refined, clean) > psnr(smoothed, clean) + 6.0


def test_refinement_costs_little_on_a_smooth_image_a_blur_denoises_well():
    # Its last step averages the pilot with a Wiener filter of the noisy groups, which passes
    # some noise on every coefficient the pilot holds: on a smooth image whose blur is nearly
    # ideal that costs about 1 dB (what docs/benchmarks.md reports on moon at sigma 50).
    rng = np.random.default_rng(6)
    yy, xx = np.mgrid[:96, :96]
    clean = 100.0 + 50.0 * np.sin(xx / 15.0) * np.cos(yy / 20.0)
    noisy = (clean + rng.normal(0, 20.0, clean.shape)).astype(np.float32)
    good = ndimage.gaussian_filter(noisy, 3.0)
    assert psnr(collaborative.refine(noisy, good, 20.0), clean) > psnr(good, clean) - 1.5


def test_windows_give_the_whole_image_result():
    rng = np.random.default_rng(7)
    noisy = rng.normal(100, 20, (150, 170)).astype(np.float32)
    guide = ndimage.gaussian_filter(noisy, 1.5)
    whole = collaborative.refine(noisy, guide, 20.0)
    np.testing.assert_allclose(collaborative.refine(noisy, guide, 20.0, tile=40), whole, atol=1e-3)


def test_no_noise_leaves_the_prediction_and_bad_shapes_are_refused():
    guide = np.ones((16, 16), np.float32)
    np.testing.assert_array_equal(collaborative.refine(guide, guide, 0.0), guide)
    with pytest.raises(ValueError, match="2D images of one shape"):
        collaborative.refine(np.ones((16, 16, 2)), np.ones((16, 16, 2)), 1.0)
    with pytest.raises(ValueError, match="at least 8 px"):
        collaborative.match_blocks(np.ones((5, 20)))
