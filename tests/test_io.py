"""Tests of n2s_tf.io: formats, MRC header facts, errors, atomic writes, file lists."""

import io as text_io
import os

import mrcfile
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from n2s_tf import io
from n2s_tf.errors import ImageFileError
from n2s_tf.io import Image

EMD_3197 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "EMD-3197.map")


def ramp(shape, dtype=np.float32, low=-3.0):
    """Distinct, partly negative values."""
    return (np.arange(np.prod(shape), dtype=np.float64).reshape(shape) * 0.25 + low).astype(dtype)


def make_mrc(path, data, ispg=None, voxel_size=None, **header):
    with mrcfile.new(str(path), overwrite=True) as mrc:
        mrc.set_data(data)
        if ispg is not None:
            mrc.header.ispg = ispg
            mrc.update_header_from_data()
        if voxel_size is not None:
            mrc.voxel_size = voxel_size
        for name, value in header.items():
            mrc.header[name] = value
    return str(path)


def files_in(folder):
    return sorted(os.listdir(folder))


# ----------------------------------------------------------------------------- PNG, TIFF, NPY


def test_png_uint8_gray_round_trip(tmp_path):
    pixels = (np.arange(6 * 7).reshape(6, 7) * 5).astype(np.uint8)
    PILImage.fromarray(pixels).save(tmp_path / "in.png")
    image = io.read_image(tmp_path / "in.png")
    assert (image.kind, image.dtype, image.data.dtype, image.data.shape) == ("image", "uint8", np.float32, (6, 7, 1))
    np.testing.assert_array_equal(image.data[..., 0], pixels)
    io.write_image(tmp_path / "out.png", image.data + 0.4, like=image)  # rounds back
    np.testing.assert_array_equal(np.asarray(PILImage.open(tmp_path / "out.png")), pixels)


def test_png_rgb_and_rgba(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (5, 6, 4), dtype=np.uint8)
    PILImage.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    image = io.read_image(tmp_path / "rgba.png")
    assert image.data.shape == (5, 6, 3)  # alpha dropped
    np.testing.assert_array_equal(image.data, rgba[..., :3])
    io.write_image(tmp_path / "rgb.png", image.data, like=image)
    np.testing.assert_array_equal(io.read_image(tmp_path / "rgb.png").data, rgba[..., :3])


def test_png_from_float_maps_min_max(tmp_path):
    data = np.array([[-1.0, 0.0], [1.0, 3.0]], np.float32)[..., None]
    io.write_image(tmp_path / "x.png", data)
    np.testing.assert_array_equal(np.asarray(PILImage.open(tmp_path / "x.png")), [[0, 64], [128, 255]])


def test_png_clips_when_like_is_8bit(tmp_path):
    like = Image(np.zeros((1, 3, 1), np.float32), "image", "a.png", dtype="uint8")
    io.write_image(tmp_path / "x.png", np.array([[[-7.0], [100.6], [300.0]]]), like=like)
    np.testing.assert_array_equal(np.asarray(PILImage.open(tmp_path / "x.png")), [[0, 101, 255]])


def test_tiff_float32_keeps_values_unclipped(tmp_path):
    data = ramp((9, 8, 1))
    data[0, 0, 0] = -1234.5
    data[1, 1, 0] = 1e6
    io.write_image(tmp_path / "x.tif", data)
    assert tifffile.imread(tmp_path / "x.tif").shape == (9, 8)  # channel of 1 dropped
    image = io.read_image(tmp_path / "x.tif")
    assert (image.kind, image.dtype) == ("image", "float32")
    np.testing.assert_array_equal(image.data, data)


def test_tiff_3d_is_a_volume_or_a_stack_on_request(tmp_path):
    volume = ramp((4, 5, 6, 1))
    io.write_image(tmp_path / "v.tiff", volume)
    image = io.read_image(tmp_path / "v.tiff")
    assert (image.kind, image.ndim) == ("volume", 3)
    np.testing.assert_array_equal(image.data, volume)
    stack = io.read_image(tmp_path / "v.tiff", as_kind="stack")
    assert (stack.kind, stack.ndim, stack.data.shape) == ("stack", 2, (4, 5, 6, 1))


