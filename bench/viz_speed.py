"""Speed of the diagnostics' heavy parts: a warm UMAP of 10,000 × 512 features and Grad-CAM on 64 images at 224 px.

Targets (issue 3): warm UMAP ≤ 10 s on 2 cores; Grad-CAM of 64 images at 224² ≤ 3 s on CPU (ResNet-18 and ResNet-50).
"Warm" means numba has already compiled UMAP's code in this process (a small fit runs first and is not timed).
Each measurement is the median of `--repeats` runs after one untimed warm-up run; wall and process-CPU seconds are
both recorded (on a shared, loaded machine CPU seconds / threads is the better estimate of quiet wall time).

    python bench/viz_speed.py                      # full run (a few minutes on 2 cores)
    python bench/viz_speed.py --tiny               # smoke run, seconds
    python bench/viz_speed.py --threads 2 --repeats 5 --out bench/results/viz_speed
"""
from __future__ import annotations
import argparse, json, os, platform, statistics, sys, time
from pathlib import Path


def cpu_model() -> str:
    "The CPU's model name (as the quality benchmark records it)."
    from dira_nb.eval.benchmark import hardware_info
    return hardware_info()["cpu"] or platform.machine()


def timed(fn, repeats: int) -> dict:
    "Median wall and process-CPU seconds of `fn()` over `repeats` runs, after one untimed warm-up run."
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
    return dict(median_wall_s=round(statistics.median(wall), 3), median_cpu_s=round(statistics.median(cpu), 3),
                wall_s=[round(w, 3) for w in wall], cpu_s=[round(c, 3) for c in cpu])


def bench_umap(n: int, d: int, repeats: int, random_state) -> dict:
    import numpy as np
    from dira_nb.viz.embedding import reduce_embeddings
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, (10, d))
    feats = (centers[rng.integers(0, 10, n)] + rng.normal(0, 1, (n, d))).astype(np.float32)
    t = time.perf_counter()
    reduce_embeddings(feats[:300], "umap", random_state=random_state)        # numba compilation (cold start)
    cold = time.perf_counter() - t
    r = timed(lambda: reduce_embeddings(feats, "umap", random_state=random_state), repeats)
    r.update(n=n, d=d, random_state=random_state, cold_start_small_fit_s=round(cold, 2),
             pca_s=timed(lambda: reduce_embeddings(feats, "pca"), repeats)["median_wall_s"])
    return r


def bench_gradcam(backbone: str, n: int, size: int, repeats: int) -> dict:
    import torch
    from dira_nb.models.encoders import create_encoder
    from dira_nb.viz.attribution import attribute
    torch.manual_seed(0)
    model = create_encoder(backbone, 1).to_torchvision(num_classes=2, in_chans=1)
    x = torch.rand(n, 1, size, size)
    r = timed(lambda: attribute(model, x, "gradcam", target=1), repeats)
    with torch.no_grad():
        fwd = timed(lambda: model.eval()(x), repeats)
    r.update(backbone=backbone, n=n, size=size, forward_only_wall_s=fwd["median_wall_s"])
    return r


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--umap-n", type=int, default=10_000)
    p.add_argument("--umap-d", type=int, default=512)
    p.add_argument("--gradcam-n", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch and numba threads")
    p.add_argument("--umap-seed", default="0", help="UMAP random_state ('none' = unseeded, parallel)")
    p.add_argument("--tiny", action="store_true", help="smoke run: 1,000 × 64 UMAP, 4 images at 64 px, resnet18")
    p.add_argument("--out", default="bench/results/viz_speed", help="output path without extension (.json and .md)")
    a = p.parse_args(argv)
    if a.tiny: a.umap_n, a.umap_d, a.gradcam_n, a.size, a.backbones, a.repeats = 1000, 64, 4, 64, ["resnet18"], 1
    os.environ.setdefault("NUMBA_NUM_THREADS", str(a.threads))
    import torch
    torch.set_num_threads(a.threads)
    seed = None if a.umap_seed.lower() == "none" else int(a.umap_seed)
    hw = dict(platform=platform.platform(), python=platform.python_version(), torch=torch.__version__,
              cpu=cpu_model(), cpu_count=os.cpu_count(), threads=a.threads, load_avg_start=list(os.getloadavg()))
    import umap, captum
    hw.update(umap=umap.__version__ if hasattr(umap, "__version__") else "?", captum=captum.__version__)
    res = dict(command="python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]), hardware=hw,
               targets=dict(umap_warm_s=10.0, gradcam_64_224_s=3.0))
    res["umap"] = bench_umap(a.umap_n, a.umap_d, a.repeats, seed)
    print(f"UMAP {a.umap_n}×{a.umap_d}: {res['umap']['median_wall_s']} s wall, {res['umap']['median_cpu_s']} s CPU", flush=True)
    res["gradcam"] = []
    for b in a.backbones:
        r = bench_gradcam(b, a.gradcam_n, a.size, a.repeats)
        res["gradcam"].append(r)
        print(f"Grad-CAM {b} {a.gradcam_n}×{a.size}²: {r['median_wall_s']} s wall, {r['median_cpu_s']} s CPU", flush=True)
    hw["load_avg_end"] = list(os.getloadavg())
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    u = res["umap"]
    lines = [f"# Diagnostics speed ({time.strftime('%Y-%m-%d %H:%M')})", "", f"Command: `{res['command']}`", "",
             f"Hardware: {hw['cpu']} ({hw['cpu_count']} CPUs), {hw['threads']} threads, torch {hw['torch']}, "
             f"captum {hw['captum']}, umap-learn {hw['umap']}, {hw['platform']}; load average "
             f"{hw['load_avg_start'][0]:.1f} at start, {hw['load_avg_end'][0]:.1f} at end.", "",
             "| what | median wall s | median CPU s | target |", "|---|---|---|---|",
             f"| warm UMAP {u['n']}×{u['d']} (PCA→50, random_state={u['random_state']}) | {u['median_wall_s']} | "
             f"{u['median_cpu_s']} | ≤ 10 s |"]
    for r in res["gradcam"]:
        lines.append(f"| Grad-CAM {r['backbone']}, {r['n']} images at {r['size']}² (forward alone {r['forward_only_wall_s']} s) "
                     f"| {r['median_wall_s']} | {r['median_cpu_s']} | ≤ 3 s |")
    lines += ["", f"UMAP cold start (numba compile, small fit): {u['cold_start_small_fit_s']} s; PCA of the same "
                  f"features: {u['pca_s']} s. Median of {a.repeats} runs after one warm-up run."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
