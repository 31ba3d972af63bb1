"""One GPU check for a lent device (< 8 minutes): throughput and MFU of the DiRA step, bf16/fp32 loss parity, peak
memory, and a short real pretraining + linear probe that shows the GPU path learns.

Sections, in this order (each guarded by the time budget; the results file is rewritten after every section, so an
interrupted check keeps what it measured):
1. `throughput`: images/s of the full dira step (ResNet-50, 224², bf16 autocast + channels-last) for batch 64/128/256,
   eager, then with torch.compile; FLOPs per step counted once per batch by `FlopCounterMode` (eager, bf16); MFU =
   achieved FLOP/s ÷ the GPU's dense bf16 peak (`GPU_BF16_PEAK_TFLOPS`; unknown GPU → achieved TFLOP/s only);
   peak memory = `torch.cuda.max_memory_allocated` over the timed steps.
2. `parity`: 100 dira steps on 10 fixed batches of real PneumoniaMNIST views (cycled), fp32 (TF32 off) and bf16,
   from the same initial weights; max relative difference of the loss curves (raw, 10-step moving average, last 10).
3. `learns`: a short pretraining at 64 px on the bundled PneumoniaMNIST (bf16 + channels-last, the README's path),
   then a linear probe / kNN on frozen features against randomly initialised encoders of the same architecture.

    bench/gpu_check.sh                   # on a GPU: writes bench/results/gpu/<gpu name>.json and .md
    python bench/gpu_check.py --dry-run  # CPU, tiny sizes, seconds: exercises every code path (CI)
"""
from __future__ import annotations
import argparse, json, math, os, platform, re, shutil, statistics, sys, tempfile, time, traceback
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path: sys.path.insert(0, str(REPO))       # runs from a plain checkout (no pip install)
NPZ = REPO / "data_samples" / "pneumoniamnist28" / "pneumoniamnist28.npz"


# ---- helpers ---------------------------------------------------------------------------------------------------------
def device_name(device: torch.device) -> str:
    "The GPU's name, or the CPU's model for a CPU run."
    if device.type == "cuda": return torch.cuda.get_device_name(device)
    from dira_nb.eval.benchmark import hardware_info
    return hardware_info().get("cpu") or platform.processor() or platform.machine()


def slug(name: str) -> str:
    "A file-name-safe form of a device name ('NVIDIA H200' → 'nvidia_h200')."
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "device"


def hardware(device: torch.device) -> dict:
    hw = dict(device=str(device), name=device_name(device), torch=torch.__version__, python=platform.python_version(),
              platform=platform.platform(), cpu_count=os.cpu_count())
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        hw.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), gpu_memory_gb=round(p.total_memory / 2**30, 1),
                  capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count)
    return hw


def sync(device: torch.device):
    if device.type == "cuda": torch.cuda.synchronize(device)


@contextmanager
def tf32(enabled: bool):
    "TF32 matmuls/convolutions on or off inside the block (a true fp32 reference needs them off)."
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try: yield
    finally: torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def speed_callbacks(precision: str, channels_last: bool, compile_kw: dict | None) -> list:
    "The step's speed callbacks; bf16 is forced even where `autocast_supported` says it is slow (the dry run's CPU)."
    from dira_nb.callback.perf import MixedPrecision, ChannelsLast, Compile
    cbs = []
    if channels_last: cbs.append(ChannelsLast())
    if precision == "bf16": cbs.append(MixedPrecision("bf16"))
    if compile_kw is not None: cbs.append(Compile(**compile_kw))
    return cbs


def random_batch(batch: int, size: int, device: torch.device) -> dict:
    "One training batch of random images (as the original code's figures and bench/step_bench.py)."
    g = torch.Generator().manual_seed(batch * 1000 + size)
    x = torch.rand(batch, 1, size, size, generator=g).to(device)
    return dict(x1=x, x2=x.flip(-1), target=x)


