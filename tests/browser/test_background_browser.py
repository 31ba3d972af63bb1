"""Real-browser test of training in the background (issue 14): the cell returns, training goes on, the dashboard keeps
refreshing, and its buttons and controls act *during* training — pause, a new attribution method, resume, stop & save.

Run alone with `pytest -m browser tests/browser/test_background_browser.py -s` (same needs as the dashboard test).
"""
from __future__ import annotations
import re, tempfile, time
from pathlib import Path
import nbformat
import pytest
from lab_harness import chromium_page, jupyter_lab, open_and_run_all, require_browser
from test_dashboard_browser import ARTIFACTS, BAD_TEXT, SNAPSHOT_JS, _errors_in_outputs

REPO = Path(__file__).resolve().parents[2]
CELLS = [
    f"""import torch
from dira_nb.core import seed_everything, limit_threads
from dira_nb.data.phantom import load_samples
from dira_nb.data.loaders import make_dataloaders
from dira_nb.methods.core import create_method
from dira_nb.learner import Learner
from dira_nb.viz.dashboard import Dashboard, DashboardCallback
from dira_nb.viz.live import BackgroundTraining
limit_threads(); seed_everything(0)
train = torch.utils.data.Subset(load_samples(split="train", dir={str(REPO / 'data_samples')!r}), range(32))
method = create_method("dira", image_size=32, moco_k=16)
dl, _ = make_dataloaders(train, method.views(32), batch_size=8)
learn = Learner(method, dl, None, device="cpu", quiet=True)
dash = Dashboard(method, load_samples(split="valid", dir={str(REPO / 'data_samples')!r}), n_probe=12, n_show=2, reducer="pca")
dash""",
    """training = BackgroundTraining(learn, 1000, dashboard=dash, checkpoint="stopped.pt",
                              cbs=[DashboardCallback(dash, every_steps=2, every_seconds=0, slow_every=2, max_overhead=None)])
print("cell returned while training runs")""",
]


def _status(page) -> dict:
    return page.evaluate("""() => { const s = document.querySelector('.dira-dashboard .dira-status');
        return s ? {state: s.dataset.state, step: +s.dataset.step, text: s.innerText} : null; }""")


