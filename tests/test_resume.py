"""Exact resuming of pretraining runs: N steps + crash + resume == uninterrupted, mid-epoch, at epoch ends and at the
dir→dira stage switch (CPU, fixed seed, bit-identical parameters)."""
import shutil
import pytest
import torch
import torch.nn as nn

from dira_nb.tvcompat import torchvision
from dira_nb.models.encoders import ResNetEncoder, register_encoder
from dira_nb.pretrain import pretrain, PretrainConfig, RunFinishedError
from dira_nb.callback.core import Callback
from dira_nb.checkpoint import load_checkpoint, CheckpointError


def tiny_encoder(in_chans=1):
    "A ResNet with one block per stage and widths 8–64 and the ResNetEncoder API, so resume tests run in seconds."
    enc = ResNetEncoder("resnet18", in_chans)
    b, block = enc.body, torchvision.models.resnet.BasicBlock
    b.inplanes = 8
    b.conv1, b.bn1 = nn.Conv2d(in_chans, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8)
    b.layer1, b.layer2 = b._make_layer(block, 8, 1), b._make_layer(block, 16, 1, stride=2)
    b.layer3, b.layer4 = b._make_layer(block, 32, 1, stride=2), b._make_layer(block, 64, 1, stride=2)
    enc.channels, enc.out_dim = (8, 8, 16, 32, 64), 64
    return enc


register_encoder("tiny_test", tiny_encoder)

# 8 training images, batch 4 → 2 steps per epoch; stage dir: epochs 0-1 (steps 1-4), stage dira: epoch 0 (steps 5-6)
CFG = dict(backbone="tiny_test", image_size=32, epochs_dir=2, epochs_dira=1, batch_size=4, max_images=8, snapshots=0,
           moco_k=16, num_workers=0, seed=3, options=dict(decoder_channels=(32, 16, 16, 8, 8)))


class Crash(Exception):
    "Stands in for a killed process."


class CrashAt(Callback):
    "Raise `Crash` right after global step `step` (after every other callback, so checkpoints of that step exist)."
    order = 300
    def __init__(self, step): self.step = step
    def after_batch(self):
        if self.learn.train_iter == self.step and self.learn.stage == self.stage_name: raise Crash(self.step)


def crash_at(step):
    "A crash after global step `step` of the whole run (steps 1-4 are stage dir, 5-6 stage dira)."
    cb = CrashAt(step if step <= 4 else step - 4)
    cb.stage_name = "dir" if step <= 4 else "dira"
    return cb


def same_params(a, b):
    "Names of state entries that differ (empty when bit-identical)."
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


class CrashAfterFit(Callback):
    "A kill after the last epoch's resume checkpoint, before final.pt is written."
    order = 300
    def after_fit(self):
        if self.learn.stage == "dira": raise Crash("after the last epoch")


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory):
    "A run folder whose resume.pt holds the end of training but which never wrote final.pt (copy it before resuming)."
    out = tmp_path_factory.mktemp("unfinished") / "run"
    with pytest.raises(Crash):
        pretrain(PretrainConfig(out=str(out), checkpoint_every=1, **CFG), cbs=[CrashAfterFit()], quiet=True)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    return pretrain(PretrainConfig(out=str(out), checkpoint_every=1, **CFG), quiet=True)


@pytest.mark.parametrize("step,where", [(1, "mid-epoch, stage dir"), (2, "epoch end"), (4, "stage switch dir→dira"),
                                        (5, "mid-epoch, stage dira")])
def test_resume_is_bit_identical(reference, tmp_path, step, where):
    out = tmp_path / "run"
    with pytest.raises(Crash):
        pretrain(PretrainConfig(out=str(out), checkpoint_every=1, **CFG), cbs=[crash_at(step)], quiet=True)
    meta = load_checkpoint(out / "resume.pt")["meta"]
    stage_steps = step if step <= 4 else step - 4
    assert meta["train_iter"] == stage_steps, (where, meta["train_iter"])
    res = pretrain(resume=True, out=str(out), quiet=True)
    assert same_params(reference["method"], res["method"]) == [], where
    assert res["summary"]["status"] == "finished" and res["summary"]["resumed_from_step"] == stage_steps
    # the logs hold each epoch exactly once, with the same values as the uninterrupted run
    for stage in ("dir", "dira"):
        assert [h["train_loss"] for h in res["histories"][stage]] == [h["train_loss"] for h in reference["histories"][stage]]
        rows = (out / stage / "history.csv").read_text().strip().splitlines()
        assert len(rows) == 1 + len(reference["histories"][stage])


