"""Frozen-feature evaluation: AUC on hand-made scores, linear probe and kNN on separable clusters, encoder loading."""
import numpy as np
import pytest
import torch

from dira_nb.eval.features import (auc_score, accuracy_score, label_kind, linear_probe, knn_classify, load_encoder,
                                   extract_features, evaluate_frozen, dataset_arrays)


def clusters(n, d=8, sep=10.0, seed=0, n_classes=2):
    g = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    return g.normal(size=(n, d)) + sep * np.eye(d)[y], y


def test_auc_perfect_reversed_random():
    y = np.array([0, 0, 0, 1, 1, 1])
    assert auc_score(y, np.array([.1, .2, .3, .7, .8, .9])) == 1.0
    assert auc_score(y, np.array([.9, .8, .7, .3, .2, .1])) == 0.0
    assert auc_score(y, np.full(6, .3)) == 0.5
    assert auc_score(y, np.array([.1, .8, .3, .7, .2, .9])) == pytest.approx(6 / 9)
    g = np.random.default_rng(1)
    yr = g.integers(0, 2, 5000)
    assert abs(auc_score(yr, g.random(5000)) - 0.5) < 0.03


def test_auc_layouts_and_errors():
    Y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    assert label_kind(Y) == "multilabel" and auc_score(Y, Y.astype(float)) == 1.0
    assert label_kind(np.array([0, 2, 1])) == "multiclass" and auc_score(np.array([0, 1, 2]), np.eye(3)) == 1.0
    with pytest.raises(ValueError, match="single class"):
        auc_score(np.ones(5, int), np.arange(5.0))
    assert accuracy_score(np.array([0, 1, 1]), np.array([.2, .9, .4])) == pytest.approx(2 / 3)


def test_linear_probe_and_knn_on_separable_clusters():
    Xa, ya = clusters(60); Xb, yb = clusters(30, seed=1)
    for r in (linear_probe(Xa, ya, Xb, yb), knn_classify(Xa, ya, Xb, yb, k=5)):
        assert r["auc"] == 1.0 and r["accuracy"] == 1.0
    Ya, Yb = np.stack([ya, 1 - ya], 1), np.stack([yb, 1 - yb], 1)
    assert linear_probe(Xa, Ya, Xb, Yb)["auc"] == 1.0
    assert knn_classify(Xa, Ya, Xb, Yb, k=5)["auc"] == 1.0
    X3, y3 = clusters(90, n_classes=3); T3, t3 = clusters(30, seed=2, n_classes=3)
    assert knn_classify(X3, y3, T3, t3, k=5)["accuracy"] == 1.0


def test_knn_uses_cosine_not_euclidean():
    # the test point is Euclidean-closer to class 0's point but points in class 1's direction
    tr, ytr = np.array([[1.0, 0.0], [0.0, 10.0]]), np.array([0, 1])
    te = np.array([[0.1, 1.0], [5.0, 0.1]])
    r = knn_classify(tr, ytr, te, np.array([1, 0]), k=1)
    assert r["scores"].tolist() == [1.0, 0.0]


def test_noise_features_score_near_chance():
    g = np.random.default_rng(0)
    r = linear_probe(g.normal(size=(200, 8)), np.arange(200) % 2, g.normal(size=(400, 8)), np.arange(400) % 2)
    assert 0.4 < r["auc"] < 0.6


# the three encoder kinds: DiRA's ResNet, LD's VGG, ACE's ViT (method, its options, the backbone it records)
KINDS = [("di", dict(backbone="resnet18", moco_k=32), "resnet18"), ("ld", {}, "vgg_ld"), ("ace", dict(backbone="vit_nano"), "vit_nano")]


@pytest.mark.parametrize("method,kw,backbone", KINDS, ids=[k[2] for k in KINDS])
def test_encoder_sources_and_features(tmp_path, samples_dir, method, kw, backbone):
    from dira_nb.methods.core import create_method
    from dira_nb.checkpoint import export_backbone
    from dira_nb.data.phantom import load_samples
    from dira_nb.models.encoders import is_encoder
    m = create_method(method, image_size=32, **kw)
    assert m.encoder.name == backbone
    m.save_checkpoint(tmp_path / "final.pt"); export_backbone(tmp_path / "final.pt", tmp_path / "backbone.pt")
    export_backbone(tmp_path / "final.pt", tmp_path / "backbone.safetensors")
    for src in (tmp_path, tmp_path / "backbone.pt", tmp_path / "backbone.safetensors", tmp_path / "final.pt", m, m.encoder):
        enc = load_encoder(src)
        assert is_encoder(enc) and enc.name == backbone and enc is not m.encoder, src
        for k, v in m.encoder.backbone_state_dict().items():
            assert torch.equal(enc.backbone_state_dict()[k], v), (src, k)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_encoder(tmp_path / "missing.pt")
    with pytest.raises(TypeError):
        load_encoder(3)
    X, y = dataset_arrays(load_samples("valid", size=32))
    f = extract_features(load_encoder(tmp_path), X[:5])
    assert f.shape == (5, m.encoder.out_dim) and np.isfinite(f).all()
    res = evaluate_frozen(load_encoder("random", backbone=backbone), dataset_arrays(load_samples("train", size=32)), (X, y), k=5)
    assert set(res) == {"linear_auc", "linear_acc", "knn_auc", "knn_acc"}


@pytest.mark.parametrize("backbone", [k[2] for k in KINDS])
def test_linear_probe_and_knn_see_brightness_for_every_encoder(backbone):
    "A random encoder of each kind already separates dim from bright images (constant or image-blind features give 0.5)."
    from dira_nb.core import tiny_batch
    torch.manual_seed(0)
    def task(n, seed):
        x, y = tiny_batch(n, 32, seed=seed) * 0.5, np.arange(n) % 2
        return x + 0.4 * torch.as_tensor(y, dtype=torch.float32)[:, None, None, None], y
    (Xa, ya), (Xb, yb) = task(40, 0), task(40, 1)
    enc = load_encoder("random", backbone=backbone, seed=0)
    fa, fb = extract_features(enc, Xa, device="cpu"), extract_features(enc, Xb, device="cpu")
    assert fa.shape == (40, enc.out_dim) and fa.std(0).max() > 0
    assert linear_probe(fa, ya, fb, yb)["auc"] > 0.9
    assert knn_classify(fa, ya, fb, yb, k=5)["auc"] > 0.8


def test_load_encoder_rejects_a_method_without_protocol_encoder():
    from torch import nn
    class Fake(nn.Module):
        def __init__(self): super().__init__(); self.encoder = nn.Conv2d(1, 2, 3)
    with pytest.raises(TypeError, match=r"Fake.encoder \(Conv2d\) does not follow the Encoder protocol"):
        load_encoder(Fake())
