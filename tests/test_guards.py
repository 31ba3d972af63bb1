"""Training faults: NaN/Inf losses stop cleanly with a checkpoint (or are skipped and counted), a collapsing
discriminator is reported in the log and the run summary, out-of-memory errors suggest a smaller batch."""
import json, warnings
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from test_resume import CFG, same_params
from dira_nb.pretrain import pretrain, PretrainConfig
from dira_nb.learner import Learner, NonFiniteLossError, TrainingWarning
from dira_nb.callback.core import Callback
from dira_nb.callback.guards import DiscriminatorMonitor, collapse_kind
from dira_nb.checkpoint import load_checkpoint

RUN = dict(CFG, checkpoint_every=1)


class PoisonAt(Callback):
    "Turn the restoration into NaN (or Inf) at the given steps of stage `stage` (1-based), as a diverging model would."
    order = 5
    def __init__(self, steps, stage="dir", value=float("nan")): self.steps, self.stage, self.value, self.n = set(steps), stage, value, 0
    def after_pred(self):
        if self.learn.stage != self.stage: return
        self.n += 1
        if self.n in self.steps: self.learn.pred["recon"] = self.learn.pred["recon"] * self.value


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["NaN", "Inf"])
def test_nonfinite_loss_stops_cleanly_with_checkpoint(tmp_path, value):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as e:
        pretrain(PretrainConfig(out=str(out), **RUN), cbs=[PoisonAt([3], value=value)], quiet=True)
    msg = str(e.value)
    assert "loss_res" in msg and "global step 2" in msg and "stopped cleanly" in msg and str(out / "resume.pt") in msg
    assert e.value.step == 2 and "loss_res" in e.value.terms
    assert load_checkpoint(out / "resume.pt")["meta"]["train_iter"] == 2           # the last good state is kept
    assert (out / "dir" / "nonfinite_step2.pt").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped_nonfinite" and "loss_res" in summary["error"]
    if value != value:                                   # NaN case: the user continues the run (without the poison)
        res = pretrain(resume=True, out=str(out), quiet=True)
        assert res["summary"]["status"] == "finished" and res["summary"]["resumed_from_step"] == 2


def test_nonfinite_loss_skipped_and_counted(tmp_path):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = pretrain(PretrainConfig(out=str(tmp_path / "run"), on_nan="skip", **RUN),
                       cbs=[PoisonAt([2, 3])], quiet=True)
    st = res["summary"]["stages"][0]
    assert st["skipped_steps"] == 2 and st["final"]["train_iter"] == 2             # 4 batches, 2 skipped
    kinds = [x["kind"] for x in res["summary"]["warnings"]]
    assert kinds.count("nonfinite_loss") == 2
    assert sum(issubclass(x.category, TrainingWarning) and "loss_res" in str(x.message) for x in w) == 2
    assert all(torch.isfinite(v).all() for v in res["method"].state_dict().values() if v.is_floating_point())


# ---- discriminator collapse -------------------------------------------------------------------------------------------
class ToyGAN(nn.Module):
    "A toy adversarial method whose discriminator reports the scores we script."
    name = "toy_gan"
    def __init__(self, scores):
        super().__init__(); self.g, self.d, self.scores, self.i = nn.Linear(4, 4), nn.Linear(4, 1), scores, 0
    def configure_optimizers(self):
        return {"G": torch.optim.SGD(self.g.parameters(), lr=0.01), "D": torch.optim.SGD(self.d.parameters(), lr=0.01)}
    def forward_train(self, b): return {"y": self.g(b)}
    def generator_loss(self, b, p): return {"loss": F.mse_loss(p["y"], b)}
    def discriminator_loss(self, b, p):
        r, f = self.scores[min(self.i, len(self.scores) - 1)]; self.i += 1
        return {"loss_critic": self.d(p["y"].detach()).pow(2).mean(), "critic_real": torch.tensor(r), "critic_fake": torch.tensor(f)}
    def validation_step(self, b): return self.generator_loss(b, self.forward_train(b))


@pytest.mark.parametrize("scores,kind", [((0.99, 0.01), "saturated"), ((0.5, 0.495), "indistinct")])
def test_discriminator_collapse_warns_and_is_recorded(scores, kind):
    dl = torch.utils.data.DataLoader(torch.randn(16, 4), batch_size=4)
    learn = Learner(ToyGAN([(0.8, 0.2)] * 2 + [scores] * 20), dl, device="cpu", quiet=True, cbs=[DiscriminatorMonitor(patience=5)])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always"); learn.fit(2)
    assert [x["kind"] for x in learn.warnings] == ["discriminator_collapse"]
    assert kind in learn.warnings[0]["message"] and learn.warnings[0]["step"] == 7      # 2 healthy + 5 collapsed
    assert any(issubclass(x.category, TrainingWarning) and "discriminator" in str(x.message) for x in w)


def test_healthy_discriminator_is_quiet():
    dl = torch.utils.data.DataLoader(torch.randn(16, 4), batch_size=4)
    learn = Learner(ToyGAN([(0.8, 0.2), (0.7, 0.35)] * 20), dl, device="cpu", quiet=True, cbs=[DiscriminatorMonitor(patience=2)])
    learn.fit(3)
    assert learn.warnings == [] and collapse_kind(0.7, 0.35) is None


def test_collapse_warning_reaches_run_summary(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pretrain(PretrainConfig(out=str(tmp_path / "run"), **RUN), cbs=[DiscriminatorMonitor(patience=1, margin=2.0)], quiet=True)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert any(x["kind"] == "discriminator_collapse" for x in summary["warnings"])
    assert summary["warnings"] == res["warnings"]


# ---- out of memory ------------------------------------------------------------------------------------------------------
class OOMAt(Callback):
    def after_pred(self): raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_oom_suggests_smaller_batch(tmp_path):
    class OOMModel(ToyGAN):
        def forward_train(self, b): raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    dl = torch.utils.data.DataLoader(torch.randn(16, 4), batch_size=4)
    with pytest.raises(torch.OutOfMemoryError, match=r"batch size 4.*smaller batch size.*smaller image size"):
        Learner(OOMModel([(0.8, 0.2)]), dl, device="cpu", quiet=True).fit(1)
    with pytest.raises(torch.OutOfMemoryError, match=r"global step 0 \(batch size 4, input \(4, 1, 32, 32\)\).*smaller batch size"):
        pretrain(PretrainConfig(out=str(tmp_path / "run"), **RUN), cbs=[OOMAt()], quiet=True)
