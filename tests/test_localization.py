"""Lesion-localization scores and ground-truth readers (`dira_nb.eval.localization`)."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dira_nb.data.phantom import read_boxes
from dira_nb.eval.localization import (Box, GroundTruth, accuracy_curve, boxes_to_mask, box_iobb, box_iou,
                                       heatmap_auroc, heatmap_to_region, load_ground_truth, load_sample_lesions,
                                       load_lesion_set, localization_scores, localization_summary, localization_table,
                                       localize, pointing_game, read_box_csv, read_mask, resolve_target, scale_boxes)


def square(x0, y0, x1, y1, size=32):
    return boxes_to_mask([Box(x0, y0, x1, y1)], size).astype(np.float64)


# ---------------------------------------------------------------- metrics on hand-made cases
def test_perfect_heatmap_scores_one():
    gt = GroundTruth.from_boxes([Box(8, 6, 20, 14)], 32)
    h = gt.mask.astype(float)
    for region in ("box", "mask"):
        r = localize(h, gt, 0.5, region=region)
        assert r["iou"] == 1.0 and r["iobb"] == 1.0
        assert r["pred_box"] == Box(8, 6, 20, 14)
    p = pointing_game(h, gt)
    assert p["hit"] and p["distance"] == 0.0
    assert heatmap_auroc(h, gt) == 1.0


def test_shifted_box_known_iou():
    gt = GroundTruth.from_boxes([Box(10, 10, 20, 20)], 32)
    # shifted 5 px right: overlap 5×10 = 50, union 100 + 100 − 50 = 150
    r = localize(square(15, 10, 25, 20), gt, 0.5)
    assert r["iou"] == pytest.approx(1 / 3) and r["iobb"] == pytest.approx(0.5)
    assert box_iou(Box(10, 10, 20, 20), Box(15, 10, 25, 20)) == pytest.approx(1 / 3)
    # shifted 2 px right and 2 px down: overlap 8×8 = 64, union 136
    r = localize(square(12, 12, 22, 22), gt, 0.5)
    assert r["iou"] == pytest.approx(64 / 136) and r["iobb"] == pytest.approx(0.64)
    assert box_iobb(Box(12, 12, 22, 22), Box(10, 10, 20, 20)) == pytest.approx(0.64)
    # disjoint
    assert localize(square(25, 25, 30, 30), gt, 0.5)["iou"] == 0.0


def test_iobb_is_over_the_predicted_box():
    gt = GroundTruth.from_boxes([Box(0, 0, 20, 20)], 32)
    small = localize(square(5, 5, 10, 10), gt, 0.5)        # prediction inside the lesion: IoBB 1, IoU 25/400
    assert small["iobb"] == 1.0 and small["iou"] == pytest.approx(25 / 400)


def test_threshold_changes_the_region():
    yy, xx = np.mgrid[:32, :32]
    h = np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / (2 * 4.0 ** 2))
    sizes = [heatmap_to_region(h, t).sum() for t in (0.2, 0.5, 0.8)]
    assert sizes[0] > sizes[1] > sizes[2] > 0
    gt = GroundTruth.from_boxes([Box(12, 12, 21, 21)], 32)
    ious = [localize(h, gt, t)["iou"] for t in (0.2, 0.5, 0.8)]
    assert len(set(ious)) == 3


def test_pointing_game_miss_and_tolerance():
    gt = GroundTruth.from_boxes([Box(10, 10, 20, 20)], 32)
    h = np.zeros((32, 32)); h[14, 24] = 1.0                  # 5 px right of the last lesion column (19)
    p = pointing_game(h, gt)
    assert not p["hit"] and p["peak"] == (14, 24) and p["distance"] == pytest.approx(5.0)
    assert not pointing_game(h, gt, tolerance=4.9)["hit"]
    assert pointing_game(h, gt, tolerance=5)["hit"]
    assert not pointing_game(np.full((32, 32), 0.7), gt)["hit"]   # a flat map points nowhere


def test_auroc_mask_and_constant():
    m = np.zeros((16, 16)); m[3:7, 4:12] = 1
    gt = GroundTruth.from_mask(m)
    assert heatmap_auroc(m, gt) == 1.0
    assert heatmap_auroc(np.full((16, 16), 0.4), gt) == 0.5
    assert heatmap_auroc(1 - m, gt) == 0.0
    rng = np.random.default_rng(0)
    from sklearn.metrics import roc_auc_score
    h = rng.random((16, 16))
    assert heatmap_auroc(h, gt) == pytest.approx(roc_auc_score(m.ravel(), h.ravel()))


def test_empty_ground_truth_raises():
    h = np.zeros((8, 8)); h[2, 2] = 1
    for fn in (localize, pointing_game, heatmap_auroc):
        with pytest.raises(ValueError, match="no lesion pixel"):
            fn(h, GroundTruth(np.zeros((8, 8), bool)))


def test_bad_heatmap_rejected():
    gt = GroundTruth.from_boxes([Box(1, 1, 3, 3)], 8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        localize(np.full((8, 8), 2.0), gt)
    with pytest.raises(ValueError, match="8×8"):
        localize(np.zeros((4, 4)), gt)


def test_multiple_lesions_best_and_union():
    gt = GroundTruth.from_boxes([Box(2, 2, 6, 6), Box(20, 20, 24, 24)], 32)
    h = square(2, 2, 6, 6)
    assert localize(h, gt, match="best")["iou"] == 1.0
    assert localize(h, gt, match="union")["iou"] == pytest.approx(0.5)


def test_accuracy_curve_strict():
    np.testing.assert_allclose(accuracy_curve([0.1, 0.5, 0.9, np.nan], [0.1, 0.5]), [2 / 3, 1 / 3])


# ---------------------------------------------------------------- readers
def test_read_chestxray14_layout(tmp_path):
    p = tmp_path / "BBox_List_2017.csv"
    p.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                 "00013118_008.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,79.1864406779661,,,\n"
                 "00014716_007.png,Nodule,512,256,102.4,51.2,,,\n"
                 "\n")
    b = read_box_csv(p)
    assert set(b) == {"00013118_008.png", "00014716_007.png"}
    nod = b["00014716_007.png"][0]
    assert nod == Box(512, 256, 614.4, 307.2, "Nodule")
    assert read_box_csv(p, label="Nodule").keys() == {"00014716_007.png"}
    # scaled to a 128-px image: ×1/8
    g = load_ground_truth(["imgs/00014716_007.png", "00013118_008.png"], 128, boxes=p, src_shape=1024, label="Nodule")
    assert g[0].boxes[0].x0 == pytest.approx(64) and g[0].boxes[0].x1 == pytest.approx(76.8)
    assert g[0].mask.sum() == 13 * 6 and g[1].empty


def test_read_plain_and_corner_layouts(tmp_path):
    p = tmp_path / "plain.csv"
    p.write_text("image,label,x,y,w,h\na.png,Mass,1,2,3,4\na.png,Nodule,10,10,2,2\n")
    assert read_box_csv(p)["a.png"] == [Box(1, 2, 4, 6, "Mass"), Box(10, 10, 12, 12, "Nodule")]
    c = tmp_path / "corners.csv"
    c.write_text("image,x0,y0,x1,y1\nimages/b.png,4,5,8,9\n")
    assert read_box_csv(c) == {"images/b.png": [Box(4, 5, 8, 9)]}


@pytest.mark.parametrize("row,msg", [("a.png,Mass,1,2,0,4", "line 3: empty box"),
                                     ("a.png,Mass,1,two,3,4", "line 3: box coordinates"),
                                     (",Mass,1,2,3,4", "line 3: empty image name"),
                                     ("a.png,Mass,1,2,nan,4", "line 3: non-finite")])
def test_bad_rows_name_file_and_line(tmp_path, row, msg):
    p = tmp_path / "boxes.csv"
    p.write_text(f"image,label,x,y,w,h\nok.png,Mass,1,2,3,4\n{row}\n")
    with pytest.raises(ValueError, match=msg) as e:
        read_box_csv(p)
    assert "boxes.csv" in str(e.value)


def test_unknown_layout_and_missing(tmp_path):
    p = tmp_path / "odd.csv"
    p.write_text("image,left,top\na.png,1,2\n")
    with pytest.raises(ValueError, match="cannot tell the box layout"):
        read_box_csv(p)
    c = tmp_path / "c.csv"
    c.write_text("image,x0,y0,x1,y1\na.png,1,1,3,3\n")
    with pytest.raises(KeyError, match="no box for image 'b.png'"):
        load_ground_truth(["b.png"], 8, boxes=c, missing="error")


def test_lesion_set_from_folder_scales_per_image(tmp_path):
    d = tmp_path / "imgs"; (d / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((200, 100), np.uint8)).save(d / "a" / "wide.png")      # H=200, W=100
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(d / "small.png")
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(d / "normal.png")
    csv = tmp_path / "b.csv"
    csv.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\nwide.png,Mass,10,20,30,40,,,\nsmall.png,Nodule,5,5,10,10,,,\n")
    s = load_lesion_set(d, size=20, boxes=csv)
    assert s.names == ["a/wide.png", "small.png"] and s.images.shape == (2, 1, 20, 20)
    assert s.gts[0].boxes[0] == Box(2, 2, 8, 6, "Mass")                                # x ×20/100, y ×20/200
    assert s.gts[1].boxes[0] == Box(2, 2, 6, 6, "Nodule")                              # ×20/50
    assert len(load_lesion_set(d, size=20, boxes=csv, only_with_gt=False)) == 3
    with pytest.raises(ValueError, match="different sizes"):
        load_lesion_set(d, boxes=csv)


def test_resolve_target():
    lin = lambda c: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, c))
    x = torch.rand(2, 1, 8, 8)
    assert resolve_target(lin(1), x) == 0 and resolve_target(lin(2), x) == 1
    assert resolve_target(lin(4), x, 2) == 2
    with pytest.raises(ValueError, match="ambiguous"):
        resolve_target(lin(4), x)


def test_sample_boxes_agree_with_phantom_reader(samples_dir):
    ours = read_box_csv(samples_dir / "boxes.csv")
    ref = read_boxes(samples_dir)
    for k, v in ref.items():
        assert [tuple(int(c) for c in (b.x0, b.y0, b.x1, b.y1)) for b in ours.get(k, [])] == list(v)


def test_mask_folder_and_resize(tmp_path):
    d = tmp_path / "masks"; d.mkdir()
    m = np.zeros((40, 40), np.uint8); m[10:20, 20:30] = 255
    Image.fromarray(m).save(d / "case1.png")
    assert read_mask(d / "case1.png").sum() == 100
    g = load_ground_truth(["scans/case1.jpg", "case2.png"], 20, mask_dir=d)
    assert g[0].kind == "mask" and g[0].mask.sum() == 25 and g[0].boxes == [Box(10, 5, 15, 10)]
    assert g[1].empty
    with pytest.raises(FileNotFoundError, match="case2"):
        load_ground_truth(["case2.png"], 20, mask_dir=d, missing="error")
    assert scale_boxes([Box(0, 0, 40, 20)], (40, 80), 20) == [Box(0, 0, 10, 10)]


def test_sample_masks_inside_boxes(samples_dir):
    b = load_sample_lesions("valid", size=64, gt="box", dir=samples_dir)
    m = load_sample_lesions("valid", size=64, gt="mask", dir=samples_dir)
    assert b.names == m.names and len(b) > 0
    for gb, gm in zip(b.gts, m.gts):
        assert (gm.mask & ~gb.mask).sum() <= 0.1 * gm.mask.sum()


# ---------------------------------------------------------------- dataset scores
def test_scores_with_precomputed_heatmaps(samples_dir):
    s = load_sample_lesions("valid", size=64, gt="mask", lesions_only=False, dir=samples_dir)
    oracle = np.stack([g.mask.astype(np.float32) for g in s.gts])
    res = localization_scores(None, s, heatmaps=oracle, region="mask")
    assert res["n"] == int((s.labels == 1).sum()) and res["n_skipped"] == int((s.labels == 0).sum())
    assert res["pointing_game"] == 1.0 and res["heatmap_auroc"] == 1.0
    np.testing.assert_allclose(res["mean_iou"], 1.0)
    assert np.isnan(res["iou"][~res["scored"]]).all()
    assert res["summary"]["iou_acc@0.5"] == 1.0
    tab = localization_table({"oracle": res}, thresholds=[0.5])
    assert "| oracle | 0.5 |" in tab


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, stride=2),
                                      nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def test_end_to_end_with_tiny_classifier(samples_dir):
    torch.manual_seed(0)
    train = load_sample_lesions("train", size=48, lesions_only=False, dir=samples_dir)
    clf = TinyCNN()
    opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
    y = torch.as_tensor(train.labels)
    for _ in range(15):
        loss = nn.functional.cross_entropy(clf(train.images), y)
        opt.zero_grad(); loss.backward(); opt.step()
    clf.eval()
    val = load_sample_lesions("valid", size=48, gt="box", dir=samples_dir)
    val = type(val)(val.images[:6], val.gts[:6], val.names[:6], val.labels[:6])
    res = localization_scores(clf, val, thresholds=(0.3, 0.5), report_threshold=0.5)   # target 'positive' → 1
    assert res["heatmaps"].shape == (6, 48, 48)
    assert res["heatmaps"].min() >= 0 and res["heatmaps"].max() <= 1
    assert res["n"] == 6 and 0 <= res["n_flat"] <= 6
    for k in ("iou", "iobb"):
        assert res[k].shape == (6, 2) and ((res[k] >= 0) & (res[k] <= 1)).all()
    assert 0 <= res["pointing_game"] <= 1 and 0 <= res["heatmap_auroc"] <= 1
    assert set(localization_summary(res, 0.3)) >= {"pointing_game", "heatmap_auroc", "mean_iou", "iou_acc@0.3"}
    # the per-image numbers are the metric functions' numbers
    i = 2
    assert res["iou"][i, 1] == localize(res["heatmaps"][i], val.gts[i], 0.5)["iou"]
    with pytest.raises(ValueError, match="report_threshold"):
        localization_scores(clf, val, thresholds=(0.3,), report_threshold=0.5)


# ---------------------------------------------------------------- baselines: centre prior, random init, gains
from dira_nb.eval.localization import (CentrePrior, baseline_gains, baseline_warnings, cam_layer, fit_centre_prior,
                                       localization_baselines)


@pytest.fixture
def one_thread():
    "Training tests run faster on one thread when the machine is shared (restored afterwards)."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _blob_boxes(n, size, rng, centred):
    out = []
    for _ in range(n):
        if centred: cy, cx = size / 2 + rng.uniform(-1, 1, 2)
        else:
            while True:
                cy, cx = rng.uniform(4, size - 4, 2)
                if max(abs(cy - size / 2), abs(cx - size / 2)) > size / 4: break
        out.append(GroundTruth.from_boxes([Box(cx - 3, cy - 3, cx + 3, cy + 3)], size))
    return out


def test_centre_prior_fit_and_map():
    gts = [GroundTruth.from_boxes([Box(8, 4, 16, 8)], 32), GroundTruth.from_boxes([Box(16, 8, 24, 12)], 32)]
    p = fit_centre_prior(gts)
    assert (p.n, p.cx, p.cy, p.w, p.h) == (2, 0.5, 0.25, 0.25, 0.125)
    hm = p.heatmap(32)
    assert hm.shape == (32, 32) and hm.max() == 1.0 and hm.min() >= 0
    r, c = np.unravel_index(hm.argmax(), hm.shape)
    assert abs(r - 7.5) <= 1 and abs(c - 15.5) <= 1
    with pytest.raises(ValueError, match="no lesion"):
        fit_centre_prior([GroundTruth(np.zeros((8, 8), bool))])


def test_centred_lesions_prior_scores_high_and_warns():
    rng = np.random.default_rng(0)
    train, test = _blob_boxes(20, 32, rng, True), _blob_boxes(10, 32, rng, True)
    base = localization_baselines(torch.zeros(10, 1, 32, 32), test, train)
    assert base["centre prior"]["pointing_game"] == 1.0 and base["centre prior"]["heatmap_auroc"] > 0.95
    w = baseline_warnings(base)
    assert len(w) == 1 and "centre prior" in w[0] and "central or large" in w[0]
    # a model that points at the lesion gains nothing over it: the table says so
    oracle = np.stack([g.mask.astype(np.float32) for g in test])
    res = {"model": localization_scores(None, torch.zeros(10, 1, 32, 32), test, heatmaps=oracle), **base}
    assert abs(baseline_gains(res)["model"]["pointing_game"]["gain"]) < 1e-9
    tab = localization_table(res, thresholds=[0.5])
    assert "Δ pointing" in tab and "| centre prior | 0.5 |" in tab and "+0.000" in tab


def test_off_centre_lesions_trained_gradcam_beats_prior(one_thread):
    from dira_nb.viz.attribution import fit_toy_classifier, planted_blob_images, toy_blob_classifier
    torch.manual_seed(0)
    x, y, boxes = planted_blob_images(64, 32, seed=0)
    xt, yt, bt = planted_blob_images(32, 32, seed=1)
    to_gt = lambda b: [GroundTruth.from_boxes([Box(*[float(v) for v in bb])], 32) for bb in b]
    train_gts, pos = to_gt(boxes[y == 1]), yt == 1
    test_gts = to_gt(bt[pos])
    clf = toy_blob_classifier(); acc = fit_toy_classifier(clf, x, y, steps=300)   # 120 steps reached 0.89 on a Xeon (AVX-512), 0.9+ on EPYC
    assert acc > 0.9, acc
    clf_random = toy_blob_classifier()                       # same architecture, untrained: the random-init row
    res = {"model": localization_scores(clf, xt[pos], test_gts, target=1),
           **localization_baselines(xt[pos], test_gts, train_gts, random_classifier=clf_random, target=1)}
    prior = res["centre prior"]
    assert prior["pointing_game"] <= 0.4, prior["pointing_game"]
    assert baseline_warnings(res) == []
    g = baseline_gains(res)["model"]
    assert g["pointing_game"]["gain"] > 0.3 and g["heatmap_auroc"]["gain"] > 0.1, g
    assert res["model"]["layer"] is not None and min(res["model"]["cam_shape"]) >= 8
    rows = localization_table(res, thresholds=[0.5], fmt="rows")
    assert [r["model"] for r in rows] == ["model", "centre prior", "random init"]
    assert rows[0]["gain_pointing_game"] > 0.3 and rows[1]["gain_pointing_game"] is None


def test_cam_layer_has_eight_cells(one_thread):
    from dira_nb.eval.finetune import build_classifier
    clf = build_classifier("random", 1, seed=0)
    assert cam_layer(clf, 64) == ("encoder.body.layer2", (8, 8))
    assert cam_layer(clf, 128) == ("encoder.body.layer3", (8, 8))
    name, shape = cam_layer(clf, 12)                              # nothing reaches 8×8: the finest map
    assert min(shape) < 8 and name


def test_table_without_baselines_says_so():
    s = localization_scores(None, torch.zeros(1, 1, 16, 16), [[Box(2, 2, 6, 6)]], heatmaps=np.zeros((1, 16, 16)))
    assert "No baseline rows" in localization_table({"m": s})


def test_lesion_set_keeps_real_labels_and_relative_names(tmp_path):
    d = tmp_path / "data"; (d / "imgs").mkdir(parents=True); (d / "masks" / "lesion").mkdir(parents=True)
    for i, lab in enumerate(["benign", "malignant", "benign"]):
        Image.fromarray(np.full((20, 20), 60, np.uint8)).save(d / "imgs" / f"{i}.png")
        m = np.zeros((20, 20), np.uint8); m[5:10, 5:10] = 255 * (i > 0)
        Image.fromarray(m).save(d / "masks" / "lesion" / f"{i}.png")
    (d / "labels.csv").write_text("image,label\n" + "".join(f"imgs/{i}.png,{l}\n" for i, l in enumerate(["benign", "malignant", "benign"])))
    s = load_lesion_set(d, mask_dir=d / "masks" / "lesion", only_with_gt=False)      # mask files are not taken for images
    assert s.names == ["imgs/0.png", "imgs/1.png", "imgs/2.png"] and s.labels.tolist() == [0, 1, 0]
    s2 = load_lesion_set(sorted((d / "imgs").glob("*.png")), mask_dir=d / "masks" / "lesion")
    assert s2.names == ["1.png", "2.png"] and s2.labels.tolist() == [1, 1]            # no labels.csv beside: lesion present
    s3 = load_lesion_set(d / "imgs", mask_dir=d / "masks" / "lesion", labels={"0.png": 2, "1.png": 0, "2.png": 1}, only_with_gt=False)
    assert s3.labels.tolist() == [2, 0, 1]
