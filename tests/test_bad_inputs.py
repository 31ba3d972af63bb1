"""The bad-input matrix: every case gets a clear error naming the file (or setting) and the problem — or, with
skip_bad=True, a skip with a warning and a count — and never a stack trace from deep inside collate."""
import io, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image

from test_resume import CFG                      # tiny encoder config for the end-to-end cases
from dira_nb.data.io import ImageDataset, ImageReadError, read_image, read_dicom, load_npz, read_label_csv, BadImageWarning
from dira_nb.pretrain import pretrain, PretrainConfig, open_pretraining_data

CASES = []                                       # names of the cases run, printed at the end


def case(name):
    CASES.append(name)


def _run(data_dir, name="run"):
    "A run folder beside (never inside) the data folder: a run inside its data would train on its own pictures next time."
    return str(data_dir.with_name(f"{data_dir.name}_{name}"))


def png(path, arr, mode=None):
    Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)
    return path


def dicom(path, arr, photometric="MONOCHROME2", pixels=True):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "OT", *arr.shape, 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixels: ds.PixelData = np.asarray(arr, np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


RAMP = (np.arange(48 * 48).reshape(48, 48) % 256).astype(np.uint8)


# ---- unreadable files: each error names the file and the problem --------------------------------------------------
def _corrupt_png(d): return (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png") and d / "corrupt.png"
def _trunc_png(d):
    b = png(d / "full.png", RAMP).read_bytes(); (d / "truncated.png").write_bytes(b[: len(b) // 2]); return d / "truncated.png"
def _corrupt_jpg(d): (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage"); return d / "corrupt.jpg"
def _trunc_jpg(d):
    buf = io.BytesIO(); Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, "JPEG")
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2]); return d / "truncated.jpg"
def _trunc_dcm(d):
    b = dicom(d / "full.dcm", RAMP.astype(np.uint16) * 16).read_bytes()
    (d / "truncated.dcm").write_bytes(b[:-500]); return d / "truncated.dcm"
def _pixelless_dcm(d): return dicom(d / "nopixels.dcm", RAMP, pixels=False)
def _text_as_png(d): (d / "notes.png").write_text("hello, I am a text file"); return d / "notes.png"
def _empty_png(d): (d / "empty.png").write_bytes(b""); return d / "empty.png"


@pytest.mark.parametrize("make,problem", [
    (_corrupt_png, "not a readable image"), (_trunc_png, "truncated"), (_corrupt_jpg, "not a readable image"),
    (_trunc_jpg, "truncated"), (_trunc_dcm, "truncated or corrupt pixel data"), (_pixelless_dcm, "no pixel data"),
    (_text_as_png, "not a readable image"), (_empty_png, "not a readable image")],
    ids=["corrupt PNG", "truncated PNG", "corrupt JPEG", "truncated JPEG", "truncated DICOM", "pixel-less DICOM",
         "text file named .png", "empty file"])
def test_unreadable_file_is_named(tmp_path, make, problem):
    case(f"unreadable: {make.__name__}")
    f = make(tmp_path)
    with pytest.raises(ImageReadError) as e:
        read_image(f)
    assert f.name in str(e.value) and problem in str(e.value), str(e.value)
    # the same error, not a collate trace, when it sits inside a dataset behind a DataLoader
    ds = ImageDataset([png(tmp_path / "ok.png", RAMP), f], size=32)
    with pytest.raises(ImageReadError, match=f.name):
        list(torch.utils.data.DataLoader(ds, batch_size=2))


def test_skip_bad_skips_with_warning_and_count(tmp_path):
    case("skip_bad: bad files skipped, warned and counted")
    good = [png(tmp_path / f"g{i}.png", RAMP) for i in range(3)]
    bad = [_corrupt_png(tmp_path), _trunc_jpg(tmp_path), _pixelless_dcm(tmp_path)]
    ds = ImageDataset(good + bad, size=32, skip_bad=True)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=6)))[0]
    assert batch.shape == (6, 1, 32, 32) and len(ds.bad) == 3
    assert sum(issubclass(x.category, BadImageWarning) for x in w) == 3
    assert all(Path(k).name in {b.name for b in bad} for k in ds.bad)


