"""Issue 14: training in a background thread keeps the dashboard's controls live, and watching never changes the result."""
import time
import numpy as np
import torch
from dira_nb.core import seed_everything
from dira_nb.methods.core import create_method
from dira_nb.learner import Learner
from dira_nb.viz.dashboard import Dashboard, DashboardCallback
from dira_nb.viz.live import BackgroundTraining


def _run(n_batches=10):
    seed_everything(0)
    m = create_method("dira", image_size=32, moco_k=16)
    g = torch.Generator().manual_seed(0)
    batches = [dict(x1=torch.rand(4, 1, 32, 32, generator=g), x2=torch.rand(4, 1, 32, 32, generator=g),
                    target=torch.rand(4, 1, 32, 32, generator=g), index=torch.arange(4) + 4 * i) for i in range(n_batches)]
    return m, Learner(m, batches, batches[:2], device="cpu", quiet=True)


def _until(cond, timeout=120):
    t0 = time.time()
    while not cond():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)


def test_controls_act_during_background_training_and_the_weights_do_not_change():
    m0, l0 = _run(); l0.fit(2)
    reference = {k: v.clone() for k, v in m0.state_dict().items()}

    m, learn = _run()
    probes = torch.linspace(0, 1, 6 * 32 * 32).reshape(6, 1, 32, 32)
    dash = Dashboard(m, probes, labels=np.arange(6) % 2, n_show=2, reducer="pca")
    bg = BackgroundTraining(learn, 2, dashboard=dash, cbs=[DashboardCallback(dash, every_steps=3, every_seconds=0, max_overhead=None)])
    _until(lambda: learn.train_iter >= 4)
    bg.pause_button.value = True                                   # the button, as a teacher clicks it
    _until(lambda: "training paused at step" in dash.status.value)   # said only once the training thread waits
    step, n = learn.train_iter, dash.panels["attribution"].count
    assert bg.running and bg.control.paused_at == step and f"paused at step {step}" in dash.status.value
    dash.attribution.value = "occlusion"                           # acts now, while training is paused mid-run
    assert dash.panels["attribution"].count == n + 1 and "occlusion" in dash.panels["attribution"].note
    dash.probe_select.value = (3,)
    time.sleep(0.3)
    assert learn.train_iter == step                                # nothing trained while paused
    bg.pause_button.value = False
    assert bg.wait(300) and bg.state == "done", bg.error_trace
    assert learn.train_iter == 20 and dash.panels["losses"].count >= 4
    got = m.state_dict()
    assert all(torch.equal(got[k], reference[k]) for k in reference), "watching changed what was learnt"


def test_stop_and_save_from_the_button(tmp_path):
    m, learn = _run(n_batches=40)
    dash = Dashboard(m, torch.linspace(0, 1, 4 * 32 * 32).reshape(4, 1, 32, 32), n_show=1, reducer="pca")
    bg = BackgroundTraining(learn, 3, dashboard=dash, checkpoint=tmp_path / "stopped.pt")
    _until(lambda: learn.train_iter >= 2)
    bg.stop_button.click()
    assert bg.wait(120) and bg.state == "stopped" and learn.train_iter < 120
    assert (tmp_path / "stopped.pt").exists() and "stopped; saved" in dash.status.value
    back = Dashboard.from_checkpoint(tmp_path / "stopped.pt", data=torch.rand(4, 1, 32, 32), reducer="pca")
    assert back.method.config.image_size == 32
