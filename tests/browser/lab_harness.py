"""Start a throw-away JupyterLab on 127.0.0.1 and drive it with headless Debian chromium through Python playwright.

Only for the browser tests: the server binds to 127.0.0.1 on a random free port, with the token disabled, in a temporary
root folder holding a *copy* of the notebook (so nothing executed is ever saved next to the sources), with temporary
settings that turn off notebook windowing, news and autosave.
"""
from __future__ import annotations
import contextlib, json, os, re, shutil, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
INSTALL_HINT = ("the browser test needs Debian chromium and Python playwright: "
                "`apt-get install -y chromium` and `pip install playwright==1.65.2` (no playwright browser download)")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]

# JupyterLab user settings for the test profile: every cell stays in the DOM (no windowing), no news toast, no autosave.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


def find_chromium() -> str | None:
    "Path of a chromium executable, or None."
    for name in CHROMIUM_CANDIDATES:
        p = shutil.which(name)
        if p: return p
    return None


def require_browser() -> str:
    "Path of chromium; fails the test (never skips it) when chromium or playwright is missing."
    import pytest
    exe = find_chromium()
    if exe is None: pytest.fail(f"chromium not found on PATH: {INSTALL_HINT}")
    try: import playwright.sync_api  # noqa: F401
    except ImportError: pytest.fail(f"playwright is not installed: {INSTALL_HINT}")
    return exe


def free_port() -> int:
    "A TCP port that is free on 127.0.0.1 right now."
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(folder: Path) -> None:
    for rel, value in LAB_SETTINGS.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(value))


@contextlib.contextmanager
def jupyter_lab(notebooks: list, # notebook files copied into the server's temporary root
                env: dict | None = None, # extra environment for the server and its kernels (e.g. IN_TEST=1)
                timeout: float = 60.0, # seconds to wait for the server to answer
               ):
    "Run JupyterLab on 127.0.0.1:<free port> in a temporary root; yields (base_url, root, log_path); stops it after."
    tmp = Path(tempfile.mkdtemp(prefix="dira_lab_"))
    root, settings, runtime = tmp / "root", tmp / "settings", tmp / "runtime"
    for d in (root, settings, runtime, tmp / "workspaces"): d.mkdir(parents=True)
    _write_settings(settings)
    for nb in notebooks: shutil.copy(nb, root / Path(nb).name)
    port = free_port()
    full_env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
                "JUPYTER_RUNTIME_DIR": str(runtime), "JUPYTER_DATA_DIR": str(tmp / "data"), **(env or {})}
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           "--IdentityProvider.token=", "--ServerApp.password=", "--allow-root", f"--ServerApp.root_dir={root}",
           "--ServerApp.port_retries=0", "--LabApp.expose_app_in_browser=True"]
    log_path = tmp / "jupyter.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {proc.returncode}; log:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status", timeout=2) as r:
                    if r.status == 200: break
            except OSError: pass
            if time.time() - t0 > timeout:
                raise TimeoutError(f"JupyterLab did not answer on {base} within {timeout} s; log:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield base, root, log_path
    finally:
        proc.terminate()
        try: proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill(); proc.wait(5)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def chromium_page(executable: str, # path of the chromium binary
                  width: int = 1400, height: int = 1000, # viewport
                 ):
    "A playwright page in a persistent headless chromium context on a fresh temporary profile."
    from playwright.sync_api import sync_playwright
    profile = tempfile.mkdtemp(prefix="dira_chromium_")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=executable, headless=True,
                                                   viewport={"width": width, "height": height}, args=CHROMIUM_ARGS)
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            yield page
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


def _started(page) -> bool:
    "True once some code cell is queued or has run (prompt `[*]:` or `[n]:`)."
    return any(re.match(r"\[(\*|\d+)\]", p) for p in page.locator(".jp-InputPrompt").all_inner_texts())

def run_all_cells(page, attempts: int = 3, # the kernel websocket connects only after the status first reads idle: retry
                  settle: float = 3.0, # seconds to wait before the first click
                 ) -> str:
    "Run every cell of the open notebook through Run → Run All Cells (falling back to the command); returns how."
    time.sleep(settle)
    for i in range(attempts):
        try:
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click(timeout=5000)
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click(timeout=5000)
            how = "menu"
        except Exception:
            page.keyboard.press("Escape")
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            how = "command"
        t0 = time.time()
        while time.time() - t0 < 15:
            if _started(page): return f"{how} (attempt {i + 1})"
            time.sleep(0.5)
    raise RuntimeError(f"Run All Cells did not start any cell after {attempts} attempts")


def open_and_run_all(page, base: str, # the server's base URL, from `jupyter_lab`
                     name: str, # the notebook's file name in the server root
                    ) -> str:
    "Open a notebook in JupyterLab, wait until its kernel is idle, and run every cell; returns how they were started."
    page.goto(f"{base}/lab/tree/{name}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    try: page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    except Exception: time.sleep(3)                      # older indicator markup: give the kernel a moment
    return run_all_cells(page)
