"""Readers, label CSVs, .npz loading, ImageDataset and splits of `dira_nb.data.io`."""
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, SecondaryCaptureImageStorage, generate_uid

from dira_nb.data.io import (DICOM_EXTS, IMAGE_EXTS, ImageDataset, ImageReadError, apply_window, list_images,
                             load_npz, read_dicom, read_image, read_label_csv, split_indices, train_valid_split)


def write_dicom(path, arr, photometric="MONOCHROME2", bits_stored=12, signed=False, transfer_syntax=ExplicitVRLittleEndian,
                pixel_bytes=None, **tags):
    """Write a minimal single-frame greyscale DICOM file (16 bits allocated) with pydicom."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    for k, v in tags.items():
        setattr(ds, k, v)
    if transfer_syntax == ExplicitVRLittleEndian:
        ds.PixelData = np.asarray(arr, np.int16 if signed else np.uint16).tobytes() if pixel_bytes is None else pixel_bytes
    else:  # an encapsulated (compressed) payload that no installed plugin can decode
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\0" * 64])
        ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


@pytest.fixture
def ramp():
    return np.tile(np.linspace(0, 4095, 32).round().astype(np.uint16), (16, 1))


# ---------------------------------------------------------------- DICOM
def test_dicom_minmax_without_window(tmp_path, ramp):
    x = read_dicom(write_dicom(tmp_path / "a.dcm", ramp))
    assert x.dtype == np.float32 and x.shape == (16, 32)
    np.testing.assert_allclose(x, (ramp - ramp.min()) / (ramp.max() - ramp.min()), atol=1e-6)


def test_dicom_16bit_full_range(tmp_path):
    a = np.array([[0, 1000, 30000, 65535]], np.uint16)
    x = read_dicom(write_dicom(tmp_path / "b16.dcm", a, bits_stored=16))
    np.testing.assert_allclose(x, a / 65535, atol=1e-6)  # no truncation to 12 or 15 bits
    assert x[0, 2] > 0.45  # a value above 2**15 stays large (not read as signed)


def test_dicom_signed_pixels(tmp_path):
    a = np.array([[-1000, 0, 1000]], np.int16)
    x = read_dicom(write_dicom(tmp_path / "s.dcm", a, bits_stored=16, signed=True), window=(0, 2000))
    np.testing.assert_allclose(x, [[0, 0.5, 1]], atol=1e-3)


def test_dicom_rescale_applied_before_window(tmp_path, ramp):
    f = write_dicom(tmp_path / "ct.dcm", ramp, RescaleSlope=2, RescaleIntercept=-1024)
    hu = ramp.astype(float) * 2 - 1024
    np.testing.assert_allclose(read_dicom(f, window=(40, 400)), apply_window(hu, 40, 400), atol=1e-6)
    # without rescale the same window would give a different image
    assert not np.allclose(read_dicom(f, window=(40, 400)), apply_window(ramp.astype(float), 40, 400))
    # a window at the rescaled value of stored 600 (= 176) puts that column at 0.5
    col = int(np.argmin(np.abs(ramp[0].astype(int) - 660)))
    c = float(hu[0, col])
    assert read_dicom(f, window=(c + 0.5, 101))[0, col] == pytest.approx(0.5, abs=0.01)


def test_dicom_monochrome1_inverted(tmp_path, ramp):
    m2 = read_dicom(write_dicom(tmp_path / "m2.dcm", ramp))
    m1 = read_dicom(write_dicom(tmp_path / "m1.dcm", ramp, photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1, 1 - m2, atol=1e-6)
    assert m1[0, 0] == pytest.approx(1.0) and m1[0, -1] == pytest.approx(0.0)  # low stored value = white
    w1 = read_dicom(write_dicom(tmp_path / "m1w.dcm", ramp, photometric="MONOCHROME1", WindowCenter=2048, WindowWidth=1000))
    np.testing.assert_allclose(w1, 1 - apply_window(ramp.astype(float), 2048, 1000), atol=1e-6)


def test_dicom_window_tags_and_override(tmp_path, ramp):
    f = write_dicom(tmp_path / "w.dcm", ramp, WindowCenter=[1000, 3000], WindowWidth=[500, 2000])
    np.testing.assert_allclose(read_dicom(f), apply_window(ramp.astype(float), 1000, 500), atol=1e-6)  # first value
    np.testing.assert_allclose(read_dicom(f, window=(3000, 2000)), apply_window(ramp.astype(float), 3000, 2000), atol=1e-6)
    x = read_dicom(f, window="minmax")
    assert x.min() == 0 and x.max() == 1
    single = write_dicom(tmp_path / "w1.dcm", ramp, WindowCenter=2000, WindowWidth=400)
    y = read_dicom(single)
    assert (y[ramp < 1790] == 0).all() and (y[ramp > 2210] == 1).all()
    np.testing.assert_allclose(read_image(single), y)  # read_image dispatches to read_dicom


def test_apply_window_values():
    np.testing.assert_allclose(apply_window(np.array([-200.0, 40, 300]), 40, 400), [0, 0.5, 1], atol=2e-3)
    with pytest.raises(ValueError, match="width"):
        apply_window(np.zeros(3), 0, -1)


def test_dicom_constant_image_no_division_by_zero(tmp_path):
    x = read_dicom(write_dicom(tmp_path / "flat.dcm", np.full((8, 8), 700, np.uint16)))
    assert np.isfinite(x).all() and (x == 0).all()


def test_dicom_detected_without_extension(tmp_path, ramp):
    f = write_dicom(tmp_path / "a.dcm", ramp)
    (tmp_path / "IMG0001").write_bytes(f.read_bytes())
    np.testing.assert_allclose(read_image(tmp_path / "IMG0001"), read_dicom(f))


def test_dicom_undecodable_transfer_syntax(tmp_path, ramp):
    f = write_dicom(tmp_path / "jls.dcm", ramp, transfer_syntax=JPEGLSLossless)
    with pytest.raises(ImageReadError) as e:
        read_image(f)
    msg = str(e.value)
    assert "jls.dcm" in msg and "JPEG-LS" in msg and str(JPEGLSLossless) in msg


def test_dicom_truncated_and_invalid(tmp_path, ramp):
    f = write_dicom(tmp_path / "short.dcm", ramp, pixel_bytes=ramp.tobytes()[:100])
    with pytest.raises(ImageReadError, match="short.dcm"):
        read_dicom(f)
    good = write_dicom(tmp_path / "good.dcm", ramp)
    (tmp_path / "cut.dcm").write_bytes(good.read_bytes()[:-300])
    with pytest.raises(ImageReadError, match="cut.dcm"):
        read_image(tmp_path / "cut.dcm")
    (tmp_path / "text.dcm").write_text("this is not dicom at all")
    with pytest.raises(ImageReadError, match="text.dcm"):
        read_image(tmp_path / "text.dcm")
    # a valid DICOM dataset without pixel data
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "nopix.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientName = "Nobody"
    ds.save_as(tmp_path / "nopix.dcm", enforce_file_format=True)
    with pytest.raises(ImageReadError, match="nopix.dcm.*no pixel data"):
        read_image(tmp_path / "nopix.dcm")


# ---------------------------------------------------------------- ordinary images
def test_png_8bit_and_16bit(tmp_path):
    a8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(a8).save(tmp_path / "a8.png")
    x8 = read_image(tmp_path / "a8.png")
    assert x8.dtype == np.float32 and x8.shape == (16, 16)
    np.testing.assert_allclose(x8, a8 / 255, atol=1e-7)
    a16 = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "a16.png")
    assert Image.open(tmp_path / "a16.png").mode.startswith("I;16")
    np.testing.assert_allclose(read_image(tmp_path / "a16.png"), a16 / 65535, atol=1e-7)
    dark16 = np.full((4, 4), 4095, np.uint16)  # 12-bit data in a 16-bit PNG keeps its absolute scale
    Image.fromarray(dark16).save(tmp_path / "dark16.png")
    np.testing.assert_allclose(read_image(tmp_path / "dark16.png"), 4095 / 65535, atol=1e-7)
    np.testing.assert_allclose(read_image(tmp_path / "dark16.png", window=(2048, 4096)), 1.0, atol=1e-3)


def test_rgb_rgba_palette_to_gray(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    expected = (rgb.astype(float) @ [0.299, 0.587, 0.114]) / 255
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgb.png"), expected, atol=1e-6)
    Image.fromarray(np.dstack([rgb, np.full((8, 8), 255, np.uint8)])).save(tmp_path / "rgba.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png"), expected, atol=1e-6)
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").shape == (8, 8)
    gray3 = np.repeat(rgb[..., :1], 3, -1)  # grey stored as RGB comes back exactly
    Image.fromarray(gray3).save(tmp_path / "g3.png")
    np.testing.assert_allclose(read_image(tmp_path / "g3.png"), rgb[..., 0] / 255, atol=1e-6)


def test_jpeg_bmp_tiff(tmp_path):
    a = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(np.dstack([a] * 3)).save(tmp_path / "rgb.jpeg", quality=95)
    Image.fromarray(a).save(tmp_path / "a.bmp")
    Image.fromarray(a.astype(np.uint16) * 100).save(tmp_path / "a16.tif")
    Image.fromarray(a.astype(np.float32) / 255).save(tmp_path / "af.tiff")
    assert np.abs(read_image(tmp_path / "a.jpg") - a / 255).max() < 0.05  # lossy but close
    assert np.abs(read_image(tmp_path / "rgb.jpeg") - a / 255).max() < 0.05
    np.testing.assert_allclose(read_image(tmp_path / "a.bmp"), a / 255, atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "a16.tif"), a.astype(np.uint16) * 100 / 65535, atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "af.tiff"), a / 255, atol=1e-6)


def test_constant_and_black_images(tmp_path):
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(tmp_path / "black.png")
    x = read_image(tmp_path / "black.png")
    assert x.shape == (5, 7) and (x == 0).all()
    Image.fromarray(np.full((5, 7), 3.5, np.float32)).save(tmp_path / "flat.tif")
    x = read_image(tmp_path / "flat.tif")
    assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


def test_bad_image_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")
    (tmp_path / "fake.png").write_text("hello")
    with pytest.raises(ImageReadError, match="fake.png"):
        read_image(tmp_path / "fake.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "full.png")
    (tmp_path / "trunc.png").write_bytes((tmp_path / "full.png").read_bytes()[:200])
    with pytest.raises(ImageReadError, match="trunc.png"):
        read_image(tmp_path / "trunc.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.jpg"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "adir.png").mkdir()
    with pytest.raises(ImageReadError, match="adir.png"):
        read_image(tmp_path / "adir.png")
    assert issubclass(ImageReadError, ValueError)


# ---------------------------------------------------------------- files and labels
def test_list_images(tmp_path, ramp):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for p in ["z.png", "a/y.JPG", "a/b/x.tif", ".hidden/h.png"]:
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / p)
    write_dicom(tmp_path / "a" / "c.dcm", ramp)
    (tmp_path / "notes.txt").write_text("x")
    got = list_images(tmp_path)
    assert got == sorted(got)
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["a/b/x.tif", "a/c.dcm", "a/y.JPG", "z.png"]
    assert [p.name for p in list_images(tmp_path, exts=(".dcm",))] == ["c.dcm"]
    assert [p.name for p in list_images(tmp_path, exts=("png",))] == ["z.png"]
    with pytest.raises(FileNotFoundError, match="missing"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        list_images(tmp_path / "empty")
    assert set(IMAGE_EXTS) >= {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"} and ".dcm" in DICOM_EXTS


def _few_pngs(root, n=4):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((6, 6), 40 * i, np.uint8)).save(root / f"{i}.png")


def test_read_label_csv(tmp_path):
    _few_pngs(tmp_path / "img")
    (tmp_path / "l.csv").write_text("image,label\nimg/0.png,pneumonia\nimg/1.png,normal\nimg/2.png,normal\n")
    paths, labels, names = read_label_csv(tmp_path / "l.csv")
    assert names == ["normal", "pneumonia"] and labels.tolist() == [1, 0, 0] and labels.dtype == np.int64
    assert paths == [tmp_path / "img" / f"{i}.png" for i in range(3)]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "i.csv").write_text("file,y\n0.png,1\n3.png,0\n")
    paths, labels, names = read_label_csv(tmp_path / "sub" / "i.csv", "file", "y", root=tmp_path / "img")
    assert labels.tolist() == [1, 0] and names == ["0", "1"] and paths[1] == tmp_path / "img" / "3.png"


def test_read_label_csv_errors(tmp_path):
    _few_pngs(tmp_path)
    (tmp_path / "nocol.csv").write_text("path,label\n0.png,1\n")
    with pytest.raises(ValueError, match=r"nocol.csv.*missing column 'image'"):
        read_label_csv(tmp_path / "nocol.csv")
    (tmp_path / "gone.csv").write_text("image,label\n0.png,1\nghost.png,0\n")
    with pytest.raises(FileNotFoundError, match=r"gone.csv, line 3: image 'ghost.png' not found"):
        read_label_csv(tmp_path / "gone.csv")
    (tmp_path / "nolab.csv").write_text("image,label\n0.png,\n")
    with pytest.raises(ValueError, match=r"nolab.csv, line 2: empty 'label'"):
        read_label_csv(tmp_path / "nolab.csv")
    (tmp_path / "empty.csv").write_text("image,label\n")
    with pytest.raises(ValueError, match="empty.csv: no data rows"):
        read_label_csv(tmp_path / "empty.csv")
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        read_label_csv(tmp_path / "absent.csv")


# ---------------------------------------------------------------- npz
def test_load_npz_real_pneumoniamnist(pneumonia_npz):
    x, y = load_npz(pneumonia_npz)
    assert x.shape == (4707, 28, 28) and x.dtype == np.uint8
    assert y.shape == (4707,) and y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
    assert 0.6 < y.mean() < 0.9  # PneumoniaMNIST train is about 74 % pneumonia
    assert x.std() > 20  # real images, not blank
    xv, yv = load_npz(pneumonia_npz, "val")
    xv2, _ = load_npz(pneumonia_npz, "valid")
    assert xv.shape == (524, 28, 28) and np.array_equal(xv, xv2)
    assert load_npz(pneumonia_npz, "test")[0].shape == (624, 28, 28)
    with pytest.raises(ImageReadError, match=r"pneumoniamnist28.npz.*'extra_images'"):
        load_npz(pneumonia_npz, "extra")


def test_load_npz_variants_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", train_images=rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8),
             train_labels=np.arange(5)[:, None] % 2, test_images=rng.random((3, 4, 4)).astype(np.float32),
             test_labels=np.zeros(3), bad_images=np.zeros((2, 4, 4), np.uint8), bad_labels=np.zeros((2, 3, 2)))
    x, y = load_npz(tmp_path / "m.npz")
    assert x.shape == (5, 4, 4) and x.dtype == np.uint8 and y.tolist() == [0, 1, 0, 1, 0]
    xt, _ = load_npz(tmp_path / "m.npz", "test")
    assert xt.dtype == np.uint8 and xt.max() > 100  # float [0, 1] images scaled to 0..255
    with pytest.raises(ImageReadError, match=r"m.npz: bad_labels must be N or N×1 \(single-label\) or N×C 0/1 \(multi-label\)"):
        load_npz(tmp_path / "m.npz", "bad")
    np.savez(tmp_path / "only.npz", train_images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ImageReadError, match=r"only.npz.*\['train_labels'\]"):
        load_npz(tmp_path / "only.npz")
    np.savez(tmp_path / "mismatch.npz", train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.zeros(3))
    with pytest.raises(ImageReadError, match="2 images but 3 labels"):
        load_npz(tmp_path / "mismatch.npz")
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(ImageReadError, match="junk.npz"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="none.npz"):
        load_npz(tmp_path / "none.npz")


# ---------------------------------------------------------------- ImageDataset
def test_image_dataset_from_npz_real(pneumonia_npz):
    ds = ImageDataset.from_npz(pneumonia_npz, "val", size=32)
    assert len(ds) == 524 and ds.labels.shape == (524,)
    assert ds.class_names is not None and len(ds.class_names) == 2
    x, y = ds[3]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y == int(ds.labels[3]) and isinstance(y, int)
    raw, _ = load_npz(pneumonia_npz, "val")
    x28, _ = ImageDataset.from_npz(pneumonia_npz, "val")[3]
    np.testing.assert_allclose(x28[0].numpy(), raw[3] / 255, atol=1e-6)
    assert abs(x.mean().item() - x28.mean().item()) < 0.02  # resizing preserves brightness


def test_image_dataset_files_folder_csv(tmp_path):
    _few_pngs(tmp_path / "imgs")
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / "imgs" / "wide.jpg")
    ds = ImageDataset.from_folder(tmp_path / "imgs", size=8)
    assert len(ds) == 5 and ds.labels is None and ds[0][1] == -1
    assert all(ds[i][0].shape == (1, 8, 8) for i in range(5))
    (tmp_path / "l.csv").write_text("image,label\nimgs/1.png,b\nimgs/2.png,a\n")
    dc = ImageDataset.from_csv(tmp_path / "l.csv")
    assert dc.class_names == ["a", "b"] and dc.labels.tolist() == [1, 0]
    x, y = dc[0]
    assert x.shape == (1, 6, 6) and y == 1 and torch.allclose(x, torch.full_like(x, 40 / 255))
    with pytest.raises(IndexError):
        dc[2]
    loader = torch.utils.data.DataLoader(ImageDataset.from_folder(tmp_path / "imgs", size=8), batch_size=5)
    xb, yb = next(iter(loader))
    assert xb.shape == (5, 1, 8, 8) and yb.tolist() == [-1] * 5


def test_image_dataset_arrays():
    f = np.linspace(0, 1, 2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    ds = ImageDataset(f, labels=[1, 0])
    np.testing.assert_array_equal(ds[1][0][0].numpy(), f[1])  # float kept as is
    assert ds[1][1] == 0 and ds.class_names == ["0", "1"]
    u16 = np.full((1, 3, 3), 65535, np.uint16)
    assert ImageDataset(u16)[0][0].max() == 1
    assert ImageDataset(torch.zeros(3, 1, 5, 5))[2][0].shape == (1, 5, 5)
    with pytest.raises(ValueError, match="3 items but 2 labels"):
        ImageDataset(np.zeros((3, 4, 4), np.uint8), labels=[0, 1])
    with pytest.raises(ValueError, match="N×H×W"):
        ImageDataset(np.zeros((4, 4), np.uint8))


def test_resize_is_antialiased():
    stripes = np.zeros((1, 48, 48), np.uint8)
    stripes[:, :, ::2] = 255  # one-pixel stripes alias badly without antialiasing
    x = ImageDataset(stripes, size=16)[0][0]
    assert x.shape == (1, 16, 16)
    assert (x[..., 1:-1] - 0.5).abs().max() < 0.1  # interior columns average to near grey (edges see the border)
    naive = torch.nn.functional.interpolate(torch.from_numpy(stripes / 255.0)[None].float(), size=16, mode="bilinear")
    assert (naive[0, ..., 1:-1] - 0.5).abs().max() > 0.4  # what aliasing would have given
    up = ImageDataset(np.eye(8, dtype=np.uint8)[None] * 255, size=32)[0][0]
    assert up.shape == (1, 32, 32) and 0 <= up.min() and up.max() <= 1


# ---------------------------------------------------------------- splits
def test_split_indices_properties():
    for n, pct in [(100, 0.1), (7, 0.3), (1, 0.5), (50, 0.0)]:
        tr, va = split_indices(n, pct, seed=3)
        assert len(np.intersect1d(tr, va)) == 0
        assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(n))
        assert len(va) == round(n * pct)
        a, b = split_indices(n, pct, seed=3)
        assert np.array_equal(a, tr) and np.array_equal(b, va)
    assert not np.array_equal(split_indices(100, 0.2, seed=0)[1], split_indices(100, 0.2, seed=1)[1])
    np.random.seed(0)
    first = split_indices(40, 0.25, seed=5)[1]
    np.random.rand(10)
    assert np.array_equal(split_indices(40, 0.25, seed=5)[1], first)  # global RNG is irrelevant
    with pytest.raises(ValueError):
        split_indices(10, 1.0)
    with pytest.raises(ValueError):
        split_indices(10, 0.2, stratify=[0, 1])


def test_split_indices_stratified():
    labels = np.array([0] * 150 + [1] * 40 + [2] * 10)
    tr, va = split_indices(200, 0.2, seed=0, stratify=labels)
    assert np.bincount(labels[va]).tolist() == [30, 8, 2]
    assert np.bincount(labels[tr]).tolist() == [120, 32, 8]
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(200))
    # unstratified splits of the same data usually miss the ratio of the rare class
    misses = sum(np.bincount(labels[split_indices(200, 0.2, seed=s)[1]], minlength=3)[2] != 2 for s in range(20))
    assert misses > 5


def test_train_valid_split(pneumonia_npz):
    ds = ImageDataset.from_npz(pneumonia_npz, "test")
    tr, va = train_valid_split(ds, 0.25, seed=0)
    assert len(tr) + len(va) == len(ds) and not set(tr.indices) & set(va.indices)
    assert abs(ds.labels[va.indices].mean() - ds.labels.mean()) < 0.01  # stratified by labels
    x, y = va[0]
    assert x.shape == (1, 28, 28) and y == ds.labels[va.indices[0]]


def _chestmnist_like(path, n=24, size=20, seed=0):
    "A ChestMNIST-layout .npz: grey images and N×14 0/1 finding labels for train/val/test, with label_names."
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, k in (("train", n), ("val", 8), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (k, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (rng.random((k, 14)) < 0.25).astype(np.uint8)
    np.savez(path, label_names=np.array([f"finding{i}" for i in range(14)]), **arrays)
    return arrays


def test_multilabel_npz_keeps_the_matrix(tmp_path):
    "Issue 16: a ChestMNIST-style N×14 npz is read, not refused; labels stay a 0/1 matrix, items carry their row."
    arr = _chestmnist_like(tmp_path / "chest.npz")
    x, y = load_npz(tmp_path / "chest.npz", "test")
    assert y.shape == (8, 14) and y.dtype == np.int64 and np.array_equal(y, arr["test_labels"])
    ds = ImageDataset.from_npz(tmp_path / "chest.npz", "train", size=16)
    assert ds.multilabel and ds.labels.shape == (24, 14) and ds.class_names == [f"finding{i}" for i in range(14)]
    img, lab = ds[5]
    assert img.shape == (1, 16, 16) and lab.dtype == torch.int64 and lab.tolist() == arr["train_labels"][5].tolist()
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=6)))
    assert xb.shape == (6, 1, 16, 16) and yb.shape == (6, 14)
    from dira_nb.eval.features import dataset_arrays, label_kind
    X, Y = dataset_arrays(ds)
    assert Y.shape == (24, 14) and label_kind(Y) == "multilabel"
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.array([[0, 3], [1, 0], [0, 0]]))
    with pytest.raises(ImageReadError, match=r"bad.npz: train_labels is an N×2 matrix with values other than 0 and 1"):
        load_npz(tmp_path / "bad.npz")


def test_pretraining_on_a_multilabel_npz_ignores_the_labels(tmp_path):
    from dira_nb.pretrain import open_pretraining_data, pretrain, PretrainConfig
    _chestmnist_like(tmp_path / "chest.npz", size=16)
    train, valid = open_pretraining_data(tmp_path / "chest.npz")
    assert len(train) == 24 and len(valid) == 8 and train[0][1] == -1 and valid[0][1] == -1
    res = pretrain(PretrainConfig(data=str(tmp_path / "chest.npz"), out=str(tmp_path / "run"), method="r", image_size=16,
                                  epochs=1, batch_size=8, snapshots=0, probe=8), quiet=True)
    assert res["summary"]["status"] == "finished" and res["summary"]["n_train"] == 24
