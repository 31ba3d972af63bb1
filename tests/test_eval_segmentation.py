"""Segmentation transfer: Dice on hand-made masks, loading encoder + decoder from a DiRA checkpoint, sample masks."""
import torch
import pytest

from dira_nb.eval.segmentation import (dice_score, dice_loss, build_segmentation_unet, load_sample_masks,
                                       finetune_segmentation, predict_masks)


def test_dice_hand_made():
    a = torch.zeros(1, 1, 10, 10); a[..., :5, :] = 1          # 50 px
    b = torch.zeros(1, 1, 10, 10); b[..., :, :2] = 1          # 20 px, overlap 10 px
    assert dice_score(a, a).item() == pytest.approx(1.0)
    assert dice_score(a, 1 - a).item() == pytest.approx(0.0)
    assert dice_score(a, b).item() == pytest.approx(2 * 10 / 70)
    assert dice_score(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4)).tolist() == [1.0, 1.0]
    assert dice_score(a.bool(), a).item() == pytest.approx(1.0)
    assert dice_loss(40 * (2 * a - 1), a).item() < 0.01
    with pytest.raises(ValueError, match="shapes differ"):
        dice_score(a, b[..., :5])


def test_unet_loads_encoder_and_decoder_from_dira_checkpoint(tmp_path):
    from dira_nb.methods.core import create_method
    from dira_nb.checkpoint import export_backbone
    m = create_method("dira", image_size=16, moco_k=32, decoder_channels=(32, 16, 16, 8, 8))
    with torch.no_grad():
        for p in m.unet.parameters(): p.add_(0.1 * torch.randn_like(p))
    m.save_checkpoint(tmp_path / "final.pt"); export_backbone(tmp_path / "final.pt", tmp_path / "backbone.pt")
    for src in (tmp_path / "final.pt", tmp_path):
        seg, rep = build_segmentation_unet(src)
        assert rep == dict(encoder="pretrained", decoder="pretrained")
        for k, v in m.unet.decoder.state_dict().items():
            assert torch.equal(seg.decoder.state_dict()[k], v), k
        for k, v in m.encoder.backbone_state_dict().items():
            assert torch.equal(seg.encoder.backbone_state_dict()[k], v), k
    seg, rep = build_segmentation_unet(tmp_path / "backbone.pt", decoder_channels=(32, 16, 16, 8, 8))
    assert rep["decoder"] == "random"
    assert not torch.equal(seg.decoder.blocks[0].conv1[0].weight, m.unet.decoder.blocks[0].conv1[0].weight)
    _, rep = build_segmentation_unet(tmp_path / "final.pt", load_decoder=False)
    assert rep["decoder"] == "random"


def test_sample_masks_and_short_finetune(samples_dir):
    X, M = load_sample_masks("lesion", "valid", size=32)
    assert X.shape == M.shape == (40, 1, 32, 32)
    assert set(M.unique().tolist()) <= {0.0, 1.0} and M.sum() > 0
    with pytest.raises(FileNotFoundError, match="kind 'bones'"):
        load_sample_masks("bones")
    Xl, Ml = load_sample_masks("lung", "train", size=16)
    seg, _ = build_segmentation_unet("random", decoder_channels=(32, 16, 16, 8, 8), seed=0)
    r = finetune_segmentation(seg, (Xl[:32], Ml[:32]), (Xl[32:48], Ml[32:48]), steps=3, batch_size=8, device="cpu")
    assert len(r["history"]) == 3 and 0 <= r["dice"] <= 1
    assert predict_masks(seg, Xl[:2]).shape == (2, 1, 16, 16)


@pytest.mark.parametrize("method,kw,n_maps", [("ld", {}, 5), ("ace", dict(backbone="vit_nano"), 2)], ids=["vgg_ld", "vit_nano"])
def test_unet_on_ld_and_ace_encoders(tmp_path, samples_dir, method, kw, n_maps):
    "LD's VGG (5 maps, strides 1-16) and ACE's ViT (2 token grids) get a U-Net with one decoder block per map."
    from dira_nb.methods.core import create_method
    m = create_method(method, image_size=32, **kw)
    m.save_checkpoint(tmp_path / "final.pt")
    for src in (m, tmp_path / "final.pt", tmp_path):
        seg, rep = build_segmentation_unet(src, seed=0)
        assert rep == dict(encoder="pretrained", decoder="random")       # ACE's TokenDecoder is no U-Net decoder
        assert len(seg.decoder.decoder_channels) == n_maps == len(m.encoder.channels)
        for k, v in m.encoder.backbone_state_dict().items():
            assert torch.equal(seg.encoder.backbone_state_dict()[k], v), k
    X, M = load_sample_masks("lung", "train", size=32)
    r = finetune_segmentation(seg, (X[:16], M[:16]), (X[16:24], M[16:24]), steps=2, batch_size=8, device="cpu")
    assert len(r["history"]) == 2 and 0 <= r["dice"] <= 1 and all(torch.isfinite(torch.tensor(h["loss"])) for h in r["history"])
    assert predict_masks(seg, X[:2]).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match=f"encoder '{m.encoder.name}' gives {n_maps} feature maps"):
        build_segmentation_unet(m, decoder_channels=(8,) * (n_maps + 1))


def test_masks_of_any_folder_split_and_kind(tmp_path, samples_dir):
    "load_sample_masks reads any folder (dir=), a 'test' (or 'val') split and any mask kind subfolder."
    import shutil
    (tmp_path / "masks" / "heart").mkdir(parents=True); (tmp_path / "img").mkdir()
    rows = ["image,label,split"]
    for i, s in enumerate(["train", "val", "test", "test"]):
        shutil.copy(samples_dir / "images" / f"{i:04d}.png", tmp_path / "img" / f"{i:04d}.png")
        shutil.copy(samples_dir / "masks" / "lung" / f"{i:04d}.png", tmp_path / "masks" / "heart" / f"{i:04d}.png")
        rows.append(f"img/{i:04d}.png,0,{s}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    X, M = load_sample_masks("heart", "test", size=16, dir=tmp_path)
    assert X.shape == M.shape == (2, 1, 16, 16) and M.sum() > 0
    assert len(load_sample_masks("heart", "valid", size=16, dir=tmp_path)[0]) == 1        # 'val' rows are the validation split
    assert len(load_sample_masks("heart", dir=tmp_path, size=16)[0]) == 4
    with pytest.raises(ValueError, match="split must be"):
        load_sample_masks("heart", "holdout-2", dir=tmp_path)
    (tmp_path / "masks" / "heart" / "0003.png").unlink()
    with pytest.raises(FileNotFoundError, match="0003.png"):
        load_sample_masks("heart", "test", dir=tmp_path)
