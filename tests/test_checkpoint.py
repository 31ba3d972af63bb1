"""Checkpoint round trips, backbone export into torchvision, and clear errors."""
import warnings
import torch
import pytest

from dira_nb.core import seed_everything, tiny_batch
from dira_nb.methods.core import create_method, Method
from dira_nb.checkpoint import load_checkpoint, export_backbone, load_backbone, CheckpointError
from dira_nb.tvcompat import torchvision
import dira_nb.methods.dira  # noqa: F401


def test_method_checkpoint_round_trip(tmp_path):
    seed_everything(0)
    m = create_method("dira", moco_k=16, backbone="resnet18")
    m.queue.enqueue(torch.randn(6, 128))
    opts = m.configure_optimizers()
    p = m.save_checkpoint(tmp_path / "ck.pt", extra_meta=dict(epoch=7), optimizers=opts)
    ck = load_checkpoint(p)
    meta = ck["meta"]
    assert (meta["method"], meta["stage"], meta["backbone"], meta["in_chans"], meta["epoch"]) == ("dira", "dira", "resnet18", 1, 7)
    assert meta["intensity"]["range"] == (0.0, 1.0) and meta["intensity"]["normalisation"] == "none"
    assert {"dira_nb", "torch", "torchvision"} <= set(meta["versions"])
    assert {"decoder_state", "discriminator_state", "head_state", "queue", "method_state", "optimizer_state"} <= set(ck)
    m2 = Method.from_checkpoint(p)
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    x = tiny_batch(2, 32)
    assert torch.allclose(m.reconstruct(x), m2.reconstruct(x))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_backbone_export_loads_into_torchvision(tmp_path, arch):
    m = create_method("dir", backbone=arch, moco_k=16)
    p = m.save_checkpoint(tmp_path / "ck.pt")
    bb = export_backbone(p, tmp_path / "bb.pt")
    tv = getattr(torchvision.models, arch)(weights=None)
    tv.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    model, report = load_backbone(bb, model=tv)
    assert report.unexpected == [] and sorted(report.missing) == ["fc.bias", "fc.weight"]
    assert torch.equal(model.layer1[0].conv1.weight, m.encoder.body.layer1[0].conv1.weight)
    # pooled features agree with the method's own embedding
    x = tiny_batch(2, 64)
    model.fc = torch.nn.Identity()
    model.eval()
    assert torch.allclose(model(x), m.embed(x), atol=1e-5)


def test_three_channel_export_matches_gray_features(tmp_path):
    m = create_method("di", moco_k=16)
    p = m.save_checkpoint(tmp_path / "ck.pt")
    model, report = load_backbone(export_backbone(p, tmp_path / "bb3.pt", in_chans=3))
    assert report.ok and model.conv1.weight.shape[1] == 3
    model.fc = torch.nn.Identity()
    model.eval()
    x = tiny_batch(2, 64)
    assert torch.allclose(model(x.repeat(1, 3, 1, 1)), m.embed(x), atol=1e-5)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a dira_nb checkpoint"):
        load_checkpoint(other)


def test_normalisation_mismatch_warns(tmp_path):
    m = create_method("di", moco_k=16)
    bb = export_backbone(m.save_checkpoint(tmp_path / "ck.pt"), tmp_path / "bb.pt")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        load_backbone(bb, normalisation="imagenet")
    assert any("normalisation" in str(x.message) for x in w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_backbone(bb, normalisation="none")


@pytest.mark.parametrize("name,backbone", [("ace", "vit_nano"), ("ld", "vgg_ld")])
def test_load_backbone_rebuilds_non_resnet_encoders(tmp_path, name, backbone):
    "LD's VGG and ACE's ViT exports load back through the encoder registry, every key matched."
    from dira_nb.methods.core import create_method
    from dira_nb.checkpoint import export_backbone, load_backbone
    m = create_method(name, backbone=backbone, image_size=32)
    m.save_checkpoint(tmp_path / "c.pt")
    model, report = load_backbone(export_backbone(tmp_path / "c.pt", tmp_path / "b.safetensors"))
    assert report.ok and not report.missing and not report.unexpected
    for k, v in m.encoder.backbone_state_dict().items():
        assert torch.equal(model.backbone_state_dict()[k], v), k


@pytest.mark.parametrize("name,backbone,stem", [("ace", "vit_nano", "patch_embed.weight"), ("ld", "vgg_ld", "stages.0.0.weight")])
def test_non_resnet_export_with_three_channels_and_clear_errors(tmp_path, name, backbone, stem):
    "export_backbone(in_chans=3) adapts the VGG's / ViT's first conv; a gray image on RGB gives the same features; torchvision models are refused by name."
    m = create_method(name, backbone=backbone, image_size=32)
    m.save_checkpoint(tmp_path / "c.pt")
    p3 = export_backbone(tmp_path / "c.pt", tmp_path / "b3.safetensors", in_chans=3)
    enc3, rep = load_backbone(p3)
    assert rep.ok and rep.meta["in_chans"] == 3 and rep.meta["pretrained_in_chans"] == 1
    assert enc3.in_chans == 3 and enc3.backbone_state_dict()[stem].shape[1] == 3
    enc1 = m.encoder.eval(); enc3.eval()
    g = tiny_batch(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc3.pool(enc3(g.repeat(1, 3, 1, 1))), enc1.pool(enc1(g)), atol=1e-4, rtol=1e-4)
    with pytest.raises(CheckpointError, match=f"holds a '{backbone}' encoder.*no torchvision counterpart"):
        load_backbone(p3, model=torchvision.models.resnet18(weights=None))