# ---- folders --------------------------------------------------------------------------------------------------------
def test_non_image_files_are_ignored(tmp_path):
    case("non-image files in the folder")
    png(tmp_path / "a.png", RAMP)
    (tmp_path / "README.txt").write_text("notes"); (tmp_path / "labels.json").write_text("{}")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1"); (tmp_path / "scan.nii").write_bytes(b"\0" * 10)
    ds = ImageDataset.from_folder(tmp_path)
    assert [p.name for p in ds.items] == ["a.png"]


def test_empty_folder(tmp_path):
    case("empty folder")
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.txt").write_text("no images")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path.name}: no image files"):
        ImageDataset.from_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="no image files"):
        pretrain(PretrainConfig(data=str(tmp_path), out=_run(tmp_path), **CFG), quiet=True)


# ---- contents that must be handled, not rejected ---------------------------------------------------------------
def test_mixed_sizes_and_channels_train(tmp_path):
    case("mixed sizes and channel counts")
    rng = np.random.default_rng(0)
    png(tmp_path / "gray.png", rng.integers(0, 255, (40, 56), dtype=np.uint8))
    png(tmp_path / "rgb.png", rng.integers(0, 255, (64, 48, 3), dtype=np.uint8))
    png(tmp_path / "rgba.png", rng.integers(0, 255, (50, 50, 4), dtype=np.uint8))
    png(tmp_path / "la.png", rng.integers(0, 255, (36, 70, 2), dtype=np.uint8), "LA")
    Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).convert("P").save(tmp_path / "palette.png")
    dicom(tmp_path / "x.dcm", rng.integers(0, 4000, (60, 44)).astype(np.uint16))
    ds = ImageDataset.from_folder(tmp_path)
    shapes = [ds[i][0].shape for i in range(len(ds))]
    assert all(s[0] == 1 for s in shapes) and len({s for s in shapes}) > 1
    res = pretrain(PretrainConfig(data=str(tmp_path), out=_run(tmp_path), valid_pct=0, **{**CFG, "batch_size": 2, "epochs_dir": 1, "epochs_dira": 0}), quiet=True)
    assert res["summary"]["status"] == "finished"


def test_16bit_and_float_images(tmp_path):
    case("16-bit and float images")
    g16 = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    png(tmp_path / "g16.png", g16)
    assert np.allclose(read_image(tmp_path / "g16.png"), g16 / 65535, atol=1e-6)
    f = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(f, "F").save(tmp_path / "f01.tif")
    assert np.allclose(read_image(tmp_path / "f01.tif"), f, atol=1e-6)
    Image.fromarray(f * 3000 - 1000, "F").save(tmp_path / "hu.tif")                      # float in physical units
    x = read_image(tmp_path / "hu.tif")
    assert x.dtype == np.float32 and x.min() == 0 and x.max() == 1
    bad = f.copy(); bad[0, 0] = np.nan
    Image.fromarray(bad, "F").save(tmp_path / "nan.tif")
    with pytest.raises(ImageReadError, match="nan.tif: image contains NaN"):
        read_image(tmp_path / "nan.tif")


def test_monochrome1_is_inverted(tmp_path):
    case("MONOCHROME1")
    a = np.tile(np.linspace(0, 4000, 16).astype(np.uint16), (8, 1))
    m2 = read_dicom(dicom(tmp_path / "m2.dcm", a))
    m1 = read_dicom(dicom(tmp_path / "m1.dcm", a, "MONOCHROME1"))
    assert np.allclose(m1, 1 - m2) and m1[0, 0] == 1 and m1[0, -1] == 0


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["NaN", "+Inf", "-Inf"])
def test_npz_with_nonfinite_values(tmp_path, value):
    case(f"npz with {value}")
    x = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32); x[2, 3, 3] = value
    np.savez(tmp_path / "bad.npz", train_images=x, train_labels=np.zeros(4))
    with pytest.raises(ImageReadError, match=r"bad\.npz: train_images has NaN or infinite values in 1 image\(s\) \(first indices: \[2\]\)"):
        load_npz(tmp_path / "bad.npz")


