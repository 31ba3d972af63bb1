"""Real-browser test of the runs-side-by-side page (issue 14): two real (tiny) runs, one comparison page, opened in
headless Debian chromium — both runs render in every section, plotly draws the overlaid losses, every picture loads.

Run alone with `pytest -m browser tests/browser/test_compare_browser.py -s`.
"""
from __future__ import annotations
import tempfile
from pathlib import Path
import pytest
from lab_harness import chromium_page, require_browser
from test_dashboard_browser import ARTIFACTS


@pytest.mark.browser
def test_two_runs_side_by_side_render_in_chromium():
    exe = require_browser()
    from dira_nb.pretrain import PretrainConfig, pretrain
    from dira_nb.compare import write_comparison
    root = Path(tempfile.mkdtemp(prefix="dira_compare_"))
    for m in ("di", "dira"):
        pretrain(PretrainConfig(out=str(root / m), method=m, image_size=32, epochs_dir=1, epochs_dira=1, batch_size=8,
                                max_images=16, snapshots=0, probe=8), quiet=True)
    page_path = write_comparison([root / "di", root / "dira"], root / "di_vs_dira", n_probe=16, how="pca", n_show=4, n_attr=2)
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page(exe, width=1500, height=1000) as page:
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(page_path.as_uri())
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
        assert page.locator("h1").inner_text() == "dira_nb runs side by side"
        rows = page.locator("table").first.locator("tr").all_inner_texts()
        assert len(rows) == 3 and rows[1].startswith("di") and rows[2].startswith("dira"), rows
        legend = page.evaluate("[...document.querySelectorAll('.js-plotly-plot .legendtext')].map(e => e.textContent)")   # SVG: no innerText
        assert set(legend) == {"di", "dira"}, legend                       # both runs drawn in the loss panels
        labels = page.locator("div[style*='font-weight:600']").all_inner_texts()
        assert labels.count("di") == 3 and labels.count("dira") == 3, labels   # restorations, realism, embeddings
        sizes = page.evaluate("[...document.images].map(i => [i.naturalWidth, i.complete])")
        assert len(sizes) == 5 and all(w > 0 and ok for w, ok in sizes), sizes   # every picture decoded
        page.screenshot(path=str(ARTIFACTS / "compare_di_vs_dira.png"), full_page=True)
        assert not errors, errors
