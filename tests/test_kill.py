"""A real pretraining process is SIGKILLed mid-training and mid-checkpoint-write, then resumed: nothing beyond the last
checkpoint interval is lost, no checkpoint is ever truncated, and the resumed run ends bit-identical to an
uninterrupted one."""
import os, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch

from test_resume import CFG, same_params       # also registers the tiny test encoder
from dira_nb.pretrain import pretrain, PretrainConfig
from dira_nb.checkpoint import load_checkpoint, safe_torch_load
from dira_nb.methods.core import Method

TESTS = Path(__file__).resolve().parent
EVERY = 2                                        # resume checkpoint every 2 steps (and at epoch ends)
KILL_CFG = dict(CFG, epochs_dir=2, epochs_dira=2, checkpoint_every=EVERY)     # 8 steps in all

SCRIPT = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from test_resume import CFG
from dira_nb.pretrain import pretrain, PretrainConfig
from dira_nb.callback.core import Callback
class Announce(Callback):
    order = 300                                  # after the resume checkpoint of this step is written
    def after_batch(self): print("step", self.learn.stage, self.learn.train_iter, flush=True)
cfg = dict(CFG, epochs_dir=2, epochs_dira=2, checkpoint_every={EVERY})
out, mode = sys.argv[1], sys.argv[2]
if mode == "resume": pretrain(resume=True, out=out, cbs=[Announce()], quiet=True)
else: pretrain(PretrainConfig(out=out, **cfg), cbs=[Announce()], quiet=True)
print("done", flush=True)
"""


def launch(out, mode, pause=None):
    env = dict(os.environ, IN_TEST="1")
    env.pop("DIRA_NB_CKPT_PAUSE", None)
    if pause: env.update(DIRA_NB_CKPT_PAUSE=str(pause), DIRA_NB_CKPT_PAUSE_ON="resume.pt")
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=TESTS.parent)


def global_step(stage, step):
    return step + (4 if stage == "dira" else 0)          # stage dir has 4 steps


def all_checkpoints_readable(run: Path):
    "Every *.pt in the run folder loads (weights_only): none is ever truncated."
    files = sorted(run.rglob("*.pt"))
    for f in files: safe_torch_load(f)
    return files


def test_sigkill_mid_training_and_mid_write_then_resume(tmp_path):
    ref = pretrain(PretrainConfig(out=str(tmp_path / "ref"), **KILL_CFG), quiet=True)
    run = tmp_path / "run"

    # 1. kill -9 in the middle of training, right after step 3 was announced
    p = launch(run, "fresh")
    seen = []
    for line in p.stdout:
        if line.startswith("step"):
            _, stage, s = line.split(); seen.append(global_step(stage, int(s)))
            if seen[-1] >= 3: os.kill(p.pid, signal.SIGKILL); break
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr.read()
    assert seen and seen[-1] >= 3, seen
    all_checkpoints_readable(run)
    meta = load_checkpoint(run / "resume.pt")["meta"]
    saved = global_step(meta["stage"], meta["train_iter"])
    assert seen[-1] - saved <= EVERY, (seen, saved)       # at most one checkpoint interval lost

    # 2. resume, and kill -9 while the resume checkpoint sits written but not yet renamed into place
    p = launch(run, "resume", pause=30)
    deadline = time.time() + 240
    paused = []
    while time.time() < deadline and not paused and p.poll() is None:
        paused = [f for f in run.glob(".resume.pt.*.paused")]
        time.sleep(0.05)
    assert paused, f"the writer never paused before its rename: {p.stderr.read() if p.poll() is not None else ''}"
    os.kill(p.pid, signal.SIGKILL); p.wait(timeout=60)
    tmp_files = [f for f in run.glob(".resume.pt.*.tmp")]
    assert tmp_files, "the kill should have left the unfinished temporary file behind"
    all_checkpoints_readable(run)                          # resume.pt is still the previous, complete file
    before = global_step(load_checkpoint(run / "resume.pt")["meta"]["stage"], load_checkpoint(run / "resume.pt")["meta"]["train_iter"])
    assert before >= saved

    # 3. resume to the end: temporary files are cleaned up and the result equals the uninterrupted run
    p = launch(run, "resume")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0 and "done" in out, err[-3000:]
    assert not list(run.rglob("*.tmp")) and not list(run.rglob("*.paused"))
    all_checkpoints_readable(run)
    final = Method.from_checkpoint(run / "final.pt")
    assert [k for k in same_params(ref["method"], final) if not k.startswith(("key_encoder.", "key_head."))] == []   # final.pt stores the momentum copies as the online weights
    ck_ref, ck_run = load_checkpoint(ref["final"]), load_checkpoint(run / "final.pt")
    assert all(torch.equal(ck_ref["method_state"][k], v) for k, v in ck_run["method_state"].items())
