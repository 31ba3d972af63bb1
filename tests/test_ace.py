"""ACE: losses finite and falling, teacher EMA, DiRA-on-ACE ingredients, property check, pretrain end to end."""
import numpy as np
import pytest
import torch

from dira_nb.core import seed_everything
from dira_nb.methods.core import create_method, list_methods
from dira_nb.methods.ace import ACE, ACEConfig, alpha_balanced_bce
from dira_nb.data.phantom import load_samples
from dira_nb.viz.ace import crop_pair_tokens, correspondence_similarities, correspondence_stats, patch_retrieval

SMALL = dict(backbone="vit_nano", image_size=32, out_dim=64, hidden_dim=32, bottleneck_dim=16)


def _batch(method, n=8, seed=0, start=0):
    ds = load_samples()
    views = method.views(method.config.image_size, faithful_flip_quirk=False)
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.default_collate([views(ds[start + i][0], g) for i in range(n)])


def _step(m, opts, batch):
    pred = m.forward_train(batch)
    losses = m.generator_loss(batch, pred)
    opts["G"].zero_grad(); losses["loss"].backward(); opts["G"].step()
    d = m.discriminator_loss(batch, pred)
    if d is not None: opts["D"].zero_grad(); d["loss_critic"].backward(); opts["D"].step(); losses.update(d)
    m.after_update(batch, pred)
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}


def test_registered():
    assert {"ace", "ace_r", "ace_ra"} <= set(list_methods("ace*"))


def test_local_losses_finite_then_fall():
    seed_everything(0)
    m = create_method("ace", **SMALL, lr=1e-3)
    opts = m.configure_optimizers()
    batch = _batch(m)
    hist = [_step(m, opts, batch) for _ in range(10)]
    assert all(np.isfinite(v) for v in hist[0].values())
    first = {k: np.mean([h[k] for h in hist[:2]]) for k in ("loss_dec", "loss_comp")}
    last = {k: np.mean([h[k] for h in hist[-2:]]) for k in ("loss_dec", "loss_comp")}
    print("first", first, "last", last, "dec_acc", hist[0]["dec_acc"], "->", hist[-1]["dec_acc"])
    assert last["loss_dec"] < first["loss_dec"] and last["loss_comp"] < first["loss_comp"]


def test_teacher_ema_and_center():
    seed_everything(1)
    m = create_method("ace", **SMALL)
    opts = m.configure_optimizers()
    t0 = [p.clone() for p in m.teacher.parameters()]
    c0 = m.center.clone()
    _step(m, opts, _batch(m, n=4))
    assert all(not p.requires_grad and p.grad is None for p in m.teacher.parameters())
    moved = [not torch.equal(a, b) for a, b in zip(t0, m.teacher.parameters())]
    assert any(moved) and not torch.equal(c0, m.center) and int(m.step) == 1
    # EMA: teacher moves towards the student, by (1 - m) of the gap
    s = dict(m.encoder.named_parameters())["patch_embed.weight"]
    t = dict(m.teacher["encoder"].named_parameters())["patch_embed.weight"]
    t_old = dict(zip([n for n, _ in m.teacher.named_parameters()], t0))["encoder.patch_embed.weight"]
    assert torch.allclose(t, 0.996 * t_old + 0.004 * s, atol=1e-6)


def test_alpha_bce_matches_focal_gamma0():
    from dira_nb.tvcompat import torchvision
    z, t = torch.randn(2, 6, 9), torch.rand(2, 6, 9)
    assert torch.allclose(alpha_balanced_bce(z, t, 0.99), torchvision.ops.sigmoid_focal_loss(z, t, alpha=0.99, gamma=0, reduction="mean"))


@pytest.mark.parametrize("backbone,size", [("vit_nano", 32), ("resnet18", 32)])
def test_dira_on_ace_step(backbone, size):
    seed_everything(2)
    m = create_method("ace_ra", backbone=backbone, image_size=size, min_tokens=4, out_dim=64, hidden_dim=32, bottleneck_dim=16)
    assert (m.unet is not None) == backbone.startswith("resnet") and m.discriminator is not None
    opts = m.configure_optimizers()
    assert set(opts) == {"G", "D"}
    batch = _batch(m, n=4)
    assert batch["x1"].shape == batch["target"].shape == (4, 1, size, size)
    out = _step(m, opts, batch)
    assert {"loss_res", "loss_adv", "loss_critic", "critic_real", "critic_fake", "psnr"} <= set(out) and all(np.isfinite(v) for v in out.values())
    rec = m.reconstruct(batch["x1"])
    assert rec.shape == batch["target"].shape and 0 <= float(rec.min()) and float(rec.max()) <= 1
    assert ACE.warmup_stage(m.config) == dict(adversarial=False, stage="ace_r")
    with pytest.raises(ValueError, match="needs restorative"): ACEConfig(adversarial=True)