@pytest.mark.browser
def test_background_training_keeps_the_dashboard_live_and_controllable():
    exe = require_browser()
    ARTIFACTS.mkdir(exist_ok=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = Path(tempfile.mkdtemp()) / "background.ipynb"
    nbformat.write(nb, path)
    env = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    with jupyter_lab([path], env=env) as (base, root, log_path), chromium_page(exe) as page:
        open_and_run_all(page, base, path.name)
        page.locator(".jp-OutputArea-output", has_text="cell returned while training runs").wait_for(timeout=120_000)
        # the kernel is idle now (the cell returned) while training goes on: panels keep changing
        seen, t0 = set(), time.time()
        while len(seen) < 3:
            snap = page.evaluate(SNAPSHOT_JS)[0]
            if snap["state"] == "training": seen.add((snap["panels"]["recon"]["updates"], snap["panels"]["recon"]["hash"]))
            assert time.time() - t0 < 240, f"the dashboard did not refresh during background training: {seen}\n{_errors_in_outputs(page)}"
            time.sleep(0.2)
        # pause the dashboard's updates: panels stop changing while training (the step counter) goes on
        page.locator(".dira-dashboard button", has_text="pause updates").click()
        recon_updates = lambda: page.evaluate(SNAPSHOT_JS)[0]["panels"]["recon"]["updates"]
        frozen, t1 = recon_updates(), time.time()
        while True:                                              # a refresh under way when clicking may still land
            time.sleep(2.0)
            now = recon_updates()
            if now == frozen: break
            frozen = now
            assert time.time() - t1 < 60, "the panels kept refreshing after 'pause updates'"
        s0 = _status(page)["step"]
        page.wait_for_function(f"() => +document.querySelector('.dira-dashboard .dira-status').dataset.step >= {s0 + 4}",
                               timeout=120_000)
        assert recon_updates() == frozen, "a panel refreshed while updates were paused"
        page.locator(".dira-dashboard button", has_text="pause updates").click()
        # pause training with the dashboard's button
        page.locator(".dira-dashboard button", has_text="pause training").click()
        page.wait_for_function("() => document.querySelector('.dira-dashboard .dira-status').innerText.includes('training paused at step')",
                               timeout=60_000)                # shown only once the training thread waits
        step = int(re.search(r"paused at step (\d+)", _status(page)["text"]).group(1))
        # a control acts while training is paused mid-run
        head = page.locator(".dira-dashboard .dira-panel-attribution .dira-panel-head")
        before = int(head.get_attribute("data-updates"))
        page.locator(".dira-dashboard .widget-dropdown select").first.select_option("ig")
        page.wait_for_function("""(before) => { const h = document.querySelector('.dira-dashboard .dira-panel-attribution .dira-panel-head');
                                     return h && +h.dataset.updates > before && h.innerText.includes('ig ·'); }""", arg=before, timeout=120_000)
        time.sleep(1.0)
        assert _status(page)["step"] == step, "training went on while paused"
        page.screenshot(path=str(ARTIFACTS / "background_paused.png"))
        # resume, let it train a little, then stop & save
        page.locator(".dira-dashboard button", has_text="pause training").click()
        page.wait_for_function(f"() => +document.querySelector('.dira-dashboard .dira-status').dataset.step > {step}", timeout=120_000)
        # 1000 epochs (4000 steps) cannot end before this click, on any machine: the button is enabled only while training
        assert _status(page)["state"] == "training", f"training is not running before 'stop & save': {_status(page)}"
        page.locator(".dira-dashboard button", has_text="stop & save").click()
        page.wait_for_function("() => document.querySelector('.dira-dashboard .dira-status').innerText.includes('stopped; saved')",
                               timeout=120_000)
        text = page.locator(".jp-Notebook").inner_text()
        for bad in BAD_TEXT: assert bad not in text, f"the notebook shows {bad!r}"
        assert not _errors_in_outputs(page), _errors_in_outputs(page)
        assert (root / "stopped.pt").exists(), "stop & save wrote no checkpoint"
        page.locator(".dira-dashboard").first.screenshot(path=str(ARTIFACTS / "background_dashboard.png"))
        # a 1500-px-wide screen tall enough for the whole dashboard, for the screenshots
        box = page.locator(".dira-dashboard").first.bounding_box()
        page.set_viewport_size({"width": 1500, "height": int(min(5000, max(1000, box["height"] + 300)))})
        time.sleep(1.0)
        page.locator(".dira-dashboard").first.screenshot(path=str(ARTIFACTS / "background_dashboard_full.png"))
        # history: drag the slider to its start; every panel shows the stored first refresh
        head = page.locator(".dira-dashboard .dira-panel-recon .dira-panel-head")
        last = int(head.get_attribute("data-step"))
        track = page.locator(".dira-dashboard .dira-history-slider .noUi-target").first
        track.scroll_into_view_if_needed()
        box = track.bounding_box()
        page.mouse.click(box["x"] + 1, box["y"] + box["height"] / 2)
        page.wait_for_function("""() => { const h = document.querySelector('.dira-dashboard .dira-panel-recon .dira-panel-head');
                                     return h && h.dataset.shown === 'history'; }""", timeout=60_000)
        older = int(head.get_attribute("data-step"))
        assert older < last, f"the history slider did not show an older step ({older} vs {last})"
        assert "showing step" in page.locator(".dira-dashboard .dira-history").inner_text()
        page.locator(".dira-dashboard").first.screenshot(path=str(ARTIFACTS / "background_history.png"))
        # step 0 | now: two columns of plots in the panels
        page.locator(".dira-dashboard button", has_text="live").first.click()
        page.locator(".dira-dashboard button", has_text="step 0 | now").click()
        page.wait_for_function("""() => { const p = document.querySelector('.dira-dashboard .dira-panel-embedding');
                                     return p && p.querySelector('.dira-panel-head').dataset.shown === 'compare'
                                            && p.querySelectorAll('.js-plotly-plot').length >= 2; }""", timeout=60_000)
        page.locator(".dira-dashboard").first.screenshot(path=str(ARTIFACTS / "background_compare.png"))
        print(f"\nbackground browser test: {len(seen)} recon states while training; paused at step {step}; "
              f"history slider showed step {older} (last {last}); "
              f"screenshots in {ARTIFACTS}")
