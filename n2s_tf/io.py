"""Read and write images, image stacks and volumes (PNG, JPEG, TIFF, NPY, MRC).

Every reader returns an `Image`: float32 data, channels-last, plus what is needed to
write a result back in the input's own terms. For MRC files that means the header
facts cryo-EM software relies on (voxel size, origin, start indices, axis order, space
group, labels, extended header), so a denoised micrograph or tomogram opens in
ChimeraX, IMOD or RELION exactly where its input did. Writes are atomic: a temporary
file in the target folder, then `os.replace`.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import warnings
from dataclasses import dataclass

import mrcfile
import numpy as np
import tifffile
from PIL import Image as PILImage

from n2s_tf import files
from n2s_tf.errors import ImageFileError, one_line

PIL_EXTENSIONS = (".png", ".jpg", ".jpeg")
TIFF_EXTENSIONS = (".tif", ".tiff")
MRC_EXTENSIONS = (".mrc", ".mrcs", ".map", ".rec", ".st", ".ali")
SUPPORTED_EXTENSIONS = PIL_EXTENSIONS + TIFF_EXTENSIONS + (".npy",) + MRC_EXTENSIONS

# File name conventions of the field decide stack versus volume for 3D data:
# RELION particle stacks (.mrcs) and IMOD tilt series (.st raw, .ali aligned) are stacks
# of 2D images; maps (.map) and IMOD reconstructions (.rec) are volumes.
STACK_EXTENSIONS = (".mrcs", ".st", ".ali")
VOLUME_EXTENSIONS = (".map", ".rec")

MRC_MODES = (0, 1, 2, 6, 12)  # int8, int16, float32, uint16, float16
MMAP_THRESHOLD_BYTES = 256 * 2**20
# Big arrays are converted, written and summarized over slabs of their first axis of about
# this many bytes in float64, so that no full-size temporary copy is made.
SLAB_BYTES = 64 * 2**20
DENOISED_LABEL = "n2s_tf denoised"


@dataclass
class Image:
    """Pixel data and the facts needed to write a result back like the input.

    data: float32, channels-last: (H, W, C) for "image", (D, H, W, C) for "volume",
        (N, H, W, C) for "stack" (N independent 2D images).
    kind: "image", "volume" or "stack".
    source: the path it was read from.
    mrc: for MRC input, a dict with voxel_size (x, y, z) in Angstrom, origin (x, y, z),
        nxstart/nystart/nzstart, mapc/mapr/maps, ispg, mode, labels, extended_header
        (raw bytes) and exttyp; None for other formats. MRC data keep the file's own
        order (sections, rows, columns); mapc/mapr/maps say which of X, Y, Z those are.
    dtype: name of the numpy dtype stored in the file (e.g. "uint16").
    """

    data: np.ndarray
    kind: str
    source: str
    mrc: dict | None = None
    dtype: str = "float32"

    def __post_init__(self):
        expected = {"image": 3, "volume": 4, "stack": 4}
        if expected.get(self.kind) != self.data.ndim:
            raise ValueError(f"an Image of kind {self.kind!r} cannot hold data of shape {self.data.shape}")

    @property
    def ndim(self) -> int:
        """Number of spatial axes: 3 for a volume, 2 for an image or a stack of images."""
        return 3 if self.kind == "volume" else 2


def slabs(array, slab_bytes: int | None = None) -> list:
    """Slices of the first axis of `array` that cover it in pieces of about `slab_bytes`
    (default SLAB_BYTES) as float64."""
    per_row = max(1, math.prod(array.shape[1:]) * 8)
    step = max(1, (slab_bytes or SLAB_BYTES) // per_row)
    return [slice(start, min(start + step, len(array))) for start in range(0, len(array), step)]


def _extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _extension_kind(path: str) -> str | None:
    ext = _extension(path)
    return "stack" if ext in STACK_EXTENSIONS else "volume" if ext in VOLUME_EXTENSIONS else None


# ----------------------------------------------------------------------------- reading


def read_image(path, mmap: bool | None = None, as_kind: str | None = None) -> Image:
    """Read a PNG, JPEG, TIFF, NPY or MRC file (chosen by extension) as an `Image`.

    mmap: memory-map MRC, NPY and uncompressed TIFF files instead of reading them whole;
        None maps files over 256 MB. Either way the data are converted to float32 exactly
        once, into a writeable array in memory: the peak while reading is the file's data
        (mapped pages, which the system can drop) plus one float32 copy.
    as_kind: "volume" or "stack" decides what data with three spatial axes are, over
        the extension (.mrcs/.st/.ali stack, .map/.rec volume) and the MRC space group
        (ispg 0: stack, 1-230: volume); other 3D files default to volume. A 2D image
        read as_kind="stack" becomes a stack of one. For NPY, as_kind also says that a
        3D array is (D, H, W) rather than (H, W, C).
    Raises ImageFileError for missing, unsupported, corrupt or truncated files.
    """
    path = os.fspath(path)
    if as_kind not in (None, "volume", "stack"):
        raise ValueError(f"as_kind must be None, 'volume' or 'stack', not {as_kind!r}")
    ext = _extension(path)
    if ext not in SUPPORTED_EXTENSIONS:
        raise ImageFileError(f"cannot read '{path}': unsupported file type '{ext}' "
                             f"(supported: {', '.join(SUPPORTED_EXTENSIONS)})")
    if not os.path.isfile(path):
        reason = "is a directory" if os.path.isdir(path) else "no such file"
        raise ImageFileError(f"cannot read '{path}': {reason}")
    if mmap is None:
        mmap = os.path.getsize(path) > MMAP_THRESHOLD_BYTES
    try:
        if ext in MRC_EXTENSIONS:
            return _read_mrc(path, mmap, as_kind)
        if ext in TIFF_EXTENSIONS:
            return _read_tiff(path, mmap, as_kind)
        if ext == ".npy":
            return _read_npy(path, mmap, as_kind)
        return _read_pil(path, as_kind)
    except ImageFileError:
        raise
    except (ValueError, OSError, TypeError, EOFError) as error:
        raise ImageFileError(f"cannot read '{path}': {one_line(error)}") from error


def image_kind(path) -> str:
    """The kind `read_image` gives `path` ("image", "volume" or "stack"), from an MRC file's
    header alone (other formats are read)."""
    if _extension(path) not in MRC_EXTENSIONS:
        return read_image(path, mmap=True).kind
    with _open_mrc(path, mmap=True) as mrc:
        if int(mrc.header.nz) <= 1:
            return "image"
        return _extension_kind(path) or ("volume" if mrc.is_volume() else "stack")


def _make_image(path, array, has_channels, as_kind, file_kind=None, mrc=None) -> Image:
    """Give `array` its channel axis and decide its kind (see `read_image`)."""
    if array.dtype.kind not in "biuf":  # complex, strings, objects: no image of real values
        raise ImageFileError(f"cannot read '{path}': unsupported data type {array.dtype} "
                             f"(n2s_tf reads real-valued images)")
    data = np.array(array, dtype=np.float32)  # the single float32 copy, in memory (a map is let go)
    if not has_channels:
        data = data[..., None]
    spatial = data.ndim - 1
    if spatial == 2:
        if as_kind == "volume":
            raise ImageFileError(f"cannot read '{path}' as a volume: it holds one 2D image")
        kind = "stack" if as_kind == "stack" else "image"
        data = data[None] if kind == "stack" else data
    elif spatial == 3:
        kind = as_kind or _extension_kind(path) or file_kind or "volume"
    else:
        raise ImageFileError(f"cannot read '{path}': expected 2 or 3 spatial axes, got shape {array.shape}")
    return Image(data=data, kind=kind, source=path, mrc=mrc, dtype=array.dtype.name)


def _read_pil(path, as_kind) -> Image:
    """PNG/JPEG: gray -> 1 channel, RGB -> 3; alpha is dropped, palettes expanded."""
    with PILImage.open(path) as picture:
        if picture.mode in ("1", "LA", "La"):
            picture = picture.convert("L")
        elif picture.mode not in ("L", "RGB", "I", "I;16", "I;16B", "I;16L", "F"):
            picture = picture.convert("RGBA")  # palette, CMYK, YCbCr, RGBA...
        array = np.asarray(picture)
    if array.ndim == 3:
        array = array[..., :3]
    return _make_image(path, array, array.ndim == 3, as_kind)


def _read_tiff(path, mmap, as_kind) -> Image:
    """TIFF: 2D -> image, (Z, Y, X) -> volume (or stack), RGB samples -> channels."""
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        contiguous = mmap and series.dataoffset is not None  # uncompressed, in one block
        array = tifffile.memmap(path, series=0, mode="r") if contiguous else series.asarray()
        has_channels = series.axes.endswith("S")
        if has_channels and tiff.pages[0].photometric == tifffile.PHOTOMETRIC.RGB:
            array = array[..., :3]  # drop alpha, as for PNG
    return _make_image(path, array, has_channels, as_kind)


def _read_npy(path, mmap, as_kind) -> Image:
    """NPY: (H, W); (H, W, C) when the last axis is <= 4, else (D, H, W); (D, H, W, C)."""
    array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    has_channels = array.ndim == 4 or (array.ndim == 3 and array.shape[-1] <= 4 and as_kind is None)
    return _make_image(path, array, has_channels, as_kind)


def _read_mrc(path, mmap, as_kind) -> Image:
    with _open_mrc(path, mmap) as mrc:
        header = mrc.header
        mode = int(header.mode)
        if mode not in MRC_MODES:
            raise ImageFileError(f"cannot read '{path}': MRC mode {mode} is not supported "
                                 f"(n2s_tf reads modes {', '.join(map(str, MRC_MODES))})")
        if mrc.is_volume_stack():
            raise ImageFileError(f"cannot read '{path}': volume stacks (ispg {int(header.ispg)}) are not supported")
        voxel = mrc.voxel_size
        facts = dict(
            voxel_size=(float(voxel.x), float(voxel.y), float(voxel.z)),
            origin=(float(header.origin.x), float(header.origin.y), float(header.origin.z)),
            nxstart=int(header.nxstart), nystart=int(header.nystart), nzstart=int(header.nzstart),
            mapc=int(header.mapc), mapr=int(header.mapr), maps=int(header.maps),
            ispg=int(header.ispg),
            mode=mode,
            labels=[label for label in mrc.get_labels() if label.strip()],
            extended_header=mrc.extended_header.tobytes(),
            exttyp=bytes(header.exttyp).decode("latin-1"),
        )
        data = mrc.data
        if data.ndim == 3 and data.shape[0] == 1:
            data = data[0]  # one section is a 2D image, whatever the space group says
        file_kind = "volume" if mrc.is_volume() else "stack"
        return _make_image(path, data, False, as_kind, file_kind, facts)


def _open_mrc(path, mmap):
    """Open an MRC file strictly; if that fails, accept it in permissive mode with a
    warning when the data can still be read (e.g. a missing map ID or a bad machine
    stamp from old software), and otherwise raise ImageFileError with the reason."""
    opener = mrcfile.mmap if mmap else mrcfile.open
    try:
        return opener(path, permissive=False)
    except ValueError as strict_error:
        reason = one_line(strict_error)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mrc = opener(path, permissive=True)
        except (ValueError, OSError):
            raise ImageFileError(f"cannot read '{path}': {reason}") from strict_error
        if mrc.data is None:
            reason = _mrc_size_problem(path, mrc.header) or reason
            mrc.close()
            raise ImageFileError(f"cannot read '{path}': {reason}") from strict_error
        warnings.warn(f"'{path}' is not a valid MRC2014 file ({reason}); read it in permissive mode",
                      RuntimeWarning, stacklevel=4)
        return mrc


def _mrc_size_problem(path, header) -> str | None:
    """'truncated data (...)' when the file is shorter than its header says, else None."""
    try:
        dtype = mrcfile.utils.data_dtype_from_header(header)
    except ValueError:
        return None
    shape = mrcfile.utils.data_shape_from_header(header)
    expected = header.nbytes + int(header.nsymbt) + dtype.itemsize * math.prod(shape)
    found = os.path.getsize(path)
    return f"truncated data (expected {expected} bytes, found {found})" if found < expected else None


# ----------------------------------------------------------------------------- writing


@contextlib.contextmanager
def _atomic_target(path, overwrite):
    """files.atomic_path for an image: refuses an existing file unless `overwrite`, and a
    failed write is an ImageFileError naming the file."""
    if os.path.exists(path) and not overwrite:
        raise ImageFileError(f"cannot write '{path}': file exists (pass overwrite=True to replace it)")
    try:
        with files.atomic_path(path) as temporary:
            yield temporary
    except (OSError, ValueError, TypeError) as error:
        if isinstance(error, ImageFileError):
            raise
        raise ImageFileError(f"cannot write '{path}': {one_line(error)}") from error


def _to_uint8(array, low, high) -> np.ndarray:
    """Map low..high linearly onto 0..255, rounded and clipped (all zeros if high <= low)."""
    if not high > low:
        return np.zeros(array.shape, np.uint8)
    scaled = (np.asarray(array, np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def write_image(path, data, like: Image | None = None, keep_extended_header: bool = False,
                overwrite: bool = False, label: str = DENOISED_LABEL) -> None:
    """Write channels-last `data` to `path`, in the format its extension names.

    data: (H, W), (H, W, C), or (D|N, H, W, C); 4D data are a stack when the extension
        says so (.mrcs/.st/.ali) or `like` is a stack, else a volume.
    TIFF and NPY store float32 values as they are (no clipping). PNG and JPEG store
    8 bits: when `like` (or `data` itself) is 8-bit the values are rounded and clipped
    to 0..255, otherwise data.min()..data.max() is mapped linearly onto 0..255 (all
    channels together, so colours keep their balance).
    MRC stores float32 (mode 2). When `like` came from an MRC file, its voxel size,
    origin, nxstart/nystart/nzstart, mapc/mapr/maps, volume space group and labels are
    copied, `label` is appended, and the extended header (with exttyp) only when
    keep_extended_header; dmin/dmax/dmean/rms are recomputed from the data.
    A channel axis of 1 is dropped for every format: a 2D gray image is stored as (H, W)
    (an NPY volume keeps (D, H, W, 1), which reads back unambiguously); MRC takes one
    channel only. float32 data are written without a copy in memory (MRC through a memory
    map of the file). Refuses to replace an existing file unless overwrite=True. Raises
    ImageFileError.
    """
    path = os.fspath(path)
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim not in (3, 4):
        raise ImageFileError(f"cannot write '{path}': expected (H, W[, C]) or (D, H, W, C) data, got {data.shape}")
    ext = _extension(path)
    if ext not in SUPPORTED_EXTENSIONS:
        raise ImageFileError(f"cannot write '{path}': unsupported file type '{ext}' "
                             f"(supported: {', '.join(SUPPORTED_EXTENSIONS)})")
    if ext in PIL_EXTENSIONS:
        _check(path, data.ndim == 3 and data.shape[-1] in (1, 3, 4),
               f"PNG and JPEG hold one 2D image with 1, 3 or 4 channels, got {data.shape}")
        eight_bit = data.dtype == np.uint8 or (like is not None and like.dtype == "uint8")
        low, high = (0, 255) if eight_bit else (data.min(), data.max())
        pixels = _to_uint8(data, low, high)
        with _atomic_target(path, overwrite) as temporary:
            PILImage.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(
                temporary, quality=95)
    elif ext in TIFF_EXTENSIONS:
        channels = data.shape[-1]
        _check(path, channels in (1, 3), f"TIFF is written with 1 or 3 channels, got {channels} (use .npy)")
        with _atomic_target(path, overwrite) as temporary:
            values = data.astype(np.float32, copy=False)
            if channels == 1:
                tifffile.imwrite(temporary, values[..., 0], photometric="minisblack")
            else:
                tifffile.imwrite(temporary, values, photometric="rgb")
    elif ext == ".npy":
        values = data.astype(np.float32, copy=False)
        with _atomic_target(path, overwrite) as temporary:
            np.save(temporary, values[..., 0] if values.ndim == 3 and values.shape[-1] == 1 else values)
    else:
        _check(path, data.shape[-1] == 1, f"MRC holds one channel, got {data.shape[-1]}")
        stack = data.ndim == 4 and (_extension_kind(path) or (like.kind if like else None)) == "stack"
        with _atomic_target(path, overwrite) as temporary:
            _write_mrc(temporary, data[..., 0].astype(np.float32, copy=False), stack,
                       like.mrc if like is not None else None, keep_extended_header, label)


def _check(path, condition, reason):
    if not condition:
        raise ImageFileError(f"cannot write '{path}': {reason}")


def _write_mrc(path, values, stack, facts, keep_extended_header, label):
    """Write float32 `values` (2D or 3D) as mode 2, with header facts from the input. mrcfile
    writes the header of a file of the full size; the data then go slab by slab through
    ordinary writes, and dmin/dmax/dmean/rms are computed slab by slab too (in float64), so
    a big image needs no second copy in memory (writing through a memory map of the file
    would hold its pages as well, as much again as the image)."""
    extended = facts is not None and keep_extended_header and bool(facts["extended_header"])
    with mrcfile.new_mmap(path, values.shape, mrc_mode=2,
                          extended_header=np.frombuffer(facts["extended_header"], dtype="V1") if extended else None,
                          exttyp=facts["exttyp"].encode("latin-1") if extended else None) as mrc:
        offset, dtype = mrc.header.nbytes + mrc.extended_header.nbytes, mrc.data.dtype  # the pages stay untouched
        _set_header_stats(mrc, values)
        if values.ndim == 3:
            # Before the voxel size: it is stored as cella = voxel size * (mx, my, mz),
            # and set_volume / set_image_stack choose mz.
            if stack:
                mrc.set_image_stack()
            else:
                mrc.set_volume()
        labels = []
        if facts is not None:
            header = mrc.header
            mrc.voxel_size = facts["voxel_size"]
            header.origin = facts["origin"]
            for field in ("nxstart", "nystart", "nzstart", "mapc", "mapr", "maps"):
                header[field] = facts[field]
            if mrc.is_volume() and 1 <= facts["ispg"] <= 230:
                header.ispg = facts["ispg"]  # keep the map's crystallographic space group
            labels = list(facts["labels"])
        # MRC holds 10 labels; when full, drop the oldest after the first (the creator's).
        labels = (labels[:1] + labels[-8:] if len(labels) > 9 else labels) + [label]
        mrc.header.label = b""
        mrc.header.nlabl = 0
        for text in labels:
            mrc.add_label(text)
    with open(path, "r+b") as f:
        f.seek(offset)
        for rows in slabs(values):
            f.write(memoryview(np.ascontiguousarray(values[rows], dtype=dtype)))


def _set_header_stats(mrc, values):
    """dmin, dmax, dmean and rms (the std, as mrcfile and IMOD compute it) of `values`."""
    if not values.size:
        mrc.reset_header_stats()
        return
    low, high, total = np.inf, -np.inf, 0.0
    for rows in slabs(values):
        low, high = min(low, values[rows].min()), max(high, values[rows].max())
        total += values[rows].sum(dtype=np.float64)
    mean = total / values.size
    squares = 0.0
    for rows in slabs(values):
        deviation = np.array(values[rows], np.float64).ravel()
        deviation -= mean
        squares += float(deviation @ deviation)
    header = mrc.header
    header.dmin, header.dmax, header.dmean = low, high, mean
    header.rms = np.sqrt(squares / values.size)


def write_preview(path, data, sigma: float = 3.0, overwrite: bool = False) -> None:
    """Write an 8-bit PNG for a quick look, mapping mean - sigma*std .. mean + sigma*std
    onto 0..255 (the contrast cryo-EM viewers use). Takes the middle slice of a volume
    or stack and the first channel. Written atomically; replaces an existing file only
    when overwrite=True."""
    array = np.asarray(data, dtype=np.float32)
    if array.ndim == 4:
        array = array[array.shape[0] // 2]
    if array.ndim == 3:
        array = array[..., 0]
    if array.ndim != 2:
        raise ImageFileError(f"cannot write '{path}': a preview needs (H, W[, C]) or (D, H, W, C) data, "
                             f"got {np.shape(data)}")
    mean, std = float(array.mean()), float(array.std())
    pixels = _to_uint8(array, mean - sigma * std, mean + sigma * std)
    with _atomic_target(os.fspath(path), overwrite) as temporary:
        PILImage.fromarray(pixels).save(temporary, format="PNG")


# ----------------------------------------------------------------------------- listing


def _is_supported_file(path) -> bool:
    return os.path.isfile(path) and _extension(path) in SUPPORTED_EXTENSIONS


def list_inputs(pattern) -> list[str]:
    """Supported image files named by a file, a folder (its files, sorted, hidden ones
    skipped, not recursive) or a glob pattern (sorted). Raises ImageFileError if none."""
    pattern = os.fspath(pattern)
    if os.path.isfile(pattern):
        if not _is_supported_file(pattern):
            raise ImageFileError(f"cannot read '{pattern}': unsupported file type '{_extension(pattern)}'")
        return [pattern]
    if os.path.isdir(pattern):
        names = sorted(name for name in os.listdir(pattern) if not name.startswith("."))
        candidates = [os.path.join(pattern, name) for name in names]
    else:
        candidates = sorted(glob.glob(pattern))
    files = [path for path in candidates if _is_supported_file(path)]
    if not files:
        raise ImageFileError(f"no supported image files in '{pattern}' "
                             f"(supported: {', '.join(SUPPORTED_EXTENSIONS)})")
    return files


def paired_files(dir_a, dir_b) -> list[tuple[str, str]]:
    """Pairs of files with the same name in two folders (even/odd halves, noisy/clean),
    sorted by name. Raises ImageFileError if a name is in only one folder, or if none."""
    for folder in (dir_a, dir_b):
        if not os.path.isdir(folder):
            raise ImageFileError(f"cannot read '{folder}': not a folder")
    names_a, names_b = ({os.path.basename(path) for path in list_inputs(folder)} for folder in (dir_a, dir_b))
    for names, others, folder, other in ((names_a, names_b, dir_a, dir_b), (names_b, names_a, dir_b, dir_a)):
        unpaired = sorted(names - others)
        if unpaired:
            more = f" (and {len(unpaired) - 1} more unpaired files)" if len(unpaired) > 1 else ""
            raise ImageFileError(f"'{unpaired[0]}' is in '{folder}' but not in '{other}'{more}")
    return [(os.path.join(dir_a, name), os.path.join(dir_b, name)) for name in sorted(names_a)]
