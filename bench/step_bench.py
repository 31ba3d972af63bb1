"""Images/s and peak memory of full DiRA training steps (dira, dir, di), before and after the speed switches.

A step is exactly what `Learner` runs per batch: momentum update, key forward, query U-Net forward + backward, the
discriminator's passes (dira), both optimiser steps and the enqueue. Inputs are random tensors (as in the original
code's figures), warm-up steps are excluded, and the median over the timed steps is reported.

Modes: `baseline` = plain Learner (float32, contiguous); `fast` = ChannelsLast + MixedPrecision(bf16) where bf16 is
fast on the device (+ Compile on CUDA with --compile); fp32 levers one at a time: `cl` = ChannelsLast, `compile` =
torch.compile (on CPU the inductor C++ backend, which needs a C++ compiler; `--compile-backend eager` only traces),
`cl_compile` = both.

    python bench/step_bench.py --variants dira --backbones resnet50 --sizes 224 64 --modes baseline fast
    python bench/step_bench.py --tiny              # CI smoke run, seconds
    python bench/step_bench.py --device cuda --sizes 224 --backbones resnet50 --batch 64 --mfu
    python bench/step_bench.py --variants dira --backbones resnet50 --sizes 224 --modes baseline cl compile cl_compile --mfu
"""
from __future__ import annotations
import argparse, json, os, platform, resource, statistics, sys, threading, time
from pathlib import Path
import torch


def cpu_model() -> str:
    "The CPU's model name (as the quality benchmark records it)."
    from dira_nb.eval.benchmark import hardware_info
    return hardware_info()["cpu"] or platform.machine()


def hardware(device: torch.device, threads: int) -> dict:
    "Hardware and versions to store next to every measurement."
    hw = dict(platform=platform.platform(), python=platform.python_version(), torch=torch.__version__,
              cpu=cpu_model(), cpu_count=os.cpu_count(), threads=threads, load_avg_start=list(os.getloadavg()))
    if device.type == "cuda":
        hw.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                  gpu_memory_gb=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1))
    return hw


class RSSPeak:
    "Peak resident memory of this process while the block runs, sampled every `every` s (psutil), minus the RSS at entry."
    def __init__(self, every: float = 0.005):
        import psutil
        self.proc, self.every, self.peak, self._stop = psutil.Process(), every, 0, threading.Event()
    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss); time.sleep(self.every)
    def __enter__(self):
        self.start = self.peak = self.proc.memory_info().rss
        self._t = threading.Thread(target=self._run, daemon=True); self._t.start(); return self
    def __exit__(self, *exc):
        self._stop.set(); self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
    @property
    def delta_mb(self) -> float: return (self.peak - self.start) / 2**20


