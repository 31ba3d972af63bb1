"""Tests for the Learner, its callbacks (events, cancelling, Recorder), CosineLR, ProgressBar, CSVLogger and SaveCheckpoint,
driven by a toy Method (a tiny linear autoencoder with an optional discriminator)."""
import io
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from dira_nb.callback.core import (EVENTS, Callback, CancelBatchException, CancelEpochException,
                                   CancelFitException)
from dira_nb.callback.progress import CSVLogger, ProgressBar, SaveCheckpoint
from dira_nb.callback.schedule import CosineLR, cosine_lr
from dira_nb.learner import Learner, Recorder, to_device
from dira_nb.losses import lsgan_discriminator_loss, lsgan_generator_loss


class ToyData(Dataset):
    def __init__(self, n=16, dim=8, seed=0, offset=0):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(2, dim, generator=g)
        self.x = (torch.randn(n + offset, 2, generator=g) @ w)[offset:]

    def __len__(self): return len(self.x)
    def __getitem__(self, i): return {"x": self.x[i], "kind1": "swap", "index": i}


def toy_dls(n_train=16, n_valid=8, bs=8, valid=True):
    tr = DataLoader(ToyData(n_train), bs, shuffle=True, drop_last=True)
    return tr, (DataLoader(ToyData(n_valid, offset=n_train), bs) if valid else None)


class ToyAE(nn.Module):
    name = "toy_ae"

    def __init__(self, dim=8, hidden=3, adversarial=False, lr=0.05, nan_at=None):
        super().__init__()
        self.enc, self.bn, self.dec = nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.Linear(hidden, dim)
        self.disc = nn.Linear(dim, 1) if adversarial else None
        self.lr, self.nan_at, self.n_updates, self.n_forward, self.n_d = lr, nan_at, 0, 0, 0
        self.seen_kinds = []

    def configure_optimizers(self):
        g = [p for n, p in self.named_parameters() if not n.startswith("disc.")]
        opts = {"G": torch.optim.SGD(g, lr=self.lr, momentum=0.9)}
        if self.disc is not None:
            opts["D"] = torch.optim.Adam(self.disc.parameters(), lr=1e-2, betas=(0.5, 0.999))
        return opts

    def forward_train(self, batch):
        self.n_forward += 1
        self.seen_kinds.append(batch["kind1"])
        return {"recon": self.dec(self.bn(self.enc(batch["x"])))}

    def generator_loss(self, batch, pred):
        res = F.mse_loss(pred["recon"], batch["x"])
        if self.nan_at is not None and self.n_forward > self.nan_at:
            res = res * float("nan")
        out = {"loss": res, "loss_res": res}
        if self.disc is not None:
            out["loss_adv"] = lsgan_generator_loss(self.disc(pred["recon"]))
            out["loss"] = res + 0.01 * out["loss_adv"]
        return out

    def discriminator_loss(self, batch, pred):
        if self.disc is None: return None
        self.n_d += 1
        return {"loss_critic": lsgan_discriminator_loss(self.disc(batch["x"]), self.disc(pred["recon"].detach()))}

    def after_update(self, batch, pred): self.n_updates += 1

    def validation_step(self, batch):
        return self.generator_loss(batch, {"recon": self.dec(self.bn(self.enc(batch["x"])))})

    def save_checkpoint(self, path, extra_meta=None):
        torch.save({"state_dict": self.state_dict(), "meta": dict(extra_meta or {})}, path)
        return Path(path)


def make(adversarial=False, valid=True, **kw):
    torch.manual_seed(0)
    return Learner(ToyAE(adversarial=adversarial), *toy_dls(valid=valid), device="cpu", quiet=True, **kw)


class EventLog(Callback):
    def __init__(self): self.log = []


for _e in EVENTS:
    setattr(EventLog, _e, (lambda e: lambda self: self.log.append(e))(_e))


# ---------------------------------------------------------------- callback core
def test_callback_basics():
    class CosineLRCallback(Callback): pass
    assert CosineLRCallback().name == "cosine_lr"
    assert Recorder().name == "recorder"
    cb = Callback()
    with pytest.raises(AttributeError):
        cb.epoch                                   # no learner attached
    learn = make()
    assert learn.recorder.epoch == 0 and learn.recorder.method is learn.method   # delegation


def test_event_order_one_epoch_two_batches():
    log = EventLog()
    make(cbs=[log]).fit(1)
    per_batch = ["before_batch", "after_pred", "after_loss", "after_backward", "after_step", "after_batch"]
    assert log.log == ["before_fit", "before_epoch", "before_train", *per_batch, *per_batch, "after_train",
                       "before_validate", "after_validate", "after_epoch", "after_fit"]


