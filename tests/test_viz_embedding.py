"""Embeddings of a probe set: features, PCA/UMAP reduction, scatter with thumbnails, PNG rendering."""
import numpy as np
import pytest
import torch

from dira_nb.core import seed_everything, tiny_batch
from dira_nb.data.phantom import load_samples
from dira_nb.methods.core import create_method
from dira_nb.viz.embedding import (THUMBNAIL_HOVER_JS, EmbeddingBasis, attach_thumbnail_hover, compute_embeddings, decode_thumbnail,
                                   embedding_figure, embedding_html, embedding_image, reduce_embeddings, thumbnail_uris)


@pytest.fixture(scope="module")
def method():
    seed_everything(0)
    return create_method("dira", image_size=32, moco_k=16)


def test_compute_embeddings_sources_agree(method):
    ds = load_samples("valid", size=32)
    f = compute_embeddings(method, ds, batch_size=7)                    # dataset of (image, label), odd batch size
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    assert f.shape == (len(ds), method.encoder.out_dim) and f.dtype == np.float32
    np.testing.assert_allclose(compute_embeddings(method.encoder, x), f, atol=1e-4)
    np.testing.assert_allclose(compute_embeddings(method, x.numpy()[:, 0]), f, atol=1e-4)   # N×H×W array
    assert method.training


def test_pca_separates_clusters_and_is_deterministic():
    rng = np.random.default_rng(1)
    f = np.concatenate([rng.normal(0, 1, (40, 128)), rng.normal(4, 1, (40, 128))])
    xy = reduce_embeddings(f, "pca")
    assert xy.shape == (80, 2) and xy.dtype == np.float32
    assert np.sign(xy[:40, 0]).mean() == -np.sign(xy[40:, 0]).mean()
    np.testing.assert_array_equal(xy, reduce_embeddings(f, "pca"))


def test_umap_on_a_few_hundred_points():
    rng = np.random.default_rng(2)
    centers = rng.normal(0, 8, (3, 256))
    labels = np.repeat(np.arange(3), 100)
    f = centers[labels] + rng.normal(0, 1, (300, 256))
    xy = reduce_embeddings(f, "umap", random_state=0)
    assert xy.shape == (300, 2) and np.isfinite(xy).all()
    from sklearn.metrics import silhouette_score
    assert silhouette_score(xy, labels) > 0.5


def test_reduce_errors_and_tiny_fallback():
    with pytest.raises(ValueError, match="choose one of"): reduce_embeddings(np.zeros((5, 3)), "tsne")
    with pytest.raises(ValueError, match="N×D"): reduce_embeddings(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"): reduce_embeddings(np.full((5, 3), np.nan), "pca")
    with pytest.warns(UserWarning, match="too few"):
        assert reduce_embeddings(np.random.rand(5, 8), "umap").shape == (5, 2)


def test_figure_thumbnails_and_hover_script():
    xy = np.random.default_rng(0).normal(size=(6, 2))
    imgs = tiny_batch(6, 16)
    fig = embedding_figure(xy, color=np.array([0, 1, 0, 1, 2, 2]), thumbnails=imgs, hover={"id": list("abcdef")})
    assert len(fig.data) == 3 and sum(len(t.x) for t in fig.data) == 6
    uri, idx = fig.data[1].customdata[0]
    assert idx == 1 and decode_thumbnail(uri)[:8] == b"\x89PNG\r\n\x1a\n"
    html = embedding_html(fig, include_plotlyjs=False, full_html=False)
    assert "plotly_hover" in html and "{plot_id}" not in html
    assert "{plot_id}" in THUMBNAIL_HOVER_JS
    cont = embedding_figure(xy, color=np.linspace(0, 1, 6))
    assert len(cont.data) == 1
    with pytest.raises(ValueError, match="thumbnails has 2 entries"): embedding_figure(xy, thumbnails=imgs[:2])
    assert len(thumbnail_uris(imgs, size=8)) == 6


def test_attach_thumbnail_hover_routes_events():
    xy = np.random.default_rng(0).normal(size=(4, 2))
    fig = embedding_figure(xy, thumbnails=tiny_batch(4, 8))

    class Trace:
        def __init__(self, t): self.customdata, self.cb = t.customdata, None
        def on_hover(self, fn): self.cb = fn
    class FW: data = [Trace(t) for t in fig.data]
    class Img: value = b""
    class Pts: point_inds = [3]
    fw, img = FW(), Img()
    attach_thumbnail_hover(fw, img)
    fw.data[0].cb(fw.data[0], Pts(), None)
    assert img.value == decode_thumbnail(fig.data[0].customdata[3][0])


def test_embedding_image():
    xy = np.array([[0, 0], [1, 1], [0.5, 0.2]])
    a = embedding_image(xy, np.array(["x", "y", "x"]), size=100, radius=3)
    assert a.shape == (100, 100, 3) and a.dtype == np.uint8
    # the point at the maximum is drawn in the top-right (y axis points up)
    assert (a[5:30, 70:98] != 255).any() and (a[70:98, 5:30] != 255).any()


def _clusters(seed=4, n=20, d=48):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, (n, d)), rng.normal(5, 1, (n, d))]).astype(np.float32), rng


@pytest.mark.parametrize("how", ["pca", pytest.param("umap", marks=pytest.mark.slow)])   # umap: ~20 s of numba compiling
def test_basis_is_fitted_once_and_reused(how, monkeypatch):
    f0, rng = _clusters()
    b = EmbeddingBasis(how)
    xy0 = b(f0, step=0)
    model = b.model
    if how == "umap":                                           # a second fit would be a new UMAP: count calls
        calls = []
        monkeypatch.setattr(type(model), "fit", lambda self, *a, **k: calls.append(1) or self)
    xy0b = b(f0, step=5)                                        # a second refresh with unchanged features
    np.testing.assert_array_equal(xy0, xy0b)                    # same input, same coordinates
    f1 = f0 + rng.normal(0, 0.05, f0.shape).astype(np.float32)
    xy1 = b(f1, step=9)
    assert b.n_fits == 1 and b.fitted_step == 0 and b.model is model
    if how == "umap": assert calls == []; monkeypatch.undo()
    span = np.ptp(xy0, axis=0).max()
    assert np.median(np.abs(xy1 - xy0)) < 0.1 * span            # small feature changes move points a little
    b.refit(); b(f1, step=9)
    assert b.n_fits == 2 and b.fitted_step == 9


def test_basis_refuses_wrong_inputs():
    f0, _ = _clusters(n=5, d=8)
    b = EmbeddingBasis("pca")
    with pytest.raises(RuntimeError, match="call fit first"): b.transform(f0)
    with pytest.raises(ValueError, match="choose one of"): EmbeddingBasis("tsne")
    b.fit(f0)
    with pytest.raises(ValueError, match="fitted on 8-d"): b.transform(np.zeros((3, 9)))
    with pytest.raises(ValueError, match="NaN"): b.transform(np.full((3, 8), np.nan))
