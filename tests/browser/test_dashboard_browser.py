"""Real-browser test of the live dashboard: the tutorial runs in JupyterLab inside headless Debian chromium.

Run alone with `pytest -m browser tests/browser -s`. Needs `apt-get install -y chromium` and
`pip install playwright==1.65.2` (playwright's own browser download is never used). It fails, never skips, when they
are missing. The screenshot goes to tests/browser/artifacts/ (git-ignored); the path is printed.
"""
from __future__ import annotations
import re, time
from pathlib import Path
import pytest
from lab_harness import chromium_page, jupyter_lab, open_and_run_all, require_browser

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "nbs" / "90_tutorial.dira_in_20_minutes.ipynb"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
BAD_TEXT = ("Loading widget", "Error displaying widget", "model not found")
RUN_TIMEOUT_S = 300       # the whole tutorial; ~30-60 s on a quiet 2-core machine

# One snapshot of every dashboard on the page: its state and, per panel, the update counter, the number of plotly
# plots and a cheap hash of the rendered plots (so a change of the *drawing* is seen, not only of the counter).
SNAPSHOT_JS = """() => Array.from(document.querySelectorAll('.dira-dashboard')).map(d => {
  const st = d.querySelector('.dira-status');
  const out = {state: st ? st.dataset.state : null, panels: {}};
  for (const p of d.querySelectorAll('.dira-panel')) {
    const h = p.querySelector('.dira-panel-head'); if (!h) continue;
    const plots = p.querySelectorAll('.js-plotly-plot');
    let hash = 0;
    for (const pl of plots) { const s = pl.innerHTML; for (let i = 0; i < s.length; i += 5) hash = (hash * 31 + s.charCodeAt(i)) | 0; }
    out.panels[h.dataset.panel] = {updates: +h.dataset.updates, step: h.dataset.step, plots: plots.length, hash: hash,
                                  failed: h.dataset.failed, text: h.innerText};
  }
  return out;
})"""

# The runs-side-by-side widget: run names, and per panel (row by row, one column per run) its plots.
COMPARISON_JS = """() => { const c = document.querySelector('.dira-comparison'); if (!c) return null;
  return {names: [...c.querySelectorAll('.dira-run-name')].map(e => e.childNodes[0].textContent.trim()),
          panels: [...c.querySelectorAll('.dira-panel')].map(p => { const h = p.querySelector('.dira-panel-head');
                     return {panel: h ? h.dataset.panel : null, failed: h ? h.dataset.failed : null,
                             plots: p.querySelectorAll('.js-plotly-plot').length}; }),
          loss_plots: [...c.querySelectorAll('.js-plotly-plot')].filter(e => !e.closest('.dira-panel')).length}; }"""


def _errors_in_outputs(page) -> str:
    "Text of error outputs (tracebacks) in the notebook, for failure messages."
    texts = page.locator(".jp-OutputArea-output").all_inner_texts()
    return "\n---\n".join(t[-1500:] for t in texts if "Traceback" in t or "Error" in t)[-6000:]


