"LD (Local Discrimination): losses on hand-made embeddings, view alignment, short training runs, pretrain end to end."
import math
import pytest
import torch
import torch.nn.functional as F

from dira_nb.core import seed_everything
from dira_nb.methods.core import create_method, list_methods
from dira_nb.methods.ld import (LD, LDConfig, HalvingAdam, batch_criterion, patch_features, pd_loss, mixup_targets,
                                region_features, region_loss, entropy_loss)
from dira_nb.data.ld_views import LDViews, view2_geometry, undo_view2_geometry
from dira_nb.models.encoders import create_encoder
from dira_nb.data.phantom import load_samples


def test_batch_criterion_hand_made():
    n = 10
    # orthogonal rows: every p = 1/(N-1), L = log(N-1) - (N-2) log(1 - 1/(N-1)) (≈ log(N-1) + 1)
    exact = math.log(n - 1) - (n - 2) * math.log(1 - 1 / (n - 1))
    assert batch_criterion(torch.eye(n)).item() == pytest.approx(exact, abs=1e-5)
    assert abs(exact - (math.log(n - 1) + 1)) < 0.1
    # two identical halves, orthogonal otherwise: positives perfectly matched -> loss near zero at low τ
    v = torch.eye(5)
    assert batch_criterion(torch.cat([v, v]), tau=0.05).item() < 0.01
    # swapping positives for negatives makes it worse
    bad = torch.cat([v, v.roll(1, 0)])
    assert batch_criterion(bad).item() > batch_criterion(torch.cat([v, v])).item()
    # the stop-gradient side: only the anchor rows receive gradients through f_i, not through sg(f_k)
    f = F.normalize(torch.randn(8, 4), dim=1).requires_grad_()
    batch_criterion(f).backward()
    assert f.grad is not None and torch.isfinite(f.grad).all()
    with pytest.raises(ValueError, match="even N"): batch_criterion(torch.zeros(5, 3))


def test_pd_mixup_region_entropy_hand_made():
    f1 = F.normalize(torch.randn(2, 4, 8), dim=-1)
    assert pd_loss(f1, f1, tau=0.02).item() < pd_loss(f1, f1.roll(1, 1), tau=0.02).item()
    t = mixup_targets(f1, torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))
    assert torch.allclose(t.norm(dim=-1), torch.ones(2, 4), atol=1e-5)
    cos_a, cos_b = (t * f1).sum(-1), (t * f1[[1, 0]]).sum(-1)
    assert (cos_a > 0).all() and (cos_b > 0).all()               # the target lies between its two sources
    # K orthogonal "tissues", one-hot assignments: regions = tissue directions, RD ≈ log(1 + (K-1) e^{-1/τ})
    k = 4
    emb = torch.eye(k)[None, :, :, None].expand(3, k, k, 5).clone()          # row y has direction e_y
    assign = torch.eye(k)[None, :, :, None].expand(3, k, k, 5).clone()       # cluster j = row j
    r = region_features(emb, assign)
    assert torch.allclose(r[0], torch.eye(k), atol=1e-6)
    assert region_loss(r, 0.2).item() == pytest.approx(math.log(1 + (k - 1) * math.exp(-5)), abs=1e-4)
    same = F.normalize(torch.ones(3, k, k), dim=-1)
    assert region_loss(same).item() == pytest.approx(math.log(k), abs=1e-5)
    assert entropy_loss(torch.full((1, 2, 3, 3), 0.5)).item() == pytest.approx(1.0, abs=1e-5)
    assert entropy_loss(assign).item() < 1e-3


def test_view2_undo_maps_patches_back():
    # a feature map with a unique value at every position, and at every patch
    ids = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8)
    for flip in (False, True):
        for k in range(4):
            v2 = view2_geometry(ids, flip, k)
            back = undo_view2_geometry(v2, torch.tensor([flip]), torch.tensor([k]))
            assert torch.equal(back, ids)
            # patch (i, j) of the undone view-2 map is patch (i, j) of view 1
            p1 = F.adaptive_avg_pool2d(ids, 4)
            p2 = F.adaptive_avg_pool2d(back, 4)
            assert torch.equal(p1, p2)
            if (k + 2 * flip) % 4: assert not torch.equal(F.adaptive_avg_pool2d(v2, 4), p1)   # flip + 2 turns = identity
    # the data side: without per-view jitter/rotation, view 2 undone equals view 1 exactly, for every draw
    img = load_samples("train", size=32)[0][0]
    views = LDViews(32, view_rotation=0, brightness=0, contrast=0)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(12):
        d = views(img, g)
        seen.add((bool(d["flip2"]), int(d["rot2"])))
        assert not d["mirror2"]                                   # the default never mirrors (as the original)
        back = undo_view2_geometry(d["x2"][None], d["flip2"][None], d["rot2"][None], d["mirror2"][None])[0]
        assert torch.allclose(back, d["x1"], atol=1e-6)
    assert len(seen) > 3


