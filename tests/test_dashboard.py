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
    # the untrained state is drawn in before_fit, before the budget's clock starts: it does not count against it
    from dira_nb.callback.core import Callback
    seen = []
    class Spy(Callback):
        order = 95
        def after_batch(self): seen.append((cb.spent, d.panels["recon"].count))
    before = d.panels["recon"].count
    cb = DashboardCallback(d, every_steps=0, every_seconds=0, max_overhead=0.05, draw_at_start=True)
    Learner(m, _batches(2), cbs=[cb, Spy()], device="cpu", quiet=True).fit(1)
    assert seen == [(0.0, before + 1)] * 2, seen
    assert cb.spent > 0 and d.panels["recon"].count == before + 2         # the final drawing does count


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
    its = [r["iter"] for r in d.batch_losses]                    # stage 2 continues the step count of stage 1
    assert its == sorted(its) and len(set(its)) == len(its) == len(cb.refreshes)
    assert d.history.steps[-1] == its[-1]
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


# ----- history, fixed embedding map, lesions, layout (issue 14) ---------------------------------------------------------
def _fit_with(d, steps=4, every=1, slow_every=1, valid=None):
    m = d.method
    cb = DashboardCallback(d, every_steps=every, every_seconds=0, slow_every=slow_every, max_overhead=None)
    learn = Learner(m, _batches(steps), valid, cbs=[cb], device="cpu", quiet=True)
    learn.fit(1)
    return learn, cb


def test_history_keeps_every_refresh_and_the_slider_shows_older_steps():
    d = _dash(_method())
    _fit_with(d, steps=4)
    assert d.history.steps == [0, 1, 2, 3, 4]
    live_recon = d.panels["recon"].figures[0].data[4].z.copy()       # restoration (row 3) of the first probe, now
    d.show_step(1)
    p = d.panels["recon"]
    assert p.step == 1 and p.shown == "history" and "data-shown='history'" in p.header.value
    st = d.history.at("recon", 1)
    np.testing.assert_allclose(p.figures[0].data[0].z, st["t"][0][::-1] / 255, atol=1e-6)   # the stored step-1 target row
    assert not np.array_equal(p.figures[0].data[4].z, live_recon)   # the restoration differs from the live one
    assert all(d.panels[k].step == 1 for k in CORE if d.history.at(k, 1)["step"] == 1)
    assert d.history_slider.value == 1 and "showing step 1" in d.history_label.value
    # a refresh while looking at the past counts but does not move the panels
    n = p.count
    d.update("fast")
    assert p.count == n + 1 and p.step == 1
    d.show_step(None)                                                  # back to live
    assert p.step == 4 and p.shown == "live" and d.history_slider.value == d.history_slider.max
    d.history_slider.value = 0                                          # the slider is the same control
    assert p.step == 0 and d.viewing == 0


def test_history_memory_is_bounded_and_thinned_evenly():
    d = _dash(_method(), history_size=4)
    _fit_with(d, steps=8, slow_every=4)
    for k, lst in d.history.states.items():
        assert 2 <= len(lst) <= 4, (k, len(lst))
        assert lst[0]["step"] == 0 and lst[-1]["step"] == 8             # the whole span survives thinning
        for s in lst: assert not any(hasattr(v, "to_json") for v in s.values())   # states, never figures
    assert d.history.nbytes < 200_000                                   # 8 probes of 32 px: kilobytes, not megabytes