def test_tiff_rgb_is_channels(tmp_path):
    rgb = ramp((4, 5, 3))
    io.write_image(tmp_path / "c.tif", rgb)
    image = io.read_image(tmp_path / "c.tif")
    assert (image.kind, image.data.shape) == ("image", (4, 5, 3))
    np.testing.assert_array_equal(image.data, rgb)


@pytest.mark.parametrize("shape, kind, stored", [
    ((6, 7), "image", (6, 7, 1)),
    ((6, 7, 3), "image", (6, 7, 3)),
    ((5, 6, 7), "volume", (5, 6, 7, 1)),
    ((5, 6, 7, 2), "volume", (5, 6, 7, 2)),
])
def test_npy_shapes(tmp_path, shape, kind, stored):
    np.save(tmp_path / "a.npy", ramp(shape, np.float64))
    image = io.read_image(tmp_path / "a.npy")
    assert (image.kind, image.data.shape, image.dtype) == (kind, stored, "float64")
    np.testing.assert_array_equal(image.data.reshape(shape), ramp(shape))


def test_npy_as_kind_reads_small_last_axis_as_space(tmp_path):
    np.save(tmp_path / "a.npy", ramp((6, 7, 3)))
    image = io.read_image(tmp_path / "a.npy", as_kind="volume")
    assert (image.kind, image.data.shape) == ("volume", (6, 7, 3, 1))


def test_npy_round_trip_keeps_float32(tmp_path):
    data = ramp((3, 4, 5, 1))
    io.write_image(tmp_path / "a.npy", data)
    stored = np.load(tmp_path / "a.npy")
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, data)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.npy", mmap=True).data, data)


# ----------------------------------------------------------------------------- MRC reading


@pytest.mark.parametrize("mode, dtype", [(0, np.int8), (1, np.int16), (2, np.float32), (6, np.uint16),
                                         (12, np.float16)])
def test_mrc_modes_read_as_float32(tmp_path, mode, dtype):
    values = np.arange(-20, 20).reshape(5, 8) if np.dtype(dtype).kind in "if" else np.arange(40).reshape(5, 8) * 1000
    data = values.astype(dtype)
    path = make_mrc(tmp_path / "m.mrc", data)
    with mrcfile.open(path) as mrc:
        assert int(mrc.header.mode) == mode
    for mmap in (False, True):
        image = io.read_image(path, mmap=mmap)
        assert (image.kind, image.dtype, image.mrc["mode"]) == ("image", np.dtype(dtype).name, mode)
        assert image.data.dtype == np.float32 and image.data.flags.writeable
        assert type(image.data) is np.ndarray  # not a memory map of the file
        np.testing.assert_array_equal(image.data[..., 0], data.astype(np.float32))


def test_mrc_stack_versus_volume(tmp_path):
    data = ramp((3, 4, 5))
    stack = io.read_image(make_mrc(tmp_path / "s.mrcs", data, ispg=1))  # the extension decides
    assert (stack.kind, stack.ndim, stack.data.shape) == ("stack", 2, (3, 4, 5, 1))
    volume = io.read_image(make_mrc(tmp_path / "v.map", data, ispg=0))
    assert (volume.kind, volume.ndim) == ("volume", 3)
    assert io.read_image(make_mrc(tmp_path / "a.mrc", data, ispg=0)).kind == "stack"  # the header decides
    assert io.read_image(make_mrc(tmp_path / "b.mrc", data, ispg=1)).kind == "volume"
    assert io.read_image(tmp_path / "a.mrc", as_kind="volume").kind == "volume"
    single = io.read_image(make_mrc(tmp_path / "one.mrc", data[:1], ispg=1))
    assert (single.kind, single.data.shape) == ("image", (4, 5, 1))
    np.testing.assert_array_equal(volume.data[..., 0], data)


def test_mrc_header_facts(tmp_path):
    path = make_mrc(tmp_path / "v.map", ramp((3, 4, 5)), ispg=1, voxel_size=(0.854, 0.854, 1.5),
                    nxstart=-2, nystart=3, nzstart=7, mapc=2, mapr=1, maps=3)
    facts = io.read_image(path).mrc
    np.testing.assert_allclose(facts["voxel_size"], (0.854, 0.854, 1.5), rtol=1e-6)
    assert (facts["nxstart"], facts["nystart"], facts["nzstart"]) == (-2, 3, 7)
    assert (facts["mapc"], facts["mapr"], facts["maps"], facts["ispg"], facts["mode"]) == (2, 1, 3, 1, 2)


