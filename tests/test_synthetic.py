"""Tests of the cryo-EM simulator against known answers on tiny inputs."""

import time
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from n2s_tf import synthetic

APOFERRITIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "6z6u.pdb"

PDB_TEXT = """\
HEADER    TEST
ATOM      1  N   SER A   4      41.825  76.692  82.377  1.00 91.41           N
ATOM      2  CA  SER A   4      42.790  75.724  82.992  1.00 86.17           C
ATOM      3  H   SER A   4      42.000  75.000  82.000  1.00 86.17           H
ATOM      4  OG ASER A   4       1.000   2.000   3.000  1.00 50.00           O
ATOM      5  OG BSER A   4       9.000   9.000   9.000  1.00 50.00           O
HETATM    6 ZN    ZN A 201      -1.500   0.250  10.125  1.00 30.00          Zn
HETATM    7 FE    FE A 202       5.000   6.000   7.000  1.00 30.00
HETATM    8  CA  XYZ A 203       1.000   1.000   1.000  1.00 30.00
HETATM    9  XX  UNK A 204       2.000   2.000   2.000  1.00 30.00           Xx
END
"""

CIF_TEXT = """\
data_test
#
loop_
_atom_site.group_PDB
_atom_site.id
_atom_site.type_symbol
_atom_site.label_atom_id
_atom_site.label_alt_id
_atom_site.Cartn_x
_atom_site.Cartn_y
_atom_site.Cartn_z
_atom_site.pdbx_PDB_model_num
ATOM   1 N  N     . 41.825 76.692 82.377 1
ATOM   2 C  CA    . 42.790 75.724 82.992 1
ATOM   3 O  "O5'" A 1.0    2.0    3.0    1
ATOM   4 O  "O5'" B 9.0    9.0    9.0    1
HETATM 5 Mg MG    . -1.5   0.25   10.125 1
ATOM   6 S  SG    . 0.0    0.0    0.0    1
ATOM   7 N  N     . 5.0    5.0    5.0    2
#
"""


def test_construct_image_with_snr_measured_ratio():
    image = np.random.default_rng(1).normal(size=(256, 256)).cumsum(axis=0)
    for snr in (0.01, 0.1, 1.0):
        noisy = synthetic.construct_image_with_SNR(image, snr, rng=7)
        measured = image.var() / (noisy - image).var()
        assert noisy.dtype == np.float32
        assert abs(measured / snr - 1) < 0.05


def test_construct_image_with_snr_rejects_nonpositive():
    with pytest.raises(ValueError, match="snr"):
        synthetic.construct_image_with_SNR(np.ones((4, 4)), 0.0)


def test_read_pdb(tmp_path):
    path = tmp_path / "tiny.pdb"
    path.write_text(PDB_TEXT)
    coords, z = synthetic.read_atoms(path)
    # altloc B is dropped; FE has no element column (name starts in column 13 -> iron);
    # " CA " of XYZ without element column is C-alpha; unknown "Xx" counts as carbon.
    np.testing.assert_array_equal(z, [7, 6, 1, 8, 30, 26, 6, 6])
    np.testing.assert_allclose(coords[0], [41.825, 76.692, 82.377])
    np.testing.assert_allclose(coords[4], [-1.5, 0.25, 10.125])
    coords, z = synthetic.read_atoms(path, skip_hydrogens=True)
    np.testing.assert_array_equal(z, [7, 6, 8, 30, 26, 6, 6])
    np.testing.assert_allclose(coords[2], [1.0, 2.0, 3.0])


def test_read_mmcif(tmp_path):
    path = tmp_path / "tiny.cif"
    path.write_text(CIF_TEXT)
    coords, z = synthetic.read_atoms(path)
    # altloc B and the second model are dropped.
    np.testing.assert_array_equal(z, [7, 6, 8, 12, 16])
    np.testing.assert_allclose(coords, [[41.825, 76.692, 82.377], [42.790, 75.724, 82.992],
                                        [1.0, 2.0, 3.0], [-1.5, 0.25, 10.125], [0, 0, 0]])


def test_read_atoms_bad_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.pdb"
    empty.write_text("HEADER nothing here\nEND\n")
    with pytest.raises(ValueError, match="empty.pdb"):
        synthetic.read_atoms(empty)
    broken = tmp_path / "broken.pdb"
    broken.write_text(PDB_TEXT.replace("41.825", "4x.825"))
    with pytest.raises(ValueError, match="broken.pdb"):
        synthetic.read_atoms(broken)


def _cloud(n=300, radius=8.0, seed=0):
    rng = np.random.default_rng(seed)
    coords = rng.uniform(-radius, radius, (n, 3))
    return coords, rng.choice([6, 7, 8, 16], n)


