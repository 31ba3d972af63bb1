"""Quality benchmark: equal-step schedule, the markdown table, and the tiny mode end to end (script included)."""
import json, subprocess, sys
from pathlib import Path

import pytest

from dira_nb.eval.benchmark import BenchmarkConfig, pretrain_schedule, run_benchmark, results_markdown

REPO = Path(__file__).resolve().parents[1]


def test_pretrain_schedule_equal_steps():
    assert pretrain_schedule(4707, 32, 300) == dict(images=3200, epochs=3, steps_per_epoch=100, steps=300)
    s = pretrain_schedule(160, 32, 60)
    assert s["steps"] == 60 and s["epochs"] * s["steps_per_epoch"] == 60 and s["images"] <= 160
    with pytest.raises(ValueError, match="cannot fill"):
        pretrain_schedule(4, 8, 10)


def test_tiny_benchmark_end_to_end(tmp_path):
    cfg = BenchmarkConfig.tiny(datasets=("samples",), methods=("random", "di", "dira"), out=str(tmp_path))
    res = run_benchmark(cfg, command="pytest tiny", log=None)
    rows = res["results"]["samples"]
    assert list(rows) == ["random", "di", "dira"]
    assert rows["random"]["pretrain"] is None
    assert rows["di"]["pretrain"]["steps"] == rows["dira"]["pretrain"]["steps"] == 4      # equal budget
    assert [s["stage"] for s in rows["dira"]["pretrain"]["stages"]] == ["dir", "dira"]
    for r in rows.values():
        assert 0 <= r["linear_auc"] <= 1 and 0 <= r["knn_auc"] <= 1
        assert set(r["finetune"]) == {"0.01", "1"}
        assert 0 <= r["segmentation"]["dice"] <= 1
    saved = json.loads((tmp_path / "quality.json").read_text())
    assert saved["complete"] and saved["config"]["pretrain_steps"] == 4
    md = (tmp_path / "quality.md").read_text()
    assert "| dira | 2+2 |" in md and "pytest tiny" in md and "Hardware" in md
    assert md == results_markdown(res)


def test_quality_script_tiny(tmp_path, pneumonia_npz):
    cmd = [sys.executable, str(REPO / "bench" / "quality.py"), "--tiny", "--datasets", "pneumonia",
           "--methods", "random", "di", "--fractions", "0.01", "--test-images", "24", "--out", str(tmp_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((tmp_path / "quality.json").read_text())
    assert set(res["results"]["pneumonia"]) == {"random", "di"}
    assert res["command"].startswith("python bench/quality.py --tiny")