# The original (LDLearning, `my_utils.py` MyDataset.__getitem__) on a C×H×W tensor: `flip(dims=(1,2))` with p = ½, then
# `rot90(k, dims=(1,2))`; its feature-side undo (`rearrange_features`) is `flip(dims=(1,2))`, then `rot90(-k)`.
_orig_view2 = lambda x, f, k: torch.rot90(x.flip(dims=(1, 2)) if f else x, k=k, dims=(1, 2))
_orig_undo = lambda x, f, k: torch.rot90(x.flip(dims=(1, 2)) if f else x, k=-k, dims=(1, 2))


def test_view2_rotation_matches_original():
    x = torch.arange(2 * 6 * 6, dtype=torch.float32).reshape(2, 6, 6)          # C×H×W, every value unique
    for flip in (False, True):
        for k in range(4):
            ours = view2_geometry(x, flip, k)
            assert torch.equal(ours, _orig_view2(x, flip, k))                  # same transform as the original
            assert torch.equal(ours, torch.rot90(x, k + 2 * flip, dims=(1, 2)))  # the "flip" is a 180° turn: rotations only
            assert torch.equal(_orig_undo(ours, flip, k), x)                   # the original's undo inverts ours
            back = undo_view2_geometry(ours[None], torch.tensor([flip]), torch.tensor([k]))[0]
            assert torch.equal(back, _orig_undo(ours, flip, k))                # our undo agrees with the original's
    # the data pipeline applies exactly that op to view 2 (no per-view jitter, so view 2 before it equals view 1)
    img = load_samples("train", size=32)[0][0]
    views = LDViews(16, view_rotation=0, brightness=0, contrast=0)
    g = torch.Generator().manual_seed(3)
    turns = set()
    for _ in range(16):
        d = views(img, g)
        assert torch.allclose(d["x2"], _orig_view2(d["x1"], bool(d["flip2"]), int(d["rot2"])), atol=1e-6)
        turns.add((int(d["rot2"]) + 2 * int(d["flip2"])) % 4)
    assert turns == {0, 1, 2, 3}


def test_view2_mirror_option_is_undone():
    ids = torch.arange(36.).reshape(1, 1, 6, 6)
    for flip in (False, True):
        for k in range(4):
            v2 = view2_geometry(ids, flip, k, mirror=True)
            assert not torch.equal(v2, ids)
            assert torch.equal(undo_view2_geometry(v2, [flip], [k], [True]), ids)
            if k % 2 and not flip:                                         # "mirror, rot90(−k)" (the original's order) fails
                assert not torch.equal(_orig_undo(v2[0].flip(-1), False, k), ids[0])
    m = create_method("ld_pd", image_size=16, view2_mirror=True)
    views = m.views(16, view_rotation=0, brightness=0, contrast=0)
    assert views.view2_mirror
    img = load_samples("train", size=32)[0][0]
    g = torch.Generator().manual_seed(0)
    samples = [views(img, g) for _ in range(12)]
    assert any(bool(d["mirror2"]) for d in samples) and not all(bool(d["mirror2"]) for d in samples)
    for d in samples:
        back = undo_view2_geometry(d["x2"][None], d["flip2"][None], d["rot2"][None], d["mirror2"][None])[0]
        assert torch.allclose(back, d["x1"], atol=1e-6)
    batch = torch.utils.data.default_collate(samples[:4])
    pred = m.forward_train(batch)
    assert pred["emb2"].shape == pred["emb1"].shape


def test_halving_adam_schedule():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = HalvingAdam([w], halving_steps=3, warmup_steps=0, lr=1e-3)
    lrs = []
    for _ in range(7):
        w.grad = torch.ones(2); opt.step(); lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1e-3] * 3 + [5e-4] * 3 + [2.5e-4])
    assert [HalvingAdam([w]).factor(s) for s in (9_999, 10_000, 20_000)] == [1.0, 0.5, 0.25]   # code: halve every 10 epochs × 1000


def test_halving_replaces_cosine_in_learner():
    from dira_nb.learner import Learner
    from dira_nb.callback.schedule import CosineLR
    seed_everything(0)
    m = create_method("ld_pd", image_size=32, lr=1e-3, lr_halving=True, lr_halving_steps=2, warmup_steps=1)
    batch = _fixed_batch(m, n=2)
    learn = Learner(m, [batch] * 2, cbs=[CosineLR(warmup_steps=1)], device="cpu", quiet=True).fit(3)
    assert [r["lr"] for r in learn.recorder.batch_losses] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])
    m2 = create_method("ld_pd", image_size=32, lr=1e-3)                 # default: the cosine of the callback
    learn2 = Learner(m2, [batch] * 2, cbs=[CosineLR()], device="cpu", quiet=True).fit(2)
    assert [r["lr"] for r in learn2.recorder.batch_losses] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4])


