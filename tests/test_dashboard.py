"""Headless tests of the live dashboard (`dira_nb.viz.dashboard`): panels, throttling, pausing, the time budget,
no side effects on training, following `pretrain`'s stages, checkpoints, and script safety."""
import json, subprocess, sys, warnings
import numpy as np
import pytest
import torch
from dira_nb.callback.core import Callback
from dira_nb.core import seed_everything, tiny_batch
from dira_nb.learner import Learner
from dira_nb.methods.core import create_method
from dira_nb.viz.dashboard import PLOTLY_MIME, Dashboard, DashboardCallback, probe_set, quiet_eval

SIZE = 32
CORE = ("losses", "realism", "recon", "embedding", "attribution")


def _method(name="dira"):
    seed_everything(0)
    return create_method(name, image_size=SIZE, moco_k=64)


def _batches(n=4, b=4):
    x = tiny_batch(b, SIZE, seed=1)
    return [dict(x1=x, x2=x.flip(-1), target=x)] * n


def _dash(m, **kw):
    kw = {"n_show": 2, "reducer": "pca", **kw}
    return Dashboard(m, tiny_batch(8, 40), labels=np.arange(8) % 2, label_names=["normal", "lesion"], **kw)


class FakeClock(Callback):
    "Advance a fake clock by `dt` seconds after every batch (runs before the dashboard callback)."
    order = 80
    def __init__(self, dt): self.t, self.dt = 0.0, dt
    def __call__(self): return self.t
    def after_batch(self): self.t += self.dt