def test_event_order_without_validation():
    log = EventLog()
    make(valid=False, cbs=[log]).fit(1)
    assert "before_validate" not in log.log and log.log[-3:] == ["after_train", "after_epoch", "after_fit"]


def test_callbacks_run_in_order():
    calls = []
    class A(Callback):
        order = 5
        def before_fit(self): calls.append("A")
    class B(Callback):
        order = -5
        def before_fit(self): calls.append("B")
    learn = make(cbs=[A(), B()])
    learn.fit(1)
    assert calls == ["B", "A"]
    assert [type(c).__name__ for c in learn.cbs] == ["Recorder", "B", "A"]


# ---------------------------------------------------------------- learner loop
def test_loss_decreases_and_history():
    learn = make()
    learn.fit(6)
    h = learn.history
    assert len(h) == 6 and [r["epoch"] for r in h] == list(range(6))
    assert h[-1]["train_loss"] < 0.7 * h[0]["train_loss"]
    assert h[-1]["valid_loss"] < h[0]["valid_loss"]
    assert {"epoch", "train_loss", "train_loss_res", "valid_loss", "valid_loss_res", "lr", "train_iter", "time"} <= set(h[0])
    bl = learn.recorder.batch_losses
    assert len(bl) == 12 and all(isinstance(r["loss"], float) for r in bl)
    assert h[0]["train_loss"] == pytest.approx((bl[0]["loss"] + bl[1]["loss"]) / 2)
    assert [r["iter"] for r in bl] == list(range(1, 13))
    assert learn.method.n_updates == 12 and learn.train_iter == 12


def test_batch_dict_moved_and_lists_kept():
    learn = make()
    learn.fit(1)
    assert learn.method.seen_kinds[0] == ["swap"] * 8            # collated list of strings passes through
    b = {"x": torch.zeros(2, 3), "k": ["a", "b"], "t": (torch.ones(1), "s")}
    mb = to_device(b, torch.device("cpu"))
    assert mb["k"] is b["k"] and mb["t"][1] == "s" and mb["x"].device.type == "cpu"


def test_fit_again_restarts_epoch_keeps_train_iter():
    learn = make()
    learn.fit(2)
    opt = learn.opts["G"]
    learn.fit(1)
    assert learn.opts["G"] is opt                   # optimiser state kept across fits
    assert learn.history[-1]["epoch"] == 0 and learn.train_iter == 6 and len(learn.history) == 3
    learn.fit(5, start_epoch=3)
    assert [r["epoch"] for r in learn.history[3:]] == [3, 4] and learn.train_iter == 10
    learn.fit(1, reset_opt=True)
    assert learn.opts["G"] is not opt


def test_validation_has_no_side_effects():
    learn = make()
    learn.fit(1)
    learn.method.train()
    before = {k: v.clone() for k, v in learn.method.state_dict().items()}
    seen = {}

    class Spy(Callback):
        def after_validate(self): seen["mode"] = self.method.training; seen["grad"] = torch.is_grad_enabled()

    v = learn.validate()
    assert learn.method.training                                # mode restored
    for k, t in learn.method.state_dict().items():
        assert torch.equal(before[k], t), k                     # BN running stats included
    assert set(v) == {"loss", "loss_res"}
    # validation inside fit: no_grad and eval mode seen by the method
    modes = []
    orig = learn.method.validation_step

    def spy_step(batch):
        modes.append((learn.method.training, torch.is_grad_enabled()))
        return orig(batch)

    learn.method.validation_step = spy_step
    learn.fit(1, cbs=[Spy()])
    assert modes and all(m == (False, False) for m in modes)
    assert learn.method.training
    # weighted by batch size
    a = learn.validate(DataLoader(ToyData(8, offset=16), 3))["loss"]
    b = learn.validate(DataLoader(ToyData(8, offset=16), 8))["loss"]
    assert a == pytest.approx(b, rel=1e-5)


def test_adversarial_g_step_with_frozen_d_then_d_step():
    snaps = {}

    class CheckFrozen(Callback):
        def before_batch(self):
            g = self.method.disc.weight.grad
            snaps["g0"] = None if g is None else g.clone()
        def after_backward(self):
            d = self.method.disc
            assert not d.weight.requires_grad and not d.bias.requires_grad
            g0 = snaps["g0"]
            assert (d.weight.grad is None and g0 is None) or torch.equal(d.weight.grad, g0)
            assert self.method.enc.weight.grad is not None
            snaps["n"] = snaps.get("n", 0) + 1

    learn = make(adversarial=True, cbs=[CheckFrozen()])
    d0 = learn.method.disc.weight.detach().clone()
    learn.fit(2)
    m = learn.method
    assert snaps["n"] == 4 and m.n_d == 4
    assert m.disc.weight.requires_grad and m.disc.bias.requires_grad
    assert not torch.equal(m.disc.weight, d0)
    assert all("loss_critic" in r and "lr_D" in r for r in learn.recorder.batch_losses)
    assert {"train_loss_critic", "train_loss_adv", "valid_loss_adv", "lr_D"} <= set(learn.history[-1])


