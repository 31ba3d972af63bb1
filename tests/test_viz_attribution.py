"""Captum attributions: shapes, ranges, the caller's model untouched, and Grad-CAM finding a planted lesion."""
import numpy as np
import pytest
import torch
from torch import nn

from dira_nb.core import seed_everything, tiny_batch
from dira_nb.models.encoders import create_encoder
from dira_nb.tvcompat import torchvision
from dira_nb.viz.attribution import (ATTRIBUTION_METHODS, EmbeddingSimilarity, attribute, attribution_copy,
                                     attribution_figure, default_layer, embedding_similarity_model, fit_toy_classifier,
                                     gradcam_layer_for,
                                     overlay_rgb, peak_in_box, planted_blob_images, toy_blob_classifier)


@pytest.fixture(scope="module")
def trained_toy():
    seed_everything(0)
    imgs, labels, _ = planted_blob_images(96, 32, seed=0)
    model = toy_blob_classifier()
    acc = fit_toy_classifier(model, imgs, labels, steps=150)
    return model, acc


def test_gradcam_peaks_on_planted_lesion(trained_toy):
    model, acc = trained_toy
    assert acc > 0.9
    imgs, labels, boxes = planted_blob_images(40, 32, seed=7)          # unseen images and blob positions
    pos = labels == 1
    cam = attribute(model, imgs[pos], "gradcam", target=1)
    hit = peak_in_box(cam, boxes[pos]).float().mean().item()
    assert hit >= 0.8, f"Grad-CAM peak inside the lesion box for only {hit:.0%} of positives"
    # the heatmap is not trivially the box: a negative image's map peaks anywhere, and the box covers < 10 % of pixels
    assert ((boxes[pos, 2] - boxes[pos, 0]) * (boxes[pos, 3] - boxes[pos, 1])).float().mean() < 0.1 * 32 * 32


def test_ig_and_occlusion_also_find_lesion(trained_toy):
    model, _ = trained_toy
    imgs, labels, boxes = planted_blob_images(20, 32, seed=11)
    pos = labels == 1
    ig = attribute(model, imgs[pos], "ig", target=1, n_steps=16)
    occ = attribute(model, imgs[pos], "occlusion", target=1, window=5, stride=3)
    assert peak_in_box(ig, boxes[pos]).float().mean() >= 0.7
    assert peak_in_box(occ, boxes[pos]).float().mean() >= 0.7


def test_predicted_class_default_and_per_image_targets(trained_toy):
    model, _ = trained_toy
    imgs, labels, _ = planted_blob_images(6, 32, seed=3)
    a = attribute(model, imgs, "gradcam")                               # target=None → predicted class
    b = attribute(model, imgs, "gradcam", target=model(imgs).argmax(1))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("method", ATTRIBUTION_METHODS)
