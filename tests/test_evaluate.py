"""`dira_nb.eval.evaluate`: one evaluation of any encoder on a user's folder, CSV or .npz (small generated data)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from dira_nb.eval.evaluate import EvalData, evaluate_run, read_eval_data, run_info

FAST = dict(finetune_steps=2, seg_steps=2, batch_size=8, eval_every=1, knn_k=3, n_examples=2, label_fractions=(0.5, 1.0))


@pytest.fixture(autouse=True)
def one_thread():
    "Tiny CPU workloads run fastest on one thread on a shared machine (restored afterwards)."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _blob(size, cy, cx, r):
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) ** 2 + (xx - cx) ** 2) <= r ** 2


def make_folder(root, n=24, size=32, centred=False, labels=True, split=True, rgb=False, seed=0):
    """Images with an organ (rectangle) and, on odd items, a lesion disc; labels.csv, masks/organ, masks/lesion and
    two box CSVs (x0,y0,x1,y1 and ChestX-ray14 x,y,w,h) describing the same lesions."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True); (root / "masks" / "organ").mkdir(parents=True); (root / "masks" / "lesion").mkdir(parents=True)
    rows, corners, cxr = ["image,label,split" if split else "image,label"], ["image,x0,y0,x1,y1"], ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
    parts = ["train"] * 14 + ["valid"] * 4 + ["test"] * 6
    for i in range(n):
        img = 0.2 + 0.05 * rng.standard_normal((size, size))
        organ = np.zeros((size, size), bool); organ[6:26, 8:24] = True
        img[organ] += 0.3
        les = np.zeros((size, size), bool)
        if i % 2:
            cy, cx = (size / 2, size / 2) if centred else (rng.choice([7, 24]), rng.choice([7, 24]))
            les = _blob(size, cy, cx, 3); img[les] += 0.45
            ys, xs = np.nonzero(les)
            corners.append(f"img/{i:03d}.png,{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}")
            cxr.append(f"{i:03d}.png,Nodule,{xs.min()},{ys.min()},{xs.max() + 1 - xs.min()},{ys.max() + 1 - ys.min()},,,")
        a = (np.clip(img, 0, 1) * 255).astype(np.uint8)
        if rgb: a = np.stack([a, (a * 0.5).astype(np.uint8), 255 - a], -1)
        Image.fromarray(a).save(root / "img" / f"{i:03d}.png")
        Image.fromarray(organ.astype(np.uint8) * 255).save(root / "masks" / "organ" / f"{i:03d}.png")
        Image.fromarray(les.astype(np.uint8) * 255).save(root / "masks" / "lesion" / f"{i:03d}.png")
        rows.append(f"img/{i:03d}.png,{i % 2 if labels else ''}" + (f",{parts[i % len(parts)]}" if split else ""))
    if labels is None:                                       # no label column at all
        rows = [r.rsplit(",", 2)[0] + "," + r.rsplit(",", 1)[1] if split else r.split(",")[0] for r in rows]
        rows[0] = "image,split" if split else "image"
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "boxes_corners.csv").write_text("\n".join(corners) + "\n")
    (root / "boxes_cxr14.csv").write_text("\n".join(cxr) + "\n")
    return root