def test_g_gradients_match_manual_computation():
    # the learner's G gradients (D frozen) equal a plain forward/backward through D
    learn = make(adversarial=True)
    grads = {}

    class Grab(Callback):
        def before_batch(self):
            if self.train_iter == 0:
                self.copy = {k: v.clone() for k, v in self.method.state_dict().items()}
        def after_backward(self):
            if self.train_iter == 0:
                grads["learn"] = self.method.enc.weight.grad.clone()
                grads["batch"] = self.batch
                grads["state"] = self.copy

    learn.fit(1, cbs=[Grab()])
    ref = ToyAE(adversarial=True)
    ref.load_state_dict(grads["state"])
    ref.train()
    out = ref.generator_loss(grads["batch"], ref.forward_train(grads["batch"]))
    out["loss"].backward()
    torch.testing.assert_close(grads["learn"], ref.enc.weight.grad)
    assert ref.disc.weight.grad is not None and ref.disc.weight.grad.abs().sum() > 0   # what quirk 7 avoids


def test_cancel_batch_epoch_fit():
    class SkipFirst(Callback):
        def before_batch(self):
            if self.iter == 0: raise CancelBatchException()
    log = EventLog()
    learn = make()
    learn.fit(2, cbs=[SkipFirst(), log])
    assert learn.train_iter == 2 and learn.method.n_updates == 2
    assert log.log.count("after_batch") == 4 and log.log.count("after_step") == 2
    assert learn.get_cb(SkipFirst) is None and learn.get_cb("event_log") is None

    class NoValid(Callback):
        def after_train(self): raise CancelEpochException()
    log = EventLog()
    learn = make(cbs=[NoValid(), log])
    learn.fit(2)
    assert len(learn.history) == 2 and "valid_loss" not in learn.history[0]
    assert "before_validate" not in log.log and log.log.count("after_epoch") == 2

    class Stop(Callback):
        order = 10
        def after_epoch(self): raise CancelFitException()
    log = EventLog()
    learn = make(cbs=[Stop(), log])
    learn.fit(5)
    assert len(learn.history) == 1 and log.log[-1] == "after_fit"


def test_non_finite_loss_raises():
    torch.manual_seed(0)
    learn = Learner(ToyAE(nan_at=3), *toy_dls(), device="cpu", quiet=True)
    with pytest.raises(FloatingPointError, match=r"epoch 1, iter 1 \(global step 3\): loss=nan, loss_res=nan"):
        learn.fit(3)
    assert learn.train_iter == 3


def test_protocol_and_callback_management():
    with pytest.raises(TypeError, match="Method protocol"):
        Learner(nn.Linear(2, 2), toy_dls()[0])

    class NoG(ToyAE):
        def configure_optimizers(self): return {"D": torch.optim.SGD(self.parameters(), lr=0.1)}
    with pytest.raises(TypeError, match="'G'"):
        Learner(NoG(), *toy_dls(), device="cpu").fit(1)
    learn = make()
    with learn.added_cbs([EventLog]):
        assert isinstance(learn.event_log, EventLog)
    assert not hasattr(learn, "event_log")
    learn.add_cb(EventLog)
    learn.remove_cb(EventLog)
    assert [type(c) for c in learn.cbs] == [Recorder]

    class Opts(Callback): pass
    with pytest.raises(ValueError, match="clashes"):
        learn.add_cb(Opts())


def test_lr_argument_overrides_g():
    learn = make(lr=0.2)
    learn.fit(1)
    assert learn.history[0]["lr"] == pytest.approx(0.2)


# ---------------------------------------------------------------- schedule
def test_cosine_lr_values():
    assert [cosine_lr(0.03, e, 4) for e in range(4)] == pytest.approx(
        [0.03, 0.03 * (1 + 2 ** -0.5) / 2, 0.015, 0.03 * (1 - 2 ** -0.5) / 2])
    with pytest.raises(ValueError):
        cosine_lr(0.1, 0, 0)


