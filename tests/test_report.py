"""The static run report: one self-contained HTML page plus PNG files from a real (tiny) pretraining run."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dira_nb.pretrain import PretrainConfig, pretrain
from dira_nb.report import load_run, probe_set, write_report


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    pretrain(PretrainConfig(out=str(out), image_size=32, epochs_dir=1, epochs_dira=1, batch_size=8, max_images=16,
                            snapshots=4), quiet=True)
    return out


def test_report_is_self_contained(run_dir):
    import plotly.offline
    path = write_report(run_dir, n_probe=16, how="pca")     # UMAP itself is tested in test_viz_embedding
    assert path == run_dir / "report" / "index.html"
    doc = path.read_text()
    head, body = doc.split("</head>", 1)
    assert doc.count(plotly.offline.get_plotlyjs()[:300]) == 1            # plotly.js inlined once
    assert "<script src" not in doc and "https://cdn" not in body
    assert 'class="err"' not in body, [p for p in body.split("<p") if 'class="err"' in p]
    for section in ("Run summary", "Loss curves per stage", "Reconstructions", "Realism", "Embedding", "Attributions"):
        assert f">{section}" in body, section
    assert body.count("Plotly.newPlot") >= 4 and body.count(";base64,") >= 16 + 6     # thumbnails + PNG panels
    assert "kaleido" in body
    names = sorted(p.name for p in path.parent.glob("*.png"))
    assert names == ["attributions.png", "embedding.png", "loss_dir.png", "loss_dira.png", "realism_maps.png",
                     "reconstructions.png", "worst_restorations.png"]
    assert "the 8 worst of 16 probe images" in body and ">Worst restorations" in body
    for n in names:
        a = np.array(Image.open(path.parent / n))
        assert a.size > 0 and a.std() > 0, n                            # not a blank image
    assert "run folder at the end of training" in body
    # issue 17: weights once (final.pt + backbone), the rest (history, pictures, report) small beside them
    size = lambda d: sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    final, backbone = (run_dir / "final.pt").stat().st_size, (run_dir / "backbone.safetensors").stat().st_size
    assert size(run_dir) <= 1.3 * final + backbone + size(path.parent), (size(run_dir), final, backbone, size(path.parent))


def test_report_custom_out_pca_and_method_panels(run_dir, tmp_path, monkeypatch):
    from dira_nb.methods.dira import DiRA
    import plotly.graph_objects as go
    def panels(self):
        return {"mean intensity": lambda m, x: go.Figure(go.Bar(y=x.mean(dim=(1, 2, 3)).tolist())),
                "broken": lambda m, x: 1 / 0}
    monkeypatch.setattr(DiRA, "dashboard_panels", panels, raising=False)
    path = write_report(run_dir, out=tmp_path / "rep", n_probe=10, how="pca", n_show=4, n_attr=2)
    body = path.read_text().split("</head>", 1)[1]
    assert path.parent == tmp_path / "rep"
    assert ">mean intensity<" in body and "panel broken failed" in body   # a failing panel is reported, not fatal


def test_load_run_and_probe_set(run_dir):
    run = load_run(run_dir)
    assert list(run["histories"]) == ["dir", "dira"] and run["method"].discriminator is not None
    assert run["summary"]["n_train"] == json.loads((run_dir / "summary.json").read_text())["n_train"]
    p = probe_set(run["config"], n_probe=5)
    assert p["images"].shape == (5, 1, 32, 32) and len(p["labels"]) == 5 and len(p["native"]) == 5


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"): write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.yaml"): write_report(tmp_path / "empty")


def test_report_of_an_ld_run_shows_its_panels(tmp_path):
    "Methods without a restoration target (LD) still get a report, with their own dashboard panels."
    import re
    from dira_nb.pretrain import pretrain, PretrainConfig
    from dira_nb.report import write_report
    run = tmp_path / "ld"
    pretrain(PretrainConfig(out=str(run), method="ld", image_size=32, epochs_dir=1, epochs_dira=1, batch_size=8,
                            max_images=16, snapshots=0), quiet=True)
    page = write_report(run, n_probe=16, how="pca").read_text()
    heads = re.findall(r"<h3[^>]*>(.*?)</h3>", re.sub(r"<script.*?</script>", "", page, flags=re.S))
    assert "clusters" in heads and "landmarks" in heads, heads
    assert "failed:" not in page


def test_a_failed_or_killed_report_leaves_the_previous_page_intact(run_dir, tmp_path, monkeypatch):
    "Issue 16: index.html and the PNGs are written atomically; a write that fails (or a SIGKILL mid-write) keeps the old page."
    import os, signal, subprocess, sys, time
    out = tmp_path / "rep"
    first = write_report(run_dir, out=out, n_probe=8, how="pca", n_show=2, n_attr=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # 1. an exception right before the rename of index.html (e.g. the disk filled up)
    real_replace = os.replace
    def failing_replace(src, dst):
        if str(dst).endswith("index.html"): raise OSError(28, "No space left on device")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match=r"index\.html: could not be written, disk full\?"):
        write_report(run_dir, out=out, n_probe=8, how="pca", n_show=2, n_attr=1)
    monkeypatch.setattr(os, "replace", real_replace)
    assert first.read_bytes() == before["index.html"]
    assert sorted(p.name for p in out.iterdir()) == sorted(before)            # no temporary file left behind
    # 2. `dira-nb report` SIGKILLed while index.html is being written
    env = dict(os.environ, DIRA_NB_CKPT_PAUSE="60", DIRA_NB_CKPT_PAUSE_ON="index.html")
    p = subprocess.Popen([str(Path(sys.executable).parent / "dira-nb"), "report", str(run_dir), "--out", str(out),
                          "--how", "pca", "--n-probe", "8"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.time()
        while not list(out.glob(".index.html.*.paused")):
            assert p.poll() is None, p.communicate()
            assert time.time() - t0 < 300, "the report never reached the write of index.html"
            time.sleep(0.2)
        p.send_signal(signal.SIGKILL); p.wait(30)
    finally:
        if p.poll() is None: p.kill()
    assert first.read_bytes() == before["index.html"], "the killed report truncated the previous index.html"
    for name in before:                                                           # every PNG is complete (old or new)
        if name.endswith(".png"): Image.open(out / name).load()


def test_report_of_two_runs_puts_them_side_by_side(run_dir, tmp_path):
    "`dira-nb report A B` writes one comparison page (default: compare_A_B next to A) and refuses a folder of other files."
    import subprocess, sys
    di = tmp_path / "di"
    pretrain(PretrainConfig(out=str(di), method="di", image_size=32, epochs=2, batch_size=8, max_images=16, snapshots=0,
                            probe=8), quiet=True)
    cli = str(Path(sys.executable).parent / "dira-nb")
    r = subprocess.run([cli, "report", str(di), str(run_dir), "--how", "pca", "--n-probe", "8"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    page = di.parent / f"compare_di_{run_dir.name}" / "index.html"
    assert f"wrote {page}" in r.stdout and page.exists()
    body = page.read_text().split("</head>", 1)[1]
    assert 'class="err"' not in body, [p for p in body.split("<p") if 'class="err"' in p]
    for section in ("Summary", "Losses", "Restorations of the same inputs", "Realism", "Embeddings of the same probe images", "Attributions"):
        assert f">{section}" in body, section
    assert body.count("<tr><td>di</td><td>di</td>") == 1                                     # one summary row per run
    assert body.count(f"<tr><td>{run_dir.name} (dira)</td><td>dira</td>") == 1
    busy = tmp_path / "busy"; busy.mkdir(); (busy / "notes.txt").write_text("mine")
    r = subprocess.run([cli, "report", str(di), str(run_dir), "--out", str(busy), "--how", "pca", "--n-probe", "8"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "holds other files" in r.stderr and (busy / "notes.txt").read_text() == "mine"


def test_report_finds_relative_data_from_another_folder(tmp_path, monkeypatch, samples_dir):
    "A run trained on `--data imgs` (relative) is reported from anywhere: the manifest keeps the absolute data path."
    import shutil
    work = tmp_path / "work"; (work / "imgs").mkdir(parents=True)
    for p in sorted((Path(samples_dir) / "images").glob("*.png"))[:12]: shutil.copy(p, work / "imgs" / p.name)
    monkeypatch.chdir(work)
    pretrain(PretrainConfig(data="imgs", out=str(tmp_path / "run"), method="di", image_size=32, epochs=1, batch_size=4,
                            snapshots=0, probe=0), quiet=True)
    elsewhere = tmp_path / "elsewhere"; elsewhere.mkdir(); monkeypatch.chdir(elsewhere)
    run = load_run(tmp_path / "run", load_method=False)
    assert run["config"]["data"] == str(work / "imgs")
    path = write_report(tmp_path / "run", n_probe=6, how="pca", n_show=2, n_attr=1)
    assert path.exists() and 'class="err"' not in path.read_text()
