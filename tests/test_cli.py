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
    for f in ["config.yaml", "final.pt", "backbone.safetensors", "summary.json", "dir/history.csv", "dira/history.csv"]:
        assert (out / f).exists(), f"{f} missing; stdout: {r.stdout}"
    for f in ["resume.pt", "dir/last.pt", "dira/last.pt", "dira/best.pt"]:   # issue 17: a finished run holds its weights once
        assert not (out / f).exists(), f"{f} kept"
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert size <= 1.3 * (out / "final.pt").stat().st_size + (out / "backbone.safetensors").stat().st_size, size
    assert size < 150e6 and f"run folder size: {size / 1e6:.0f} MB" in r.stdout, (size, r.stdout)    # ResNet-18: about 110 MB
    assert list((out / "dira").glob("recon_epoch_*.png")), "no reconstruction pictures"
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["dir", "dira"] and summary["folder_bytes"] == size
    r = _run([_cli(), "pretrain", "--resume", str(out), "--quiet"], REPO)         # finished: said plainly, nothing done
    assert r.returncode == 0 and "holds a finished run" in r.stderr and "nothing to resume" in r.stderr, r.stdout + r.stderr
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) == size
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
              "--method", "r", "--epochs", "1", "--keep-stage-checkpoints", "--quiet"], REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "rerun" / "r" / "last.pt").exists() and (tmp_path / "rerun" / "r" / "best.pt").exists()


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


# ---- issue 16: commands never write over their inputs, and say plainly what is wrong --------------------------------
@pytest.fixture
def tiny_ckpt(tmp_path):
    sys.path.insert(0, str(REPO / "tests"))
    from test_resume import CFG                       # registers the tiny test encoder
    from dira_nb.methods.core import create_method
    m = create_method("dira", backbone="tiny_test", image_size=32, moco_k=16, **CFG["options"])
    return m.save_checkpoint(tmp_path / "final.pt")