def test_resume_from_epoch_end_redoes_lost_steps(reference, tmp_path):
    "With checkpoints only at epoch ends, a crash mid-epoch loses that epoch's steps, which the resumed run redoes exactly."
    out = tmp_path / "run"
    with pytest.raises(Crash):
        pretrain(PretrainConfig(out=str(out), checkpoint_every=0, **CFG), cbs=[crash_at(3)], quiet=True)
    assert load_checkpoint(out / "resume.pt")["meta"]["train_iter"] == 2        # the end of epoch 0
    res = pretrain(resume=True, out=str(out), quiet=True)
    assert same_params(reference["method"], res["method"]) == []


def test_resume_state_holds_everything(unfinished):
    ck = load_checkpoint(unfinished / "resume.pt")
    ts = ck["training_state"]
    assert set(ts["optimizer_state"]) == {"G", "D"}
    keys = set(ts["method_state"])
    assert "queue.queue" in keys and "queue.ptr" in keys
    assert any(k.startswith("key_encoder.") for k in keys) and any(k.startswith("discriminator.") for k in keys)
    assert {"python", "numpy", "torch"} <= set(ts["rng"])
    assert ts["loop"]["epoch"] == 1 and ts["loop"]["iter_done"] == 0                # stage dira finished
    assert ck["meta"]["stage"] == "dira" and ck["meta"]["stage_index"] == 1
    assert "recorder" in ts["callbacks"]
    assert "optimizer_state" not in ck and ck["meta"]["kind"] == "resume"       # optimiser state only inside training_state


def test_resume_after_the_last_epoch_finishes_the_folder(unfinished, reference, tmp_path):
    "Killed between the last epoch and final.pt: resuming trains nothing, writes final.pt and the backbone, deletes resume.pt."
    out = tmp_path / "run"
    shutil.copytree(unfinished, out)
    assert not (out / "final.pt").exists() and (out / "resume.pt").exists()
    res = pretrain(resume=True, out=str(out), quiet=True)
    assert same_params(reference["method"], res["method"]) == []
    assert (out / "final.pt").exists() and (out / "backbone.safetensors").exists() and not (out / "resume.pt").exists()
    assert res["summary"]["status"] == "finished"


def test_resume_with_the_callers_own_config_and_channels_from_the_images(reference, tmp_path):
    "A config that leaves in_chans to the images (None) resumes a run that resolved it, and pretrain leaves the caller's config as it was."
    out = tmp_path / "run"
    cfg = PretrainConfig(out=str(out), checkpoint_every=1, **CFG)
    with pytest.raises(Crash): pretrain(cfg, cbs=[crash_at(3)], quiet=True)
    assert cfg.in_chans is None and yaml.safe_load((out / "config.yaml").read_text())["in_chans"] == 1
    res = pretrain(cfg, resume=True, quiet=True)
    assert same_params(reference["method"], res["method"]) == []


def test_a_finished_run_holds_its_weights_once(reference):
    "Issue 17: no resume.pt, no per-stage copies, no optimiser state; the backbone and momentum copies share storage."
    run = reference["run_dir"]
    assert not (run / "resume.pt").exists() and not list(run.glob("*/best.pt")) and not list(run.glob("*/last.pt"))
    ck = load_checkpoint(run / "final.pt")
    assert "optimizer_state" not in ck and "training_state" not in ck
    ms = ck["method_state"]
    ptr = lambda t: t.untyped_storage().data_ptr()
    assert ptr(ms["key_encoder.body.conv1.weight"]) == ptr(ms["encoder.body.conv1.weight"]) == ptr(ck["backbone_state"]["conv1.weight"])
    total = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    assert reference["summary"]["folder_bytes"] == total, (reference["summary"]["folder_bytes"], total)
    assert total < 1.3 * (run / "final.pt").stat().st_size + (run / "backbone.safetensors").stat().st_size


def test_keep_stage_checkpoints_keeps_best_and_last(tmp_path):
    res = pretrain(PretrainConfig(out=str(tmp_path / "run"), keep_stage_checkpoints=True, **CFG), quiet=True)
    run = res["run_dir"]
    for f in ("dir/best.pt", "dir/last.pt", "dira/best.pt", "dira/last.pt"): assert (run / f).exists(), f
    last = load_checkpoint(run / "dira" / "last.pt")           # the exact momentum encoder, unlike final.pt
    assert not torch.equal(last["method_state"]["key_encoder.body.conv1.weight"], last["method_state"]["encoder.body.conv1.weight"])
    assert not (run / "resume.pt").exists()
    assert res["summary"]["folder_bytes"] == sum(p.stat().st_size for p in run.rglob("*") if p.is_file())