# ---- label CSVs -------------------------------------------------------------------------------------------------------
def test_labels_csv_missing_files(tmp_path):
    case("labels CSV naming missing files")
    png(tmp_path / "a.png", RAMP)
    (tmp_path / "labels.csv").write_text("image,label\na.png,0\ngone.png,1\n")
    with pytest.raises(FileNotFoundError, match=r"labels\.csv, line 3: image 'gone.png' not found"):
        read_label_csv(tmp_path / "labels.csv")
    run = tmp_path / "run_folder"; run.mkdir()
    png(run / "a.png", RAMP)
    (run / "labels.csv").write_text("image,label,split\na.png,0,train\nmissing1.png,1,train\nmissing2.png,0,valid\n")
    with pytest.raises(FileNotFoundError, match=r"labels\.csv: 2 listed image\(s\) not found \(line 3: 'missing1.png', line 4"):
        open_pretraining_data(run)


def test_labels_csv_wrong_columns(tmp_path):
    case("labels CSV with wrong columns")
    png(tmp_path / "a.png", RAMP)
    (tmp_path / "labels.csv").write_text("file,class\na.png,0\n")
    with pytest.raises(ValueError, match=r"labels\.csv: missing column 'image' \(columns: \['file', 'class'\]\)"):
        read_label_csv(tmp_path / "labels.csv")
    (tmp_path / "labels.csv").write_text("path,split\na.png,train\n")
    with pytest.raises(ValueError, match=r"labels\.csv: missing column 'image'"):
        open_pretraining_data(tmp_path)


# ---- sizes, output folder, settings ----------------------------------------------------------------------------------
def test_images_smaller_than_crop(tmp_path):
    case("images smaller than the crop size")
    for i in range(3): png(tmp_path / f"big{i}.png", RAMP)
    png(tmp_path / "tiny.png", RAMP[:20, :20])
    with pytest.raises(ImageReadError, match=r"tiny\.png: image is 20×20, smaller than the crop size 32"):
        pretrain(PretrainConfig(data=str(tmp_path), out=_run(tmp_path), valid_pct=0, **{**CFG, "batch_size": 4}), quiet=True)
    np.savez(tmp_path / "small.npz", train_images=np.zeros((4, 28, 28), np.uint8), train_labels=np.zeros(4))
    with pytest.raises(ImageReadError, match=r"small\.npz: images are 28×28, smaller than the minimum size 32"):
        open_pretraining_data(tmp_path / "small.npz", min_size=32)
    assert open_pretraining_data(tmp_path / "small.npz", load_size=32, min_size=32)[0][0][0].shape == (1, 32, 32)