# ----------------------------------------------------------------------------- MRC writing


def make_source(tmp_path, name="in.map"):
    data = ramp((4, 6, 5))
    path = make_mrc(tmp_path / name, data, ispg=1, voxel_size=(0.854, 0.854, 0.854),
                    origin=(10.5, -20.25, 30.0), nxstart=-2, nystart=5, nzstart=1, mapc=2, mapr=1, maps=3)
    with mrcfile.open(path, mode="r+") as mrc:
        mrc.header.label = b""
        mrc.header.nlabl = 0
        mrc.add_label("recorded on a Krios")
        mrc.set_extended_header(np.frombuffer(bytes(range(256)) * 2, dtype="V1"))
        mrc.header.exttyp = b"FEI1"
    return io.read_image(path)


def test_mrc_write_back_keeps_header_and_validates(tmp_path):
    source = make_source(tmp_path)
    denoised = source.data * 2.0 - 1.0
    out = tmp_path / "out.map"
    io.write_image(out, denoised, like=source)
    report = text_io.StringIO()
    assert mrcfile.validate(str(out), print_file=report), report.getvalue()
    assert "File appears to be valid" in report.getvalue()
    with mrcfile.open(out) as mrc:
        header = mrc.header
        assert int(header.mode) == 2 and mrc.is_volume() and int(header.ispg) == 1
        np.testing.assert_allclose([mrc.voxel_size.x, mrc.voxel_size.y, mrc.voxel_size.z], 0.854, rtol=1e-6)
        assert (float(header.origin.x), float(header.origin.y), float(header.origin.z)) == (10.5, -20.25, 30.0)
        assert (int(header.nxstart), int(header.nystart), int(header.nzstart)) == (-2, 5, 1)
        assert (int(header.mapc), int(header.mapr), int(header.maps)) == (2, 1, 3)
        assert mrc.get_labels() == ["recorded on a Krios", "n2s_tf denoised"]
        assert int(header.nsymbt) == 0 and mrc.extended_header.nbytes == 0
        values = denoised[..., 0].astype(np.float64)
        np.testing.assert_array_equal(mrc.data, denoised[..., 0])
        assert float(header.dmin) == values.min() and float(header.dmax) == values.max()
        np.testing.assert_allclose(float(header.dmean), values.mean(), rtol=1e-6)
        np.testing.assert_allclose(float(header.rms), values.std(), rtol=1e-6)
    assert io.read_image(out).mrc["voxel_size"] == source.mrc["voxel_size"]


def test_mrc_extended_header_kept_only_when_asked(tmp_path):
    source = make_source(tmp_path)
    io.write_image(tmp_path / "keep.map", source.data, like=source, keep_extended_header=True)
    report = text_io.StringIO()
    assert mrcfile.validate(str(tmp_path / "keep.map"), print_file=report), report.getvalue()
    with mrcfile.open(tmp_path / "keep.map") as mrc:
        assert mrc.extended_header.tobytes() == bytes(range(256)) * 2
        assert mrc.header.exttyp == b"FEI1"
        np.testing.assert_array_equal(mrc.data, source.data[..., 0])


def test_mrc_write_stack_and_image(tmp_path):
    stack = Image(ramp((3, 4, 5, 1)), "stack", "s.mrcs")
    io.write_image(tmp_path / "s.mrc", stack.data, like=stack)
    with mrcfile.open(tmp_path / "s.mrc") as mrc:
        assert mrc.is_image_stack() and mrc.data.shape == (3, 4, 5)
    assert io.read_image(tmp_path / "s.mrc").kind == "stack"
    io.write_image(tmp_path / "i.mrc", ramp((4, 5)))
    image = io.read_image(tmp_path / "i.mrc")
    assert (image.kind, image.data.shape) == ("image", (4, 5, 1))