def test_folder_all_tasks_json_and_html(tmp_path):
    d = make_folder(tmp_path / "data")
    res = evaluate_run("random", d, image_size=16, boxes=d / "boxes_corners.csv", out=tmp_path / "ev", quiet=True, **FAST)
    r = res.results
    assert r["split"] == dict(source="column", train=14, valid=4, test=6)           # the test split stays the test set
    assert r["labels"]["kind"] == "binary" and r["image_size"] == 16 and r["in_chans"] == 1
    t = r["tasks"]
    assert set(t) == {"classification", "segmentation", "localization"}
    c = t["classification"]
    assert c["n_test"] == 6 and 0 <= c["frozen"]["linear probe"]["model"]["auc"] <= 1
    assert set(c["finetune"]) == {"0.5", "1"} and c["finetune"]["1"]["model"]["n_train"] == 14
    assert "linear probe, model" in c["roc"]
    assert set(t["segmentation"]) == {"organ"} and 0 <= t["segmentation"]["organ"]["models"]["model"]["dice"] <= 1
    assert set(t["localization"]) == {"lesion masks", "boxes"}
    for loc in t["localization"].values():
        assert loc["n_test"] == 3                                                   # the 3 test images with a lesion
        assert {row["model"] for row in loc["table"]} == {"model", "centre prior", "random init"}
        assert loc["layer"] and loc["prior"]["n"] > 0
    js = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert js["tasks"]["localization"]["boxes"]["n_test"] == 3
    page = (tmp_path / "ev" / "eval.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") >= 5
    assert "centre prior" in page and "ROC" in page and "Dice" in page and "accuracy vs threshold" in page
    assert not list((tmp_path / "ev").glob("*.tmp"))                                # written atomically, nothing left over
    ins = res.inspector("boxes", "centre prior")                                    # the inspector opens on the same lesions
    assert len(ins.images) == 3


def test_both_box_layouts_give_the_same_ground_truth(tmp_path):
    from dira_nb.eval.evaluate import _lesion_gts
    d = make_folder(tmp_path / "data")
    data = read_eval_data(d, size=16)
    a, b = _lesion_gts(data, boxes=d / "boxes_corners.csv"), _lesion_gts(data, boxes=d / "boxes_cxr14.csv")
    assert sum(not g.empty for g in a) == 12
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a, b))
    m = _lesion_gts(data, lesion_masks=d / "masks" / "lesion")
    assert [g.empty for g in m] == [g.empty for g in a]


def test_centred_lesions_warn_and_unlabelled_data_learns_lesion_presence(tmp_path):
    d = make_folder(tmp_path / "data", centred=True, labels=None)
    with pytest.warns(UserWarning, match="centre prior"):
        res = evaluate_run("random", d, image_size=16, tasks=["localization"], quiet=True, out=tmp_path / "ev", **FAST)
    loc = res["tasks"]["localization"]["lesion masks"]
    prior = next(r for r in loc["table"] if r["model"] == "centre prior")
    assert prior["pointing_game"] == 1.0 and loc["warnings"]
    assert any("lesion present" in n for n in res["notes"])
    assert "central or large" in (tmp_path / "ev" / "eval.html").read_text()


def test_off_centre_lesions_prior_is_low(tmp_path):
    d = make_folder(tmp_path / "data", centred=False)
    res = evaluate_run("random", d, image_size=16, tasks=["localization"], quiet=True, **FAST)
    loc = res["tasks"]["localization"]["lesion masks"]
    assert loc["summary"]["centre prior"]["pointing_game"] <= 0.34 and not loc["warnings"]


def test_label_kinds_and_split_rules(tmp_path):
    # class folders, no labels.csv: multi-class, seeded stratified split
    root = tmp_path / "classes"
    for k, name in enumerate(["akiec", "bcc", "nevus"]):
        (root / name).mkdir(parents=True)
        for i in range(10): Image.fromarray(np.full((12, 12), 40 * k + i, np.uint8)).save(root / name / f"{i}.png")
    e = read_eval_data(root, size=8, seed=3)
    assert (e.kind, e.class_names, e.split_source) == ("multiclass", ["akiec", "bcc", "nevus"], "seeded")
    assert all(set(e.labels[e.index(p)]) == {0, 1, 2} for p in ("train", "test"))
    # a CSV anywhere with multi-label names and a patient column: group split, no patient in two parts
    rows = ["path,Finding Labels,Patient ID"] + [f"classes/{'akiec' if i % 3 else 'bcc'}/{i}.png,{'Mass|Nodule' if i % 2 else 'No Finding'},p{i // 3}"
                                                for i in range(10)]
    (tmp_path / "findings.csv").write_text("\n".join(rows) + "\n")
    e2 = read_eval_data(tmp_path / "findings.csv", size=8)
    assert e2.kind == "multilabel" and e2.class_names == ["Mass", "No Finding", "Nodule"] and e2.split_source == "patient"
    pid = np.arange(10) // 3
    assert all(len(set(e2.split[pid == p])) == 1 for p in set(pid))
    # bad split values name the file and the line
    (tmp_path / "bad.csv").write_text("image,label,split\nakiec/0.png,0,train\nakiec/1.png,1,tset\n")
    (tmp_path / "akiec").mkdir(exist_ok=True)
    for i in range(2): Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "akiec" / f"{i}.png")
    with pytest.raises(ValueError, match=r"bad.csv, line 3: split 'tset'"):
        read_eval_data(tmp_path / "bad.csv", size=8)


