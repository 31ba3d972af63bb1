"""Quality benchmark: whole-epoch schedule, the paired bootstrap CI on synthetic data with a known answer, and a tiny
end-to-end run (files, resume-skipping, redoing a missing unit) plus the script."""
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dira_nb.eval.benchmark import (BenchmarkConfig, pretrain_schedule, run_benchmark, results_markdown, bootstrap_aucs,
                                    paired_bootstrap_ci, benchmark_units, unit_fingerprint, _load_unit, _unit_path)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread(monkeypatch):
    "One torch thread (also inside `pretrain`, which sets 2 under IN_TEST): on a shared 2-core machine two threads spin against other jobs and run ~10x slower."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    monkeypatch.setattr("dira_nb.pretrain.limit_threads", lambda n=None: torch.get_num_threads())
    yield
    torch.set_num_threads(n)


def test_pretrain_schedule_whole_epochs_over_all_images():
    assert pretrain_schedule(4707, 64, 292) == dict(images=4707, epochs=4, steps_per_epoch=73, steps=292)
    assert pretrain_schedule(4707, 64, 300)["steps"] == 292                    # nearest whole epoch
    assert pretrain_schedule(4707, 64, 1)["epochs"] == 2                       # min_epochs
    with pytest.raises(ValueError, match="cannot fill"):
        pretrain_schedule(4, 8, 10)


def test_bootstrap_aucs_match_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score
    g = np.random.default_rng(1)
    y = g.integers(0, 2, 120); s = np.round(g.normal(size=120) + y, 1)
    idx = g.integers(0, 120, (20, 120))
    np.testing.assert_allclose(bootstrap_aucs(y, s, idx)[0], [roc_auc_score(y[i], s[i]) for i in idx], atol=1e-12)


def test_paired_bootstrap_known_answers():
    g = np.random.default_rng(0)
    y = np.arange(400) % 2
    noisy = y + g.normal(0, 1.5, (3, 400))
    same = paired_bootstrap_ci(y, noisy, noisy, n_boot=400)             # identical arms: the CI is exactly 0
    assert same["lo"] <= 0 <= same["hi"] and same["diff"] == 0
    mono = paired_bootstrap_ci(y, np.exp(noisy), noisy, n_boot=400)     # same ranking (monotone transform): same AUCs
    assert mono["lo"] <= 0 <= mono["hi"] and abs(mono["diff"]) < 1e-12
    better = paired_bootstrap_ci(y, y + g.normal(0, 0.4, (2, 400)), noisy, n_boot=400)  # clearly better arm
    assert better["lo"] > 0 and better["lo_seeds"] > 0 and better["diff"] > 0.2, better
    worse = paired_bootstrap_ci(y, noisy, y + g.normal(0, 0.4, 400), n_boot=400)
    assert worse["hi"] < 0 and worse["n_seeds"] == [3, 1]
    with pytest.raises(ValueError, match="binary"):
        paired_bootstrap_ci(np.zeros(10), np.ones(10), np.ones(10))


def test_units_order_and_fingerprint(tmp_path):
    assert benchmark_units(["random", "dira"], (0, 1), (0, 1, 2)) == [("random", 0), ("dira", 0), ("random", 1), ("dira", 1), ("random", 2)]
    fp = unit_fingerprint(BenchmarkConfig())
    assert unit_fingerprint(BenchmarkConfig(seeds=(5,), out="elsewhere", device="cpu")) == fp     # not part of a unit's result
    p = _unit_path(tmp_path, "pneumonia", "di", 0); p.parent.mkdir(parents=True)
    p.write_text(json.dumps(dict(fingerprint=fp, metrics={})))
    assert _load_unit(p, fp)[0] is not None
    assert _load_unit(p, unit_fingerprint(BenchmarkConfig(pretrain_steps=1)))[1] == "it was run under other settings"
    p.write_text("{truncated")
    assert _load_unit(p, fp) == (None, "its file is unreadable")


