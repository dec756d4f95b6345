"""Synthetic cryo-EM micrographs with a known clean image.

Atoms from a PDB/mmCIF model are rotated at random, projected along Z, blurred into
Gaussian atoms, placed in a micrograph, modulated by the contrast transfer function
(CTF) and buried in white Gaussian noise of a chosen real-space SNR. Denoisers can then
be scored against the clean image, which real micrographs never give.

Contrast convention: the projected potential is positive and the CTF is negative at
low frequency for underfocus (positive defocus), so protein comes out dark on a lighter
background, as in raw micrographs.  Numpy/scipy only.
"""

import re
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

# Atomic numbers of the elements met in macromolecular models; others count as carbon.
ELEMENT_Z = {
    "H": 1, "D": 1, "C": 6, "N": 7, "O": 8, "F": 9, "NA": 11, "MG": 12, "P": 15,
    "S": 16, "CL": 17, "K": 19, "CA": 20, "MN": 25, "FE": 26, "CO": 27, "NI": 28,
    "CU": 29, "ZN": 30, "SE": 34, "BR": 35, "I": 53,
}
UNKNOWN_Z = 6


def construct_image_with_SNR(image, snr, rng=None, lag1=0.0):
    """Add Gaussian noise so that var(image) / var(noise) = snr (in expectation).

    lag1 > 0 makes the noise correlated (`correlated_noise`): its autocorrelation is lag1 at
    lag 1 along every axis, as the detector blur of real micrographs gives.
    """
    if snr <= 0:
        raise ValueError(f"snr must be positive, got {snr}")
    image = np.asarray(image, dtype=np.float32)
    noise_std = np.sqrt(image.var() / snr)
    noise = correlated_noise(image.shape, lag1, rng)
    return (image + noise_std * noise).astype(np.float32)


def correlated_noise(shape, lag1=0.0, rng=None):
    """Gaussian noise of unit variance whose autocorrelation is `lag1` at lag 1 along each axis.

    White noise filtered (circularly) along every axis by the kernel [a, 1, a], whose
    autocorrelation is 2a / (1 + 2a^2) at lag 1, a^2 / (1 + 2a^2) at lag 2 and 0 beyond:
    a = (1 - sqrt(1 - 2 lag1^2)) / (2 lag1). lag1 0.58 gives 0.13 at lag 2, close to a real
    motion-corrected, Fourier-binned micrograph. lag1 must lie in [0, 1/sqrt(2)).
    """
    if not 0 <= lag1 < 2**-0.5:
        raise ValueError(f"lag1 must be in [0, 0.707), got {lag1}")
    noise = np.random.default_rng(rng).normal(0.0, 1.0, shape)
    if lag1 == 0:
        return noise
    a = (1 - np.sqrt(1 - 2 * lag1**2)) / (2 * lag1)
    kernel = np.array([a, 1.0, a]) / np.sqrt(1 + 2 * a**2)
    for axis in range(noise.ndim):
        noise = ndimage.convolve1d(noise, kernel, axis=axis, mode="wrap")
    return noise


# ---------------------------------------------------------------- atomic models

def _element_z(symbol):
    return ELEMENT_Z.get(symbol.strip().upper(), UNKNOWN_Z)


def _pdb_element(line):
    """Element of a PDB ATOM/HETATM line: columns 77-78, else from the atom name.

    In the atom name (columns 13-16) a one-letter element sits in column 14 and a
    two-letter one starts in column 13 ("  CA " is C-alpha, "CA   " is calcium).
    """
    element = line[76:78].strip()
    if element:
        return element
    name = line[12:16]
    if name[0] in " 0123456789":
        return name[1]
    return name[:2] if name[:2].upper() in ELEMENT_Z else name[0]


def _read_pdb(lines):
    """(x, y, z, element) rows of the first model, first alternate location only."""
    rows = []
    for line in lines:
        if line.startswith("ENDMDL"):
            break
        if line.startswith(("ATOM  ", "HETATM")) and line[16] in " A":
            rows.append((line[30:38], line[38:46], line[46:54], _pdb_element(line)))
    return rows


