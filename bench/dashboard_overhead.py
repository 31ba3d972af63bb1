"""Wall-time overhead of the live dashboard: the same short DiRA training run with `DashboardCallback` at its default
refresh (every 10 s, expensive panels every 3rd refresh, 5 % budget) and without it. Headless: the callback computes
every figure and updates the widget objects exactly as in a notebook, only no browser draws them.

    python bench/dashboard_overhead.py --size 64 --batch 32 --epochs 3 --threads 2 --reducer umap

Writes JSON and markdown (hardware, versions, command, times) to --out (default bench/results/). The first UMAP fit in
a process compiles numba code (~20 s); it is done once before timing and reported separately as `umap_warmup_s`.
"""
import argparse, json, os, platform, sys, time
from pathlib import Path
import numpy as np
import torch
from dira_nb.core import seed_everything
from dira_nb.data.phantom import load_samples
from dira_nb.data.loaders import make_dataloaders
from dira_nb.learner import Learner
from dira_nb.methods.core import create_method
from dira_nb.callback.schedule import CosineLR


def cpu_model() -> str:
    "The CPU's model name (as the quality benchmark records it)."
    from dira_nb.eval.benchmark import hardware_info
    return hardware_info()["cpu"] or platform.machine()


def one_run(a, with_dashboard: bool) -> dict:
    "Train once from the same seed; returns wall time and, with the dashboard, its own accounting."
    seed_everything(a.seed)
    method = create_method("dira", backbone=a.backbone, image_size=a.size, moco_k=a.moco_k)
    train = load_samples(split="train")
    if a.n_train: train = torch.utils.data.Subset(train, range(min(a.n_train, len(train))))
    train_dl, _ = make_dataloaders(train, method.views(a.size), batch_size=a.batch, valid_pct=0, seed=a.seed)
    cbs, dash, cb = [CosineLR()], None, None
    if with_dashboard:
        from dira_nb.viz.dashboard import Dashboard, DashboardCallback
        dash = Dashboard(method, load_samples(split="valid"), n_probe=a.n_probe, reducer=a.reducer)
        cb = DashboardCallback(dash)                                  # the defaults are what we measure
        cbs.append(cb)
    learn = Learner(method, train_dl, None, cbs=cbs, device="cpu", quiet=True)
    t0 = time.perf_counter()
    learn.fit(a.epochs)
    wall = time.perf_counter() - t0
    out = dict(wall_s=round(wall, 3), steps=learn.train_iter, final_loss=round(learn.history[-1]["train_loss"], 4))
    if dash is not None:
        out.update(dashboard_s=round(dash.seconds, 3), refreshes=dash.n_updates, skipped=cb.skipped,
                   every_seconds=dash.every_seconds.value, every_steps=dash.every_steps.value,
                   slow_every=dash.slow_every.value, max_overhead=cb.max_overhead,
                   panel_updates={k: p.count for k, p in dash.panels.items()},
                   panel_seconds_last={k: round(p.seconds, 3) for k, p in dash.panels.items()})
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--n-train", type=int, default=0, help="cap on training images (0: all 160)")
    p.add_argument("--n-probe", type=int, default=64)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--moco-k", type=int, default=1024)
    p.add_argument("--reducer", default="umap", choices=("umap", "pca"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="pairs of runs (without, with), alternating")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/results")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    umap_warm = None
    if a.reducer == "umap":
        from dira_nb.viz.embedding import reduce_embeddings
        t0 = time.perf_counter(); reduce_embeddings(np.random.default_rng(0).normal(size=(a.n_probe, 64)), how="umap")
        umap_warm = round(time.perf_counter() - t0, 2)
    runs = []
    for r in range(a.repeats):
        for with_dash in (False, True):
            res = one_run(a, with_dash); res.update(repeat=r, dashboard=with_dash); runs.append(res)
            print(json.dumps(res), flush=True)
    base = float(np.median([r["wall_s"] for r in runs if not r["dashboard"]]))
    dashed = float(np.median([r["wall_s"] for r in runs if r["dashboard"]]))
    report = dict(
        benchmark="dashboard_overhead", command="python " + " ".join(sys.argv),
        overhead_pct=round(100 * (dashed - base) / base, 2), target_pct=5.0,
        wall_without_s=base, wall_with_s=dashed, umap_warmup_s=umap_warm, runs=runs,
        settings=vars(a), load_average=[round(x, 2) for x in os.getloadavg()],
        hardware=dict(platform=platform.platform(), cpu=cpu_model(), cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads()),
        versions=dict(python=platform.python_version(), torch=torch.__version__),
    )
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    (out / "dashboard_overhead.json").write_text(json.dumps(report, indent=2))
    dash_runs = [r for r in runs if r["dashboard"]]
    md = [f"# Dashboard overhead", "", f"Command: `{report['command']}`", "",
          f"Hardware: {report['hardware']['cpu']} ({report['hardware']['cpu_count']} CPUs, {a.threads} torch threads), "
          f"{report['hardware']['platform']}, torch {torch.__version__}; load average at the end {report['load_average']}.", "",
          "| run | wall time (s) | steps | dashboard time (s) | refreshes | skipped by budget |", "|---|---|---|---|---|---|"]
    for r in runs:
        md.append(f"| {'with' if r['dashboard'] else 'without'} dashboard (repeat {r['repeat']}) | {r['wall_s']:.2f} | {r['steps']} | "
                  f"{r.get('dashboard_s', '–')} | {r.get('refreshes', '–')} | {r.get('skipped', '–')} |")
    md += ["", f"**Overhead: {report['overhead_pct']:+.1f} %** (median with vs without; target ≤ 5 %). "
           f"Default refresh: every {dash_runs[0]['every_seconds']:g} s, expensive panels every {dash_runs[0]['slow_every']}-th "
           f"refresh, budget {dash_runs[0]['max_overhead']:.0%}; reducer {a.reducer}"
           + (f" (numba warm-up before timing: {umap_warm} s, once per process)." if umap_warm is not None else ".")]
    (out / "dashboard_overhead.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