def test_tiny_benchmark_end_to_end_and_resume(tmp_path, one_thread):
    cfg = BenchmarkConfig.tiny(methods=("random", "di", "dira", "ld"), out=str(tmp_path))
    res = run_benchmark(cfg, command="pytest tiny", log=None)
    d = res["datasets"]["pneumonia"]
    assert res["complete"] and d["complete"] and d["n_units"] == 5                 # random ×2, di, dira, ld (LD is evaluable now)
    assert set(d["units"]) == {"random", "di", "dira", "ld"} and set(d["units"]["random"]) == {"0", "1"}
    di, dira = d["units"]["di"]["0"]["pretrain"], d["units"]["dira"]["0"]["pretrain"]
    assert di["steps"] == dira["steps"] == 8 and [s["stage"] for s in dira["stages"]] == ["dir", "dira"]   # equal budget
    assert any("LD and ACE pretrain the benchmark's backbone (resnet18)" in n for n in res["notes"])
    assert d["units"]["ld"]["0"]["pretrain"]["steps"] == 8
    for by in d["units"].values():
        for u in by.values():
            assert set(u["metrics"]) == {"linear", "knn", "ft_0.1", "ft_1"}
            assert all(0 <= m["auc"] <= 1 for m in u["metrics"].values())
    assert {(c["a"], c["b"]) for c in d["comparisons"]} == {("di", "random"), ("dira", "di"), ("ld", "random")}
    assert all(c["lo"] <= c["diff"] <= c["hi"] for c in d["comparisons"])
    for f in ("quality.json", "quality.md", "loss_curves_pneumonia.png", "progress.log"):
        assert (tmp_path / f).exists(), f
    run = tmp_path / "runs" / "pneumonia" / "dira_seed0"
    assert (run / "final.pt").exists() and not (run / "resume.pt").exists() and not list(run.glob("*/last.pt"))  # pruned
    unit = json.loads((tmp_path / "units" / "pneumonia" / "dira_seed0.json").read_text())
    assert len(unit["metrics"]["ft_1"]["scores"]) == d["n_test"] and unit["pretrain"]["losses"][-1]["step"] == 8
    md = (tmp_path / "quality.md").read_text()
    assert md == results_markdown(res) and "pytest tiny" in md and "Hardware" in md and "| dira | 4+4 |" in md
    assert "Paired differences" in md and "loss_curves_pneumonia.png" in md

    finished = {p.name: json.loads(p.read_text())["finished"] for p in (tmp_path / "units" / "pneumonia").glob("*.json")}
    (tmp_path / "units" / "pneumonia" / "di_seed0.json").unlink()            # as if interrupted during di
    res2 = run_benchmark(cfg, command="pytest tiny", log=None)
    log = (tmp_path / "progress.log").read_text().splitlines()
    assert sum("skipped" in l for l in log) == 4 and sum("di seed 0: pretrain" in l for l in log) == 2
    again = {p.name: json.loads(p.read_text())["finished"] for p in (tmp_path / "units" / "pneumonia").glob("*.json")}
    assert {k: v for k, v in again.items() if k != "di_seed0.json"} == {k: v for k, v in finished.items() if k != "di_seed0.json"}
    assert res2["datasets"]["pneumonia"]["n_units"] == 5 and res2["complete"]
    assert all("ETA" in l for l in log if ": pretrain" in l or ": eval" in l)


@pytest.mark.parametrize("backbone", ["vgg_ld", "vit_nano"])
def test_evaluate_encoder_on_ld_and_ace_encoders(backbone, one_thread):
    "Probe, kNN, fine-tuning, Grad-CAM localization and the segmentation U-Net all run on LD's VGG and ACE's ViT."
    from dira_nb.eval.benchmark import benchmark_data, evaluate_encoder, NOT_EVALUABLE
    assert not set(NOT_EVALUABLE) & {"ld", "ld_cs", "ld_r", "ld_ra", "ace", "ace_r", "ace_ra"}
    cfg = BenchmarkConfig.tiny(backbone=backbone, image_size=32, datasets=("samples",), device="cpu")
    r = evaluate_encoder("random", benchmark_data("samples", cfg), cfg, seed=0, with_samples_extras=True)
    assert set(r["metrics"]) == {"linear", "knn", "ft_0.1", "ft_1"} and all(0 <= m["auc"] <= 1 for m in r["metrics"].values())
    assert r["localization"]["n"] > 0 and 0 <= r["localization"]["heatmap_auroc"] <= 1
    assert 0 <= r["segmentation"]["dice"] <= 1 and r["segmentation"]["decoder"] == "random"


def test_quality_script_tiny(tmp_path, pneumonia_npz):
    cmd = [sys.executable, str(REPO / "bench" / "quality.py"), "--tiny", "--threads", "1", "--methods", "random", "di",
           "--random-seeds", "0", "--fractions", "1", "--out", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "IN_TEST"}          # as a user runs it: --threads 1 holds throughout
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((tmp_path / "quality.json").read_text())
    assert set(res["datasets"]["pneumonia"]["units"]) == {"random", "di"}
    assert res["command"].startswith("python bench/quality.py --tiny")
    assert "[2/2] pneumonia di seed 0" in p.stdout