# ---- 1. throughput and MFU -------------------------------------------------------------------------------------------
def time_steps(a, batch: int, compile_kw: dict | None, device: torch.device) -> dict:
    "Median wall seconds of the timed steps after `warmup` steps (compilation, cuDNN autotuning), images/s, peak memory."
    from dira_nb.callback.core import Callback
    from dira_nb.learner import Learner
    from dira_nb.methods.core import create_method

    class Timer(Callback):
        order = -100
        def __init__(self): self.times, self.n = [], 0
        def before_batch(self):
            sync(device)
            if self.n == a.warmup and device.type == "cuda": torch.cuda.reset_peak_memory_stats(device)
            self.t0 = time.perf_counter()
        def after_batch(self): sync(device); self.times.append(time.perf_counter() - self.t0); self.n += 1

    torch.manual_seed(0)
    m = create_method("dira", backbone=a.backbone, image_size=a.size, moco_k=a.moco_k)
    b = random_batch(batch, a.size, device)
    timer, cbs = Timer(), speed_callbacks("bf16", True, compile_kw)
    learn = Learner(m, [b] * (a.warmup + a.steps), None, cbs=[timer, *cbs], device=device, quiet=True)
    t0 = time.time(); learn.fit(1); total = time.time() - t0
    timed = timer.times[a.warmup:]
    med = statistics.median(timed)
    r = dict(batch=batch, compiled=compile_kw is not None, callbacks=[type(c).__name__ for c in cbs], warmup_steps=a.warmup,
             timed_steps=len(timed), median_s_per_step=round(med, 5), images_per_s=round(batch / med, 1),
             warmup_s=round(sum(timer.times[:a.warmup]), 2), total_s=round(total, 2), step_times_s=[round(t, 5) for t in timed])
    if device.type == "cuda": r["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del learn, m; _free(device)
    return r


def count_flops(a, batch: int, device: torch.device) -> int:
    "FLOPs of one dira step at this batch (eager bf16 step counted by `FlopCounterMode`; the count does not depend on precision)."
    from dira_nb.callback.perf import step_flops
    from dira_nb.methods.core import create_method
    torch.manual_seed(0)
    m = create_method("dira", backbone=a.backbone, image_size=a.size, moco_k=a.moco_k).to(device)
    flops = step_flops(m, random_batch(batch, a.size, device), cbs=speed_callbacks("bf16", False, None))
    del m; _free(device)
    return int(flops)


def _free(device):
    import gc; gc.collect()
    if device.type == "cuda": torch.cuda.empty_cache()


def throughput(a, device: torch.device, compiled: bool, clock, flops_cache: dict, rows: list, write=lambda: None) -> dict:
    "Rows of the throughput table, appended to `rows` (live in the results) and written after each batch size."
    from dira_nb.callback.perf import gpu_bf16_peak_tflops
    peak = a.peak_tflops or (gpu_bf16_peak_tflops(device_name(device)) if device.type == "cuda" else None)
    for batch in a.batches:
        if clock.left() < (a.compile_reserve_s if compiled else 20):
            rows.append(dict(batch=batch, compiled=compiled, skipped=f"time budget ({clock.left():.0f} s left)")); continue
        try:
            if batch not in flops_cache: flops_cache[batch] = count_flops(a, batch, device)
            kw = None if not compiled else (dict(backend="eager") if device.type == "cpu" else dict(mode=a.compile_mode) if a.compile_mode else {})
            r = time_steps(a, batch, kw, device)
        except torch.cuda.OutOfMemoryError as e:
            _free(device); rows.append(dict(batch=batch, compiled=compiled, error=f"out of memory: {str(e).splitlines()[0]}")); write(); continue
        f = flops_cache[batch]
        r.update(flops_per_step=f, gflop_per_image=round(f / batch / 1e9, 2), achieved_tflops=round(f / r["median_s_per_step"] / 1e12, 2))
        if peak: r.update(peak_bf16_tflops=peak, mfu=round(f / r["median_s_per_step"] / (peak * 1e12), 4))
        rows.append(r); write(); print(json.dumps({k: v for k, v in r.items() if k != "step_times_s"}), flush=True)
    return dict(rows=rows)


# ---- 2. bf16 vs fp32 loss parity -------------------------------------------------------------------------------------
def fixed_batches(a, device: torch.device) -> list:
    "`parity_batches` batches of real PneumoniaMNIST images through the dira views (fixed seeds), on `device`."
    from torch.utils.data import DataLoader, Subset
    from dira_nb.data.io import ImageDataset
    from dira_nb.data.views import ViewDataset
    from dira_nb.learner import SeededItems
    from dira_nb.methods.core import create_method
    n = a.parity_batches * a.parity_batch
    ds = Subset(ImageDataset.from_npz(a.npz, "train", size=a.parity_size), list(range(n)))
    views = create_method("dira", backbone=a.backbone, image_size=a.parity_size, moco_k=a.moco_k).views(a.parity_size)
    dl = DataLoader(SeededItems(ViewDataset(ds, views), 0), batch_size=a.parity_batch, shuffle=False)
    to = lambda b: {k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}
    return [to(b) for b in dl]


def loss_curve(a, batches: list, precision: str, device: torch.device) -> list:
    "Per-step loss terms of `parity_steps` dira steps from fixed initial weights."
    from dira_nb.callback.core import Callback
    from dira_nb.learner import Learner
    from dira_nb.methods.core import create_method

    class LossCurve(Callback):
        order = 50
        def __init__(self): self.rows = []
        def after_batch(self):
            self.rows.append({k: float(torch.as_tensor(v).detach().float().mean()) for k, v in self.learn.losses.items()})

    torch.manual_seed(0)
    m = create_method("dira", backbone=a.backbone, image_size=a.parity_size, moco_k=a.moco_k)
    rec = LossCurve()
    data = [batches[i % len(batches)] for i in range(a.parity_steps)]
    with tf32(precision != "fp32"):                    # fp32 = true fp32 (TF32 off); bf16 = autocast as in training
        Learner(m, data, None, cbs=[rec, *speed_callbacks(precision, False, None)], device=device, quiet=True).fit(1)
    del m; _free(device)
    return rec.rows


def curve_difference(ref: list, other: list, window: int = 10) -> dict:
    "Max relative difference of two loss curves per term: raw steps, `window`-step moving averages, mean of the last `window`."
    out = {}
    for k in ref[0]:
        if k not in other[0] or not k.startswith("loss"): continue          # loss terms (accuracies can be 0: no relative diff)
        x, y = np.array([r[k] for r in ref]), np.array([r[k] for r in other])
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            out[k] = dict(finite=False); continue
        den = lambda v: np.maximum(np.abs(v), 1e-8)
        w = min(window, len(x))
        sx, sy = (np.convolve(v, np.ones(w) / w, mode="valid") for v in (x, y))
        out[k] = dict(finite=True, max_rel_raw=float(np.max(np.abs(x - y) / den(x))),
                      max_rel_smoothed=float(np.max(np.abs(sx - sy) / den(sx))),
                      rel_last=float(abs(x[-w:].mean() - y[-w:].mean()) / max(abs(x[-w:].mean()), 1e-8)),
                      first=[float(x[0]), float(y[0])], last=[float(x[-1]), float(y[-1])])
    return out


def parity(a, device: torch.device) -> dict:
    batches = fixed_batches(a, device)
    t0 = time.time()
    curves = {p: loss_curve(a, batches, p, device) for p in ("fp32", "bf16")}
    diff = curve_difference(curves["fp32"], curves["bf16"])
    total = diff.get("loss", {})
    ok = bool(total.get("finite") and total["max_rel_smoothed"] <= a.parity_tol)
    return dict(steps=a.parity_steps, batch=a.parity_batch, size=a.parity_size, fixed_batches=len(batches), tolerance=a.parity_tol,
                within_tolerance=ok, seconds=round(time.time() - t0, 1), terms=diff,
                curves={p: [round(r.get("loss", float("nan")), 5) for r in c] for p, c in curves.items()})


# ---- 3. a short real pretraining + linear probe ----------------------------------------------------------------------
def learns(a, device: torch.device, work: Path) -> dict:
    from dira_nb.pretrain import pretrain, PretrainConfig
    from dira_nb.eval.benchmark import BenchmarkConfig, benchmark_data
    from dira_nb.eval.features import evaluate_frozen, load_encoder
    run = work / "run"
    if run.exists(): shutil.rmtree(run)
    cfg = PretrainConfig(data=str(a.npz), out=str(run), method="dira", backbone=a.pt_backbone, image_size=a.pt_size,
                         load_size=a.pt_size, epochs_dir=a.pt_epochs_dir, epochs_dira=a.pt_epochs_dira, batch_size=a.pt_batch,
                         max_images=a.pt_max_images, device=device.type, precision="bf16", channels_last=True,
                         num_workers=a.workers, snapshots=0, seed=0)
    t0 = time.time()
    res = pretrain(cfg, quiet=True)
    s = res["summary"]
    pre_s = time.time() - t0
    data = benchmark_data("pneumonia", BenchmarkConfig(image_size=a.pt_size, pneumonia_npz=str(a.npz), test_images=a.test_images))
    train = data["train"]
    if a.probe_train and a.probe_train < len(train[1]):
        idx = np.random.default_rng(0).permutation(len(train[1]))[:a.probe_train]
        train = (train[0][idx], train[1][idx])
    dev = device.type
    t1 = time.time()
    pretrained = evaluate_frozen(run, train, data["test"], device=dev)
    random_init = [evaluate_frozen(load_encoder("random", backbone=a.pt_backbone, seed=sd), train, data["test"], device=dev)
                   for sd in (0, 1)]
    best_random = max(r["linear_auc"] for r in random_init)
    steps = sum(h[-1]["train_iter"] for h in res["histories"].values() if h)
    return dict(config=dict(backbone=a.pt_backbone, size=a.pt_size, epochs_dir=a.pt_epochs_dir, epochs_dira=a.pt_epochs_dira,
                            batch=a.pt_batch, precision="bf16", channels_last=True, num_workers=a.workers),
                n_train=s["n_train"], steps=steps, pretrain_seconds=round(pre_s, 1),
                images_per_s=round(steps * min(a.pt_batch, s["n_train"]) / max(sum(st["seconds"] for st in s["stages"]), 1e-9), 1),
                final_losses={st["stage"]: {k: round(v, 4) for k, v in st["final"].items() if k.startswith(("train_loss", "valid_loss"))}
                              for st in s["stages"]},
                features=(s.get("features") or {}).get("final"), folder_bytes=s.get("folder_bytes"),
                probe_train=len(train[1]), probe_test=len(data["test"][1]), probe_seconds=round(time.time() - t1, 1),
                pretrained=pretrained, random_init=random_init,
                linear_auc_gain_over_best_random=round(pretrained["linear_auc"] - best_random, 4),
                learns=bool(pretrained["linear_auc"] > best_random))


# ---- driver ----------------------------------------------------------------------------------------------------------
class Clock:
    def __init__(self, budget_s: float): self.t0, self.budget = time.time(), budget_s
    def used(self) -> float: return time.time() - self.t0
    def left(self) -> float: return self.budget - self.used()


def run_section(res: dict, name: str, fn, clock: Clock, write, need_s: float = 0):
    "Run one section; record its result, or why it was skipped or failed (the other sections still run)."
    if clock.left() < need_s:
        res[name] = dict(skipped=f"time budget: {clock.left():.0f} s left, needs about {need_s:.0f} s"); write(); return
    t0 = time.time()
    try: res[name] = fn()
    except Exception as e:                              # one broken section must not lose the others' figures
        res[name] = {**(res.get(name) or {}), "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        print(f"gpu_check: section {name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    if isinstance(res[name], dict): res[name].setdefault("section_seconds", round(time.time() - t0, 1))
    res.setdefault("section_seconds", {})[name] = round(time.time() - t0, 1)
    write()


def markdown(res: dict) -> str:
    hw, a = res["hardware"], res["args"]
    L = [f"# GPU check: {hw['name']} ({res['timestamp']})", "", f"Command: `{res['command']}`  ",
         f"torch {hw['torch']}" + (f", CUDA {hw.get('cuda')}, cuDNN {hw.get('cudnn')}, {hw.get('gpu_memory_gb')} GB" if "cuda" in hw else "")
         + f"; total {res.get('seconds', '?')} s" + (" — **dry run (CPU, tiny sizes): the figures mean nothing**" if a["dry_run"] else ""), ""]
    rows = [r for k in ("throughput_eager", "throughput_compiled") for r in (res.get(k) or {}).get("rows", [])]
    if rows:
        L += [f"## Throughput: full dira step, {a['backbone']}, {a['size']}², bf16 autocast + channels-last", "",
              "| batch | compiled | img/s | s/step | GFLOP/img | achieved TFLOP/s | MFU | peak mem GB | warm-up s |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if "images_per_s" not in r: L.append(f"| {r['batch']} | {r['compiled']} | {r.get('skipped') or r.get('error')} | | | | | | |"); continue
            mfu = f"{100 * r['mfu']:.1f} %" if "mfu" in r else "peak unknown"
            L.append(f"| {r['batch']} | {r['compiled']} | {r['images_per_s']} | {r['median_s_per_step']} | {r['gflop_per_image']} | "
                     f"{r['achieved_tflops']} | {mfu} | {r.get('peak_memory_gb', '')} | {r['warmup_s']} |")
        pk = next((r["peak_bf16_tflops"] for r in rows if "peak_bf16_tflops" in r), None)
        L += ["", f"MFU against the dense bf16 peak of {pk} TFLOP/s (target ≥ 40 %)." if pk else
              "No dense bf16 peak known for this device: achieved TFLOP/s only.", ""]
    for k in ("throughput_eager", "throughput_compiled", "parity", "learns"):
        v = res.get(k)
        if isinstance(v, dict) and ("error" in v or "skipped" in v): L += [f"**{k}**: {v.get('error') or v.get('skipped')}", ""]
    p = res.get("parity") or {}
    if "terms" in p:
        L += [f"## bf16 vs fp32 (TF32 off): {p['steps']} steps, batch {p['batch']}, {p['size']}², {p['fixed_batches']} fixed real batches", "",
              "| term | max rel. diff (steps) | max rel. diff (10-step mean) | rel. diff of the last 10 |", "|---|---|---|---|"]
        for t, d in p["terms"].items():
            L.append(f"| {t} | " + (" | ".join(f"{d[x]:.4f}" for x in ("max_rel_raw", "max_rel_smoothed", "rel_last")) if d.get("finite") else "non-finite | | ") + " |")
        L += ["", f"Within tolerance ({p['tolerance']:.0%} on the 10-step mean of the total loss): **{p['within_tolerance']}**", ""]
    l = res.get("learns") or {}
    if "pretrained" in l:
        c = l["config"]
        L += [f"## Does the GPU path learn? dira, {c['backbone']}, {c['size']} px PneumoniaMNIST, {c['epochs_dir']} + {c['epochs_dira']} epochs, "
              f"batch {c['batch']}, bf16", "", f"{l['steps']} steps on {l['n_train']} images in {l['pretrain_seconds']} s ({l['images_per_s']} img/s); "
              f"probe on {l['probe_train']} labelled training images, {l['probe_test']} test images.", "",
              "| encoder | linear-probe AUC | kNN AUC |", "|---|---|---|",
              f"| pretrained | {l['pretrained']['linear_auc']:.3f} | {l['pretrained']['knn_auc']:.3f} |"]
        L += [f"| random init (seed {i}) | {r['linear_auc']:.3f} | {r['knn_auc']:.3f} |" for i, r in enumerate(l["random_init"])]
        L += ["", f"Linear-probe AUC gain over the best random init: {l['linear_auc_gain_over_best_random']:+.3f} (learns: **{l['learns']}**)", ""]
    return "\n".join(L) + "\n"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, seconds: every code path, meaningless figures")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    p.add_argument("--out", default=None, help="results folder (default bench/results/gpu); files are named after the device")
    p.add_argument("--budget-s", type=float, default=420, help="start no section or compiled row past this budget (default 420 s)")
    p.add_argument("--backbone", default="resnet50"); p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--steps", type=int, default=15, help="timed steps per batch size (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, cuDNN autotuning)")
    p.add_argument("--moco-k", type=int, default=4096)
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="dense bf16 peak for the MFU (default: looked up from the GPU's name; H100/H200 989, A100 312)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile throughput rows")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (e.g. max-autotune; default: torch's)")
    p.add_argument("--compile-reserve-s", type=float, default=120, help="start a compiled row only with this much budget left")
    p.add_argument("--parity-steps", type=int, default=100); p.add_argument("--parity-batch", type=int, default=32)
    p.add_argument("--parity-size", type=int, default=224); p.add_argument("--parity-batches", type=int, default=10)
    p.add_argument("--parity-tol", type=float, default=0.05, help="max relative difference of the 10-step mean total loss")
    p.add_argument("--npz", default=str(NPZ), help="PneumoniaMNIST .npz (default: the bundled one)")
    p.add_argument("--pt-backbone", default="resnet18"); p.add_argument("--pt-size", type=int, default=64)
    p.add_argument("--pt-epochs-dir", type=int, default=8); p.add_argument("--pt-epochs-dira", type=int, default=8)
    p.add_argument("--pt-batch", type=int, default=256); p.add_argument("--pt-max-images", type=int, default=None)
    p.add_argument("--probe-train", type=int, default=None, help="cap on labelled probe images (default: all)")
    p.add_argument("--test-images", type=int, default=None, help="cap on test images (default: all)")
    p.add_argument("--workers", type=int, default=None, help="pretraining DataLoader workers (default: min(8, cores - 2))")
    a = p.parse_args(argv)
    if a.dry_run:
        a.device = a.device or "cpu"
        a.backbone, a.size, a.batches, a.steps, a.warmup, a.moco_k = "resnet18", 32, [2, 4], 1, 1, 16
        a.parity_steps, a.parity_batch, a.parity_size, a.parity_batches = 4, 4, 32, 2
        a.pt_size, a.pt_epochs_dir, a.pt_epochs_dira, a.pt_batch, a.pt_max_images = 32, 1, 1, 8, 16
        a.probe_train, a.test_images, a.workers, a.compile_reserve_s = 64, 48, 0, 0
    a.device = a.device or "cuda"
    if a.workers is None: a.workers = max(0, min(8, (os.cpu_count() or 2) - 2))
    return a


def main(argv=None) -> dict:
    a = parse(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here (torch.cuda.is_available() is False); use --dry-run for the CPU smoke test")
    if not Path(a.npz).is_file(): raise SystemExit(f"gpu_check: {a.npz}: PneumoniaMNIST .npz not found")
    if device.type == "cuda": torch.backends.cudnn.benchmark = True               # fixed shapes: autotune the convolutions
    torch.set_float32_matmul_precision("highest")
    clock = Clock(a.budget_s)
    hw = hardware(device)
    out_dir = Path(a.out) if a.out else HERE / "results" / "gpu"
    stem = ("dry_run_" if a.dry_run else "") + slug(hw["name"])
    path = out_dir / f"{stem}.json"
    cmd = "python bench/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    res = dict(command=cmd.strip(), timestamp=time.strftime("%Y-%m-%d %H:%M:%S %Z"), hardware=hw, args=vars(a),
               cudnn_benchmark=torch.backends.cudnn.benchmark)
    def write():
        res["seconds"] = round(clock.used(), 1)
        out_dir.mkdir(parents=True, exist_ok=True)
        from dira_nb.checkpoint import atomic_write_text          # a timeout mid-write keeps the previous complete file
        atomic_write_text(path, json.dumps(res, indent=1, default=str)); atomic_write_text(path.with_suffix(".md"), markdown(res))
    print(f"gpu_check on {hw['name']} ({device}); budget {a.budget_s:.0f} s; results → {path}", flush=True)
    flops = {}
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        def run_throughput(name: str, compiled: bool):
            res[name] = dict(rows=[])                      # filled row by row, written after each
            run_section(res, name, lambda: throughput(a, device, compiled, clock, flops, res[name]["rows"], write), clock, write)
        run_throughput("throughput_eager", False)
        run_section(res, "parity", lambda: parity(a, device), clock, write, need_s=0 if a.dry_run else 30)
        run_section(res, "learns", lambda: learns(a, device, work), clock, write, need_s=0 if a.dry_run else 60)
        if not a.no_compile: run_throughput("throughput_compiled", True)      # last: compilation is the slow, optional part
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write()
    print(f"wrote {path} and {path.with_suffix('.md')} in {clock.used():.0f} s", flush=True)
    return res


if __name__ == "__main__":
    main()