def test_step0_vs_now_comparison_and_probe_scores_curve():
    d = _dash(_method())
    _fit_with(d, steps=3)
    emb = d.panels["embedding"]
    curve = emb.figures[1]
    assert len(curve.data[0].x) == len(d.history.series("embedding")) == 4   # retrieval over steps 0..3
    assert [t.name for t in curve.data] == ["view retrieval", "kNN accuracy"]
    d.compare.value = "step 0 | now"
    assert emb.out2.layout.display != "none" and emb.shown == "compare"
    first, now = d.history.first("embedding"), d.history.at("embedding")
    left, right = emb.figures[0], emb.figures[1]
    xy = lambda fig: np.concatenate([np.c_[t.x, t.y] for t in fig.data])
    assert sorted(map(tuple, xy(left).round(4))) == sorted(map(tuple, first["xy"].round(4)))
    assert sorted(map(tuple, xy(right).round(4))) == sorted(map(tuple, now["xy"].round(4)))
    assert left.layout.xaxis.range == right.layout.xaxis.range          # same axes: movement is visible
    assert d.grid.layout.grid_template_columns == "minmax(0, 1fr)"      # one panel per row while comparing
    d.compare.value = "one step"
    assert emb.out2.layout.display == "none"


@pytest.mark.parametrize("how", ["pca", pytest.param("umap", marks=pytest.mark.slow)])
def test_embedding_map_is_fitted_once(how):
    d = _dash(_method(), reducer=how)
    d.refresh(); d.refresh()                                            # no training in between: same features
    a, b = d.history.series("embedding")[-1]["xy"], d.history.at("embedding")["xy"]
    d.update("embedding")
    np.testing.assert_array_equal(d.history.at("embedding")["xy"], a)
    basis = d.bases[how]
    _fit_with(d, steps=2)
    assert basis.n_fits == 1 and basis.fitted_step == 0 and d.bases[how] is basis   # reused, never refitted
    assert f"{how} map fitted at step 0" in d.panels["embedding"].note
    d.refit_map()
    assert basis.n_fits == 2 and basis.fitted_step == 2


def test_lesion_probes_outlines_and_pointing_game():
    d = Dashboard(_method(), "samples", n_probe=12, n_show=3, reducer="pca")
    assert d.lesions is not None and all(not d.lesions[i].empty for i in d.selected)   # lesion images first
    assert d.framing == "whole image"                                   # restorations show the same framing as attributions
    assert torch.allclose(d.targets, d.probes, atol=1e-3)
    d.refresh()
    att = d.panels["attribution"].figures[0]
    outlines = [t for t in att.data if t.type == "scatter" and t.mode == "lines"]
    peaks = [t for t in att.data if t.type == "scatter" and t.mode == "markers"]
    assert len(outlines) == len(peaks) == 3
    assert all(a.text.endswith((" · hit", " · miss")) for a in att.layout.annotations[:3])
    assert "pointing game" in d.panels["attribution"].note
    rec = d.panels["recon"].figures[0]
    assert sum(t.type == "scatter" for t in rec.data) == 2 * 3          # outline on target and restoration rows
    # the outline is where the mask is: every outline vertex lies on the boundary of the probe's lesion mask
    i = d.selected[0]
    m = d.lesions[i].mask
    ys, xs = np.nonzero(m)
    ox = [v for v in outlines[0].x if v is not None]; oy = [v for v in outlines[0].y if v is not None]
    assert xs.min() - 0.5 == min(ox) and xs.max() + 0.5 == max(ox) and ys.min() - 0.5 == min(oy) and ys.max() + 0.5 == max(oy)


def test_probe_picker_toggles_without_ctrl_click():
    d = _dash(_method())
    d.refresh()
    n = d.panels["recon"].count
    d._probe_toggles[5].value = True                                    # one click adds a probe
    assert 5 in d.probe_select.value and d.panels["recon"].count == n + 1
    assert len(d.panels["recon"].figures[0].data) == 4 * 3
    d.probe_select.value = (2,)                                         # code and picker stay in sync
    assert [t.value for t in d._probe_toggles].count(True) == 1 and d._probe_toggles[2].value
    assert "#2" in d.probe_picker.get_title(0)


