"""Real-browser test of the lesion-heatmap inspector: its notebook runs in JupyterLab inside headless Debian chromium,
the widget renders, and moving the threshold slider in the browser changes the IoU readout computed by the kernel.

Run alone with `pytest -m browser tests/browser -s`; same requirements as the dashboard test.
"""
from __future__ import annotations
import re, time
from pathlib import Path
import pytest
from lab_harness import chromium_page, jupyter_lab, open_and_run_all, require_browser

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "nbs" / "54_eval.inspector.ipynb"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
BAD_TEXT = ("Loading widget", "Error displaying widget", "model not found")
RUN_TIMEOUT_S = 240


def _running(page) -> bool:
    "True while any cell is queued or running (prompt `[*]:`)."
    return any(p.strip().startswith("[*]") for p in page.locator(".jp-InputPrompt").all_inner_texts())


@pytest.mark.browser
def test_heatmap_inspector_threshold_round_trips_in_jupyterlab():
    exe = require_browser()
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"IN_TEST": "1", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    with jupyter_lab([NOTEBOOK], env=env) as (base, root, log_path), chromium_page(exe) as page:
        open_and_run_all(page, base, NOTEBOOK.name)
        deadline = time.time() + RUN_TIMEOUT_S
        while _running(page):
            if time.time() > deadline:
                page.screenshot(path=str(ARTIFACTS / "inspector_timeout.png"))
                pytest.fail(f"the inspector notebook did not finish within {RUN_TIMEOUT_S} s; log:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.5)

        text = page.locator(".jp-Notebook").inner_text()
        for bad in BAD_TEXT: assert bad not in text, f"the notebook shows {bad!r}"
        tracebacks = [t for t in page.locator(".jp-OutputArea-output").all_inner_texts() if "Traceback" in t]
        assert not tracebacks, f"a cell failed:\n{tracebacks[0][-2000:]}"

        # the inspector: its readout (kernel-computed HTML with the IoU) next to a threshold slider and a plotly figure
        readout = page.locator(".widget-html", has_text="IoU").last
        readout.scroll_into_view_if_needed()
        box = readout.locator("xpath=ancestor::div[contains(@class,'widget-vbox')][1]")
        assert box.locator(".js-plotly-plot").count() >= 1, "the inspector's figure did not render"
        slider = box.locator(".widget-slider").first
        before = readout.inner_text()
        assert re.search(r"IoU \d\.\d{3}", before), before

        # move the threshold slider in the browser: the kernel recomputes the region and the readout changes
        handle = slider.locator(".noUi-handle").first
        handle.focus()
        for _ in range(6): handle.press("ArrowLeft")
        page.wait_for_function("([el, before]) => el.innerText !== before", arg=[readout.element_handle(), before],
                               timeout=30_000)
        after = readout.inner_text()
        assert after != before and re.search(r"IoU \d\.\d{3}", after), (before, after)
        box.screenshot(path=str(ARTIFACTS / "inspector.png"))
        print(f"\ninspector browser test: readout {before!r} → {after!r}; screenshot {ARTIFACTS / 'inspector.png'}")
