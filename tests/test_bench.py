"""The benchmark harness runs end to end at a tiny size and writes its JSON and markdown (no timing assertions)."""
import importlib.util, json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "step_bench.py"


def _load():
    spec = importlib.util.spec_from_file_location("step_bench", BENCH)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_tiny_bench_writes_results(tmp_path):
    bench = _load()
    out = tmp_path / "step.json"
    bench.main(["--tiny", "--variants", "dira", "di", "--modes", "baseline", "fast", "--mfu", "--out", str(out)])
    data = json.loads(out.read_text())
    hw = data["meta"]["hardware"]
    assert {"cpu", "threads", "torch", "platform", "load_avg_start"} <= set(hw) and "step_bench.py" in data["meta"]["command"]
    rows = data["results"]
    assert [(r["variant"], r["mode"]) for r in rows] == [("dira", "baseline"), ("dira", "fast"), ("di", "baseline"), ("di", "fast")]
    for r in rows:
        assert r["images_per_s"] > 0 and r["median_s_per_step"] > 0 and r["flops_per_step"] > 0
        assert "ChannelsLast" in r["callbacks"] if r["mode"] == "fast" else r["callbacks"] == []
    dira, di = rows[0]["flops_per_step"], rows[2]["flops_per_step"]
    assert dira > di                                   # the decoder and the discriminator add work
    md = out.with_suffix(".md").read_text()
    assert "| dira | resnet18 | 32 | 2 | fast |" in md and "0.80–0.85" in md


def test_ratio_against_original_figures():
    bench = _load()
    assert bench.ORIGINAL[("dira", "resnet50", 224)] == (0.80, 0.85) and bench.ORIGINAL[("dira", "resnet50", 64)] == (6.0, 7.3)
