"""The `dira-nb` console command end to end on data_samples, and `import dira_nb` from a plain script."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(args, cwd, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _cli():
    exe = BIN / "dira-nb"
    assert exe.exists(), f"console script {exe} is missing: is the package installed (pip install -e .)?"
    return str(exe)


def test_help_is_readable():
    r = _run([_cli(), "--help"], REPO)
    assert r.returncode == 0, r.stderr
    for word in ["pretrain", "export-backbone", "info", "make-samples", "list"]:
        assert word in r.stdout
    r = _run([_cli(), "pretrain", "--help"], REPO)
    assert r.returncode == 0 and "--epochs-dira" in r.stdout and "--method" in r.stdout and "Example" in r.stdout


def test_pretrain_export_info_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = _run([_cli(), "pretrain", "--data", str(REPO / "data_samples"), "--out", str(out), "--image-size", "32",
              "--epochs-dir", "1", "--epochs-dira", "1", "--batch-size", "8", "--max-images", "32", "--quiet"], REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    for f in ["config.yaml", "final.pt", "backbone.safetensors", "resume.pt", "summary.json", "dir/last.pt", "dira/last.pt",
              "dir/history.csv", "dira/history.csv"]:
        assert (out / f).exists(), f"{f} missing; stdout: {r.stdout}"
    assert list((out / "dira").glob("recon_epoch_*.png")), "no reconstruction pictures"
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["dir", "dira"]
    hist = (out / "dira" / "history.csv").read_text().splitlines()
    assert "train_loss_adv" in hist[0] and len(hist) == 2

    r = _run([_cli(), "export-backbone", str(out / "final.pt"), str(tmp_path / "bb3.pt"), "--in-chans", "3"], REPO)
    assert r.returncode == 0, r.stderr
    bb = torch.load(tmp_path / "bb3.pt", weights_only=True)
    assert bb["state_dict"]["conv1.weight"].shape[1] == 3 and not any(k.startswith("fc.") for k in bb["state_dict"])

    r = _run([_cli(), "info", str(out / "final.pt")], REPO)
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    assert meta["stage"] == "dira" and meta["backbone"] == "resnet18" and meta["in_chans"] == 1

    # a config.yaml re-runs, and a flag overrides it
    r = _run([_cli(), "pretrain", "--config", str(out / "config.yaml"), "--out", str(tmp_path / "rerun"),
              "--method", "r", "--epochs", "1", "--quiet"], REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "rerun" / "r" / "last.pt").exists()


def test_clear_errors(tmp_path):
    r = _run([_cli(), "pretrain", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"), "--quiet"], REPO)
    assert r.returncode != 0 and "nowhere" in r.stderr
    r = _run([_cli(), "info", str(tmp_path / "none.pt")], REPO)
    assert r.returncode != 0 and "none.pt" in r.stderr


def test_make_samples(tmp_path):
    r = _run([_cli(), "make-samples", str(tmp_path / "s"), "--n", "6", "--size", "64"], REPO)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == 6


def test_import_from_a_plain_script(tmp_path):
    script = tmp_path / "use_dira.py"
    script.write_text(
        "import torch, dira_nb\n"
        "from dira_nb.methods.core import create_method\n"
        "import dira_nb.methods.dira\n"
        "m = create_method('dira', moco_k=8)\n"
        "x = torch.rand(2, 1, 32, 32)\n"
        "print(dira_nb.__version__, tuple(m.reconstruct(x).shape), tuple(m.embed(x).shape))\n")
    r = _run([sys.executable, str(script)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "(2, 1, 32, 32) (2, 512)" in r.stdout
    assert "ipywidgets" not in r.stderr


@pytest.mark.parametrize("method,backbone,stem", [("ld", "vgg_ld", "stages.0.0.weight"), ("ace", "vit_nano", "patch_embed.weight")])
def test_export_info_evaluate_ld_and_ace_runs(tmp_path, method, backbone, stem):
    "export-backbone (1 → 3 channels), info and evaluate work on LD's VGG and ACE's ViT checkpoints."
    from dira_nb.methods.core import create_method
    run = tmp_path / "run"; run.mkdir()
    create_method(method, backbone=backbone, image_size=32).save_checkpoint(run / "final.pt")
    r = _run([_cli(), "export-backbone", str(run / "final.pt"), str(tmp_path / "bb3.pt"), "--in-chans", "3"], REPO)
    assert r.returncode == 0, r.stderr
    bb = torch.load(tmp_path / "bb3.pt", weights_only=True)
    assert bb["meta"]["backbone"] == backbone and bb["meta"]["in_chans"] == 3 and bb["state_dict"][stem].shape[1] == 3
    r = _run([_cli(), "info", str(run / "final.pt")], REPO)
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    assert meta["method"] == method and meta["backbone"] == backbone
    r = _run([_cli(), "evaluate", str(run), "--tiny", "--datasets", "samples", "--image-size", "32", "--seeds", "0",
              "--threads", "1"], REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout[r.stdout.index("{"):])
    m = res["samples"][0]["metrics"]
    assert {"linear", "knn", "ft_0.1", "ft_1"} <= set(m) and all(0 <= v["auc"] <= 1 for v in m.values())