def _read_mmcif(text):
    """(x, y, z, element) rows of the _atom_site loop, first model, first altloc."""
    match = re.search(r"^loop_\s*\n((?:_atom_site\.\S+\s*\n)+)", text, re.MULTILINE)
    if match is None:
        return []
    columns = [c.split(".", 1)[1] for c in match.group(1).split()]
    body = []
    for line in text[match.end():].splitlines():
        if line.startswith(("_", "loop_", "#", "data_")):
            break
        body.append(line)
    # A value is a quoted string or a run of non-blanks; rows may wrap over lines.
    tokens = re.findall(r"'[^']*'(?=\s|$)|\"[^\"]*\"(?=\s|$)|\S+", "\n".join(body))
    if len(tokens) % len(columns):
        raise ValueError(f"{len(tokens)} values do not fill rows of {len(columns)} columns")
    table = {name: tokens[i::len(columns)] for i, name in enumerate(columns)}
    n = len(tokens) // len(columns)
    elements = table.get("type_symbol", ("C",) * n)
    altloc = table.get("label_alt_id", (".",) * n)
    model = table.get("pdbx_PDB_model_num", ("1",) * n)
    rows = []
    for i in range(n):
        if model[i] != model[0]:
            break
        if altloc[i] in (".", "?", "A"):
            rows.append((table["Cartn_x"][i], table["Cartn_y"][i], table["Cartn_z"][i],
                         elements[i].strip("'\"")))
    return rows


def read_atoms(path, skip_hydrogens=False):
    """Read atom coordinates (N, 3) in Angstrom and atomic numbers (N,) from PDB or mmCIF.

    The format is told by the content: an mmCIF file has an ``_atom_site`` loop.
    Only the first model and the first alternate location of each atom are kept.
    """
    text = Path(path).read_text(errors="replace")
    try:
        rows = _read_mmcif(text) if "_atom_site." in text else _read_pdb(text.splitlines())
        coords = np.array([r[:3] for r in rows], dtype=np.float64).reshape(-1, 3)
    except (KeyError, ValueError, IndexError) as err:
        raise ValueError(f"{path}: cannot parse atom records ({err})") from None
    if len(rows) == 0:
        raise ValueError(f"{path}: no atoms found (expected PDB ATOM/HETATM or mmCIF _atom_site)")
    z = np.array([_element_z(r[3]) for r in rows], dtype=np.int64)
    if skip_hydrogens:
        coords, z = coords[z > 1], z[z > 1]
    return coords, z


# ---------------------------------------------------------------- image formation