def test_budget_recipe_short_and_long():
    short = LD.budget_recipe(LDConfig(), 300, 15, 120)                  # 20 epochs of 15 steps
    assert short == dict(warmup_steps=15)                                 # 5 % of the run
    assert LD.budget_recipe(LDConfig(lr_halving=True), 300, 15, 120) == dict(warmup_steps=15, lr_halving_steps=75)
    long = LD.budget_recipe(LDConfig(lr_halving=True), 100_000, 1000, 30_000)   # the code's 100 epochs × 1000 iterations
    assert long == dict(warmup_steps=5000, lr_halving_steps=25_000)
    assert LD.budget_recipe(LDConfig(), 10**7, 1000, 30_000) == dict(warmup_steps=10_000)   # never more than 10 epochs
    assert LD.budget_recipe(LDConfig(), 3, 1, 4) == dict(warmup_steps=0)
    c = LDConfig()
    assert (c.lr_halving, c.lr_halving_steps, c.warmup_steps, c.view2_mirror) == (False, 10_000, 0, False)
    assert type(create_method("ld", image_size=32).configure_optimizers()["G"]) is torch.optim.Adam


def _fixed_batch(method, n=4, size=32):
    ds = load_samples("train", size=size)
    v = method.views(size)
    return torch.utils.data.default_collate([v(ds[i][0]) for i in range(n)])


def _steps(method, batch, n):
    opt = method.configure_optimizers()["G"]
    hist = []
    for _ in range(n):
        out = method.generator_loss(batch, method.forward_train(batch))
        opt.zero_grad(); out["loss"].backward(); opt.step()
        hist.append({k: float(v) for k, v in out.items()})
    return hist


def test_pd_loss_falls_below_log_n():
    seed_everything(0)
    m = create_method("ld_pd", image_size=32)
    batch = _fixed_batch(m)
    hist = _steps(m, batch, 6)
    n_vec = 2 * 4 * m.config.grid ** 2
    init = math.log(n_vec - 1) + 1
    assert abs(hist[0]["loss_pd"] - init) < 1.5                 # starts near log(N-1)+1
    assert hist[-1]["loss_pd"] < 0.75 * init                     # and falls well below it
    assert hist[-1]["loss_pd"] < hist[0]["loss_pd"]


def test_cluster_entropy_falls_in_stage2():
    seed_everything(0)
    m = create_method("ld", image_size=32, n_clusters=8)
    batch = _fixed_batch(m)
    hist = _steps(m, batch, 6)
    assert hist[-1]["loss_ent"] < hist[0]["loss_ent"]
    assert hist[-1]["assign_max"] > 1 / 8


def test_registry_presets_and_stages():
    assert {"ld", "ld_pd", "ld_cs", "ld_r", "ld_ra"} <= set(list_methods("ld*"))
    enc = create_encoder("vgg_ld", 1)
    assert enc.channels == (16, 32, 64, 128, 128) and enc.out_dim == 128
    assert LD.warmup_stage(LDConfig()) == dict(stage="ld_pd", region=False, adversarial=False)
    assert LD.warmup_stage(LDConfig(region=False)) is None
    m = create_method("ld_ra", image_size=32, n_clusters=8)
    assert set(m.configure_optimizers()) == {"G", "D"}
    b = _fixed_batch(m, n=2)
    pred = m.forward_train(b)
    d = m.discriminator_loss(b, pred)
    assert set(d) == {"loss_critic", "critic_real", "critic_fake"}
    assert {"loss_res", "loss_adv", "loss_rd"} <= set(m.generator_loss(b, pred))
    s1 = create_method("ld", **LD.warmup_stage(m.config), image_size=32, n_clusters=8, restorative=True)
    m.start_from(s1)                                              # cluster head and discriminator start fresh


def test_pretrain_ld_end_to_end(tmp_path):
    from dira_nb.pretrain import pretrain, PretrainConfig
    from dira_nb.checkpoint import load_checkpoint
    res = pretrain(PretrainConfig(method="ld", backbone="vgg_ld", image_size=32, load_size=32, epochs_dir=1, epochs_dira=1,
                                  batch_size=4, max_images=8, lr=1e-3, out=str(tmp_path / "run"), snapshots=0), quiet=True)
    run = res["run_dir"]
    assert [s["stage"] for s in res["summary"]["stages"]] == ["ld_pd", "ld"]
    for f in ("config.yaml", "ld_pd/history.csv", "final.pt", "summary.json"):
        assert (run / f).exists(), f
    assert res["backbone"].exists()
    ck = load_checkpoint(run / "final.pt")
    assert ck["meta"]["method"] == "ld" and ck["meta"]["backbone"] == "vgg_ld"
    m = LD.from_checkpoint(run / "final.pt")
    assert m.net.cluster_head is not None
    assert torch.equal(m.encoder.stages[0][0].weight, res["method"].encoder.stages[0][0].weight.cpu())
