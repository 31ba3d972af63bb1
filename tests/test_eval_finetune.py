"""Fine-tuning: the classifier model, stratified label fractions, the loop improving AUC on an easy task."""
import numpy as np
import pytest
import torch

from dira_nb.eval.features import auc_score
from dira_nb.eval.finetune import (build_classifier, stratified_subset, finetune_classifier, predict_scores, blob_task,
                                   label_fraction_study, mean_std, format_mean_std)


# the three encoder kinds: DiRA's ResNet, LD's VGG, ACE's ViT (method, its options, the backbone it records)
KINDS = [("dir", dict(backbone="resnet18", moco_k=32), "resnet18"), ("ld", {}, "vgg_ld"), ("ace", dict(backbone="vit_nano"), "vit_nano")]
BACKBONES = [k[2] for k in KINDS]


@pytest.mark.parametrize("method,kw,backbone", KINDS, ids=BACKBONES)
def test_build_classifier_from_method_copies_weights(method, kw, backbone):
    from dira_nb.methods.core import create_method
    m = create_method(method, image_size=32, **kw)
    clf = build_classifier(m, n_classes=2)
    assert clf.encoder.name == backbone and clf.encoder is not m.encoder
    sd = clf.encoder.backbone_state_dict()
    for k, v in m.encoder.backbone_state_dict().items(): assert torch.equal(sd[k], v), k
    assert clf(torch.rand(3, 1, 32, 32)).shape == (3, 2)
    assert clf.target_layer is clf.encoder.feature_modules()[-1]
    with pytest.raises(ValueError, match="n_classes"):
        build_classifier("random", n_classes=0)


def test_stratified_subset_minimums_and_determinism():
    y = np.array([0] * 95 + [1] * 5)
    s = stratified_subset(y, 0.01, seed=0)
    assert np.bincount(y[s]).tolist() == [2, 2]
    assert np.array_equal(stratified_subset(y, 0.25, seed=3), stratified_subset(y, 0.25, seed=3))
    assert np.bincount(y[stratified_subset(y, 0.25, seed=3)]).tolist() == [24, 2]
    Y = np.zeros((40, 3), int); Y[:2, 0] = 1; Y[5:25, 1] = 1; Y[:, 2] = 1; Y[-2:, 2] = 0
    s = stratified_subset(Y, 0.05, seed=1)
    assert (Y[s].sum(0) >= 2).all() and ((1 - Y[s]).sum(0) >= 2).all()
    with pytest.raises(ValueError, match="fraction"):
        stratified_subset(y, 0.0)
    with pytest.raises(ValueError, match="class 1"):
        stratified_subset(np.array([0, 0, 0, 1]), 0.5)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_finetune_improves_auc_on_easy_task(backbone):
    tr, va, te = blob_task(48, 16, seed=0), blob_task(32, 16, seed=1), blob_task(48, 16, seed=2)
    clf = build_classifier("random", n_classes=1, backbone=backbone, seed=0)
    before = auc_score(te[1], predict_scores(clf, te[0]))
    r = finetune_classifier(clf, tr, va, te, steps=40, batch_size=16, seed=0, device="cpu")
    assert r["auc"] > 0.9 and r["auc"] > before + 0.2, (before, r["auc"])
    assert 1 <= r["best_step"] <= 40 and "valid_auc" in r and "test_auc" in r


def test_finetune_rejects_mismatched_labels():
    tr = blob_task(8, 16, seed=0, multilabel=True)
    with pytest.raises(ValueError, match="3 logits"):
        finetune_classifier(build_classifier("random", 3), tr, steps=1)
    with pytest.raises(ValueError, match="steps"):
        finetune_classifier(build_classifier("random", 2), tr, steps=0)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_label_fraction_study_summary(backbone):
    from dira_nb.eval.features import load_encoder
    tr, te = blob_task(40, 16, seed=0), blob_task(24, 16, seed=1)
    st = label_fraction_study(load_encoder("random", backbone=backbone, seed=0), tr, te, fractions=(0.1, 1.0), seeds=(0, 1), steps=2, batch_size=8, device="cpu")
    assert [(r["fraction"], r["seed"]) for r in st["rows"]] == [(0.1, 0), (0.1, 1), (1.0, 0), (1.0, 1)]
    assert st["rows"][-1]["n_train"] == 40
    s = st["summary"][1.0]
    assert s["n_seeds"] == 2 and " ± " in s["text"]
    assert mean_std([2.0, 4.0]) == (3.0, pytest.approx(np.sqrt(2)))
    assert format_mean_std([0.25]) == "0.250"


def test_finetune_early_stopping_keeps_best_weights():
    torch.set_num_threads(2)
    tr, va, te = blob_task(48, 16, seed=0), blob_task(32, 16, seed=1), blob_task(48, 16, seed=2)
    clf = build_classifier("random", n_classes=1, seed=0)
    r = finetune_classifier(clf, tr, va, te, steps=300, batch_size=16, eval_every=4, patience=3, seed=0, device="cpu")
    assert r["stopped_early"] and r["steps_run"] == r["best_step"] + 12 < 300 and len(r["history"]) == r["steps_run"]
    assert r["test_scores"].shape == (48,) and r["auc"] == pytest.approx(auc_score(te[1], predict_scores(clf, te[0])))
    full = finetune_classifier(build_classifier("random", n_classes=1, seed=0), tr, va, te, steps=8, batch_size=16,
                               eval_every=4, patience=5, seed=0, device="cpu")
    assert not full["stopped_early"] and full["steps_run"] == 8                 # patience never ran out
    with pytest.raises(ValueError, match="patience"):
        finetune_classifier(clf, tr, va, steps=2, patience=0)