def project_atoms(coords, z, pixel_size, box, rotation=None, sigma_A=1.0, rng=None):
    """Project atoms along Z onto a (box, box) grid, each atom weighted by its Z.

    The atoms' centroid lands on pixel (box // 2, box // 2); image rows follow y and
    columns follow x.  ``rotation`` is a scipy Rotation or a 3x3 matrix; when None a
    uniformly random rotation is drawn from ``rng``.  Atoms are splatted with bilinear
    weights (total weight conserved) and blurred by a Gaussian of ``sigma_A`` Angstrom
    (0 turns the blur off); weight splatted or blurred past the box edge is lost.
    """
    if rotation is None:
        rotation = Rotation.random(rng=np.random.default_rng(rng))
    elif not isinstance(rotation, Rotation):
        rotation = Rotation.from_matrix(rotation)
    coords = np.asarray(coords, dtype=np.float64)
    xyz = rotation.apply(coords - coords.mean(axis=0)) / pixel_size + box // 2
    col, row = xyz[:, 0], xyz[:, 1]
    r0, c0 = np.floor(row).astype(np.int64), np.floor(col).astype(np.int64)
    fr, fc = row - r0, col - c0
    weight = np.asarray(z, dtype=np.float64)
    image = np.zeros(box * box)
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                      (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        r, c = r0 + dr, c0 + dc
        inside = (r >= 0) & (r < box) & (c >= 0) & (c < box)
        image += np.bincount(r[inside] * box + c[inside], weight[inside] * w[inside], box * box)
    image = image.reshape(box, box)
    if sigma_A > 0:
        image = ndimage.gaussian_filter(image, sigma_A / pixel_size, mode="constant")
    return image.astype(np.float32)


def electron_wavelength(voltage_kv):
    """Relativistic electron wavelength in Angstrom (0.0197 A at 300 kV)."""
    volts = voltage_kv * 1e3
    return 12.2643 / np.sqrt(volts * (1 + 0.978466e-6 * volts))


def ctf(shape, pixel_size, defocus_um, voltage_kv=300, cs_mm=2.7, amplitude_contrast=0.07,
        b_factor=0.0):
    """Contrast transfer function on the unshifted FFT grid of a 2D image of ``shape``.

    chi = pi lambda df k^2 - pi/2 Cs lambda^3 k^4 and
    CTF = -(sqrt(1 - A^2) sin(chi) + A cos(chi)) exp(-B k^2 / 4), k in 1/Angstrom.
    Positive defocus is underfocus; then the CTF is negative at low frequency (it is -A
    at k = 0), so the positive projected potential of protein is imaged dark.
    """
    wavelength = electron_wavelength(voltage_kv)
    defocus = defocus_um * 1e4
    cs = cs_mm * 1e7
    ky = np.fft.fftfreq(shape[0], d=pixel_size)[:, None]
    kx = np.fft.fftfreq(shape[1], d=pixel_size)[None, :]
    k2 = kx**2 + ky**2
    chi = np.pi * wavelength * defocus * k2 - 0.5 * np.pi * cs * wavelength**3 * k2**2
    a = amplitude_contrast
    return -(np.sqrt(1 - a**2) * np.sin(chi) + a * np.cos(chi)) * np.exp(-b_factor * k2 / 4)


def apply_ctf(image, ctf):
    """Multiply a 2D image by ``ctf`` (from :func:`ctf`, unshifted layout) in Fourier space."""
    if np.shape(image) != np.shape(ctf):
        raise ValueError(f"image shape {np.shape(image)} differs from CTF shape {np.shape(ctf)}")
    return np.fft.ifft2(np.fft.fft2(image) * ctf).real.astype(np.float32)


def _place_particles(shape, box, radius, n_particles, rng, attempts=200):
    """Top-left corners of particle boxes inside the image, avoiding overlap when possible.

    Each particle tries ``attempts`` random spots for one whose centre is at least two
    radii from every other centre; when none is found the last spot is used (overlap).
    """
    corners = []
    for _ in range(n_particles):
        for _ in range(attempts):
            corner = rng.integers(0, (shape[0] - box + 1, shape[1] - box + 1))
            if all(np.hypot(*(corner - c)) >= 2 * radius for c in corners):
                break
        corners.append(corner)
    return np.array(corners, dtype=np.int64).reshape(-1, 2)


def simulate_micrograph(atoms, shape=(1024, 1024), n_particles=40, pixel_size=1.5,
                        defocus_um=1.5, snr=0.1, b_factor=50.0, seed=0, pair=False,
                        sigma_A=1.0, voltage_kv=300, cs_mm=2.7, amplitude_contrast=0.07, noise_lag1=0.0):
    """Simulate a micrograph of randomly placed, randomly oriented copies of a molecule.

    ``atoms`` is a PDB/mmCIF path or a (coords, atomic_numbers) pair. Returns a dict:
    ``clean`` (CTF-modulated projection, float32 (H, W), mean 0 std 1), ``noisy`` (clean
    plus noise at ``snr``: white, or correlated with ``noise_lag1`` > 0, see `correlated_noise`),
    with ``pair`` also ``noisy_b`` (an independent noise
    draw of the same SNR, like the even/odd frame sums of a movie), and ``positions``
    (n_particles, 2) particle centres as (row, col) pixels. Same seed, same output.
    """
    if n_particles < 1:
        raise ValueError(f"n_particles must be at least 1, got {n_particles}")
    coords, z = read_atoms(atoms) if isinstance(atoms, (str, Path)) else atoms
    coords = np.asarray(coords, dtype=np.float64)
    radius = np.linalg.norm(coords - coords.mean(axis=0), axis=1).max() / pixel_size
    # Room for the molecule in any orientation plus its Gaussian tails.
    box = 2 * int(np.ceil(radius + 4 * sigma_A / pixel_size)) + 2
    if box > min(shape):
        raise ValueError(f"a particle needs a {box}-pixel box, larger than the image {shape}")
    rng = np.random.default_rng(seed)
    corners = _place_particles(shape, box, radius, n_particles, rng)
    projection = np.zeros(shape, dtype=np.float32)
    for r, c in corners:
        projection[r:r + box, c:c + box] += project_atoms(
            coords, z, pixel_size, box, sigma_A=sigma_A, rng=rng)
    # Zero-pad so the CTF fringes of edge particles do not wrap around to the far side.
    padded = np.pad(projection, box // 2)
    transfer = ctf(padded.shape, pixel_size, defocus_um, voltage_kv, cs_mm,
                   amplitude_contrast, b_factor)
    clean = apply_ctf(padded, transfer)[box // 2:-(box // 2), box // 2:-(box // 2)]
    clean = ((clean - clean.mean()) / clean.std()).astype(np.float32)
    result = {"clean": clean, "noisy": construct_image_with_SNR(clean, snr, rng, noise_lag1),
              "positions": corners + box // 2}
    if pair:
        result["noisy_b"] = construct_image_with_SNR(clean, snr, rng, noise_lag1)
    return result


# ---------------------------------------------------------------- counting-detector movies

ICE_MEAN_FREE_PATH_NM = 350.0  # inelastic mean free path of 300 kV electrons in vitreous ice, about
# Detector settings of simulate_movie, from white noise to that of a motion-corrected, Fourier-binned
# super-resolution micrograph; the noise's lag-1 autocorrelation they give (tests/test_synthetic.py).
DETECTORS = {
    "white": {},
    "lag0.35": {"psf_sigma": 0.7, "drift_A": 0.7, "circular_crop": True},
    "lag0.55": {"psf_sigma": 1.2, "drift_A": 1.0, "circular_crop": True},
}

def fourier_crop(image, factor=2, circular=False):
    """Bin a 2D image by `factor` in Fourier space (keep the central 1/factor of the frequencies).

    Values are sums over factor x factor pixels (counts stay counts). circular=True also zeroes
    the frequencies beyond 0.5 cycles/pixel of the binned grid (the corners), as some
    motion-correction programs crop; the noise then loses power in the corners and correlates.
    """
    h, w = (n // factor for n in image.shape)
    spectrum = np.fft.fftshift(np.fft.fft2(image))
    top, left = image.shape[0] // 2 - h // 2, image.shape[1] // 2 - w // 2  # the DC stays at the centre
    cropped = np.fft.ifftshift(spectrum[top:top + h, left:left + w])
    if circular:
        fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
        cropped = cropped * (np.hypot(fy, fx) <= 0.5)
    return np.fft.ifft2(cropped).real  # mean F0 / (h w): factor^2 times the input's mean


def simulate_movie(atoms, shape=(512, 512), n_frames=40, dose_per_frame=1.0, pixel_size=1.5, snr=0.1,
                   psf_sigma=0.0, drift_A=0.0, interpolation_order=1, circular_crop=False, gain_error=0.0,
                   ice_nm=0.0, super_resolution=True, seed=0, **micrograph_options):
    """A micrograph as a counting detector and motion correction make it, from a movie.

    The clean image (`simulate_micrograph`, on the super-resolution grid at pixel_size / 2 when
    super_resolution) sets the electron intensity, dose_per_frame e/A^2 per frame times
    (1 + c * clean) with the contrast c that gives `snr` in the summed counts before the detector's
    blur (which takes more noise than signal away: the output's SNR is higher); ice of ice_nm
    nanometres removes the fraction 1 - exp(-ice_nm / ICE_MEAN_FREE_PATH_NM) of the electrons
    (inelastic, filtered out), so thicker ice gives fewer counts and a lower SNR. Each of
    n_frames frames: the specimen drifts (a random walk of drift_A Angstrom per frame); the
    electrons are counted (Poisson) on the detector grid, with a fixed per-pixel gain error
    (relative std gain_error, uncorrected); a charge spread of psf_sigma detector pixels (the
    detector MTF) blurs the counts; motion correction shifts the frame back with spline
    interpolation of `interpolation_order` (1: bilinear, which correlates neighbours). The
    aligned frames are summed and Fourier-cropped by 2 (`fourier_crop`, circular_crop: corners
    beyond 0.5 cycles/px zeroed).

    Returns float32 (H, W) arrays in counts per output pixel: clean (the expected micrograph,
    the same chain without counting noise), noisy (all frames), even and odd (sums of the
    even / odd frames; even + odd == noisy), and contrast. White noise for psf_sigma=0,
    drift_A=0 and a square crop; lag-1 autocorrelation grows with psf_sigma, the drift's
    interpolation and the circular crop.
    """
    if n_frames < 2 or dose_per_frame <= 0 or snr <= 0:
        raise ValueError(f"need n_frames >= 2, dose_per_frame > 0 and snr > 0; got {n_frames}, "
                         f"{dose_per_frame}, {snr}")
    factor = 2 if super_resolution else 1
    grid = (shape[0] * factor, shape[1] * factor)
    detector_pixel = pixel_size / factor
    rng = np.random.default_rng(seed)
    clean = simulate_micrograph(atoms, grid, pixel_size=detector_pixel, snr=1.0, seed=seed,
                                **micrograph_options)["clean"].astype(np.float64)
    counts_per_pixel = n_frames * dose_per_frame * pixel_size**2  # output pixel, whole movie
    contrast = np.sqrt(snr / counts_per_pixel)  # signal std / noise std = sqrt(snr)
    zero_loss = np.exp(-ice_nm / ICE_MEAN_FREE_PATH_NM)
    intensity = zero_loss * dose_per_frame * detector_pixel**2 * np.clip(1 + contrast * clean, 0, None)
    gain = np.clip(1 + gain_error * rng.normal(size=grid), 0, None) if gain_error else 1.0
    # Random walk in detector pixels, centred so that the mean position is the clean image's.
    steps = rng.normal(0, drift_A / detector_pixel / np.sqrt(2), (n_frames, 2))
    shifts = np.cumsum(steps, axis=0)
    shifts -= shifts.mean(axis=0)

    def detect(frame, shift):
        if psf_sigma > 0:
            frame = ndimage.gaussian_filter(frame, psf_sigma, mode="wrap")
        if drift_A:
            frame = ndimage.shift(frame, -shift, order=interpolation_order, mode="grid-wrap")
        return frame

    sums = [np.zeros(grid), np.zeros(grid)]
    expected = np.zeros(grid)
    for k in range(n_frames):
        frame_intensity = intensity
        if drift_A:
            frame_intensity = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(intensity), shifts[k])).real.clip(0)
        sums[k % 2] += detect(rng.poisson(frame_intensity) * gain, shifts[k])
        expected += detect(frame_intensity, shifts[k])  # the gain error is the detector's, not the specimen's
    out = {name: fourier_crop(x, factor, circular_crop).astype(np.float32) if factor > 1 else x.astype(np.float32)
           for name, x in (("clean", expected), ("even", sums[0]), ("odd", sums[1]))}
    out["noisy"] = out["even"] + out["odd"]
    out["contrast"] = float(contrast)
    return out