def test_mrc_refuses_channels(tmp_path):
    with pytest.raises(ImageFileError, match="one channel"):
        io.write_image(tmp_path / "x.mrc", ramp((4, 5, 3)))
    assert files_in(tmp_path) == []


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("mmap", [False, True])
def test_truncated_mrc_is_one_line_error_naming_the_file(tmp_path, mmap):
    path = make_mrc(tmp_path / "cut.mrc", ramp((16, 16)))
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size - 100)
    with pytest.raises(ImageFileError) as caught:
        io.read_image(path, mmap=mmap)
    message = str(caught.value)
    assert "cut.mrc" in message and "\n" not in message
    assert f"truncated data (expected {size} bytes, found {size - 100})" in message


def test_corrupt_files_are_errors(tmp_path):
    (tmp_path / "junk.mrc").write_bytes(b"not an mrc" * 200)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff" * 10)
    for name in ("junk.mrc", "junk.png", "junk.tif"):
        with pytest.raises(ImageFileError, match=name) as caught:
            io.read_image(tmp_path / name)
        assert "\n" not in str(caught.value)


def test_bad_machine_stamp_is_read_permissively_with_a_warning(tmp_path):
    data = ramp((4, 5))
    path = make_mrc(tmp_path / "old.mrc", data)
    with open(path, "r+b") as handle:
        handle.seek(212)  # machine stamp
        handle.write(b"\0\0\0\0")
    with pytest.warns(RuntimeWarning, match="old.mrc"):
        image = io.read_image(path)
    np.testing.assert_array_equal(image.data[..., 0], data)


def test_missing_file_and_bad_extension(tmp_path):
    with pytest.raises(ImageFileError, match="no such file"):
        io.read_image(tmp_path / "absent.mrc")
    (tmp_path / "x.bmp").write_bytes(b"BM")
    with pytest.raises(ImageFileError, match=r"unsupported file type '\.bmp'"):
        io.read_image(tmp_path / "x.bmp")
    with pytest.raises(ImageFileError, match="unsupported file type"):
        io.write_image(tmp_path / "y.bmp", ramp((4, 5)))


def test_unsupported_mrc_mode(tmp_path):
    path = make_mrc(tmp_path / "c.mrc", (ramp((4, 4)) + 1j).astype(np.complex64))
    with pytest.raises(ImageFileError, match="MRC mode 4 is not supported"):
        io.read_image(path)


# ----------------------------------------------------------------------------- atomic writes


