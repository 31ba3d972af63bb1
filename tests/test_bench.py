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


def test_fp32_channels_last_and_compile_modes(tmp_path):
    "The fp32 levers (channels-last, torch.compile) each have a mode; compile is traced with the eager backend here."
    bench = _load()
    out = tmp_path / "levers.json"
    bench.main(["--tiny", "--variants", "di", "--modes", "cl", "compile", "cl_compile", "--compile-backend", "eager", "--mfu",
                "--out", str(out)])
    rows = json.loads(out.read_text())["results"]
    assert [r["callbacks"] for r in rows] == [["ChannelsLast"], ["Compile"], ["ChannelsLast", "Compile"]]
    assert all(r["images_per_s"] > 0 for r in rows) and len({r["flops_per_step"] for r in rows}) == 1


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


def test_gpu_check_dry_run_exercises_every_section(tmp_path):
    "bench/gpu_check.py --dry-run (CPU, tiny sizes) runs every section — eager and compiled throughput with FLOPs and MFU, "
    "bf16/fp32 parity, pretraining + probe vs random init — and writes JSON + markdown named after the device."
    import subprocess, sys
    from dira_nb.callback.perf import gpu_bf16_peak_tflops
    assert gpu_bf16_peak_tflops("NVIDIA H200") == gpu_bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and gpu_bf16_peak_tflops("Some Future GPU") is None
    gpu = BENCH.parent / "gpu_check.sh"
    assert gpu.stat().st_mode & 0o111 and "bench/gpu_check.py" in gpu.read_text() and "timeout" in gpu.read_text()
    r = subprocess.run([sys.executable, str(BENCH.parent / "gpu_check.py"), "--dry-run", "--peak-tflops", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    [js] = list(tmp_path.glob("dry_run_*.json"))
    res = json.loads(js.read_text())
    for sec in ("throughput_eager", "throughput_compiled", "parity", "learns"):
        assert "error" not in res[sec] and "skipped" not in res[sec], (sec, res[sec])
    rows = res["throughput_eager"]["rows"] + res["throughput_compiled"]["rows"]
    assert [(x["batch"], x["compiled"]) for x in rows] == [(2, False), (4, False), (2, True), (4, True)]
    for x in rows:
        assert x["images_per_s"] > 0 and x["flops_per_step"] > 0 and 0 < x["mfu"] and x["peak_bf16_tflops"] == 1.0
    assert "Compile" in rows[-1]["callbacks"] and "MixedPrecision" in rows[0]["callbacks"]
    assert rows[1]["flops_per_step"] == 2 * rows[0]["flops_per_step"]              # FLOPs scale with the batch
    p = res["parity"]
    assert len(p["curves"]["fp32"]) == len(p["curves"]["bf16"]) == p["steps"] and p["curves"]["fp32"] != p["curves"]["bf16"]
    assert p["terms"]["loss"]["finite"] and isinstance(p["within_tolerance"], bool)
    l = res["learns"]
    assert 0 <= l["pretrained"]["linear_auc"] <= 1 and len(l["random_init"]) == 2 and isinstance(l["learns"], bool)
    md = js.with_suffix(".md").read_text()
    assert "dry run" in md and "| batch | compiled |" in md and "bf16 vs fp32" in md and "random init (seed 1)" in md


def test_tutorial_time_bench_finds_the_cells_it_times():
    "bench/tutorial_time.py times the tutorial by cell id: the ids it needs exist, and a missing one stops it with a message."
    import json, runpy
    bench = runpy.run_path(str(BENCH.parent / "tutorial_time.py"))
    nb = json.loads(bench["NOTEBOOK"].read_text())
    ids = {c.get("id") for c in nb["cells"]}
    assert {"c016", "c017", "c022d"} <= ids, "the tutorial's training / comparison cells were renamed"
    src = {c.get("id"): "".join(c["source"]) for c in nb["cells"]}
    assert "BackgroundTraining" in src["c016"] and "training.wait()" in src["c017"] and "Dashboard.compare" in src["c022d"]