def test_corresponding_patches_more_similar_after_short_run():
    seed_everything(0)
    m = create_method("ace", **SMALL, lr=1e-3)
    opts = m.configure_optimizers()
    ds = load_samples()
    probe = torch.stack([ds[i][0] for i in range(150, 166)])
    before = correspondence_stats(**correspondence_similarities(crop_pair_tokens(m, probe)))
    for s in range(8): _step(m, opts, _batch(m, n=8, seed=s, start=8 * s))
    tok = crop_pair_tokens(m, probe)
    after = correspondence_stats(**correspondence_similarities(tok))
    r = patch_retrieval(tok)
    print("before", before, "\nafter", after, "\nretrieval", r)
    assert after["mean_pos"] > after["mean_neg"] and after["auc"] > 0.5 and after["p_value"] < 1e-3
    assert after["auc"] > before["auc"]      # random features already separate the pairs (same pixels); ACE must add to that
    assert r["top5"] > r["chance_top5"]


def test_pretrain_end_to_end(tmp_path):
    from dira_nb.pretrain import pretrain, PretrainConfig
    from dira_nb.checkpoint import load_checkpoint
    res = pretrain(PretrainConfig(method="ace", backbone="vit_nano", image_size=32, epochs=1, batch_size=4, max_images=8,
                                  lr=5e-4, out=str(tmp_path / "run"), options=dict(out_dim=64, hidden_dim=32, bottleneck_dim=16)),
                   quiet=True)
    run = res["run_dir"]
    for f in ("config.yaml", "ace/history.csv", "final.pt", "summary.json"): assert (run / f).exists(), f
    assert res["backbone"].exists()
    ck = load_checkpoint(run / "final.pt")
    assert ck["meta"]["method"] == "ace" and ck["meta"]["backbone"] == "vit_nano" and "head_state" in ck
    m2 = ACE.from_checkpoint(run / "final.pt")
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(m2.embed(x), res["method"].embed(x), atol=1e-5)
    from dira_nb.checkpoint import _read_backbone_file
    from dira_nb.models.encoders import create_encoder
    state, meta = _read_backbone_file(res["backbone"])
    assert meta["backbone"] == "vit_nano"
    enc = create_encoder(meta["backbone"], in_chans=1)
    enc.load_backbone_state_dict(state)                     # strict: every key matches the ViT
    assert torch.allclose(enc(x)[-1], m2.encoder.eval()(x)[-1], atol=1e-5)


def test_weight_decay_and_momentum_schedules():
    m = create_method("ace", **SMALL, ema_steps=8, weight_decay_steps=8)
    opts = m.configure_optimizers()
    g_decay, g_plain = opts["G"].param_groups
    assert g_decay["weight_decay"] == pytest.approx(0.04) and g_plain["weight_decay"] == 0.0
    batch = _batch(m, n=2)
    wds = []
    for _ in range(9):
        _step(m, opts, batch)                                         # the wd in force for the step just taken
        wds.append(g_decay["weight_decay"])
    assert wds[0] == pytest.approx(0.04) and wds[-1] == pytest.approx(0.4)        # original: cosine 0.04 -> 0.4
    assert wds[4] == pytest.approx(0.22) and all(a < b for a, b in zip(wds[:8], wds[1:]))
    assert g_plain["weight_decay"] == 0.0                                          # biases and norms never decay
    assert m.ema_momentum() == 1.0 and int(m.step) == 9
    m.step.fill_(0)
    assert m.ema_momentum() == pytest.approx(0.996) and m.weight_decay() == pytest.approx(0.04)
    # defaults: constant weight decay and momentum, however long the run
    c = create_method("ace", **SMALL)
    c.step.fill_(10**6)
    assert (c.weight_decay(), c.ema_momentum()) == (0.04, 0.996)
    assert ACEConfig().weight_decay_end == 0.4 and ACEConfig().warmup_steps == 0


def test_last_layer_frozen_for_first_steps():
    seed_everything(3)
    m = create_method("ace", **SMALL, freeze_last_layer_steps=2, lr=1e-3)
    opts = m.configure_optimizers()
    batch = _batch(m, n=2)
    last = lambda: m.dino_head.last_layer.parametrizations.weight.original1.detach().clone()
    w0 = last()
    _step(m, opts, batch); _step(m, opts, batch)
    assert torch.equal(last(), w0)                                   # steps 0 and 1: frozen
    _step(m, opts, batch)
    assert not torch.equal(last(), w0)                               # step 2: trains


def test_budget_recipe_short_and_long():
    short = ACE.budget_recipe(ACEConfig(), 300, 15, 120)             # 20 epochs of 15 steps
    assert short.pop("ema_momentum") == pytest.approx(1 - 5 / 300)
    assert short == dict(ema_steps=300, weight_decay_steps=300, freeze_last_layer_steps=15, warmup_steps=15)
    long = ACE.budget_recipe(ACEConfig(), 302 * 500, 500, 86_524)    # the original's 302 epochs
    assert long == dict(ema_momentum=0.996, ema_steps=151_000, weight_decay_steps=151_000,
                        freeze_last_layer_steps=500, warmup_steps=5000)  # 1 frozen epoch and 10 warm-up epochs, as the code
    tiny = ACE.budget_recipe(ACEConfig(), 20, 10, 40)                # 2 epochs: freeze capped at a tenth of the run
    assert (tiny["ema_momentum"], tiny["freeze_last_layer_steps"], tiny["warmup_steps"]) == (0.9, 2, 1)
    m = create_method("ace", **SMALL, **tiny)                        # the overrides build a valid method
    assert m.config.weight_decay_steps == 20
