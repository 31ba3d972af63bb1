"""Tests for dira_nb.data.views (DiRA view triplets, spec §3, quirk 1; ViewDataset) and data.loaders.make_dataloaders."""
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from dira_nb.core import seed_everything, tiny_batch
from dira_nb.data.transforms import DISTORTION_KINDS, DiRAAugment, DiRADistortion, random_resized_crop_box, resized_crop
from dira_nb.data.views import DiRAViews, ViewDataset, plot_views
from dira_nb.data.loaders import make_dataloaders


@pytest.fixture(autouse=True)
def one_thread():
    "Tiny tensor ops are dominated by thread-pool overhead on a busy 2-core machine: run these tests single-threaded."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class ListDataset(Dataset):
    "A list-backed dataset of (1×H×W image, label) items (module level so worker processes can pickle it)."
    def __init__(self, imgs, labels=None): self.imgs, self.labels = list(imgs), labels
    def __len__(self): return len(self.imgs)
    def __getitem__(self, i): return self.imgs[i] if self.labels is None else (self.imgs[i], self.labels[i])


GEO_ONLY = lambda p_flip: DiRAAugment(p_jitter=0, p_blur=0, p_flip=p_flip)


def _img(h=48, w=48, seed=0):
    return tiny_batch(1, max(h, w), seed=seed)[0][:, :h, :w].contiguous()


@pytest.mark.parametrize("size,shape", [(28, (1, 28, 28)), (28, (1, 40, 70)), (64, (1, 64, 64)), (64, (1, 90, 50)),
                                        (224, (1, 100, 90)), (224, (1, 256, 256))])