@pytest.mark.browser
def test_tutorial_dashboard_live_in_jupyterlab():
    exe = require_browser()
    assert NOTEBOOK.exists(), f"{NOTEBOOK} is missing"
    t_start = time.time()
    ARTIFACTS.mkdir(exist_ok=True)
    console_errors = []
    env = {"IN_TEST": "1", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    with jupyter_lab([NOTEBOOK], env=env) as (base, root, log_path), chromium_page(exe) as page:
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        how = open_and_run_all(page, base, NOTEBOOK.name)

        # ---- watch the live dashboard while the tutorial trains ---------------------------------------------------------
        seen = {"recon": set(), "embedding": set()}
        finished = page.locator(".jp-OutputArea-output", has_text="Tutorial finished in")
        deadline, scrolled = time.time() + RUN_TIMEOUT_S, False
        while True:
            snaps = page.evaluate(SNAPSHOT_JS)
            if snaps:
                if not scrolled:
                    page.locator(".dira-dashboard").first.scroll_into_view_if_needed(); scrolled = True
                live = snaps[0]
                if live["state"] == "training":
                    for k in seen:
                        p = live["panels"].get(k)
                        if p and p["plots"]: seen[k].add((p["updates"], p["hash"]))
            if finished.count(): break
            if time.time() > deadline:
                page.screenshot(path=str(ARTIFACTS / "timeout.png"))
                pytest.fail(f"the tutorial did not finish within {RUN_TIMEOUT_S} s (run via {how}); errors:\n"
                            f"{_errors_in_outputs(page)}\nserver log tail:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        t_run = time.time() - t_start

        # ---- every panel of every dashboard rendered ---------------------------------------------------------------
        text = page.locator(".jp-Notebook").inner_text()
        for bad in BAD_TEXT: assert bad not in text, f"the notebook shows {bad!r}"
        assert not _errors_in_outputs(page), f"a cell failed:\n{_errors_in_outputs(page)}"
        snaps = page.evaluate(SNAPSHOT_JS)
        assert len(snaps) == 2, f"expected the live and the checkpoint dashboards, found {len(snaps)}"
        for i, s in enumerate(snaps):
            assert set(s["panels"]) >= {"losses", "realism", "recon", "embedding", "attribution"}, s["panels"].keys()
            for k, p in s["panels"].items():
                assert p["failed"] == "0", f"dashboard {i}, panel {k} failed: {p['text']}"
                assert p["plots"] >= 1 and p["updates"] >= 1, f"dashboard {i}, panel {k} has no plot: {p}"

        # ---- the side-by-side comparison (section 8): both runs, every panel rendered ---------------------------------
        comp = page.evaluate(COMPARISON_JS)
        assert comp is not None, "the di | dira comparison widget is missing"
        assert comp["names"] == ["di", "dira"], comp["names"]
        assert len(comp["panels"]) == 8 and all(p["failed"] == "0" for p in comp["panels"]), comp["panels"]
        by = {(p["panel"], i % 2): p["plots"] for i, p in enumerate(comp["panels"])}
        assert by[("recon", 0)] == 0 and by[("recon", 1)] >= 1, by          # di has no decoder; dira restores
        assert all(by[(k, j)] >= 1 for k in ("attribution", "embedding") for j in (0, 1)), by
        assert comp["loss_plots"] >= 1, "no overlaid loss curves"
        ARTIFACTS.mkdir(exist_ok=True)                                      # a viewport tall enough for the whole widget
        comparison = page.locator(".dira-comparison")
        page.set_viewport_size({"width": 1400, "height": int(min(6000, max(1000, comparison.bounding_box()["height"] + 400)))})
        time.sleep(1.0)
        comparison.scroll_into_view_if_needed()
        comparison.screenshot(path=str(ARTIFACTS / "comparison.png"))
        page.set_viewport_size({"width": 1400, "height": 1000})
        # ---- the static copy (`snapshot`) is plain output, outside every widget -----------------------------------------
        static = page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')].filter(e => !e.closest('.dira-panel, .dira-comparison, .dira-dashboard')).length")
        assert static >= 5, f"expected the snapshot's plain plotly outputs, found {static}"

        # ---- the reconstruction and embedding panels changed at least twice while training ----------------------------
        for k, vals in seen.items():
            assert len({h for _, h in vals}) >= 3 and len({u for u, _ in vals}) >= 3, \
                f"panel {k} did not change at least twice during training: {sorted(vals)}"

        # ---- a control round-trips to the kernel: pick another attribution method in the live dashboard ----------------
        live = page.locator(".dira-dashboard").first
        head = live.locator(".dira-panel-attribution .dira-panel-head")
        before = int(head.get_attribute("data-updates"))
        select = live.locator(".widget-dropdown select").first
        current = select.input_value()
        target = "ig" if current != "ig" else "gradcam"
        select.scroll_into_view_if_needed()
        select.select_option(target)
        page.wait_for_function(
            """([before, target]) => { const h = document.querySelector('.dira-dashboard .dira-panel-attribution .dira-panel-head');
                 return h && +h.dataset.updates > before && h.innerText.includes(target + ' ·'); }""",
            arg=[before, target], timeout=60_000)
        assert re.search(rf"\b{target} ·", head.inner_text())

        # ---- screenshots -------------------------------------------------------------------------------------------
        page.screenshot(path=str(ARTIFACTS / "jupyterlab.png"))
        box = live.bounding_box()                               # a viewport tall enough for the whole dashboard
        page.set_viewport_size({"width": 1400, "height": int(min(6000, max(1000, box["height"] + 400)))})
        time.sleep(1.0)
        live.scroll_into_view_if_needed()
        shot = ARTIFACTS / "dashboard.png"
        live.screenshot(path=str(shot))
        widget_errors = [e for e in console_errors if re.search(r"widget|model|plotly", e, re.I)]
        print(f"\nbrowser test: run via {how}; tutorial ran in {t_run:.0f} s, test took {time.time() - t_start:.0f} s; "
              f"recon states seen while training {len(seen['recon'])}, embedding {len(seen['embedding'])}; "
              f"screenshot {shot}; console errors {len(console_errors)}")
        assert not widget_errors, f"widget errors in the browser console: {widget_errors[:5]}"
