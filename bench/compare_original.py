#!/usr/bin/env python
"""Side by side: the original DiRA code's training step and dira_nb's, alternated in one run on one machine.

Each round runs both as separate child processes with the same shapes, backbone, batch, threads and precision (fp32):
the original through `bench/original_step.py` inside YOUR checkout of github.com/fhaghighi/DiRA (never copied into
this repository: its licence is non-commercial) with that checkout's own Python, ours through `bench/step_bench.py`.
The order flips every round (A B, B A, ...) so a drift in machine load hits both. It reports the median images/s of
each and their ratio, plus every round's figures, the load average before and after, and the hardware.

    python bench/compare_original.py --original ~/src/DiRA --original-python ~/src/DiRA/.venv/bin/python --size 224
    python bench/compare_original.py --original ~/src/DiRA --original-python ... --size 64 --rounds 4
    python bench/compare_original.py --stub          # CI: a stand-in for the original (plumbing only, no timing claim)

How to obtain the original and its environment (torch 2.13.0 CPU, torchvision 0.28.0, timm 0.4.12,
pretrainedmodels 0.7.4, efficientnet_pytorch 0.7.1, six, scipy): see the README's performance section.
"""
from __future__ import annotations
import argparse, json, os, platform, statistics, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STUB = HERE.parent / "tests" / "fixtures" / "original_stub"


def _last_json(text: str, where: str) -> dict:
    "The last JSON object printed by a child process."
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"): return json.loads(line)
    raise RuntimeError(f"compare_original: {where} printed no result line:\n{text[-2000:]}")


def run_original(python: str, checkout: Path, a) -> dict:
    cmd = [python, str(HERE / "original_step.py"), "--size", str(a.size), "--batch", str(a.batch), "--mode", a.mode,
           "--backbone", a.backbone, "--threads", str(a.threads), "--steps", str(a.steps), "--warmup", str(a.warmup)]
    r = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
    if r.returncode: raise RuntimeError(f"compare_original: the original code failed in {checkout} (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return _last_json(r.stdout, "original_step.py")


def run_ours(a, out: Path) -> dict:
    cmd = [sys.executable, str(HERE / "step_bench.py"), "--variants", a.mode, "--backbones", a.backbone, "--sizes", str(a.size),
           "--modes", "baseline", "--batch", str(a.batch), "--threads", str(a.threads), "--steps", str(a.steps),
           "--warmup", str(a.warmup), "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
    if r.returncode: raise RuntimeError(f"compare_original: dira_nb's step failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return _last_json(r.stdout, "step_bench.py")


def compare(a) -> dict:
    checkout = STUB if a.stub else Path(a.original).expanduser().resolve()
    if not (checkout / "trainer.py").exists() or not (checkout / "DiRA_models.py").exists():
        raise SystemExit(f"compare_original: {checkout} is not a checkout of the original DiRA code (no trainer.py / DiRA_models.py)")
    python = sys.executable if a.stub else a.original_python
    rounds, tmp = [], Path(a.out).with_suffix(".ours.json")
    load0 = os.getloadavg()
    for i in range(a.rounds):
        order = ("original", "ours") if i % 2 == 0 else ("ours", "original")
        got = {}
        for who in order:
            got[who] = run_original(python, checkout, a) if who == "original" else run_ours(a, tmp)
            print(f"round {i + 1}/{a.rounds} {who}: {got[who]['images_per_s']} img/s", flush=True)
        rounds.append(dict(order=list(order), original=got["original"]["images_per_s"], ours=got["ours"]["images_per_s"],
                           original_step_s=got["original"].get("step_s"), ours_step_s=got["ours"].get("step_times_s")))
    tmp.unlink(missing_ok=True); tmp.with_suffix(".md").unlink(missing_ok=True)
    o, s = (round(statistics.median(r[k] for r in rounds), 3) for k in ("original", "ours"))
    from dira_nb.eval.benchmark import hardware_info
    return dict(command=" ".join(["python bench/compare_original.py", *a.argv]), stub=a.stub, mode=a.mode, backbone=a.backbone,
                size=a.size, batch=a.batch, threads=a.threads, precision="fp32", steps=a.steps, warmup=a.warmup,
                original_images_per_s=o, ours_images_per_s=s, ratio=round(s / o, 3) if o else None, rounds=rounds,
                load_avg_before=list(load0), load_avg_after=list(os.getloadavg()), hardware=hardware_info(),
                timestamp=time.strftime("%Y-%m-%d %H:%M:%S %Z"))


def markdown(res: dict) -> str:
    hw = res["hardware"]
    lines = [f"# Original DiRA code vs dira_nb, side by side ({res['timestamp']})", "",
             f"Command: `{res['command']}`  ", f"Hardware: {hw.get('cpu') or platform.machine()}, {res['threads']} threads, "
             f"torch {hw.get('torch')}; load average before {res['load_avg_before']}, after {res['load_avg_after']}"
             + ("  \n**Stub run: a stand-in replaced the original code; these figures mean nothing.**" if res["stub"] else ""), "",
             f"Full `{res['mode']}` step, {res['backbone']}, {res['size']}², batch {res['batch']}, fp32, median of "
             f"{res['steps']} timed steps per run, {len(res['rounds'])} alternating rounds.", "",
             "| | original img/s | dira_nb img/s | ratio |", "|---|---|---|---|",
             f"| median | {res['original_images_per_s']} | {res['ours_images_per_s']} | **{res['ratio']}×** |"]
    lines += [f"| round {i + 1} ({' then '.join(r['order'])}) | {r['original']} | {r['ours']} | "
              f"{round(r['ours'] / r['original'], 2) if r['original'] else '–'}× |" for i, r in enumerate(res["rounds"])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--original", help="a checkout of github.com/fhaghighi/DiRA")
    p.add_argument("--original-python", help="the Python of the original code's environment")
    p.add_argument("--stub", action="store_true", help="CI plumbing check against tests/fixtures/original_stub (tiny sizes)")
    p.add_argument("--mode", default="dira", choices=["dira", "dir"])
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (each runs both codes once)")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/compare_original_<mode>_<size>.json)")
    a = p.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    if a.stub: a.backbone, a.size, a.batch, a.steps, a.warmup, a.rounds = "resnet18", 32, 2, 1, 1, 2
    elif not (a.original and a.original_python): p.error("--original and --original-python are needed (or --stub)")
    a.out = a.out or str(HERE / "results" / f"compare_original_{a.mode}_{a.size}{'_stub' if a.stub else ''}.json")
    res = compare(a)
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1)); out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res)); print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
