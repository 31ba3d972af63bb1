"""Models band (encoders, U-Net, discriminator, heads): shapes at many sizes, clean-key export, parameter counts."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dira_nb.core import tiny_batch
from dira_nb.tvcompat import torchvision
from dira_nb.models.encoders import (ENCODERS, ResNetEncoder, adapt_input_conv, create_encoder, list_encoders)
from dira_nb.models.unet import DecoderBlock, UNet, UNetDecoder
from dira_nb.models.discriminator import PatchDiscriminator
from dira_nb.models.heads import BarlowTwinsProjector, MoCoHead, SimSiamPredictor, SimSiamProjector


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return create_encoder("resnet18")


@pytest.fixture(scope="module")
def r50():
    torch.manual_seed(0)
    return create_encoder("resnet50")


# ---------------------------------------------------------------- discriminator
@pytest.mark.parametrize("size", [64, 128, 224, 100, 33])
def test_discriminator_output_shape(size):
    D = PatchDiscriminator()
    out = D(torch.rand(2, 1, size, size))
    side = math.ceil(size / 8)
    assert out.shape == (2, 1, side, side)
    assert PatchDiscriminator.output_shape(size) == (1, side, side)


def test_discriminator_known_sizes_and_init():
    assert PatchDiscriminator.output_shape(224) == (1, 28, 28)
    assert PatchDiscriminator.output_shape(64) == (1, 8, 8)
    assert PatchDiscriminator.output_shape(128) == (1, 16, 16)
    assert PatchDiscriminator.output_shape((64, 100)) == (1, 8, 13)
    torch.manual_seed(0)
    D = PatchDiscriminator()
    assert n_params(D) == 1_554_433
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert all(float(c.bias.detach().abs().sum()) == 0.0 for c in convs)
    assert abs(convs[3].weight.std().item() - 0.02) < 1e-3
    assert [m.num_features for m in D.modules() if isinstance(m, nn.InstanceNorm2d)] == [128, 256, 512]
    with pytest.raises(ValueError, match="B×1×H×W"):
        D(torch.rand(2, 3, 64, 64))


# ---------------------------------------------------------------- encoders
@pytest.mark.parametrize("size", [64, 224, 33, 28])
def test_r18_feature_shapes(r18, size):
    with torch.no_grad():
        feats = r18(torch.rand(2, 1, size, size))
    assert [f.shape[1] for f in feats] == [64, 64, 128, 256, 512]
    sides = [math.ceil(size / r) for r in (2, 4, 8, 16, 32)]
    assert [tuple(f.shape[-2:]) for f in feats] == [(s, s) for s in sides]
    assert r18.pool(feats).shape == (2, 512)


@pytest.mark.parametrize("size", [64, 224, 33])
def test_r50_feature_shapes(r50, size):
    with torch.no_grad():
        feats = r50(torch.rand(2, 1, size, size))
    assert [f.shape[1] for f in feats] == [64, 256, 512, 1024, 2048]
    assert [f.shape[-1] for f in feats] == [math.ceil(size / r) for r in (2, 4, 8, 16, 32)]
    assert r50.out_dim == 2048 and r50.pool(feats).shape == (2, 2048)


def test_backbone_state_dict_round_trip(r18):
    sd = r18.backbone_state_dict()
    assert not any(k.startswith(("fc.", "body.", "module.")) for k in sd)
    tv = torchvision.models.resnet18(weights=None)
    tv.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    res = tv.load_state_dict(sd, strict=False)
    assert sorted(res.missing_keys) == ["fc.bias", "fc.weight"]
    assert res.unexpected_keys == []
    assert torch.equal(tv.layer3[1].conv2.weight, r18.body.layer3[1].conv2.weight)
    # and back into a fresh encoder, strictly
    e2 = create_encoder("resnet18")
    e2.load_backbone_state_dict(sd)
    x = tiny_batch(2, 32)
    r18.eval(); e2.eval()
    with torch.no_grad():
        assert torch.allclose(r18(x)[-1], e2(x)[-1])
    r18.train()


def test_export_1_to_3_channels_equivalence(r18):
    r18.eval()
    x = tiny_batch(2, 64)
    m3 = r18.to_torchvision(num_classes=7, in_chans=3).eval()
    assert m3.conv1.weight.shape == (64, 3, 7, 7) and m3.fc.out_features == 7
    assert torch.allclose(m3.conv1.weight.sum(1, keepdim=True), r18.body.conv1.weight, atol=1e-6)
    m3.fc = nn.Identity()
    with torch.no_grad():
        ref = r18.pool(r18(x))
        got = m3(x.repeat(1, 3, 1, 1))
        # a non-gray 3-channel input must give something else: the check can fail
        other = m3(torch.cat([x, torch.zeros_like(x), x], 1))
    r18.train()
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    assert not torch.allclose(other, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))


def test_adapt_input_conv_rules():
    w3 = torch.randn(4, 3, 7, 7)
    assert torch.allclose(adapt_input_conv(w3, 1), w3.sum(1, keepdim=True))
    w1 = torch.randn(4, 1, 7, 7)
    up = adapt_input_conv(w1, 3)
    assert torch.allclose(up, w1.repeat(1, 3, 1, 1) / 3)
    g = torch.rand(1, 1, 12, 12)
    assert torch.allclose(F.conv2d(g.repeat(1, 3, 1, 1), up), F.conv2d(g, w1), atol=1e-5)


def test_list_and_create_encoders():
    names = list_encoders()
    assert names == sorted(names)
    assert {"resnet18", "resnet34", "resnet50", "vgg_ld", "vit_nano", "vit_tiny"} <= set(names)   # LD/ACE encoders load on first use
    assert list_encoders("resnet*") == ["resnet18", "resnet34", "resnet50"]
    assert list_encoders("resnet5*") == ["resnet50"]
    assert list_encoders("densenet*") == []
    assert set(ENCODERS) >= {"resnet18", "resnet34", "resnet50"}
    e = create_encoder("resnet34", in_chans=3)
    assert isinstance(e, ResNetEncoder) and e.body.conv1.in_channels == 3
    with pytest.raises(ValueError, match="unknown encoder 'resnet7'"):
        create_encoder("resnet7")


# ---------------------------------------------------------------- U-Net
@pytest.mark.parametrize("size", [28, 32, 33, 64, 100])
def test_unet_recon_shape_and_range(size):
    torch.manual_seed(0)
    net = UNet(create_encoder("resnet18"))
    x = tiny_batch(2, size)
    with torch.no_grad():
        feats, rec = net(x)
    assert rec.shape == x.shape
    assert float(rec.min()) > 0.0 and float(rec.max()) < 1.0
    assert len(feats) == 5 and feats[-1].shape[1] == 512


def test_unet_logits_and_non_square():
    torch.manual_seed(0)
    sig = UNet("resnet18", out_chans=3).eval()
    log = UNet("resnet18", out_chans=3, activation=None).eval()
    log.load_state_dict(sig.state_dict())
    x = torch.rand(2, 1, 48, 72)
    with torch.no_grad():
        _, y = log(x)
        _, r = sig(x)
    assert y.shape == (2, 3, 48, 72)
    assert torch.allclose(torch.sigmoid(y), r, atol=1e-6)
    assert not torch.allclose(y, r)
    with pytest.raises(ValueError):
        UNet("resnet18", activation="relu")


def test_unet_gradient_reaches_encoder_conv1():
    torch.manual_seed(0)
    net = UNet("resnet18")
    x = tiny_batch(2, 32)
    _, rec = net(x)
    F.mse_loss(rec, x).backward()
    g = net.encoder.body.conv1.weight.grad
    assert g is not None and float(g.abs().sum()) > 0
    assert float(net.decoder.blocks[0].conv1[0].weight.grad.abs().sum()) > 0


def test_decoder_structure():
    dec = UNetDecoder((64, 256, 512, 1024, 2048))
    assert [(b.in_chans, b.skip_chans, b.out_chans) for b in dec.blocks] == [
        (2048, 1024, 256), (256, 512, 128), (128, 256, 64), (64, 64, 32), (32, 0, 16)]
    assert DecoderBlock(8, 4, 2)(torch.rand(1, 8, 3, 3), torch.rand(1, 4, 5, 6)).shape == (1, 2, 5, 6)
    with pytest.raises(ValueError, match="one decoder block per encoder level"):
        UNetDecoder((64, 128), (32, 16, 8))


def test_param_counts_r50_unet():
    with torch.device("meta"):
        u = UNet("resnet50")
        u3 = UNet(create_encoder("resnet50", in_chans=3))
        head = MoCoHead(2048)
    assert n_params(u.decoder) == 9_012_928
    assert abs(n_params(u.decoder) / 1e6 - 9.01) < 0.05
    assert n_params(u.encoder) == 23_501_760
    assert n_params(u3.encoder) == 23_508_032
    assert abs(n_params(u3.encoder) / 1e6 - 23.51) < 0.005
    assert n_params(u.head) == 145
    # one DiRA branch (U-Net + MoCo head) with the original 3-channel stem: the spec's 36.98M
    assert n_params(u3) + n_params(head) == 36_979_729
    assert abs((n_params(u3) + n_params(head)) / 1e6 - 36.98) < 0.005


def test_r50_unet_forward_64(r50):
    net = UNet(r50)
    with torch.no_grad():
        feats, rec = net(tiny_batch(2, 64))
    assert rec.shape == (2, 1, 64, 64)
    assert [f.shape[1] for f in feats] == [64, 256, 512, 1024, 2048]


# ---------------------------------------------------------------- heads
def test_heads_output_dims():
    x = torch.randn(4, 512)
    assert MoCoHead(512)(x).shape == (4, 128)
    assert MoCoHead(512, hidden_dim=64, out_dim=32)(x).shape == (4, 32)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in MoCoHead(512).modules())
    assert BarlowTwinsProjector(512, hidden_dim=64, out_dim=96)(x).shape == (4, 96)
    sp = SimSiamProjector(512, out_dim=64)
    z = sp(x)
    assert z.shape == (4, 64)
    assert [m.affine for m in sp.modules() if isinstance(m, nn.BatchNorm1d)] == [True, True, False]
    assert torch.allclose(z.mean(0), torch.zeros(64), atol=1e-4)
    assert SimSiamPredictor(64, hidden_dim=16)(z).shape == (4, 64)
    with torch.device("meta"):
        assert n_params(MoCoHead(2048)) == 4_458_624


# ---------------------------------------------------------------- the Encoder protocol (ResNet, LD's VGG, ACE's ViT)
@pytest.mark.parametrize("name", ["resnet18", "vgg_ld", "vit_nano"])
def test_encoder_protocol_conformance(name):
    from dira_nb.models.encoders import is_encoder, check_encoder
    torch.manual_seed(0)
    enc = create_encoder(name, 1).eval()
    assert is_encoder(enc) and check_encoder(enc) is enc
    x = torch.rand(2, 1, 32, 32)
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o)) for m in enc.feature_modules()]
    with torch.no_grad(): feats = enc(x)
    for h in hooks: h.remove()
    assert len(feats) == len(enc.channels) == len(enc.reductions) == len(enc.feature_modules())
    for f, c, r in zip(feats, enc.channels, enc.reductions):
        assert f.shape == (2, c, math.ceil(32 / r), math.ceil(32 / r)), (name, f.shape, c, r)
    # each feature module's output is the corresponding map of `forward` (hooks fire in order; a module may fire once for two maps)
    for f in feats: assert any(o.shape == f.shape and torch.equal(o, f) for o in seen)
    p = enc.pool(feats)
    assert p.shape == (2, enc.out_dim) and torch.allclose(p, feats[-1].mean((2, 3)))
    # every feature module lies on the path to the pooled feature, so Grad-CAM gradients reach it
    seen.clear()
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o)) for m in enc.feature_modules()]
    xg = x.clone().requires_grad_(True)
    out = enc.pool(enc(xg)).sum()
    for h in hooks: h.remove()
    grads = torch.autograd.grad(out, seen)                                # raises if a hooked output is unused
    assert all(g.abs().sum() > 0 for g in grads)
    sd = enc.backbone_state_dict()
    assert enc.stem_key in sd and sd[enc.stem_key].shape[1] == 1
    enc3 = create_encoder(name, 3)
    res = enc3.load_backbone_state_dict(sd, strict=True)                  # 1 → 3 channel stem, everything else as is
    assert not res.missing_keys and not res.unexpected_keys
    enc3.eval()
    with torch.no_grad():                                                 # a gray image replicated to 3 channels: same features
        assert torch.allclose(enc3.pool(enc3(x.repeat(1, 3, 1, 1))), p, atol=1e-4)


def test_check_encoder_names_what_is_missing():
    from dira_nb.models.encoders import is_encoder, check_encoder
    class Half(nn.Module):
        name, in_chans, channels, out_dim = "half", 1, (4,), 4
        def forward(self, x): return [x]
        def pool(self, f): return f[-1].mean((2, 3))
    assert not is_encoder(Half())
    with pytest.raises(TypeError, match=r"Half\) does not follow the Encoder protocol.*reductions.*feature_modules"):
        check_encoder(Half(), "my encoder")
    with pytest.raises(TypeError, match="got str"):
        check_encoder("resnet18")