def test_scripts_never_import_ipywidgets():
    code = ("import sys, dira_nb.pretrain, dira_nb.cli, dira_nb.viz.recon, dira_nb.viz.realism, dira_nb.viz.embedding, "
            "dira_nb.viz.attribution; bad = [m for m in ('ipywidgets', 'dira_nb.viz.dashboard') if m in sys.modules]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_refresh_fills_every_panel_headless():
    m = _method()
    d = _dash(m)
    flags = [p.requires_grad for p in m.parameters()]
    assert [p.count for p in d.panels.values()] == [0] * 5
    d.refresh()
    for k in CORE:
        p = d.panels[k]
        assert p.error is None and p.count == 1, (k, p.error)
        bundles = [o["data"] for o in p.out.outputs]
        json.dumps(bundles)                                    # what goes to the front end is plain JSON
        if k == "losses": assert bundles[0]["text/plain"] == "no training steps yet"
        else: assert any(PLOTLY_MIME in b for b in bundles), k
    assert len(d.panels["recon"].figures[0].data) == 4 * 2     # target/input/restoration/error × 2 probes
    assert "critic(real)" in d.panels["realism"].note
    assert m.training and [p.requires_grad for p in m.parameters()] == flags
    assert "data-refreshes='1'" in d.status.value


def test_controls_recompute_only_their_panel():
    d = _dash(_method())
    d.refresh()
    d.attribution.value = "ig"
    assert d.panels["attribution"].count == 2 and "ig" in d.panels["attribution"].note
    d.reducer.value = "umap"
    assert d.panels["embedding"].count == 2 and "umap" in d.panels["embedding"].note
    d.probe_select.value = (3,)
    assert d.panels["recon"].count == 2 and d.panels["attribution"].count == 3
    assert d.panels["losses"].count == 1
    d.pause.value = True
    d.attribution.value = "gradcam"                              # paused: nothing recomputed
    assert d.panels["attribution"].count == 3


def test_callback_throttles_by_steps():
    m = _method()
    d = _dash(m)
    cb = DashboardCallback(d, every_steps=2, every_seconds=0, slow_every=2, max_overhead=None)
    Learner(m, _batches(5), cbs=[cb], device="cpu", quiet=True).fit(1)
    assert cb.refreshes == [(2, "fast"), (4, "all")]
    assert d.panels["recon"].count == 1 + 2 + 1                  # start, steps 2 and 4, end
    assert d.panels["embedding"].count == 1 + 1 + 1
    assert d.state == "done" and len(d.batch_losses) == 5


def test_callback_throttles_by_seconds_and_reads_controls_live():
    m = _method()
    d = _dash(m)
    clock = FakeClock(3.0)
    cb = DashboardCallback(d, every_steps=0, every_seconds=5, slow_every=10, max_overhead=None, draw_at_start=False)
    cb.clock = clock
    Learner(m, _batches(4), cbs=[clock, cb], device="cpu", quiet=True).fit(1)
    assert cb.refreshes == [(2, "fast"), (4, "fast")]          # t = 6 s and 12 s
    d.every_seconds.value, d.every_steps.value = 0, 1           # the control, not the constructor, decides
    cb2 = DashboardCallback(d, max_overhead=None, draw_at_start=False)
    Learner(m, _batches(3), cbs=[cb2], device="cpu", quiet=True).fit(1)
    assert [s for s, _ in cb2.refreshes] == [1, 2, 3]


def test_pause_and_time_budget():
    m = _method()
    d = _dash(m)
    d.pause.value = True
    cb = DashboardCallback(d, every_steps=1, max_overhead=None, draw_at_start=False)
    Learner(m, _batches(3), cbs=[cb], device="cpu", quiet=True).fit(1)
    assert cb.refreshes == [] and d.panels["recon"].count == 0
    d.pause.value = False
    clock = FakeClock(1e-3)                                     # training "takes" 1 ms per step: any refresh is too costly
    cb = DashboardCallback(d, every_steps=1, max_overhead=0.05, draw_at_start=False)
    cb.clock = clock
    Learner(m, _batches(4), cbs=[clock, cb], device="cpu", quiet=True).fit(1)
    assert len(cb.refreshes) == 1 and cb.skipped == 3


def test_dashboard_does_not_change_training():
    def fit(with_dash):
        m = _method()
        cbs = []
        if with_dash:
            cbs = [DashboardCallback(_dash(m, attribution="ig"), every_steps=1, slow_every=1, max_overhead=None)]
        Learner(m, _batches(3), cbs=cbs, device="cpu", quiet=True).fit(1)
        return m.state_dict(), torch.random.get_rng_state()
    (a, ra), (b, rb) = fit(True), fit(False)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert torch.equal(ra, rb)


def test_follows_pretrain_stages_and_reopens_checkpoint(tmp_path):
    from dira_nb.pretrain import PretrainConfig, pretrain
    m0 = _method()
    d = Dashboard(m0, "samples", n_probe=8, n_show=2, reducer="pca")
    cb = DashboardCallback(d, every_steps=1, slow_every=2, max_overhead=None)
    cfg = PretrainConfig(out=str(tmp_path / "run"), image_size=SIZE, epochs_dir=1, epochs_dira=1, batch_size=4,
                         max_images=8, moco_k=16, snapshots=0, device="cpu")
    res = pretrain(cfg, cbs=[cb], quiet=True)
    assert d.method is res["method"] and d.method is not m0     # the stage-2 model, not the one we started with
    assert d.state == "done" and d.panels["realism"].error is None
    assert len(cb.refreshes) >= 4                                # ≥ 2 steps in each of the two stages
    s = Dashboard.from_checkpoint(res["final"], data="samples", n_probe=8, reducer="pca")
    assert s.state == "checkpoint" and all(s.panels[k].count == 1 and s.panels[k].error is None for k in CORE)
    assert len(s.batch_losses) == 1 and "loss_res" in s.batch_losses[0]


def test_method_panels_and_failures_do_not_stop_training():
    m = _method("dir")                                           # no discriminator: realism panel says so
    m.dashboard_panels = lambda: {"mean intensity": _mean_fig, "broken": _broken}
    d = _dash(m)
    assert {"extra:mean intensity", "extra:broken"} <= set(d.panels)
    cb = DashboardCallback(d, every_steps=2, slow_every=1, max_overhead=None)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        Learner(m, _batches(2), cbs=[cb], device="cpu", quiet=True).fit(1)
    assert d.panels["extra:mean intensity"].error is None and d.panels["extra:mean intensity"].count == 3
    assert "RuntimeError: no luck" in d.panels["extra:broken"].error
    assert any("broken" in str(x.message) for x in w)
    assert "no discriminator" in d.panels["realism"].out.outputs[-1]["data"]["text/plain"]


def _mean_fig(method, images):
    import plotly.graph_objects as go
    return go.Figure(go.Bar(y=images.mean(dim=(1, 2, 3)).cpu().numpy()))


def _broken(method, images): raise RuntimeError("no luck")


def test_bad_arguments_are_named():
    m = _method()
    with pytest.raises(ValueError, match="reducer"): Dashboard(m, tiny_batch(4, SIZE), reducer="tsne")
    with pytest.raises(ValueError, match="attribution"): Dashboard(m, tiny_batch(4, SIZE), attribution="lime")
    with pytest.raises(ValueError, match="B×1×H×W"): probe_set(torch.rand(4, SIZE, SIZE))
    with pytest.raises(FileNotFoundError, match="nope.pt"): Dashboard.from_checkpoint("nope.pt")
    with pytest.raises(KeyError, match="unknown panel"): _dash(m).update("umap")


def test_quiet_eval_restores_state():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    net.train(); net[0].weight.requires_grad_(False)
    state = torch.random.get_rng_state()
    with quiet_eval(net):
        assert not net.training and not net[0].bias.requires_grad
        torch.rand(5)
    assert net.training and net[1].training and net[0].bias.requires_grad and not net[0].weight.requires_grad
    assert torch.equal(state, torch.random.get_rng_state())
