"""The synthetic chest-radiograph phantom and the sample set (`dira_nb.data.phantom`)."""
import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dira_nb
from dira_nb.data.io import read_image
from dira_nb.data.phantom import (LANDMARK_NAMES, Phantom, load_samples, make_phantom, read_boxes, read_landmarks,
                                  samples_dir, write_samples)

SEEDS = range(40)


@pytest.fixture(scope="module")
def phantoms():
    return [make_phantom(s, 96) for s in SEEDS]


def test_determinism_bit_identical():
    for seed, size, lesion in [(0, 128, None), (7, 64, True), (123456, 48, False)]:
        a, b = make_phantom(seed, size, lesion), make_phantom(seed, size, lesion)
        for f in ("image", "lung_mask", "lesion_mask"):
            assert getattr(a, f).tobytes() == getattr(b, f).tobytes()
        assert a.boxes == b.boxes and a.landmarks == b.landmarks and a.label == b.label
    np.random.seed(0); torch.manual_seed(0)  # the global RNGs play no role
    c = make_phantom(0, 128)
    np.random.seed(99); torch.manual_seed(99)
    assert c.image.tobytes() == make_phantom(0, 128).image.tobytes()
    assert not np.array_equal(make_phantom(1, 64).image, make_phantom(2, 64).image)


def test_types_ranges_and_masks(phantoms):
    for p in phantoms:
        assert isinstance(p, Phantom)
        assert p.image.shape == (96, 96) and p.image.dtype == np.float32
        assert np.isfinite(p.image).all() and p.image.min() >= 0 and p.image.max() <= 1
        for m in (p.lung_mask, p.lesion_mask):
            assert m.dtype == np.uint8 and m.shape == (96, 96) and set(np.unique(m)) <= {0, 1}
        assert 0.12 < p.lung_mask.mean() < 0.45  # lungs fill a plausible part of the image
        assert p.label in (0, 1) and p.label == int(len(p.boxes) > 0) == int(p.lesion_mask.any())


def test_lesions_inside_lungs_and_tight_boxes():
    n_boxes = []
    for s in SEEDS:
        p = make_phantom(s, 128, lesion=True)
        assert p.label == 1 and 1 <= len(p.boxes) <= 3
        assert (p.lesion_mask <= p.lung_mask).all()
        covered = np.zeros_like(p.lesion_mask, bool)
        for x0, y0, x1, y1 in p.boxes:
            assert all(isinstance(v, int) for v in (x0, y0, x1, y1))
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
            box = p.lesion_mask[y0:y1, x0:x1]
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()  # tight
            w, h = x1 - x0, y1 - y0
            assert 2 <= w <= 2 * 0.08 * 1.12 * 128 + 2 and 2 <= h <= 2 * 0.08 * 1.12 * 128 + 2  # radius <= ~8 %
            covered[y0:y1, x0:x1] = True
        assert not (p.lesion_mask.astype(bool) & ~covered).any()  # every lesion pixel is in a box
        n_boxes.append(len(p.boxes))
        # nodules are visible: brighter than the lung around them
        ring = np.zeros_like(covered)
        for x0, y0, x1, y1 in p.boxes:
            ring[max(y0 - 4, 0):y1 + 4, max(x0 - 4, 0):x1 + 4] = True
        ring &= (p.lung_mask > 0) & ~covered
        if ring.sum() > 20:
            assert p.image[p.lesion_mask > 0].mean() > p.image[ring].mean() + 0.03
    assert len(set(n_boxes)) >= 2  # 1-3 nodules, not always the same count


def test_lesion_switch_and_frequency():
    assert all(make_phantom(s, 64, lesion=False).label == 0 for s in range(10))
    frac = np.mean([make_phantom(s, 32).label for s in range(150)])
    assert 0.28 < frac < 0.52  # lesion=None: probability 0.4


def test_counterfactual_pair_same_patient():
    for s in range(5):
        a, b = make_phantom(s, 96, lesion=False), make_phantom(s, 96, lesion=True)
        assert np.array_equal(a.lung_mask, b.lung_mask) and a.landmarks == b.landmarks
        diff = np.abs(a.image - b.image)
        assert diff[b.lesion_mask > 0].mean() > 0.05
        near = np.zeros_like(diff, bool)  # the soft nodule edge reaches a pixel or two past its mask
        for x0, y0, x1, y1 in b.boxes:
            near[max(y0 - 3, 0):y1 + 3, max(x0 - 3, 0):x1 + 3] = True
        assert diff[~near].max() < 0.01  # elsewhere the two images are the same