def test_projection_conserves_weight_and_centres_the_molecule():
    coords, z = _cloud()
    box = 40
    image = synthetic.project_atoms(coords, z, pixel_size=1.0, box=box, rng=3, sigma_A=1.5)
    assert image.shape == (box, box)
    np.testing.assert_allclose(image.sum(), z.sum(), rtol=1e-4)
    rows, cols = np.indices(image.shape)
    centroid = np.average(coords[:, :2], axis=0, weights=z) - coords[:, :2].mean(axis=0)
    # Identity rotation: x -> columns, y -> rows, the atom centroid on pixel box // 2.
    flat = synthetic.project_atoms(coords, z, 1.0, box, rotation=np.eye(3), sigma_A=0)
    assert np.isclose((flat * cols).sum() / flat.sum(), box // 2 + centroid[0], atol=1e-4)
    assert np.isclose((flat * rows).sum() / flat.sum(), box // 2 + centroid[1], atol=1e-4)


def test_projection_rotation_about_z_rotates_the_image():
    coords, z = _cloud(seed=4)
    quarter = Rotation.from_euler("z", 90, degrees=True)
    a = synthetic.project_atoms(coords, z, 1.0, 41, rotation=np.eye(3), sigma_A=1.0)
    b = synthetic.project_atoms(coords, z, 1.0, 41, rotation=quarter, sigma_A=1.0)
    # Rotating x towards y by 90 degrees turns the (row=y, col=x) image by 90 degrees.
    np.testing.assert_allclose(b, np.rot90(a, k=1, axes=(1, 0)), atol=1e-3 * a.max())


def test_ctf_at_zero_frequency_and_first_zero():
    amplitude = 0.1
    transfer = synthetic.ctf((1, 4096), pixel_size=0.5, defocus_um=2.0, cs_mm=0.0,
                             amplitude_contrast=amplitude)
    assert np.isclose(transfer[0, 0], -amplitude)
    k = np.fft.fftfreq(4096, d=0.5)[:2048]
    row = transfer[0, :2048]
    first = np.argmax(np.sign(row[1:]) != np.sign(row[:-1]))
    # With Cs = 0: chi = pi lambda df k^2 and the CTF vanishes first at chi = pi - asin(A);
    # lambda = 0.019687 A at 300 kV.
    k_zero = np.sqrt((np.pi - np.arcsin(amplitude)) / (np.pi * 0.019687 * 2.0e4))
    assert k[first] <= k_zero <= k[first + 1]
    assert row[: first + 1].max() < 0  # negative up to the first zero: protein is dark


def test_ctf_b_factor_envelope():
    plain = synthetic.ctf((64, 64), 1.0, 1.5)
    damped = synthetic.ctf((64, 64), 1.0, 1.5, b_factor=100.0)
    k2 = np.fft.fftfreq(64)[:, None] ** 2 + np.fft.fftfreq(64)[None, :] ** 2
    np.testing.assert_allclose(damped, plain * np.exp(-100.0 * k2 / 4))


def test_apply_ctf_of_constant_ctf_scales_the_image():
    image = np.random.default_rng(0).normal(size=(16, 20))
    np.testing.assert_allclose(synthetic.apply_ctf(image, np.full((16, 20), -2.0)), -2 * image,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        synthetic.apply_ctf(image, np.ones((16, 16)))


def test_simulate_micrograph_small_cloud():
    atoms = _cloud(n=400, radius=10.0)
    out = synthetic.simulate_micrograph(atoms, shape=(128, 128), n_particles=3, pixel_size=1.0,
                                        snr=0.1, seed=5, pair=True)
    clean, noisy, noisy_b = out["clean"], out["noisy"], out["noisy_b"]
    assert clean.shape == noisy.shape == noisy_b.shape == (128, 128)
    assert clean.dtype == noisy.dtype == np.float32
    assert abs(clean.mean()) < 1e-5 and abs(clean.std() - 1) < 1e-5
    noise_a, noise_b = noisy - clean, noisy_b - clean
    assert abs(1 / noise_a.var() / 0.1 - 1) < 0.05
    assert abs(np.corrcoef(noise_a.ravel(), noise_b.ravel())[0, 1]) < 0.03
    assert out["positions"].shape == (3, 2)
    # Protein is dark: the clean image is lower at particle centres than on average.
    assert all(clean[r, c] < 0 for r, c in out["positions"])
    again = synthetic.simulate_micrograph(atoms, shape=(128, 128), n_particles=3,
                                          pixel_size=1.0, snr=0.1, seed=5)
    np.testing.assert_array_equal(again["noisy"], noisy)
    other = synthetic.simulate_micrograph(atoms, shape=(128, 128), n_particles=3,
                                          pixel_size=1.0, snr=0.1, seed=6)
    assert not np.allclose(other["clean"], clean)


def test_simulate_micrograph_avoids_overlap_and_reads_files(tmp_path):
    coords, z = _cloud(n=200, radius=5.0)
    path = tmp_path / "cloud.pdb"
    path.write_text("".join(
        f"ATOM  {i + 1:5d}  C   ALA A   1    {x:8.3f}{y:8.3f}{w:8.3f}  1.00  0.00           C\n"
        for i, (x, y, w) in enumerate(coords)))
    out = synthetic.simulate_micrograph(path, shape=(128, 128), n_particles=4, pixel_size=1.0)
    centres = out["positions"]
    radius = np.linalg.norm(coords - coords.mean(axis=0), axis=1).max()
    gaps = [np.hypot(*(a - b)) for i, a in enumerate(centres) for b in centres[i + 1:]]
    assert min(gaps) >= 2 * radius


def test_simulate_micrograph_rejects_bad_requests():
    atoms = _cloud(radius=30.0)
    with pytest.raises(ValueError, match="box"):
        synthetic.simulate_micrograph(atoms, shape=(32, 32), pixel_size=1.0)
    with pytest.raises(ValueError, match="n_particles"):
        synthetic.simulate_micrograph(atoms, n_particles=0)


@pytest.mark.skipif(not APOFERRITIN.exists(), reason="needs ../shared/data/6z6u.pdb")
def test_apoferritin_6z6u_single_projection_is_fast():
    coords, z = synthetic.read_atoms(APOFERRITIN)
    assert len(z) > 30000
    start = time.perf_counter()
    image = synthetic.project_atoms(coords, z, pixel_size=1.5, box=192, rng=0)
    assert time.perf_counter() - start < 1.0
    assert np.isclose(image.sum(), z.sum(), rtol=1e-3)


# ---------------------------------------------------------------- counting-detector movies

def _tiny_atoms():
    rng = np.random.default_rng(0)
    return rng.normal(0, 6.0, (40, 3)), np.full(40, 6)


@pytest.mark.parametrize("detector,low,high", [("white", -0.05, 0.05), ("lag0.35", 0.25, 0.45),
                                               ("lag0.55", 0.45, 0.65)])
def test_movie_noise_lands_in_the_configured_range(detector, low, high):
    from n2s_tf import noise

    movie = synthetic.simulate_movie(_tiny_atoms(), (128, 128), n_particles=3, n_frames=6, dose_per_frame=4.0,
                                     snr=0.1, seed=1, **synthetic.DETECTORS[detector])
    lag1 = noise.noise_report(movie["noisy"] - movie["clean"], low_cut=0)["lags"]
    assert all(low < lags[0] < high for lags in lag1.values()), lag1
    assert movie["noisy"].shape == (128, 128) and movie["noisy"].dtype == np.float32
    np.testing.assert_array_equal(movie["even"] + movie["odd"], movie["noisy"])


@pytest.mark.parametrize("super_resolution", [False, True])
def test_flat_field_counts_are_poisson(super_resolution):
    """Without contrast, blur or drift each output pixel sums Poisson counts: variance == mean."""
    movie = synthetic.simulate_movie(_tiny_atoms(), (96, 96), n_particles=1, n_frames=4, dose_per_frame=2.5,
                                     pixel_size=2.0, snr=1e-12, super_resolution=super_resolution, seed=2)
    expected = 4 * 2.5 * 2.0**2  # frames * e/A^2 per frame * A^2 per pixel = 40 counts
    assert movie["clean"].mean() == pytest.approx(expected, rel=1e-6)
    assert movie["noisy"].mean() == pytest.approx(expected, rel=0.01)
    assert movie["noisy"].var() == pytest.approx(expected, rel=0.06)
    assert movie["even"].mean() == pytest.approx(expected / 2, rel=0.01)


def test_thicker_ice_gives_fewer_counts_and_gain_error_adds_fixed_pattern():
    base = dict(n_particles=1, n_frames=2, dose_per_frame=5.0, snr=1e-12, super_resolution=False, seed=3)
    thin = synthetic.simulate_movie(_tiny_atoms(), (64, 64), **base)
    thick = synthetic.simulate_movie(_tiny_atoms(), (64, 64), ice_nm=350.0, **base)
    assert thick["clean"].mean() == pytest.approx(thin["clean"].mean() * np.exp(-1), rel=1e-6)
    gained = synthetic.simulate_movie(_tiny_atoms(), (64, 64), gain_error=0.2, **base)
    # The gain pattern is the same in both halves: even and odd correlate beyond their shared clean image.
    a, b = (gained[k] - gained["clean"] / 2 for k in ("even", "odd"))
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.2  # by hand: 5.1 / (5.1 + 11.3) = 0.31
    with pytest.raises(ValueError, match="n_frames"):
        synthetic.simulate_movie(_tiny_atoms(), (64, 64), n_frames=1)


def test_fourier_crop_bins_counts():
    x = np.random.default_rng(0).poisson(3.0, (64, 48)).astype(float)
    binned = synthetic.fourier_crop(x)
    assert binned.shape == (32, 24)
    assert binned.mean() == pytest.approx(4 * x.mean())
    ramp = np.add.outer(np.arange(8.0), np.zeros(8))
    assert synthetic.fourier_crop(ramp, circular=True).mean() == pytest.approx(4 * ramp.mean())