def test_resume_refuses_changed_settings_and_overwrites(reference, unfinished, tmp_path):
    with pytest.raises(ValueError, match="cannot resume with changed settings lr"):
        pretrain(resume=True, out=str(unfinished), lr=0.5, quiet=True)
    with pytest.raises(FileExistsError, match="already holds a run"):
        pretrain(PretrainConfig(out=str(unfinished), **CFG), quiet=True)
    run = reference["run_dir"]
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    for how in (True, run, run / "resume.pt"):      # a finished run: nothing to resume, said plainly, nothing touched
        with pytest.raises(RunFinishedError, match=r"holds a finished run .*final.pt.*nothing to resume"):
            pretrain(resume=how, out=str(run), quiet=True)
    with pytest.raises(FileExistsError, match="already holds a run: .* finished run"):
        pretrain(PretrainConfig(out=str(run), **CFG), quiet=True)
    assert {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    with pytest.raises(CheckpointError, match="no resume checkpoint"):
        pretrain(resume=tmp_path / "nothing_here", quiet=True)


def test_resume_true_on_empty_folder_starts_fresh_and_cleans_temp_files(reference, tmp_path):
    out = tmp_path / "fresh"
    out.mkdir()
    (out / ".resume.pt.abc.dira_nb.tmp").write_bytes(b"half a checkpoint")
    (out / ".my_notes.tmp").write_bytes(b"a user's own temporary file")        # not ours: never deleted (issue 16)
    res = pretrain(PretrainConfig(out=str(out), checkpoint_every=1, **CFG), resume=True, quiet=True)
    assert not (out / ".resume.pt.abc.dira_nb.tmp").exists()
    assert (out / ".my_notes.tmp").read_bytes() == b"a user's own temporary file"
    assert same_params(reference["method"], res["method"]) == []


def test_resume_writes_into_the_named_folder_not_the_stored_path(reference, tmp_path):
    "Issue 16: resuming a moved or copied run folder continues *that* folder; the original run is never touched."
    a = tmp_path / "A"
    with pytest.raises(Crash): pretrain(PretrainConfig(out=str(a), checkpoint_every=1, **CFG), cbs=[crash_at(3)], quiet=True)
    b = tmp_path / "B_copy"
    shutil.copytree(a, b)
    before = {p.relative_to(a): p.read_bytes() for p in a.rglob("*") if p.is_file()}
    res = pretrain(resume=b, quiet=True)
    after = {p.relative_to(a): p.read_bytes() for p in a.rglob("*") if p.is_file()}
    assert after == before, "resuming the copy rewrote the original run folder"
    assert (b / "final.pt").exists() and not (a / "final.pt").exists()
    assert res["final"] == b / "final.pt"
    assert not same_params(res["method"], reference["method"])        # the copy finished exactly like the reference


def test_a_finished_run_is_never_overwritten_even_without_resume_pt(reference, tmp_path):
    "Issue 16: deleting resume.pt must not let the next run on that folder silently replace a finished run."
    out = tmp_path / "done"
    shutil.copytree(reference["final"].parent, out)
    assert not (out / "resume.pt").exists()                                 # a finished run deletes it (issue 17)
    before = (out / "final.pt").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run: .*final.pt"):
        pretrain(PretrainConfig(out=str(out), **CFG), quiet=True)
    (out / "summary.json").unlink()                                         # not even recognisable as finished
    with pytest.raises(FileExistsError, match="already holds run files .*final.pt"):
        pretrain(PretrainConfig(out=str(out), **CFG), quiet=True)
    assert (out / "final.pt").read_bytes() == before


# ---- one writer per run folder (issue 16) ---------------------------------------------------------------------------
import os, signal, subprocess, sys, time, warnings
from pathlib import Path
import yaml
from dira_nb.pretrain import RunLock, RUN_LOCK, RUN_MANIFEST

TESTS = Path(__file__).resolve().parent
WRITER = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from test_resume import CFG
from dira_nb.pretrain import pretrain, PretrainConfig
pretrain(PretrainConfig(out=sys.argv[1], checkpoint_every=1, **CFG), quiet=True)
"""


def _wait_for(pattern_dir, pattern, proc, timeout=240):
    t0 = time.time()
    while not list(Path(pattern_dir).glob(pattern)):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{pattern} never appeared"
        time.sleep(0.05)


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path):
    "Two processes on one --out: the second is refused while the first runs; after the first is killed, resume proceeds."
    out = tmp_path / "run"
    env = dict(os.environ, DIRA_NB_CKPT_PAUSE="120", DIRA_NB_CKPT_PAUSE_ON="resume.pt")
    a = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out, ".resume.pt.*.paused", a)                       # A is mid-run, holding the lock
        owner = RunLock(out).owner()
        assert owner["pid"] == a.pid and (out / RUN_MANIFEST).exists()
        with pytest.raises(FileExistsError, match=f"is in use by another dira_nb process: pid {a.pid}"):
            pretrain(PretrainConfig(out=str(out), checkpoint_every=1, **CFG), quiet=True)
        with pytest.raises(FileExistsError, match="is in use by another dira_nb process"):
            pretrain(resume=True, out=str(out), quiet=True)
    finally:
        a.kill(); a.wait(30)
    assert (out / RUN_LOCK).exists()                                   # SIGKILL leaves the lock behind: stale
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = pretrain(resume=True, out=str(out), quiet=True)          # A's first checkpoint was never renamed: a fresh start
    assert any("stale lock" in str(x.message) for x in w)
    assert res["summary"]["status"] == "finished" and not (out / RUN_LOCK).exists()
    assert len((out / "dir" / "history.csv").read_text().strip().splitlines()) == 1 + CFG["epochs_dir"]


def test_a_run_folder_is_marked_first_and_zero_epochs_warn(tmp_path):
    out = tmp_path / "zero"
    with pytest.warns(UserWarning, match="0 training epochs"):
        res = pretrain(PretrainConfig(out=str(out), **{**CFG, "epochs_dir": 0, "epochs_dira": 0}), quiet=True)
    assert any(w["kind"] == "no_training" for w in res["summary"]["warnings"])
    assert (out / RUN_MANIFEST).exists() and not (out / RUN_LOCK).exists()
    # a run that stopped before its first checkpoint holds only its manifest and config: refused, unless resume=True
    early = tmp_path / "early"; early.mkdir()
    (early / RUN_MANIFEST).write_text("{}"); (early / "config.yaml").write_text("method: dira\n")
    with pytest.raises(FileExistsError, match="pass resume=True .* to restart a run that stopped before its first checkpoint"):
        pretrain(PretrainConfig(out=str(early), **CFG), quiet=True)


@pytest.mark.parametrize("bad,message", [
    (dict(out=""), "out='': must name a run folder"), (dict(seed=-1), "seed=-1: must be an integer ≥ 0"),
    (dict(device="tpu"), "device='tpu': choose 'auto', 'cpu', 'cuda'"),
    (dict(data="DATA", out="DATA/run"), "is inside the data folder"), (dict(data="DATA", out="DATA"), "is the pretraining data itself")])
def test_out_seed_device_are_checked(tmp_path, bad, message):
    (tmp_path / "DATA").mkdir()
    bad = {k: v.replace("DATA", str(tmp_path / "DATA")) if isinstance(v, str) and "DATA" in v else v for k, v in bad.items()}
    with pytest.raises(ValueError, match=message):
        PretrainConfig(**{**CFG, **bad})


SIGINT_SCRIPT = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import test_resume                                 # registers the tiny test encoder
from dira_nb.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_saves_the_state_and_prints_one_line(tmp_path):
    "SIGINT mid-run: the step finishes, resume.pt is written, one line says where, exit 130; resuming finishes the run."
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**CFG, "options": dict(decoder_channels=[32, 16, 16, 8, 8]), "lr": "1e-3"}))  # lr as YAML 1.1 text
    out = tmp_path / "run"
    env = dict(os.environ, DIRA_NB_CKPT_PAUSE="3", DIRA_NB_CKPT_PAUSE_ON="resume.pt")
    p = subprocess.Popen([sys.executable, "-c", SIGINT_SCRIPT, "pretrain", "--config", str(cfg), "--out", str(out),
                          "--checkpoint-every", "1", "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out, ".resume.pt.*.paused", p)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=240)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert f"interrupted: SIGINT: training stopped at stage dir" in err and str(out / "resume.pt") in err, err
    meta = load_checkpoint(out / "resume.pt")["meta"]
    assert meta["train_iter"] >= 1 and meta["run_config"]["lr"] == 1e-3
    assert not (out / RUN_LOCK).exists()
    res = pretrain(resume=True, out=str(out), quiet=True)
    assert res["summary"]["status"] == "finished"


def test_yaml_errors_name_the_file_and_line(tmp_path):
    from dira_nb.cli import main
    bad = tmp_path / "broken.yaml"; bad.write_text("method: dira\nlr: [0.1\nseed: 3\n")
    with pytest.raises(SystemExit, match=r"broken\.yaml, line \d+, column \d+: not valid YAML"):
        main(["pretrain", "--config", str(bad), "--out", str(tmp_path / "x")])
    assert PretrainConfig(**{**CFG, "lr": "1e-3"}).lr == 1e-3
    with pytest.raises(ValueError, match="lr='fast': must be a number"):
        PretrainConfig(**{**CFG, "lr": "fast"})