def test_anatomy_looks_like_a_chest(phantoms):
    right_larger = []
    for p in phantoms:
        img, lung = p.image, p.lung_mask.astype(bool)
        cx = int(round(p.landmarks["trachea_carina"][0]))
        border = np.concatenate([img[:, :3].ravel(), img[:, -3:].ravel()])
        assert border.mean() < 0.15  # dark background at the sides
        mediastinum = img[30:70, cx - 3:cx + 4]
        assert img[lung].mean() + 0.15 < mediastinum.mean()  # dark lungs, bright mediastinum/heart
        assert lung[:, :cx].any() and lung[:, cx:].any()  # two lungs, one on each side
        assert not lung[:, cx - 2:cx + 3].any()  # separated by the mediastinum
        right_larger.append(lung[:, :cx].sum() > lung[:, cx:].sum())
        # ribs: the lung texture along a vertical line oscillates (bright bands over dark lung)
        col = int(round((p.landmarks["right_apex"][0] + p.landmarks["right_costophrenic"][0]) / 2))
        rows = np.flatnonzero(lung[:, col])
        prof = np.convolve(img[rows, col - 1:col + 2].mean(1), np.ones(3) / 3, mode="valid")
        assert prof.max() - prof.min() > 0.08
        assert ((np.diff(np.sign(np.diff(prof))) < 0).sum()) >= 3  # several local maxima
    assert np.mean(right_larger) > 0.9  # the heart makes the left lung (image right) smaller


def test_landmarks(phantoms):
    for p in phantoms:
        lm = p.landmarks
        assert list(lm) == list(LANDMARK_NAMES)
        for name, (x, y) in lm.items():
            assert isinstance(x, float) and 0 <= x < 96 and 0 <= y < 96, name
        # patient's right = image left
        assert lm["right_apex"][0] < lm["trachea_carina"][0] < lm["left_apex"][0]
        assert lm["right_costophrenic"][0] < lm["right_apex"][0] and lm["left_costophrenic"][0] > lm["left_apex"][0]
        assert lm["heart_apex"][0] > lm["trachea_carina"][0]  # the heart apex points to the patient's left
        for side in ("right", "left"):
            assert lm[f"{side}_apex"][1] < lm["trachea_carina"][1] < lm[f"{side}_costophrenic"][1]
        assert lm["heart_apex"][1] > lm["trachea_carina"][1]
        lung = p.lung_mask.astype(bool)
        for k in ("right_apex", "left_apex", "right_costophrenic", "left_costophrenic"):
            x, y = (int(round(v)) for v in lm[k])
            assert lung[max(y - 3, 0):y + 4, max(x - 3, 0):x + 4].any(), k  # on the lung boundary
        x, y = (int(round(v)) for v in lm["trachea_carina"])
        assert not lung[y, x]  # the carina is in the mediastinum


def test_sizes_and_validation():
    for size in (16, 33, 200):
        p = make_phantom(5, size, lesion=True)
        assert p.image.shape == (size, size) and p.lesion_mask.any()
    with pytest.raises(ValueError, match="size"):
        make_phantom(0, 8)


def test_write_samples_small(tmp_path):
    d = write_samples(tmp_path / "s", n=20, size=32, seed=3, lesion_frac=0.25, valid_pct=0.2)
    assert d == tmp_path / "s"
    rows = list(csv.DictReader(open(d / "labels.csv")))
    assert [r["image"] for r in rows] == [f"images/{i:04d}.png" for i in range(20)]
    labels = np.array([int(r["label"]) for r in rows])
    splits = np.array([r["split"] for r in rows])
    assert labels.sum() == 5 and (splits == "valid").sum() == 4
    assert labels[splits == "valid"].sum() == 1  # stratified: 20 % of the 5 lesion images
    for i, r in enumerate(rows):
        img = np.array(Image.open(d / r["image"]))
        assert img.dtype == np.uint8 and img.shape == (32, 32)
        p = make_phantom(3 * 1_000_003 + i, 32, lesion=bool(labels[i]))
        assert np.abs(img / 255 - p.image).max() <= 0.5 / 255 + 1e-6
        lesion = np.array(Image.open(d / "masks/lesion" / f"{i:04d}.png"))
        assert set(np.unique(lesion)) <= {0, 255} and np.array_equal(lesion > 0, p.lesion_mask > 0)
        assert np.array_equal(np.array(Image.open(d / "masks/lung" / f"{i:04d}.png")) > 0, p.lung_mask > 0)
    boxes, lms = read_boxes(d), read_landmarks(d)
    assert len(boxes) == 20 and sum(len(b) > 0 for b in boxes.values()) == 5
    assert len(lms) == 20 and all(list(v) == list(LANDMARK_NAMES) for v in lms.values())
    readme = (d / "README.md").read_text()
    assert "License" in readme and "Apache-2.0" in readme and "write_samples" in readme