def test_views_shapes_range_kinds(size, shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    x0 = x.clone()
    torch.manual_seed(0)
    for mode in ("dira", "dir", "di"):
        v = DiRAViews(size, mode=mode)(x)
        assert set(v) == {"x1", "x2", "target", "kind1", "kind2"}
        for k in ("x1", "x2", "target"):
            assert v[k].shape == (1, size, size) and v[k].dtype == torch.float32
            assert 0 <= v[k].min() and v[k].max() <= 1
        assert v["kind1"] in DISTORTION_KINDS and v["kind2"] in DISTORTION_KINDS
        if mode == "di": assert v["kind1"] == v["kind2"] == "none"
    assert torch.equal(x, x0), "input modified in place"


def test_target_is_the_flipped_crop_of_the_original():
    x = _img(60, 80)
    for p_flip in (0.0, 1.0):
        torch.manual_seed(3)
        v = DiRAViews(32, mode="di", augment=GEO_ONLY(p_flip))(x, return_params=True)
        torch.manual_seed(3)
        box = random_resized_crop_box(60, 80)                 # the first draw of the views is crop 1
        crop = resized_crop(x, box, 32)
        assert v["box1"] == box
        expected = crop.flip(-1) if p_flip else crop
        assert torch.equal(v["target"], expected)
        assert torch.equal(v["x1"], expected)                 # no photometric op, no distortion: x1 == target


def test_faithful_flip_quirk_reproduces_the_mismatch():
    x = _img(60, 80)
    torch.manual_seed(4)
    v = DiRAViews(32, mode="di", augment=GEO_ONLY(1.0), faithful_flip_quirk=True)(x)
    assert torch.equal(v["target"], v["x1"].flip(-1))
    assert not torch.equal(v["target"], v["x1"])


def test_target_matches_x1_when_undistorted_with_random_flips():
    x = _img(48, 48)
    torch.manual_seed(5)
    views, quirk = DiRAViews(24, augment=GEO_ONLY(0.5)), DiRAViews(24, augment=GEO_ONLY(0.5), faithful_flip_quirk=True)
    seen = set()
    for _ in range(200):
        v = views(x, return_params=True)
        if v["kind1"] == "none":
            assert torch.equal(v["target"], v["x1"])
            seen.add(v["aug1"]["flip"])
        q = quirk(x, return_params=True)
        if q["kind1"] == "none":
            assert torch.equal(q["target"], q["x1"].flip(-1) if q["aug1"]["flip"] else q["x1"])
    assert seen == {True, False}


def test_target_is_taken_before_photometric_ops():
    x = _img(48, 48)
    torch.manual_seed(6)
    aug = DiRAAugment(p_jitter=1, p_blur=1, p_flip=0)
    v = DiRAViews(32, mode="di", augment=aug)(x, return_params=True)
    assert torch.equal(v["target"], resized_crop(x, v["box1"], 32))   # clean crop
    assert not torch.allclose(v["x1"], v["target"])                   # view 1 jittered and blurred


def test_views_distortion_kinds_follow_spec_frequencies():
    x = _img(32, 32)
    torch.manual_seed(7)
    n = 1500
    views = DiRAViews(24, augment=GEO_ONLY(0.0))
    kinds = [views(x)["kind1"] for _ in range(n)]
    for k, p in dict(inpaint=0.30, outpaint=0.05, swap=0.30, none=0.35).items():
        assert abs(kinds.count(k) / n - p) < 4.5 * (p * (1 - p) / n) ** 0.5, (k, kinds.count(k) / n)
    assert all(DiRAViews(24, distortion=DiRADistortion(0, 0, 0))(x)["kind2"] == "none" for _ in range(10))


def test_views_determinism():
    x = _img(48, 48)
    seed_everything(8); a = [DiRAViews(32)(x) for _ in range(5)]
    seed_everything(8); b = [DiRAViews(32)(x) for _ in range(5)]
    for u, v in zip(a, b):
        for k in u: assert (torch.equal(u[k], v[k]) if isinstance(u[k], torch.Tensor) else u[k] == v[k])
    state = torch.get_rng_state()
    g = lambda: DiRAViews(32)(x, generator=torch.Generator().manual_seed(1))
    u, v = g(), g()
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(u["x1"], v["x1"]) and torch.equal(u["x2"], v["x2"])


def test_views_bad_input():
    with pytest.raises(ValueError, match="mode must be"): DiRAViews(mode="abc")
    with pytest.raises(ValueError, match="1 channel"): DiRAViews(16)(torch.rand(3, 20, 20))      # grey views, an RGB image
    with pytest.raises(ValueError, match="3 channel"): DiRAViews(16, channels=3)(torch.rand(1, 20, 20))
    out = DiRAViews(16, channels=3)(torch.rand(3, 20, 20))
    assert out["x1"].shape == out["x2"].shape == out["target"].shape == (3, 16, 16)
    with pytest.raises(TypeError, match="float"): DiRAViews(16)(torch.zeros(1, 20, 20, dtype=torch.uint8))
    assert DiRAViews(16)(torch.rand(20, 30))["x1"].shape == (1, 16, 16)   # H×W accepted


def test_show_returns_figure_and_keeps_rng():
    import plotly.graph_objects as go
    views = DiRAViews(32)
    state = torch.get_rng_state()
    fig = views.show(_img(48, 48), n=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(fig, go.Figure) and len(fig.data) == 9
    titles = [a.text for a in fig.layout.annotations]
    assert sum(t.startswith("view 1:") for t in titles) == 3 and any(t.startswith("target") for t in titles)
    samples = views.sample(_img(48, 48), n=2, seed=3)
    assert len(plot_views(samples).data) == 6
    assert all(torch.equal(s["x1"], t["x1"]) for s, t in zip(samples, views.sample(_img(48, 48), n=2, seed=3)))


def test_view_dataset_collates_to_batches():
    imgs = list(tiny_batch(10, 40))
    ds = ViewDataset(ListDataset(imgs, [torch.tensor(i % 3) for i in range(10)]), DiRAViews(28))
    batch = next(iter(DataLoader(ds, batch_size=4)))
    for k in ("x1", "x2", "target"): assert batch[k].shape == (4, 1, 28, 28)
    assert isinstance(batch["kind1"], list) and len(batch["kind1"]) == 4 and all(isinstance(k, str) for k in batch["kind2"])
    assert batch["label"].tolist() == [0, 1, 2, 0] and batch["index"].tolist() == [0, 1, 2, 3]
    bare = ViewDataset(ListDataset(imgs), DiRAViews(28), indices=[5, 9])
    assert len(bare) == 2 and bare[1]["label"] == -1 and bare[1]["index"] == 9


def test_make_dataloaders_split_and_batches():
    base = ListDataset(list(tiny_batch(23, 32)), list(range(23)))
    tdl, vdl = make_dataloaders(base, DiRAViews(16), batch_size=4, valid_pct=0.2, seed=0)
    tr, va = tdl.dataset.indices, vdl.dataset.indices
    assert len(va) == 5 and sorted(tr + va) == list(range(23)) and not set(tr) & set(va)
    assert make_dataloaders(base, DiRAViews(16), valid_pct=0.2, seed=0)[1].dataset.indices == va
    assert make_dataloaders(base, DiRAViews(16), valid_pct=0.2, seed=1)[1].dataset.indices != va
    assert len(tdl) == 18 // 4 and all(b["x1"].shape == (4, 1, 16, 16) for b in tdl)       # drop_last on train
    vb = list(vdl)
    assert [len(b["index"]) for b in vb] == [5]                                                # 4 + 1: no batch of one, nothing dropped
    assert torch.cat([b["index"] for b in vb]).tolist() == list(range(5))                      # valid in order, positions in the part
    assert torch.cat([b["label"] for b in vb]).tolist() == va                                  # .dataset.indices maps them to `base`
    assert all(torch.equal(x["x1"], y["x1"]) for x, y in zip(vb, list(vdl)))                   # the same validation views every pass
    tdl, vdl = make_dataloaders(base, DiRAViews(16), batch_size=64, valid_pct=0)
    assert vdl is None and len(tdl) == 1
    with pytest.raises(ValueError, match="valid_pct"): make_dataloaders(base, DiRAViews(16), valid_pct=1.0)


def test_make_dataloaders_with_workers():
    base = ListDataset(list(tiny_batch(8, 32)), list(range(8)))
    seed_everything(0)
    tdl, vdl = make_dataloaders(base, DiRAViews(16), batch_size=3, valid_pct=0.25, num_workers=2)   # 6 train + 2 valid
    batches = list(tdl) + list(vdl)
    assert sum(len(b["index"]) for b in batches) == 8
    assert all(b["x2"].shape[1:] == (1, 16, 16) for b in batches)