def test_images_smaller_than_crop_skipped_and_counted(tmp_path):
    case("images smaller than the crop size, skip_bad=True")
    for i in range(4): png(tmp_path / f"big{i}.png", RAMP)
    png(tmp_path / "tiny.png", RAMP[:20, :20]); _corrupt_png(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pretrain(PretrainConfig(data=str(tmp_path), out=_run(tmp_path), valid_pct=0, skip_bad=True,
                                      **{**CFG, "batch_size": 2, "epochs_dir": 1, "epochs_dira": 0}), quiet=True)
    assert res["summary"]["bad_images"] == 2
    assert {Path(f).name for f in res["summary"]["bad_image_files"]} == {"tiny.png", "corrupt.png"}


def test_unwritable_output_folder(tmp_path):
    case("unwritable output folder")
    blocker = tmp_path / "a_file"; blocker.write_text("x")
    with pytest.raises(PermissionError, match=f"cannot write to the run folder {blocker / 'run'}"):
        pretrain(PretrainConfig(out=str(blocker / "run"), **CFG), quiet=True)


@pytest.mark.parametrize("setting,value,message", [
    ("lr", -0.1, "lr=-0.1: must be a positive number"), ("lr", float("nan"), "lr=nan"),
    ("load_size", 16, "load_size=16: the crop (image_size=32) cannot be larger than the loaded image"),
    ("method", "simclr", "method='simclr': unknown method; registered:"),
    ("batch_size", 1, "batch_size=1: must be an integer ≥ 2"), ("epochs_dir", -1, "epochs_warmup=-1 (DiRA's name: epochs_dir): must be an integer ≥ 0"),
    ("valid_pct", 1.5, "valid_pct=1.5"), ("checkpoint_every", -5, "checkpoint_every=-5"),
    ("on_nan", "ignore", "on_nan='ignore': choose 'stop' or 'skip'"), ("image_size", 4, "image_size=4"),
    ("options", {"no_such_option": 1}, "invalid method options for 'dira'"),
    ("seed", -1, "seed=-1: must be an integer ≥ 0"), ("device", "tpu", "device='tpu': choose 'auto', 'cpu', 'cuda'"),
    ("out", "", "out='': must name a run folder"), ("lr", "fast", "lr='fast': must be a number")])
def test_invalid_config_values(setting, value, message):
    case(f"invalid setting {setting}={value!r}")
    with pytest.raises(ValueError) as e:
        PretrainConfig(**{**CFG, setting: value})
    assert message in str(e.value), str(e.value)


# ---- issue 16: inputs people have, errors that used to escape as tracebacks ------------------------------------------
def _png_header(w, h):
    "A PNG whose header claims w×h pixels: enough to trip Pillow's decompression-bomb check."
    import struct, zlib
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_named_and_skippable(tmp_path, monkeypatch):
    case("PNG header claiming 20000×20000 (decompression bomb)")
    (tmp_path / "bomb.png").write_bytes(_png_header(20000, 20000))
    with pytest.raises(ImageReadError, match=r"bomb\.png: image is larger than Pillow's safety limit .*DIRA_NB_MAX_IMAGE_PIXELS"):
        read_image(tmp_path / "bomb.png")
    ds = ImageDataset([png(tmp_path / f"g{i}.png", RAMP) for i in range(2)] + [tmp_path / "bomb.png"], size=32, skip_bad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert list(ds.bad) == [str(tmp_path / "bomb.png")]
    from PIL import Image as PILImage
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", PILImage.MAX_IMAGE_PIXELS)     # restored after the test
    monkeypatch.setenv("DIRA_NB_MAX_IMAGE_PIXELS", "1e9")                              # the user raises the limit
    with pytest.raises(ImageReadError, match="not a readable image or truncated"):    # now it is read (and is truncated)
        read_image(tmp_path / "bomb.png")


def test_worker_errors_are_one_line_and_skips_are_counted(tmp_path):
    case("corrupt image with num_workers=1: one line naming the file")
    case("skip_bad with num_workers=1: skipped files counted from the workers")
    for i in range(6): png(tmp_path / f"g{i}.png", RAMP)
    _corrupt_png(tmp_path); (tmp_path / "bomb.png").write_bytes(_png_header(20000, 20000))
    cfg = {**CFG, "batch_size": 2, "epochs_dir": 1, "epochs_dira": 0, "num_workers": 1, "probe": 0, "valid_pct": 0}
    with pytest.raises(ImageReadError) as e:
        pretrain(PretrainConfig(data=str(tmp_path), out=_run(tmp_path, "r1"), **cfg), quiet=True)
    msg = str(e.value)
    assert "corrupt.png" in msg or "bomb.png" in msg, msg
    assert "Traceback" not in msg and "DataLoader worker" not in msg and len(msg.splitlines()) == 1, msg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pretrain(PretrainConfig(data=str(tmp_path), out=_run(tmp_path, "r2"), skip_bad=True, **cfg), quiet=True)
    assert res["summary"]["bad_images"] == 2, res["summary"]["bad_image_files"]
    assert {Path(f).name for f in res["summary"]["bad_image_files"]} == {"corrupt.png", "bomb.png"}


def test_nan_skip_restores_batchnorm_and_exports_a_finite_backbone(tmp_path):
    case("on_nan=skip with a NaN forward pass: BatchNorm restored, exported backbone finite")
    from dira_nb.callback.core import Callback
    from dira_nb.checkpoint import read_safetensors
    class NaNBatch(Callback):
        n = 0
        def before_batch(self):
            self.n += 1
            if self.n == 2: self.learn.batch = {k: v * float("nan") if torch.is_tensor(v) and v.is_floating_point() else v
                                                for k, v in self.learn.batch.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pretrain(PretrainConfig(out=_run(tmp_path), on_nan="skip", **{**CFG, "epochs_dira": 0}), cbs=[NaNBatch()], quiet=True)
    assert res["summary"]["stages"][0]["skipped_steps"] >= 1 and res["summary"]["status"] == "finished"
    state, _ = read_safetensors(res["backbone"])
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    assert bad == [], bad


def test_csvs_people_have(tmp_path):
    case("labels CSV with a UTF-8 BOM (Excel)")
    case("labels CSV in Latin-1 with accented file names")
    case("CSV of image paths without a label column")
    for n in ("a.png", "b.png", "r\u00f6ntgen.png", "c.png"): png(tmp_path / n, RAMP)
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbfimage,label\r\na.png,0\r\nb.png,1\r\n")
    tr, _ = open_pretraining_data(tmp_path / "excel.csv", valid_pct=0)
    assert len(tr) == 2 and tr[1][1] == 1
    (tmp_path / "latin.csv").write_bytes("image,label\nr\u00f6ntgen.png,1\na.png,0\n".encode("latin-1"))
    tr, _ = open_pretraining_data(tmp_path / "latin.csv", valid_pct=0)
    assert _base(tr).items[0].name == "r\u00f6ntgen.png"
    (tmp_path / "paths.csv").write_text("image\na.png\nb.png\nc.png\n")
    tr, _ = open_pretraining_data(tmp_path / "paths.csv", valid_pct=0)
    assert len(tr) == 3 and tr[0][1] == -1
    (tmp_path / "bare.csv").write_text("a.png\nb.png\n")                        # no header at all
    assert len(open_pretraining_data(tmp_path / "bare.csv", valid_pct=0)[0]) == 2


def _base(ds):
    while isinstance(ds, torch.utils.data.Subset): ds = ds.dataset
    return ds


def test_extensionless_dicom_folder(tmp_path):
    case("extension-less DICOM files (IM0001...)")
    for i in range(3): (tmp_path / f"IM{i:04d}").write_bytes(dicom(tmp_path / "x.dcm", RAMP.astype(np.uint16) * 16).read_bytes())
    (tmp_path / "x.dcm").unlink(); (tmp_path / "DICOMDIR_NOTES").write_text("not an image")
    tr, _ = open_pretraining_data(tmp_path, valid_pct=0)
    assert [p.name for p in _base(tr).items] == ["IM0000", "IM0001", "IM0002"]


def test_barlow_with_a_last_validation_batch_of_one(tmp_path):
    case("dira_barlow with a last validation batch of 1")
    for i in range(9): png(tmp_path / f"g{i}.png", np.roll(RAMP, i, 0))
    # 9 images, 4 for validation with batch 3: batches of 3 and 1 -> the 1 is merged (Barlow needs B >= 2)
    res = pretrain(PretrainConfig(data=str(tmp_path), out=_run(tmp_path), method="dira_barlow", valid_pct=4 / 9,
                                  **{**CFG, "batch_size": 3, "epochs_dir": 1, "epochs_dira": 1, "max_images": None, "moco_k": None,
                                     "options": {}, "probe": 0, "lr": 1e-3}), quiet=True)   # one step at lr 0.03 diverges
    assert res["summary"]["n_valid"] == 4 and res["summary"]["status"] == "finished"
    assert all(np.isfinite(h["valid_loss"]) for st in res["histories"].values() for h in st)


def test_zz_matrix_count():
    print(f"\nbad-input matrix: {len(CASES)} cases")
    for c in CASES: print("  -", c)
    assert len(CASES) >= 30
