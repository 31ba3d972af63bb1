"""Does MoCo's falling InfoNCE mean instance discrimination, or a shortcut? (issue 12)

Pretrains `di` on the bundled PneumoniaMNIST X-rays (28 -> 32 px, batch 32, one epoch by default) with different
negatives, then scores held-out-of-the-loss training batches three ways with the trained query and key branches:
  - against the run's own MoCo queue (what the training loss sees),
  - against the same number of FRESH negatives: keys of other images made now by the current key encoder,
  - against the batch's other keys (in-batch, chance ln 32).
If the loss fell only because the positive is the one fresh key among stale queued ones, the fresh-negative InfoNCE
sits at its chance level ln(K+1). A random network is scored the same way. Results (resumable, one row per variant)
go to bench/results/moco_shortcut.json/.md.

    python bench/moco_shortcut.py                       # all variants, ~3 CPU-minutes each on 2 cores
    python bench/moco_shortcut.py --variants random inbatch --epochs 2
"""
from __future__ import annotations
import argparse, copy, json, math, platform, shutil, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data_samples" / "pneumoniamnist28" / "pneumoniamnist28.npz"
VARIANTS = {"random": None, "queue_half": "N/2", "queue_128": 128, "inbatch": 0}


def diagnose(method, train, n_batches: int = 10, batch: int = 32, seed: int = 5) -> dict:
    "InfoNCE and top-1 of training-image batches against the queue, fresh negatives and in-batch negatives."
    from dira_nb.losses import info_nce_loss
    K = method.queue.size if method.queue is not None else 2353
    views = method.views(32)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    def pair(idx):
        s = [views(train[i][0]) for i in idx]
        return torch.stack([x["x1"] for x in s]), torch.stack([x["x2"] for x in s])
    state = copy.deepcopy(method.state_dict()); method.train()
    T, rows = method.config.temperature, []
    with torch.no_grad():
        fresh = torch.cat([method._keys(pair(order[j:j + batch])[1]) for j in range(0, K, batch)])[:K]
        for b in range(n_batches):
            idx = order[K + batch * b: K + batch * (b + 1)]
            x1, x2 = pair(idx)
            q = F.normalize(method.head(method.encoder.pool(method.encoder(x1))), dim=1); k = method._keys(x2)
            r = {}
            if method.queue is not None:
                l, lg = info_nce_loss(q, k, method.queue.queue, T); r.update(queue_loss=l.item(), queue_top1=(lg.argmax(1) == 0).float().mean().item())
            l, lg = info_nce_loss(q, k, fresh, T); r.update(fresh_loss=l.item(), fresh_top1=(lg.argmax(1) == 0).float().mean().item())
            l, lg = info_nce_loss(q, k, None, T); r.update(inbatch_loss=l.item(), inbatch_top1=(lg.argmax(1) == 0).float().mean().item())
            rows.append(r)
    method.load_state_dict(state)
    out = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    out.update(fresh_chance=math.log(K + 1), n_fresh=K, inbatch_chance=math.log(batch))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "moco_shortcut")
    ap.add_argument("--redo", action="store_true", help="run variants already in the results again")
    a = ap.parse_args(argv)
    from dira_nb.tvcompat import torchvision  # noqa: F401  (CPU torch shim first)
    from dira_nb.core import limit_threads, seed_everything
    from dira_nb.methods.core import create_method
    from dira_nb.pretrain import PretrainConfig, pretrain, open_pretraining_data
    limit_threads(2)
    res_path = a.out.with_suffix(".json")
    results = json.loads(res_path.read_text()) if res_path.exists() and not a.redo else {}
    results.setdefault("meta", dict(command="python bench/moco_shortcut.py " + " ".join(argv or sys.argv[1:]),
                                    hardware=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                                    torch=torch.__version__, epochs=a.epochs, seed=a.seed, data=str(DATA.relative_to(REPO))))
    train, _ = open_pretraining_data(str(DATA), 32, 0.1, a.seed, None, min_size=32)
    for v in a.variants:
        key = f"{v}_e{a.epochs}_s{a.seed}"
        if key in results: print(f"{key}: done already"); continue
        t0 = time.time()
        if v == "random":
            seed_everything(a.seed); m = create_method("di", image_size=32, moco_k=len(train) // 2, crop_scale=(0.6, 1.0))
            row = dict(variant=v, K="–", steps=0)
        else:
            tmp = Path(tempfile.mkdtemp(prefix="moco_shortcut_"))
            K = len(train) // 2 if VARIANTS[v] == "N/2" else VARIANTS[v]
            r = pretrain(PretrainConfig(data=str(DATA), out=str(tmp / "run"), method="di", image_size=32, load_size=32,
                                        epochs=a.epochs, batch_size=32, seed=a.seed, moco_k=K, snapshots=0), quiet=True)
            m, s = r["method"], r["summary"]
            h = r["histories"]["di"][-1]
            row = dict(variant=v, K=K, steps=int(h["train_iter"]), train_loss_dis=h["train_loss_dis"], chance=s["chance_loss_dis"],
                       probe_retrieval=s["features"]["final"]["retrieval_top1"], probe_knn=s["features"]["final"]["knn_acc"],
                       probe_retrieval_start=s["features"]["start"]["retrieval_top1"], probe_knn_start=s["features"]["start"]["knn_acc"])
            shutil.rmtree(tmp, ignore_errors=True)
        row.update(diagnose(m, train), seconds=round(time.time() - t0, 1))
        if v == "random": row.pop("queue_loss", None); row.pop("queue_top1", None)   # its queue is random vectors, not keys
        results[key] = row
        res_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_json = res_path.with_suffix(".json.tmp"); tmp_json.write_text(json.dumps(results, indent=1)); tmp_json.replace(res_path)
        print(json.dumps(row), flush=True)
    f = lambda r, k, d=3: f"{r[k]:.{d}f}" if isinstance(r.get(k), float) else "–"
    lines = [f"# Is the InfoNCE drop instance discrimination? (`{results['meta']['command']}`)", "",
             f"{results['meta']['hardware']}, torch {results['meta']['torch']}; di on {results['meta']['data']} (28 → 32 px), batch 32. "
             "Fresh negatives: keys of other images made by the *current* key encoder.", "",
             "| variant | K | steps | train InfoNCE (chance) | vs its queue | vs fresh negatives (chance) | fresh top-1 | in-batch InfoNCE (ln 32 = 3.466) | in-batch top-1 | probe retrieval | probe kNN |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        if key == "meta": continue
        if r["variant"] == "random":                     # its queue is random vectors; its probe is every run's step 0
            start = next((t for t in results.values() if isinstance(t, dict) and "probe_knn_start" in t), {})
            r = {**{k: v for k, v in r.items() if not k.startswith("queue_")},
                 "probe_retrieval": start.get("probe_retrieval_start"), "probe_knn": start.get("probe_knn_start")}
        train_cell = f"{f(r, 'train_loss_dis', 2)} ({f(r, 'chance', 2)})" if "train_loss_dis" in r else "–"
        lines.append(f"| {key} | {r['K']} | {r['steps']} | {train_cell} | {f(r, 'queue_loss')} | {f(r, 'fresh_loss')} ({f(r, 'fresh_chance')}) | "
                     f"{f(r, 'fresh_top1')} | {f(r, 'inbatch_loss')} | {f(r, 'inbatch_top1')} | {f(r, 'probe_retrieval')} | {f(r, 'probe_knn')} |")
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
