"""The heatmap inspector's compute function, figure and widget (`dira_nb.eval.inspector`)."""
import numpy as np
import pytest
import torch
from torch import nn

from dira_nb.eval.inspector import HeatmapInspector, frame_text, inspect_frame, inspector_figure
from dira_nb.eval.localization import (Box, GroundTruth, boxes_to_mask, heatmap_auroc, load_sample_lesions, localize,
                                       pointing_game)


@pytest.fixture(scope="module")
def lesions():
    from dira_nb.data.phantom import samples_dir
    return load_sample_lesions("valid", size=48, gt="box", lesions_only=False, dir=samples_dir())


def blobs(gts, size, dy=2.0, sigma=4.0, seed=0):
    "A heatmap per image: a Gaussian near the lesion centre (random place for normal images)."
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for g in gts:
        cy, cx = np.argwhere(g.mask).mean(0) if not g.empty else rng.uniform(0, size, 2)
        out.append(np.exp(-((yy - cy - dy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2)))
    return np.stack(out)


def test_frame_equals_metrics():
    gt = GroundTruth.from_boxes([Box(10, 10, 20, 20)], 32)
    h = boxes_to_mask([Box(15, 10, 25, 20)], 32).astype(float)
    for region in ("box", "mask"):
        for t in (0.3, 0.7):
            f = inspect_frame(h, gt, t, region=region)
            r = localize(h, gt, t, region=region)
            assert f["iou"] == r["iou"] == pytest.approx(1 / 3)
            assert f["iobb"] == r["iobb"]
            assert f["hit"] == pointing_game(h, gt)["hit"]
            assert f["auroc"] == heatmap_auroc(h, gt)
    assert "IoU 0.333" in frame_text(f)


def test_frame_on_samples_matches_localize(lesions):
    heat = blobs(lesions.gts, 48)
    for i in np.flatnonzero(lesions.labels == 1)[:5]:
        for t in (0.25, 0.5, 0.75):
            assert inspect_frame(heat[i], lesions.gts[i], t)["iou"] == localize(heat[i], lesions.gts[i], t)["iou"]


def test_frame_without_lesion():
    h = np.zeros((16, 16)); h[4, 4] = 1
    f = inspect_frame(h, None, 0.5)
    assert np.isnan(f["iou"]) and f["hit"] is None and f["pred"].sum() == 1
    assert "no lesion" in frame_text(f)


def test_figure_traces(lesions):
    heat = blobs(lesions.gts, 48)
    i = int(np.flatnonzero(lesions.labels == 1)[0])
    f = inspect_frame(heat[i], lesions.gts[i], 0.5, region="box")
    fig = inspector_figure(lesions.images[i], heat[i], f)
    assert len(fig.data) == 7
    b = lesions.gts[i].boxes[0]
    assert min(x for x in fig.data[3].x if x is not None) == pytest.approx(b.x0 - 0.5)   # box along pixel edges
    assert list(fig.data[6].y) == [f["peak"][0]]
    assert fig.layout.title.text == frame_text(f)


def test_widget_updates_live(lesions):
    heat = blobs(lesions.gts, 48)
    ins = HeatmapInspector(lesions, heatmaps=heat, threshold=0.5)
    i = int(np.flatnonzero(lesions.labels == 1)[1])
    ins.picker.value = i
    ins.threshold.value = 0.3
    f = ins.frame()
    assert f["iou"] == localize(heat[i], lesions.gts[i], 0.3)["iou"]
    assert f"IoU {f['iou']:.3f}" in ins.readout.value and f"IoU {f['iou']:.3f}" in ins.fig.layout.title.text
    ins.region.value = "mask"
    assert ins.frame()["region"] == "mask" and len(ins.fig.data[5].x) == 0
    j = int(np.flatnonzero(lesions.labels == 0)[0])
    ins.picker.value = j
    assert "no lesion" in ins.readout.value
    assert "(no lesion)" in ins.picker.options[j][0]


def test_widget_input_errors(lesions):
    with pytest.raises(ValueError, match="heatmaps= or classifier="):
        HeatmapInspector(lesions)
    with pytest.raises(ValueError, match="heatmaps"):
        HeatmapInspector(lesions, heatmaps=np.zeros((2, 48, 48)))


def test_widget_with_classifier(lesions):
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    ins = HeatmapInspector(lesions, classifier=clf, target=1)
    h = ins.heatmap(0)
    assert h.shape == (48, 48) and 0 <= h.min() and h.max() <= 1
    assert 0 in ins._heat and len(ins._heat) == 1                     # computed on demand, then cached