def _main(args, capsys):
    from dira_nb.cli import main
    try: rc = main([str(a) for a in args])
    except SystemExit as e:                           # settings errors exit with their message, as a console script does
        rc = e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, int): print(e.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return rc, out, err


def test_export_and_info_guard_their_inputs(tiny_ckpt, tmp_path, capsys):
    before = tiny_ckpt.read_bytes()
    rc, _, err = _main(["export-backbone", tiny_ckpt, tiny_ckpt], capsys)
    assert rc == 2 and "refusing to write the backbone over its own input" in err and tiny_ckpt.read_bytes() == before
    rc, _, err = _main(["export-backbone", tiny_ckpt, tmp_path], capsys)
    assert rc == 2 and "is a folder; give the file to write" in err and "IsADirectoryError" not in err
    for bad in ("0", "-1"):
        rc, _, err = _main(["export-backbone", tiny_ckpt, tmp_path / "bb.safetensors", "--in-chans", bad], capsys)
        assert rc == 2 and f"invalid in_chans={bad}" in err and not (tmp_path / "bb.safetensors").exists()
    rc, _, err = _main(["export-backbone", tiny_ckpt, tmp_path / "bb.safetensors"], capsys)
    assert rc == 0, err
    rc, out, err = _main(["info", tmp_path / "bb.safetensors"], capsys)            # its own backbone file is recognised
    assert rc == 0, err
    meta = json.loads(out)
    assert meta["kind"] == "backbone" and meta["backbone"] == "tiny_test" and meta["method"] == "dira"
    rc, _, err = _main(["export-backbone", tiny_ckpt, tmp_path / "bb16.safetensors", "--dtype", "bf16"], capsys)
    assert rc == 0, err                                                            # half-size export for sharing
    from safetensors import safe_open
    with safe_open(str(tmp_path / "bb16.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.bfloat16}
    rc, out, err = _main(["info", tmp_path / "bb16.safetensors"], capsys)
    assert rc == 0 and json.loads(out)["weights_dtype"] == "bf16", out + err
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    rc, _, err = _main(["info", tmp_path / "foreign.safetensors"], capsys)
    assert rc == 2 and "no dira_nb metadata" in err


def test_make_samples_refuses_a_non_empty_folder(tmp_path, capsys):
    d = tmp_path / "mine"; d.mkdir()
    (d / "labels.csv").write_text("image,label\nmy_scan.png,1\n")
    rc, _, err = _main(["make-samples", d, "--n", "4", "--size", "32"], capsys)
    assert rc == 2 and "folder is not empty" in err and "--force" in err
    assert (d / "labels.csv").read_text() == "image,label\nmy_scan.png,1\n" and not (d / "images").exists()
    rc, _, err = _main(["make-samples", tmp_path / "new", "--n", "4", "--size", "32"], capsys)
    assert rc == 0, err
    assert len(list((tmp_path / "new" / "images").glob("*.png"))) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]     # written beside, renamed into place
    rc, _, err = _main(["make-samples", d, "--n", "4", "--size", "32", "--force"], capsys)
    assert rc == 0, err
    assert "my_scan.png" not in (d / "labels.csv").read_text()


def test_pretrain_refuses_out_inside_data_and_empty_out(tmp_path, capsys):
    data = tmp_path / "xrays"; data.mkdir()
    rc, _, err = _main(["pretrain", "--data", data, "--out", data / "run", "--quiet"], capsys)
    assert rc != 0 and "is inside the data folder" in err, err
    rc, _, err = _main(["pretrain", "--data", data, "--out", "", "--quiet"], capsys)
    assert rc != 0 and "must name a run folder" in err, err


# ---- issue 15: evaluate any encoder on your own data -----------------------------------------------------------------
def _own_folder(root, n=30):
    "A folder of the user's kind: n sample phantoms, labels.csv with a test split, masks/lung, masks/lesion, boxes.csv."
    import csv, shutil
    src = REPO / "data_samples"
    for sub in ("img", "masks/lung", "masks/lesion"): (root / sub).mkdir(parents=True)
    with open(src / "labels.csv", newline="") as f: rows = list(csv.DictReader(f))[:n]
    lines, names = ["image,label,split"], set()
    for i, r in enumerate(rows):
        name = Path(r["image"]).name; names.add(r["image"])
        shutil.copy(src / r["image"], root / "img" / name)
        for k in ("lung", "lesion"): shutil.copy(src / "masks" / k / name, root / "masks" / k / name)
        lines.append(f"img/{name},{r['label']},{'test' if i % 3 == 0 else 'train'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    with open(src / "boxes.csv", newline="") as f: boxes = [b for b in csv.DictReader(f) if b["image"] in names]
    (root / "boxes.csv").write_text("image,x0,y0,x1,y1\n" + "".join(
        f"img/{Path(b['image']).name},{b['x0']},{b['y0']},{b['x1']},{b['y1']}\n" for b in boxes))
    return root


def test_evaluate_own_data_folder(tmp_path):
    "`evaluate RUN --data DIR` on a user's folder: every task, eval.json and eval.html, baselines beside localization."
    d = _own_folder(tmp_path / "xrays")
    out = tmp_path / "ev"
    r = _run([_cli(), "evaluate", "random", "--data", str(d), "--tiny", "--image-size", "16", "--threads", "1",
              "--out", str(out)], REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "wrote" in r.stdout and "centre prior" in r.stdout and "segmentation lung: Dice" in r.stdout
    res = json.loads((out / "eval.json").read_text())
    assert set(res["tasks"]) == {"classification", "segmentation", "localization"}
    assert res["split"]["test"] == 10 and res["split"]["source"] == "column"
    assert set(res["tasks"]["localization"]) == {"lesion masks", "boxes"}
    assert "centre prior" in (out / "eval.html").read_text()
    r = _run([_cli(), "evaluate", "random", "--boxes", "b.csv"], REPO)               # --boxes without --data: a clear error
    assert r.returncode != 0 and "need(s) --data" in r.stderr


def test_evaluate_image_size_defaults_to_the_runs(tmp_path):
    from dira_nb.methods.core import create_method
    run = tmp_path / "run"; run.mkdir()
    create_method("dir", image_size=24, moco_k=16).save_checkpoint(run / "final.pt")
    r = _run([_cli(), "evaluate", str(run), "--tiny", "--datasets", "samples", "--seeds", "0", "--no-localization",
              "--segmentation-steps", "0", "--threads", "1"], REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "24 px, the run's training size" in r.stderr


def test_readme_main_job_runs_as_written(tmp_path):
    "The README's first command, word for word (a few images and a temporary run folder appended): its data ships in the repo."
    import shlex
    line = next(l for l in (REPO / "README.md").read_text().splitlines() if "dira-nb pretrain" in l and "setup.sh" in l)
    words = shlex.split(line.split("&&", 1)[1].split("#", 1)[0])
    assert words[0] == ".venv/bin/dira-nb" and words[1] == "pretrain", words
    data = Path(words[words.index("--data") + 1])
    assert (REPO / data).exists(), f"the README's main job reads {data}, which is not in the repository"
    out = tmp_path / "demo"
    r = _run([_cli(), *words[1:], "--max-images", "64", "--probe", "16", "--snapshots", "0", "--out", str(out), "--quiet"], REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and [s["stage"] for s in summary["stages"]] == ["dir", "dira"]
    assert (out / "report" / "index.html").exists() and (out / "dira" / "steps.csv").exists()


def test_generic_stage_names_with_dira_aliases(tmp_path):
    "`--epochs-warmup/--epochs-main/--batch-size-main` for every method; DiRA's `--epochs-dir/--epochs-dira/--batch-size-dira` set the same."
    from dira_nb.cli import build_parser, _read_config
    from dira_nb.pretrain import PretrainConfig, generic_stage_names
    a = build_parser().parse_args(["pretrain", "--epochs-dir", "2", "--epochs-main", "1", "--batch-size-dira", "16"])
    assert (a.epochs_warmup, a.epochs_main, a.batch_size_main) == (2, 1, 16)
    old = tmp_path / "config.yaml"                                     # a run folder written before the generic names
    old.write_text("method: ld\nepochs_dir: 4\nepochs_dira: 3\nbatch_size_dira: 8\n")
    cfg = PretrainConfig.from_dict(generic_stage_names(_read_config(old)))
    assert [(s[0], s[2], s[3]) for s in cfg.stages()] == [("ld_pd", 4, 32), ("ld", 3, 8)]
    with pytest.raises(ValueError, match="same setting"): PretrainConfig.from_dict({"epochs_dir": 1, "epochs_warmup": 2})
