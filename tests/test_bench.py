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
    assert "| dira | resnet18 | 32 | 2 | fast |" in md and "compare_original.py" in md
    assert not any("original" in k for r in rows for k in r)      # no figures taken elsewhere


def test_side_by_side_with_the_original_runs_against_a_stub(tmp_path):
    "bench/compare_original.py alternates both codes and writes the ratio; CI runs it against a stand-in (no timing claim)."
    import subprocess, sys
    out = tmp_path / "cmp.json"
    r = subprocess.run([sys.executable, str(BENCH.parent / "compare_original.py"), "--stub", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["stub"] and len(res["rounds"]) == 2 and [x["order"] for x in res["rounds"]] == [["original", "ours"], ["ours", "original"]]
    assert res["original_images_per_s"] > 0 and res["ours_images_per_s"] > 0
    assert abs(res["ratio"] - res["ours_images_per_s"] / res["original_images_per_s"]) < 1e-2
    md = out.with_suffix(".md").read_text()
    assert "Stub run" in md and "| median |" in md
    bad = subprocess.run([sys.executable, str(BENCH.parent / "compare_original.py"), "--original", str(tmp_path),
                          "--original-python", sys.executable], capture_output=True, text=True)
    assert bad.returncode != 0 and "not a checkout of the original DiRA code" in bad.stderr


def test_quality_scripts_parse_with_the_benchmark_flags():
    "bench/quality.py and bench/quality_gpu.sh use only flags the benchmark knows, and the GPU variant is a larger budget."
    import argparse, shlex
    from dira_nb.cli import _add_benchmark_args, _benchmark_config
    from dira_nb.eval.benchmark import BenchmarkConfig
    root = BENCH.parent
    gpu = (root / "quality_gpu.sh").read_text()
    assert (root / "quality_gpu.sh").stat().st_mode & 0o111                          # executable
    line = next(l for l in gpu.splitlines() if "bench/quality.py" in l and not l.lstrip().startswith("#"))
    argv = shlex.split(line.split("bench/quality.py", 1)[1].replace('"$@"', ""))
    p = argparse.ArgumentParser(); _add_benchmark_args(p)
    cfg, cpu = _benchmark_config(p.parse_args(argv)), BenchmarkConfig()
    assert cfg.device == "cuda" and cfg.pretrain_steps > cpu.pretrain_steps and len(cfg.seeds) >= len(cpu.seeds)
    assert len(cfg.random_seeds) >= 3 and cfg.image_size == 28 and set(cpu.methods) <= set(cfg.methods)
    assert "run_benchmark_cli" in (root / "quality.py").read_text()