def test_shapes_ranges_and_model_untouched(method):
    seed_everything(0)
    net = torchvision.models.resnet18(weights=None, num_classes=3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = tiny_batch(2, 32).expand(-1, 3, -1, -1)
    kw = dict(n_steps=4) if method == "ig" else dict(window=8, stride=8) if method == "occlusion" else {}
    h = attribute(net, x, method, target=2, **kw)
    assert h.shape == (2, 32, 32) and h.dtype == torch.float32
    assert h.min() >= 0 and h.max() <= 1
    peak = h.flatten(1).amax(1)                                         # 1, or 0 when no evidence survives the ReLU
    assert (((peak - 1).abs() < 1e-5) | (peak == 0)).all()
    assert net.training and net.relu.inplace
    for k, v in net.state_dict().items(): assert torch.equal(v, before[k]), k


# the three encoder kinds: DiRA's ResNet, LD's VGG, ACE's ViT
BACKBONES = ["resnet18", "vgg_ld", "vit_nano"]
METHODS = [("dira", dict(backbone="resnet18", moco_k=16)), ("ld", {}), ("ace", dict(backbone="vit_nano"))]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_encoder_similarity_target(backbone):
    seed_everything(0)
    enc = create_encoder(backbone, 1)
    x = tiny_batch(2, 64)
    sim = embedding_similarity_model(enc)
    assert isinstance(sim, EmbeddingSimilarity) and sim.encoder is enc
    xg = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(sim.eval()(xg).sum(), xg)
    assert g.abs().sum() > 0
    for method in ATTRIBUTION_METHODS:
        kw = dict(n_steps=4) if method == "ig" else dict(window=16, stride=16) if method == "occlusion" else {}
        h = attribute(enc, x, method, layer=enc.feature_modules()[-2], **kw)   # encoder is wrapped automatically
        assert h.shape == (2, 64, 64) and torch.isfinite(h).all() and h.max() <= 1


@pytest.mark.parametrize("backbone,auto", [("resnet18", "encoder.body.layer2"), ("vgg_ld", "encoder.stages.3"),
                                           ("vit_nano", "encoder.out_map")])
def test_gradcam_layer_for_small_inputs(backbone, auto):
    net = torchvision.models.resnet18(weights=None)
    assert gradcam_layer_for(net, 224) == "layer4" and gradcam_layer_for(net, 64) == "layer3"
    enc = create_encoder(backbone, 1)
    assert gradcam_layer_for(enc, (32, 48)) == auto                      # deepest map with >= 4 cells on its short side
    x = tiny_batch(2, 32)
    torch.testing.assert_close(attribute(enc, x, layer="auto"), attribute(enc, x, layer=enc.get_submodule(auto[len("encoder."):])))
    with pytest.raises(ValueError, match="no Conv2d"): gradcam_layer_for(nn.Linear(2, 2), 8)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_default_layer_is_the_deepest_feature_map(backbone):
    from dira_nb.eval.finetune import build_classifier
    enc = create_encoder(backbone, 1)
    assert default_layer(enc) is enc.feature_modules()[-1]
    clf = build_classifier(enc, n_classes=2, seed=0)
    assert default_layer(clf) is clf.target_layer is clf.encoder.feature_modules()[-1]
    assert default_layer(embedding_similarity_model(enc)) is enc.feature_modules()[-1]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_gradcam_matches_a_hand_computed_cam(backbone):
    "Grad-CAM of a classifier on each encoder's deepest map (the ViT's token grid) equals the formula computed by hand."
    import copy
    import torch.nn.functional as F
    from dira_nb.eval.finetune import build_classifier
    seed_everything(0)
    clf = build_classifier("random", n_classes=3, backbone=backbone, seed=0)
    x = tiny_batch(3, 64)
    h = attribute(clf, x, "gradcam", target=1)                           # default layer
    ref = copy.deepcopy(clf).eval()
    for m in ref.modules():
        if getattr(m, "inplace", False): m.inplace = False
    acts = []
    hook = ref.target_layer.register_forward_hook(lambda m, i, o: acts.append(o))
    logits = ref(x); hook.remove()
    A = acts[-1]                                                         # B×C×h×w (for a ViT: the token grid)
    assert A.ndim == 4 and A.shape[-1] < 64
    g, = torch.autograd.grad(logits[:, 1].sum(), A)
    cam = F.relu((g.mean((2, 3), keepdim=True) * A).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    cam = cam / cam.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
    assert h.flatten(1).amax(1).min() > 0                                # not blank
    torch.testing.assert_close(h, cam.detach(), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("method,kw", METHODS, ids=[m[0] for m in METHODS])
def test_method_is_wrapped(method, kw):
    from dira_nb.methods.core import create_method
    m = create_method(method, image_size=32, **kw)
    h = attribute(m, tiny_batch(2, 32), "gradcam", layer="auto")
    assert h.shape == (2, 32, 32) and h.max() > 0
    h2 = attribute(m, tiny_batch(2, 32), "gradcam")                      # default layer: the encoder's deepest map
    assert h2.shape == (2, 32, 32) and torch.isfinite(h2).all()


def test_helpers_and_errors():
    net = torchvision.models.resnet18(weights=None)
    assert default_layer(net) is net.layer4
    c = attribution_copy(net)
    assert not any(getattr(m, "inplace", False) for m in c.modules()) and not c.training
    x = tiny_batch(1, 16)
    with pytest.raises(ValueError, match="choose one of"): attribute(net, x, "lime")
    with pytest.raises(ValueError, match="B×C×H×W"): attribute(net, x[0])
    with pytest.raises(ValueError, match="B×C logits"): attribute(nn.Sequential(nn.Conv2d(1, 2, 3)), x)
    with pytest.raises(ValueError, match="no Conv2d"): default_layer(nn.Linear(2, 2))
    ov = overlay_rgb(x[0], torch.ones(16, 16), alpha=1.0)
    assert ov.shape == (16, 16, 3) and ov.dtype == np.uint8
    assert (ov[..., 0] > 240).all()                                     # full heat → top of the ramp (pale yellow)
    fig = attribution_figure(tiny_batch(2, 16), {"a": torch.rand(2, 16, 16), "b": torch.rand(2, 16, 16)})
    assert len(fig.data) == 6
    with pytest.raises(ValueError, match="differ"): overlay_rgb(np.zeros((3, 3)), np.zeros((4, 4)))
