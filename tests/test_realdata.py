"""Real chest X-rays (PneumoniaMNIST, shipped in data_samples/pneumoniamnist28): restoration error falls during a short DiRA run."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from dira_nb.core import seed_everything
from dira_nb.data.io import ImageDataset
from dira_nb.data.views import DiRAViews, ViewDataset
from dira_nb.learner import Learner
from dira_nb.methods.core import create_method
import dira_nb.methods.dira  # noqa: F401


def _fixed_views(ds, views, n, seed):
    "The same distorted validation views before and after training."
    g = torch.get_rng_state()
    torch.manual_seed(seed)
    items = [ViewDataset(ds, views)[i] for i in range(n)]
    torch.set_rng_state(g)
    return torch.stack([it["x1"] for it in items]), torch.stack([it["target"] for it in items])


def test_restoration_error_falls_on_real_xrays(pneumonia_npz):
    seed_everything(0)
    train = ImageDataset.from_npz(pneumonia_npz, "train", size=32)
    val = ImageDataset.from_npz(pneumonia_npz, "val", size=32)
    assert len(train) == 4707 and len(val) == 524
    views = DiRAViews(size=32)
    train_dl = DataLoader(ViewDataset(Subset(train, range(768)), views), batch_size=32, shuffle=True, drop_last=True)
    x1, target = _fixed_views(Subset(val, range(128)), views, 128, seed=123)

    m = create_method("dir", moco_k=256)
    def val_mse():
        return float(((m.reconstruct(x1) - target) ** 2).mean())
    before = val_mse()
    copy_mse = float(((x1 - target) ** 2).mean())   # "restoring" by copying the distorted input
    learn = Learner(m, train_dl, None, device="cpu", quiet=True)
    learn.fit(3)   # 72 steps
    after = val_mse()
    print(f"restoration MSE on 128 held-out real X-rays: before {before:.4f}, after {after:.4f}, copy-input {copy_mse:.4f}")
    assert np.isfinite(after)
    assert after < 0.5 * before, (before, after)
    hist = learn.history
    assert hist[-1]["train_loss_res"] < hist[0]["train_loss_res"]