def test_write_samples_idempotent_and_prunes(tmp_path):
    d = write_samples(tmp_path / "s", n=6, size=24, seed=0)
    snap = {f.relative_to(d): f.read_bytes() for f in d.rglob("*") if f.is_file()}
    write_samples(d, n=6, size=24, seed=0)
    assert {f.relative_to(d): f.read_bytes() for f in d.rglob("*") if f.is_file()} == snap
    write_samples(d, n=9, size=24, seed=0)
    write_samples(d, n=6, size=24, seed=0)  # a smaller run removes the numbered leftovers
    assert {f.relative_to(d): f.read_bytes() for f in d.rglob("*") if f.is_file()} == snap
    (d / "images" / "keep_me.png").write_bytes(b"user file")
    write_samples(d, n=6, size=24, seed=0)
    assert (d / "images" / "keep_me.png").exists()  # only our numbered files are ever removed


def test_samples_dir_env(tmp_path, monkeypatch):
    target = tmp_path / "env_samples"
    write_samples(target, n=4, size=24)
    monkeypatch.setenv("DIRA_NB_SAMPLES", str(target))
    assert samples_dir() == target
    ds = load_samples()
    assert len(ds) == 4 and ds[0][0].shape == (1, 24, 24)
    with pytest.raises(FileNotFoundError, match="labels.csv"):
        read_boxes(tmp_path)


def test_samples_dir_repo_copy(monkeypatch):
    monkeypatch.delenv("DIRA_NB_SAMPLES", raising=False)
    assert samples_dir() == Path(dira_nb.__file__).resolve().parents[1] / "data_samples"


@pytest.mark.slow
def test_samples_dir_generates_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("DIRA_NB_SAMPLES", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(dira_nb, "__file__", str(tmp_path / "site" / "dira_nb" / "__init__.py"))  # no repo copy
    d = samples_dir()
    assert d == tmp_path / "cache" / "dira_nb" / "data_samples"
    assert len(list((d / "images").glob("*.png"))) == 200
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".tmp")]
    assert samples_dir() == d  # second call reuses it


# ---------------------------------------------------------------- the committed data_samples/
def test_committed_samples(samples_dir):
    d = samples_dir
    assert (d / "labels.csv").exists(), "data_samples/ is missing; run write_samples('data_samples')"
    total = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    assert total < 10 * 2**20
    rows = list(csv.DictReader(open(d / "labels.csv")))
    labels = np.array([int(r["label"]) for r in rows])
    splits = np.array([r["split"] for r in rows])
    assert len(rows) == 200 and labels.sum() == 80
    assert (splits == "valid").sum() == 40 and labels[splits == "valid"].sum() == 16
    assert "Apache-2.0" in (d / "README.md").read_text()
    # the files are exactly what the current code generates (checks a few images and all of their annotations)
    boxes, lms = read_boxes(d), read_landmarks(d)
    for i in (0, 1, 57, 199):
        key = f"images/{i:04d}.png"
        p = make_phantom(i, 128, lesion=bool(labels[i]))
        np.testing.assert_allclose(read_image(d / key), p.image, atol=0.5 / 255 + 1e-6)
        assert np.array_equal(np.array(Image.open(d / "masks/lesion" / f"{i:04d}.png")) > 0, p.lesion_mask > 0)
        assert boxes[key] == p.boxes
        for k, (x, y) in p.landmarks.items():
            assert lms[key][k] == pytest.approx((x, y), abs=1e-3)


def test_load_samples_splits(samples_dir, monkeypatch):
    monkeypatch.delenv("DIRA_NB_SAMPLES", raising=False)
    all_ = load_samples()
    tr, va = load_samples("train"), load_samples("valid", size=64)
    assert (len(all_), len(tr), len(va)) == (200, 160, 40)
    assert all_.class_names == ["normal", "lesion"] and all_.labels.sum() == 80 and va.labels.sum() == 16
    x, y = va[0]
    assert x.shape == (1, 64, 64) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and y in (0, 1)
    assert all_[0][0].shape == (1, 128, 128)
    with pytest.raises(ValueError, match="split"):
        load_samples("test")