def test_npz_multilabel_keeps_its_test_split(tmp_path):
    rng = np.random.default_rng(0)
    arrs = {}
    for s, n in (("train", 20), ("val", 6), ("test", 8)):
        arrs[f"{s}_images"] = rng.integers(0, 255, (n, 12, 12), dtype=np.uint8)
        arrs[f"{s}_labels"] = np.stack([np.arange(n) % 2, (np.arange(n) // 2) % 2], 1)
    np.savez(tmp_path / "chest.npz", **arrs)
    res = evaluate_run("random", tmp_path / "chest.npz", image_size=8, quiet=True, **{**FAST, "label_fractions": (1.0,)})
    assert res["split"] == dict(source="npz", train=20, valid=6, test=8)
    c = res["tasks"]["classification"]
    assert c["kind"] == "multilabel" and 0 <= c["frozen"]["kNN"]["model"]["auc"] <= 1


def test_image_size_and_colour_from_the_run(tmp_path):
    from dira_nb.methods.core import create_method
    run = tmp_path / "run"; run.mkdir()
    create_method("dir", image_size=32, in_chans=3, moco_k=16).save_checkpoint(run / "final.pt")
    info = run_info(run)
    assert (info["image_size"], info["in_chans"]) == (32, 3)
    d = make_folder(tmp_path / "data", rgb=True)
    res = evaluate_run(run, d, tasks=[], quiet=True)                                # read only: size and channels from the run
    assert (res["image_size"], res["in_chans"]) == (32, 3) and not res["warnings"]
    with pytest.warns(UserWarning, match="pretrained at 32 px"):
        res = evaluate_run(run, d, image_size=16, quiet=True, tasks=["classification"], compare_random=False,
                           **{**FAST, "label_fractions": (1.0,)})
    assert res["in_chans"] == 3 and "pretrained at 32 px" in res["warnings"][0]
    assert 0 <= res["tasks"]["classification"]["finetune"]["1"]["model"]["auc"] <= 1
    e = read_eval_data(d, size=16, in_chans=3)
    assert e.images.shape[1] == 3 and not torch.allclose(e.images[:, 0], e.images[:, 2])     # colour is kept


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data folder"):
        evaluate_run("random", tmp_path / "nope", quiet=True)
    (tmp_path / "l.csv").write_text("image,label\nmissing.png,1\n")
    with pytest.raises(FileNotFoundError, match=r"l.csv, line 2: image 'missing.png' not found"):
        read_eval_data(tmp_path / "l.csv", size=8)
    with pytest.raises(TypeError, match="unknown setting"):
        evaluate_run("random", tmp_path / "l.csv", finetune_stps=3)


def test_localization_with_another_heatmap_method(tmp_path):
    "heatmap='layercam' scores the model and the random-init baseline with LayerCAM at the chosen layer; the page names it."
    d = make_folder(tmp_path / "data")
    res = evaluate_run("random", d, image_size=16, out=tmp_path / "ev", quiet=True, tasks=["classification", "localization"],
                       heatmap="layercam", **FAST)
    loc = res.results["tasks"]["localization"]["lesion masks"]
    assert loc["heatmap"] == "layercam" and loc["layer"] and loc["cam_shape"]
    assert {r["model"] for r in loc["table"]} == {"model", "centre prior", "random init"}
    html = (tmp_path / "ev" / "eval.html").read_text()
    assert "LayerCAM of the fully fine-tuned classifier" in html
    with pytest.raises(ValueError, match="heatmap='gradcam\\+'; choose one of"):
        evaluate_run("random", d, image_size=16, out=tmp_path / "ev2", quiet=True, heatmap="gradcam+", **FAST)