def test_loss_panel_validation_smoothing_chance_and_realism_labels():
    m = _method()
    d = _dash(m, smoothing=0.5)
    _fit_with(d, steps=3, valid=_batches(1))
    fig = d.panels["losses"].figures[0]
    assert any(t.name == "valid" for t in fig.data)                     # validation curve
    assert any(s.type == "line" and abs(s.y0 - np.log(64 + 1)) < 1e-6 for s in fig.layout.shapes)   # InfoNCE chance
    lg = fig.layout.legend                                              # below the x-axis title, clear of the toolbar:
    assert lg.orientation == "h" and lg.yref == "container" and lg.y == 0 and lg.yanchor == "bottom"   # its own strip
    assert fig.layout.margin.b >= 40                                    # ... which the bottom margin makes room for
    smoothed = [t for t in fig.data if t.name == "train"][0].y
    n = d.panels["losses"].count
    d.smoothing.value = 0.0
    raw = [t for t in d.panels["losses"].figures[0].data if t.name == "train"][0].y
    assert d.panels["losses"].count == n and not np.allclose(smoothed, raw)     # a redraw, not a recomputation
    titles = [a.text for a in d.panels["realism"].figures[-1].layout.annotations]
    assert any(t.endswith(" real") for t in titles) and any(t.endswith(" restored") for t in titles)
    assert d.grid.layout.grid_template_columns == "repeat(2, minmax(0, 1fr))"   # two panels per row


def test_no_notebook_exports_when_a_student_runs_it():
    "Every notebook's export cell (students run the tutorial, the inspector, the dashboard ...) is the guarded one below."
    from pathlib import Path
    nbs = sorted((Path(__file__).resolve().parents[1] / "nbs").glob("*.ipynb"))
    assert len(nbs) > 40
    for p in nbs:
        cells = ["".join(c["source"]) for c in json.loads(p.read_text())["cells"]
                 if c["cell_type"] == "code" and "nbdev_export" in "".join(c["source"])]
        assert all("DIRA_NB_EXPORT" in c for c in cells), f"{p.name}: an unguarded nbdev_export() cell"


def test_inspector_notebook_export_cell_is_harmless(tmp_path, monkeypatch):
    "The inspector notebook's last cell (students run it) neither raises outside the repository nor exports by default."
    from pathlib import Path
    nb = json.loads((Path(__file__).resolve().parents[1] / "nbs" / "54_eval.inspector.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code" and "nbdev_export" in "".join(c["source"])]
    assert len(cells) == 1 and cells[0].startswith("#| hide") and "DIRA_NB_EXPORT" in cells[0]
    monkeypatch.chdir(tmp_path)                                  # a student's folder: no repository around
    monkeypatch.delenv("DIRA_NB_EXPORT", raising=False)
    calls = []
    import nbdev
    monkeypatch.setattr(nbdev, "nbdev_export", lambda *a, **k: calls.append(1))
    exec(compile(cells[0], "54_eval.inspector.ipynb", "exec"), {})
    monkeypatch.setenv("DIRA_NB_EXPORT", "1")
    exec(compile(cells[0], "54_eval.inspector.ipynb", "exec"), {})          # asked, but outside the repository
    assert calls == []
    (tmp_path / "nbs").mkdir(); (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.chdir(tmp_path / "nbs")
    exec(compile(cells[0], "54_eval.inspector.ipynb", "exec"), {})          # asked, in a repository's nbs/
    assert calls == [1]


def test_probe_title_and_attribution_hint_name_labels_not_lesions_without_ground_truth():
    "X-rays labelled normal/pneumonia have no lesion masks: the dashboard says 'labelled pneumonia', not 'with a lesion'."
    m = _method()
    d = Dashboard(m, tiny_batch(8, 40), labels=np.arange(8) % 2, label_names=["normal", "pneumonia"], n_show=2, reducer="pca")
    assert "(4 of 8 labelled pneumonia)" in d.probe_picker.get_title(0)
    assert "green outline" not in d.panels["attribution"].hint