def test_cosine_callback_per_epoch_restart_and_per_step():
    learn = make(cbs=[CosineLR()])
    learn.fit(4)
    exp = [cosine_lr(0.05, e, 4) for e in range(4)]
    assert [h["lr"] for h in learn.history] == pytest.approx(exp)
    assert learn.opts["G"].param_groups[0]["lr"] == pytest.approx(exp[-1])
    learn.fit(2)                                              # restart
    assert [h["lr"] for h in learn.history[4:]] == pytest.approx([0.05, 0.025])

    learn = make(lr=0.1, epochs_for_schedule=4, cbs=[CosineLR(per_step=True)])
    learn.fit(2)
    assert [r["lr"] for r in learn.recorder.batch_losses] == pytest.approx(
        [cosine_lr(0.1, e, 4) for e in (0, 0.5, 1, 1.5)])

    learn = make(adversarial=True, cbs=[CosineLR("D", base_lr=1.0)])
    learn.fit(2)
    assert [h["lr_D"] for h in learn.history] == pytest.approx([1.0, 0.5])
    assert [h["lr"] for h in learn.history] == pytest.approx([0.05, 0.05])   # G untouched


# ---------------------------------------------------------------- progress, csv, checkpoints
def test_progress_bar():
    buf = io.StringIO()
    learn = make(cbs=[ProgressBar(file=buf)])
    learn.quiet = False
    learn.fit(2)
    out = buf.getvalue()
    assert "epoch 1/2" in out and "epoch 2/2" in out and "train_loss=" in out and "valid_loss=" in out
    buf2 = io.StringIO()
    make(cbs=[ProgressBar(file=buf2)]).fit(1)                 # quiet
    assert buf2.getvalue() == ""


def test_csv_logger(tmp_path):
    fn = tmp_path / "sub" / "hist.csv"
    learn = make(cbs=[CSVLogger(fn)])
    learn.fit(2)
    lines = fn.read_text().strip().splitlines()
    assert lines[0].split(",") == list(learn.history[0])
    assert len(lines) == 3
    rows = learn.csv_logger.read()
    assert [float(r["train_loss"]) for r in rows] == pytest.approx([h["train_loss"] for h in learn.history])
    # a new key (stage 2 turns D on) extends the header, old rows get blanks
    learn.method.disc = nn.Linear(8, 1)
    learn.fit(1, reset_opt=True)
    rows = learn.csv_logger.read()
    assert len(rows) == 3 and "train_loss_critic" in rows[0] and rows[0]["train_loss_critic"] == ""
    assert float(rows[-1]["train_loss_critic"]) == pytest.approx(learn.history[-1]["train_loss_critic"])
    # append=False starts over with a new logger; append=True keeps rows
    make(cbs=[CSVLogger(fn)]).fit(1)
    assert len(CSVLogger(fn).read()) == 1
    make(cbs=[CSVLogger(fn, append=True)]).fit(1)
    assert len(CSVLogger(fn).read()) == 2


def test_save_checkpoint(tmp_path):
    learn = make(cbs=[SaveCheckpoint(tmp_path, every=2)])
    learn.fit(5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]
    saved = learn.get_cb(SaveCheckpoint).saved
    assert [e for t, e, _ in saved if t == "last"] == [1, 3, 4]
    vl = [h["valid_loss"] for h in learn.history]
    assert [e for t, e, _ in saved if t == "best"] == [i for i in range(5) if vl[i] < min(vl[:i], default=math.inf)]
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["meta"]["epoch"] == 4 and len(last["meta"]["history"]) == 5 and last["meta"]["train_iter"] == 10
    for k, v in learn.method.state_dict().items():
        assert torch.equal(last["state_dict"][k], v)
    best = torch.load(tmp_path / "best.pt", weights_only=True)["meta"]
    assert best["epoch"] == vl.index(min(vl)) and best["monitor"]["valid_loss"] == pytest.approx(min(vl))


def test_save_checkpoint_without_valid_and_path_fn(tmp_path):
    learn = make(valid=False, cbs=[SaveCheckpoint(lambda tag, e: tmp_path / f"{tag}-{e}.pt")])
    learn.fit(2)
    cb = learn.get_cb("save_checkpoint")
    assert cb.key == "train_loss"
    assert (tmp_path / "last-0.pt").exists() and (tmp_path / "last-1.pt").exists() and (tmp_path / "best-0.pt").exists()

    class NoSave(nn.Module):
        def configure_optimizers(self): return {"G": torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)}
        def forward_train(self, b): return {}
        def generator_loss(self, b, p): return {"loss": torch.zeros(())}
        def validation_step(self, b): return {}
    with pytest.raises(TypeError, match="save_checkpoint"):
        Learner(NoSave(), toy_dls()[0], device="cpu", cbs=[SaveCheckpoint(tmp_path)]).fit(1)
