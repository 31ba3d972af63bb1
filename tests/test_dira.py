"""DiRA method: ablations, optimisation order, queue/momentum side effects, stage hand-over."""
import torch
import pytest

from dira_nb.core import seed_everything, tiny_batch
from dira_nb.methods.core import create_method, list_methods
import dira_nb.methods.dira  # noqa: F401  (registers the methods)


def _batch(n=4, size=32):
    x = tiny_batch(n, size, seed=1)
    return dict(x1=(x * 0.8).clamp(0, 1), x2=x.flip(-1), target=x)


ABLATIONS = {
    "di": {"loss_dis"},
    "dir": {"loss_dis", "loss_res"},
    "dira": {"loss_dis", "loss_res", "loss_adv"},
    "r": {"loss_res"},
    "ra": {"loss_res", "loss_adv"},
    "dira_barlow": {"loss_dis", "loss_res", "loss_adv"},
    "dira_simsiam": {"loss_dis", "loss_res", "loss_adv"},
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_terms_and_step(name):
    seed_everything(0)
    m = create_method(name, moco_k=16, proj_dim=64)
    opts = m.configure_optimizers()
    assert ("D" in opts) == ("loss_adv" in ABLATIONS[name])
    b = _batch()
    before = [p.detach().clone() for p in m.encoder.parameters()]
    pred = m.forward_train(b)
    losses = m.generator_loss(b, pred)
    assert {k for k in losses if k.startswith("loss_")} == ABLATIONS[name]
    opts["G"].zero_grad()
    losses["loss"].backward()
    opts["G"].step()
    assert any(not torch.equal(a, p) for a, p in zip(before, m.encoder.parameters())), "encoder did not move"


def test_registered_names():
    assert set(ABLATIONS) <= set(list_methods())


def test_total_is_weighted_sum_with_paper_weights():
    seed_everything(0)
    m = create_method("dira", moco_k=16)
    b = _batch()
    l = m.generator_loss(b, m.forward_train(b))
    expected = 1.0 * l["loss_dis"] + 10.0 * l["loss_res"] + 0.001 * l["loss_adv"]
    assert torch.allclose(l["loss"], expected, atol=1e-6)
    assert (m.config.w_dis, m.config.w_res, m.config.w_adv) == (1.0, 10.0, 0.001)
    assert (m.config.lr, m.config.lr_d, m.config.betas_d, m.config.moco_m, m.config.temperature) == (0.03, 2e-4, (0.5, 0.999), 0.999, 0.2)


def test_generator_step_leaves_discriminator_gradients_empty():
    seed_everything(0)
    m = create_method("dira", moco_k=16)
    b = _batch()
    l = m.generator_loss(b, m.forward_train(b))
    l["loss"].backward()
    assert all(p.grad is None for p in m.discriminator.parameters())
    assert m.encoder.body.conv1.weight.grad is not None
    # the discriminator step does fill them
    d = m.discriminator_loss(b, m.forward_train(b))
    d["loss_critic"].backward()
    assert all(p.grad is not None for p in m.discriminator.parameters())


def test_adversarial_gradient_reaches_generator():
    seed_everything(0)
    m = create_method("dira", moco_k=16)
    b = _batch()
    l = m.generator_loss(b, m.forward_train(b))
    l["loss_adv"].backward()
    g = m.unet.decoder.parameters().__next__().grad
    assert g is not None and g.abs().sum() > 0


def test_validation_has_no_side_effects_but_training_does():
    seed_everything(0)
    m = create_method("dira", moco_k=12)
    b = _batch()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    m.validation_step(b)
    for k, v in m.state_dict().items():
        if "running" in k or "num_batches" in k:
            continue  # eval-mode BN leaves these alone too, but be explicit: we check weights/queue only
        assert torch.equal(v, state[k]), f"validation changed {k}"
    assert torch.equal(m.queue.queue, state["queue.queue"])
    pred = m.forward_train(b)
    m.after_update(b, pred)
    assert int(m.queue.ptr) == 4
    assert torch.allclose(m.queue.queue[:4], pred["k"])
    # momentum: key = 0.999 key + 0.001 query
    q_w, k_w_before = m.encoder.body.conv1.weight.detach().clone(), m.key_encoder.body.conv1.weight.detach().clone()
    m.forward_train(b)
    assert torch.allclose(m.key_encoder.body.conv1.weight, 0.999 * k_w_before + 0.001 * q_w, atol=1e-7)


def test_key_branch_has_no_decoder():
    m = create_method("dira", moco_k=16)
    names = [n for n, _ in m.named_parameters()]
    assert not any(n.startswith("key_") and "decoder" in n for n in names)
    assert all(not p.requires_grad for p in m.key_encoder.parameters())


@pytest.mark.parametrize("size", [32, 48, 64])
def test_any_image_size(size):
    m = create_method("dira", moco_k=16)
    b = _batch(2, size)
    l = m.generator_loss(b, m.forward_train(b))
    assert torch.isfinite(l["loss"])
    assert m.discriminator_loss(b, m.forward_train(b))["loss_critic"].isfinite()


def test_stage_two_starts_from_stage_one_with_fresh_discriminator():
    seed_everything(0)
    s1 = create_method("dir", moco_k=16)
    s1.queue.enqueue(torch.randn(5, 128))
    fresh = create_method("dira", moco_k=16)
    d_init = [p.clone() for p in fresh.discriminator.parameters()]
    s2 = fresh.start_from(s1)
    for k, v in s1.state_dict().items():
        assert torch.equal(v, s2.state_dict()[k]), k
    assert all(torch.equal(a, b) for a, b in zip(d_init, s2.discriminator.parameters()))
    with pytest.raises(RuntimeError, match="cannot start"):
        create_method("dira", backbone="resnet34", moco_k=16).start_from(s1)


def test_bad_configs_are_rejected_with_clear_messages():
    with pytest.raises(TypeError, match="unknown option"):
        create_method("dira", learning_rate=0.1)
    with pytest.raises(ValueError, match="choose one of"):
        create_method("dira", discriminative="simclr")
    with pytest.raises(KeyError, match="unknown method"):
        create_method("dinov2")
