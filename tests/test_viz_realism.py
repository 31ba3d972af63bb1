"""Discriminator patch maps, real-vs-restored scores, their history, and loss curves per ingredient."""
import numpy as np
import pytest
import torch

from dira_nb.core import seed_everything, tiny_batch
from dira_nb.losses import lsgan_discriminator_loss
from dira_nb.methods.core import create_method
from dira_nb.models.discriminator import PatchDiscriminator
from dira_nb.viz.realism import (curves_image, loss_curves_figure, loss_terms, patch_realism, patch_realism_figure,
                                 patch_realism_image, realism_history_figure, realism_summary, smooth_ema, upsample_map)


def test_patch_map_shape_matches_discriminator():
    seed_everything(0)
    m = create_method("dira", image_size=32, moco_k=16)
    x = tiny_batch(3, 40)
    maps = patch_realism(m, x)                                          # a method: its discriminator is used
    assert maps.shape == (3, *PatchDiscriminator.output_shape(40)[1:])
    np.testing.assert_allclose(maps, m.discriminator.eval()(x)[:, 0].detach().numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="no discriminator"): patch_realism(create_method("dir", image_size=32, moco_k=16), x)


def test_trained_discriminator_separates_real_from_fake():
    seed_everything(1)
    D = PatchDiscriminator(1, widths=(8, 16, 16, 16))
    real = tiny_batch(8, 32, seed=3)
    fake = (real + 0.3 * torch.randn_like(real)).clamp(0, 1)
    opt = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    for _ in range(40):
        loss = lsgan_discriminator_loss(D(real), D(fake)); opt.zero_grad(); loss.backward(); opt.step()
    s = realism_summary(D, real, fake)
    assert set(s) == {"real", "fake"} and s["real"] > s["fake"] + 0.4
    assert D.training                                                   # mode restored after eval-mode scoring


def test_history_figure_from_batch_losses_of_a_real_learner():
    from dira_nb.data.loaders import make_dataloaders
    from dira_nb.data.phantom import load_samples
    from dira_nb.learner import Learner
    seed_everything(0)
    m = create_method("dira", image_size=32, moco_k=16)
    ds = torch.utils.data.Subset(load_samples(size=64), range(16))
    train_dl, _ = make_dataloaders(ds, m.views(32), batch_size=8, valid_pct=0)
    learn = Learner(m, train_dl, None, device="cpu", quiet=True)
    learn.fit(1)
    bl = learn.recorder.batch_losses
    fig = realism_history_figure(bl)
    names = [t.name for t in fig.data]
    assert names == ["real (targets)", "restored", "loss_critic (discriminator)", "loss_adv (generator)"]
    assert list(fig.data[0].x) == [r["iter"] for r in bl]
    np.testing.assert_allclose(fig.data[1].y, [r["critic_fake"] for r in bl])
    curves = loss_curves_figure(bl)
    assert [a.text for a in curves.layout.annotations] == ["loss", "loss_dis", "loss_res", "loss_adv", "loss_critic"]


def test_history_rows_with_prefix_and_smoothing():
    rows = [dict(epoch=e, train_critic_real=0.9, train_critic_fake=0.1 * e, valid_critic_real=0.5) for e in range(4)]
    fig = realism_history_figure(rows, prefix="train_")
    assert len(fig.data) == 2 and list(fig.data[1].x) == [0, 1, 2, 3]
    np.testing.assert_allclose(smooth_ema(np.array([1.0, 3.0]), 0.5), [1.0, (0.5 * 0.5 + 0.5 * 3.0) / 0.75])
    assert len(realism_history_figure([dict(iter=0, loss=1.0)]).data) == 0


def test_patch_realism_figure_and_image():
    x = tiny_batch(3, 16)
    maps = np.random.default_rng(0).random((3, 2, 2)).astype(np.float32)
    fig = patch_realism_figure({"real": x, "restored": x}, {"real": maps, "restored": maps}, titles=["a", "b", "c"])
    assert len(fig.data) == 12
    np.testing.assert_array_equal(upsample_map(maps[0], (16, 16))[:8, :8], np.full((8, 8), maps[0, 0, 0]))
    img = patch_realism_image(x, maps, pad=1, scale=1)
    assert img.shape == (2 * 16 + 3, 3 * 16 + 4, 3) and img.dtype == np.uint8
    with pytest.raises(ValueError, match="map sets"): patch_realism_figure({"a": x}, {"b": maps})


def test_loss_terms_and_curves_from_history_rows():
    rows = [dict(epoch=e, train_loss=1.0 / (e + 1), valid_loss=1.2 / (e + 1), train_loss_res=0.1, train_psnr=12.0, lr=0.03)
            for e in range(3)]
    assert loss_terms(rows) == {"loss": ["train_loss", "valid_loss"], "loss_res": ["train_loss_res"]}
    fig = loss_curves_figure(rows, keys=["loss"])
    assert [t.name for t in fig.data] == ["train", "valid"]
    with pytest.raises(ValueError, match="no column"): loss_curves_figure(rows, keys=["loss_adv"])
    png = curves_image(rows, panel=(120, 90))
    assert png.shape == (90, 240, 3) and (png != 255).any()