def test_write_leaves_no_temporary_and_refuses_overwrite(tmp_path):
    io.write_image(tmp_path / "a.mrc", ramp((4, 5)))
    assert files_in(tmp_path) == ["a.mrc"]
    with pytest.raises(ImageFileError, match="a.mrc.*exists"):
        io.write_image(tmp_path / "a.mrc", ramp((4, 5)) + 1)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.mrc").data[..., 0], ramp((4, 5)))
    io.write_image(tmp_path / "a.mrc", ramp((4, 5)) + 1, overwrite=True)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.mrc").data[..., 0], ramp((4, 5)) + 1)
    assert files_in(tmp_path) == ["a.mrc"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    io.write_image(tmp_path / "a.tif", ramp((4, 5)))

    def crash(path, data, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", crash)
    with pytest.raises(ImageFileError, match="cannot write '.*a.tif': disk full"):
        io.write_image(tmp_path / "a.tif", ramp((4, 5)) + 1, overwrite=True)
    assert files_in(tmp_path) == ["a.tif"]
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.tif").data[..., 0], ramp((4, 5)))


def test_preview_maps_three_sigma(tmp_path):
    volume = np.zeros((3, 4, 4, 1), np.float32)
    volume[1] = np.array([-1.0, 1.0] * 8).reshape(4, 4, 1)  # middle slice: mean 0, std 1
    io.write_preview(tmp_path / "p.png", volume)
    # -1 and 1 map to 255 * (-1 + 3) / 6 = 85 and 255 * (1 + 3) / 6 = 170
    np.testing.assert_array_equal(np.asarray(PILImage.open(tmp_path / "p.png")),
                                  np.array([85, 170] * 8).reshape(4, 4))
    with pytest.raises(ImageFileError, match="exists"):
        io.write_preview(tmp_path / "p.png", volume)
    io.write_preview(tmp_path / "p.png", volume, overwrite=True)
    assert files_in(tmp_path) == ["p.png"]


# ----------------------------------------------------------------------------- listing and pairs


def test_list_inputs(tmp_path):
    for name in ("b.mrc", "a.tif", "c.PNG", "notes.txt", ".hidden.mrc"):
        (tmp_path / name).write_bytes(b"")
    expected = [str(tmp_path / name) for name in ("a.tif", "b.mrc", "c.PNG")]
    assert io.list_inputs(tmp_path) == expected
    assert io.list_inputs(str(tmp_path / "*")) == expected
    assert io.list_inputs(str(tmp_path / "b.mrc")) == [str(tmp_path / "b.mrc")]
    with pytest.raises(ImageFileError, match="no supported image files"):
        io.list_inputs(str(tmp_path / "*.rec"))
    with pytest.raises(ImageFileError, match="unsupported"):
        io.list_inputs(str(tmp_path / "notes.txt"))


def test_paired_files(tmp_path):
    even, odd = tmp_path / "even", tmp_path / "odd"
    even.mkdir()
    odd.mkdir()
    for name in ("m2.mrc", "m1.mrc"):
        (even / name).write_bytes(b"")
        (odd / name).write_bytes(b"")
    assert io.paired_files(even, odd) == [(os.path.join(even, n), os.path.join(odd, n)) for n in ("m1.mrc", "m2.mrc")]
    (odd / "m3.mrc").write_bytes(b"")
    with pytest.raises(ImageFileError, match="'m3.mrc' is in '.*odd' but not in '.*even'"):
        io.paired_files(even, odd)
    empty_a, empty_b = tmp_path / "ea", tmp_path / "eb"
    empty_a.mkdir()
    empty_b.mkdir()
    with pytest.raises(ImageFileError, match="no supported image files"):
        io.paired_files(empty_a, empty_b)
    with pytest.raises(ImageFileError, match="not a folder"):
        io.paired_files(even, tmp_path / "nowhere")


def test_image_ndim_and_shape_check():
    assert Image(np.zeros((2, 3, 4, 1), np.float32), "volume", "v").ndim == 3
    assert Image(np.zeros((2, 3, 4, 1), np.float32), "stack", "s").ndim == 2
    assert Image(np.zeros((3, 4, 1), np.float32), "image", "i").ndim == 2
    with pytest.raises(ValueError, match="cannot hold"):
        Image(np.zeros((3, 4, 1), np.float32), "volume", "v")


# ----------------------------------------------------------------------------- optional real file


@pytest.mark.skipif(not os.path.exists(EMD_3197), reason="optional real map ../shared/data/EMD-3197.map absent")
def test_real_emdb_map_emd_3197(tmp_path):
    image = io.read_image(EMD_3197)
    assert (image.kind, image.data.shape, image.dtype) == ("volume", (20, 20, 20, 1), "float32")
    np.testing.assert_allclose(image.mrc["voxel_size"], (11.4, 11.4, 11.4), rtol=1e-6)
    io.write_image(tmp_path / "emd.map", image.data, like=image)
    report = text_io.StringIO()
    assert mrcfile.validate(str(tmp_path / "emd.map"), print_file=report), report.getvalue()


def test_image_kind_reads_the_header_as_read_image_decides(tmp_path):
    data = np.random.default_rng(0).normal(size=(3, 8, 10)).astype(np.float32)
    cases = {"vol.mrc": (data, "volume"), "stack.mrc": (data, "stack"), "parts.mrcs": (data, "volume"),
             "tomo.rec": (data, "stack"), "one.mrc": (data[:1], "volume"), "flat.mrc": (data[0], "stack")}
    for name, (values, header) in cases.items():
        with mrcfile.new(str(tmp_path / name)) as mrc:
            mrc.set_data(values)
            if values.ndim == 3:
                mrc.set_volume() if header == "volume" else mrc.set_image_stack()
    np.save(tmp_path / "vol.npy", data)
    kinds = {}
    for path in sorted(tmp_path.iterdir()):
        kinds[path.name] = io.image_kind(str(path))
        assert kinds[path.name] == io.read_image(str(path)).kind, path.name
    assert kinds == {"flat.mrc": "image", "one.mrc": "image", "parts.mrcs": "stack", "stack.mrc": "stack",
                     "tomo.rec": "volume", "vol.mrc": "volume", "vol.npy": "volume"}