def measure(variant: str, backbone: str, size: int, batch: int, mode: str, device: torch.device, steps: int,
            warmup: int, moco_k: int, compile_: bool = False, mfu: bool = False, compile_kw: dict | None = None) -> dict:
    "Median seconds per step (wall and process CPU), images/s and peak memory of one configuration."
    from dira_nb.callback.core import Callback
    from dira_nb.callback.perf import MixedPrecision, ChannelsLast, Compile, autocast_supported, step_flops, \
        gpu_bf16_peak_tflops, mfu as mfu_of
    from dira_nb.methods.core import create_method
    from dira_nb.learner import Learner

    class StepTimer(Callback):
        order = -100
        def __init__(self): self.wall, self.cpu = [], []
        def _sync(self):
            if device.type == "cuda": torch.cuda.synchronize(device)
        def before_batch(self): self._sync(); self.t0, self.c0 = time.perf_counter(), time.process_time()
        def after_batch(self):
            self._sync(); self.wall.append(time.perf_counter() - self.t0); self.cpu.append(time.process_time() - self.c0)

    def callbacks(count_flops: bool = False):
        "The mode's speed callbacks (without Compile when counting FLOPs: the count is the same, and eager is countable)."
        cbs = []
        if mode in ("fast", "cl", "cl_compile"): cbs.append(ChannelsLast())
        if mode == "fast" and autocast_supported(device.type): cbs.append(MixedPrecision())
        compiled = (mode == "fast" and compile_ and device.type == "cuda") or mode in ("compile", "cl_compile")
        if compiled and not count_flops: cbs.append(Compile(**(compile_kw or {})))
        return cbs

    torch.manual_seed(0)
    m = create_method(variant, backbone=backbone, image_size=size, moco_k=moco_k)
    x = torch.rand(batch, 1, size, size, device=device)
    b = dict(x1=x, x2=x.flip(-1), target=x)
    timer = StepTimer()
    cbs = callbacks()
    learn = Learner(m, [b] * warmup, None, cbs=[timer, *cbs], device=device, quiet=True)
    learn.fit(1)                                        # warm-up (oneDNN primitive caches, cuDNN autotune, compile)
    learn.train_dl, timer.wall, timer.cpu = [b] * steps, [], []
    if device.type == "cuda": torch.cuda.reset_peak_memory_stats(device)
    with RSSPeak() as rss: learn.fit(1)
    wall, cpu = statistics.median(timer.wall), statistics.median(timer.cpu)
    r = dict(variant=variant, backbone=backbone, size=size, batch=batch, mode=mode, device=str(device),
             callbacks=[type(c).__name__ for c in cbs], steps=steps, warmup=warmup, moco_k=moco_k,
             median_s_per_step=round(wall, 4), images_per_s=round(batch / wall, 3),
             median_cpu_s_per_step=round(cpu, 4), step_times_s=[round(t, 4) for t in timer.wall],
             rss_peak_delta_mb=round(rss.delta_mb, 1), ru_maxrss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    if device.type == "cuda":
        r["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if device.type == "cpu":   # on a loaded machine the CPU time of the process is steadier than the wall time
        r["images_per_s_from_cpu_time"] = round(batch * torch.get_num_threads() / cpu, 3)
    if mfu:
        flops = step_flops(m, b, cbs=callbacks(count_flops=True))
        r["flops_per_step"] = flops
        peak = gpu_bf16_peak_tflops() if device.type == "cuda" else None
        if peak: r.update(peak_bf16_tflops=peak, mfu=round(mfu_of(flops, 1 / wall, peak), 4))
        r["achieved_tflops"] = round(flops / wall / 1e12, 4)
    return r


def markdown(results: list, meta: dict) -> str:
    "A markdown table of the results (ratios to the original code come only from `bench/compare_original.py`)."
    hw = meta["hardware"]
    lines = [f"# DiRA step throughput ({meta['timestamp']})", "",
             f"Command: `{meta['command']}`  ", f"CPU: {hw['cpu']} ({hw['cpu_count']} cores), threads: {hw['threads']}, "
             f"torch {hw['torch']}, load average at start {hw['load_avg_start']}, at end {meta['load_avg_end']}"
             + (f"  \nGPU: {hw['gpu']}" if "gpu" in hw else ""), "",
             "| variant | backbone | size | batch | mode | img/s (wall) | img/s (CPU time) | s/step | peak mem MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        mem = r.get("cuda_max_allocated_mb", r["rss_peak_delta_mb"])
        lines.append(f"| {r['variant']} | {r['backbone']} | {r['size']} | {r['batch']} | {r['mode']} | {r['images_per_s']} | "
                     f"{r.get('images_per_s_from_cpu_time', '')} | {r['median_s_per_step']} | {mem} |")
    lines += ["", "Compare with the original code only side by side: `bench/compare_original.py`. "
              "'img/s (CPU time)' = batch × threads ÷ median process CPU seconds per step: an estimate for an unloaded "
              "machine when other processes compete for the cores (it assumes both threads stay busy).",
              "Peak memory: CPU = peak RSS growth during the timed steps (psutil sampling); CUDA = max_memory_allocated."]
    if any("mfu" in r for r in results):
        lines += ["", "| variant | size | FLOP/step | achieved TFLOP/s | peak bf16 TFLOP/s | MFU |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['variant']} | {r['size']} | {r['flops_per_step']:.3e} | {r['achieved_tflops']} | {r['peak_bf16_tflops']} | "
                  f"{100 * r['mfu']:.1f} % |" for r in results if "mfu" in r]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=["dira", "dir", "di"])
    p.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 224])
    p.add_argument("--modes", nargs="+", default=["baseline", "fast"], choices=["baseline", "fast", "cl", "compile", "cl_compile"],
                   help="baseline (fp32), fast (bf16 + channels-last), fp32 levers: cl (channels-last), compile (torch.compile), cl_compile")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--moco-k", type=int, default=4096)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--compile", action="store_true", help="fast mode on CUDA also uses torch.compile")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend of the compile modes (default inductor; 'eager' only traces)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune")
    p.add_argument("--mfu", action="store_true", help="count FLOPs per step (FlopCounterMode) and report MFU on CUDA")
    p.add_argument("--tiny", action="store_true", help="CI smoke run: resnet18, 32 px, batch 2, 1 step")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/step_<device>[_tiny].json)")
    a = p.parse_args(argv)
    if a.tiny:
        a.backbones, a.sizes, a.batch, a.steps, a.warmup, a.moco_k = ["resnet18"], [32], 2, 1, 1, 16
    torch.set_num_threads(a.threads)
    from dira_nb.core import get_device
    device = get_device(a.device)
    out = Path(a.out or Path(__file__).parent / "results" / f"step_{device.type}{'_tiny' if a.tiny else ''}.json")
    meta = dict(command="python " + " ".join([sys.argv[0] if argv is None else "bench/step_bench.py", *(sys.argv[1:] if argv is None else argv)]),
                timestamp=time.strftime("%Y-%m-%d %H:%M:%S %Z"), hardware=hardware(device, a.threads))
    results = []
    for variant in a.variants:
        for backbone in a.backbones:
            for size in a.sizes:
                for mode in a.modes:
                    kw = {k: v for k, v in dict(backend=a.compile_backend, mode=a.compile_mode).items() if v}
                    r = measure(variant, backbone, size, a.batch, mode, device, a.steps, a.warmup, a.moco_k, a.compile, a.mfu, kw)
                    results.append(r); print(json.dumps(r), flush=True)
    meta["load_avg_end"] = list(os.getloadavg())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(meta=meta, results=results), indent=1))
    out.with_suffix(".md").write_text(markdown(results, meta))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return results


if __name__ == "__main__":
    main()
