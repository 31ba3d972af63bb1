"""Known-value tests for dira_nb.losses (InfoNCE, MoCo queue, EMA, Barlow Twins, SimSiam, restoration, LSGAN)."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dira_nb.losses import (MoCoQueue, barlow_twins_loss, info_nce_loss, lsgan_discriminator_loss,
                            lsgan_generator_loss, momentum_update, restoration_loss, simsiam_loss)


@pytest.mark.parametrize("T", [0.07, 0.2, 1.0])
@pytest.mark.parametrize("K", [1, 5, 40])
def test_info_nce_closed_form(T, K):
    # q = k, queue orthogonal to q: logits [1/T, 0...0], loss = log(1 + K e^{-1/T})
    D = 48
    q = torch.zeros(3, D); q[0, 0], q[1, 1], q[2, 2] = 2.0, 0.5, 1.0
    queue = torch.zeros(K, D); queue[torch.arange(K), 3 + torch.arange(K)] = 1.0
    loss, logits = info_nce_loss(q, q.clone(), queue, temperature=T)
    assert logits.shape == (3, 1 + K)
    torch.testing.assert_close(logits[:, 0], torch.full((3,), 1 / T))
    torch.testing.assert_close(logits[:, 1:], torch.zeros(3, K))
    assert loss.item() == pytest.approx(math.log(1 + K * math.exp(-1 / T)), rel=1e-5, abs=1e-6)


def test_info_nce_matches_manual_cross_entropy():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    queue = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    loss, logits = info_nce_loss(q, k, queue, 0.2)
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    manual = torch.cat([(qn * kn).sum(1, keepdim=True), qn @ queue.T], 1) / 0.2
    torch.testing.assert_close(logits, manual)
    ref = -(manual.log_softmax(1)[:, 0]).mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


def test_info_nce_gradient_only_into_query_and_queue_may_change_after():
    q = torch.randn(2, 4, requires_grad=True)
    k = torch.randn(2, 4, requires_grad=True)
    mq = MoCoQueue(dim=4, size=5)
    loss, _ = info_nce_loss(q, k, mq.queue)
    mq.enqueue(torch.randn(2, 4))          # in-place change of the queue before backward must not break autograd
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None


def test_info_nce_bad_shapes():
    with pytest.raises(ValueError, match="queue must be"):
        info_nce_loss(torch.randn(2, 4), torch.randn(2, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="q and k"):
        info_nce_loss(torch.randn(2, 4), torch.randn(3, 4), torch.randn(3, 4))


def test_queue_fifo_wraparound():
    mq = MoCoQueue(dim=3, size=10)
    assert mq.queue.shape == (10, 3) and int(mq.ptr) == 0
    torch.testing.assert_close(mq.queue.norm(dim=1), torch.ones(10))
    b = [torch.arange(12.0).view(4, 3) + 100 * i + 1 for i in range(3)]
    for kb in b: mq.enqueue(kb)
    assert int(mq.ptr) == 2
    n = [F.normalize(x, dim=1) for x in b]
    torch.testing.assert_close(mq.queue[0:2], n[2][2:4])
    torch.testing.assert_close(mq.queue[2:4], n[0][2:4])
    torch.testing.assert_close(mq.queue[4:8], n[1])
    torch.testing.assert_close(mq.queue[8:10], n[2][0:2])


def test_queue_large_batch_detached_and_state_dict():
    mq = MoCoQueue(dim=2, size=4)
    mq.enqueue(torch.randn(3, 2))
    big = torch.randn(9, 2, requires_grad=True)
    mq.enqueue(big)
    assert int(mq.ptr) == (3 + 9) % 4
    bn = F.normalize(big.detach(), dim=1)
    for j in range(5, 9):                    # the newest 4 keys, at their FIFO positions
        torch.testing.assert_close(mq.queue[(3 + j) % 4], bn[j])
    assert not mq.queue.requires_grad
    sd = mq.state_dict()
    assert set(sd) == {"queue", "ptr", "ids"}
    mq2 = MoCoQueue(dim=2, size=4)
    mq2.load_state_dict(sd)
    assert torch.equal(mq2.queue, mq.queue) and int(mq2.ptr) == int(mq.ptr)


def _pair():
    src = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    tgt = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        src[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]])); src[0].bias.fill_(10.0)
        tgt[0].weight.zero_(); tgt[0].bias.fill_(-10.0)
        src[1].running_mean.copy_(torch.tensor([0.3, -0.3])); src[1].running_var.fill_(2.0)
    return tgt, src


def test_momentum_update_hand_values():
    tgt, src = _pair()
    momentum_update(tgt, src, m=0.999)
    torch.testing.assert_close(tgt[0].weight, 0.001 * torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    torch.testing.assert_close(tgt[0].bias, torch.full((2,), 0.999 * -10 + 0.001 * 10))
    torch.testing.assert_close(tgt[1].running_mean, torch.tensor([0.3, -0.3]))     # buffers copied
    torch.testing.assert_close(tgt[1].running_var, torch.full((2,), 2.0))
    momentum_update(tgt, src, m=0.5)
    torch.testing.assert_close(tgt[0].bias, torch.full((2,), 0.5 * (0.999 * -10 + 0.01) + 0.5 * 10))


def test_momentum_update_m0_copies_and_mismatch_raises():
    tgt, src = _pair()
    momentum_update(tgt, src, m=0.0)
    for a, b in zip(tgt.state_dict().values(), src.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="differ"):
        momentum_update(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)))


def test_barlow_twins_known_values():
    z = torch.tensor([[1.0, 1], [1, -1], [-1, 1], [-1, -1]])
    assert barlow_twins_loss(z, z).item() == pytest.approx(0.0, abs=1e-6)
    assert barlow_twins_loss(z, z.flip(1), lambd=0.1).item() == pytest.approx(2 + 2 * 0.1, rel=1e-4)
    assert barlow_twins_loss(z, -z).item() == pytest.approx(8.0, rel=1e-4)
    # one column perfectly correlated (c11 = 1), the other with correlation 0 to its partner and to column 1
    z2 = torch.stack([z[:, 0], z[:, 0] * z[:, 1]], 1)      # [a, a*b]: uncorrelated with b and a
    # C = [[1, 0], [0, 0]] → on-diagonal (1-0)² = 1, off-diagonal 0
    assert barlow_twins_loss(z, z2).item() == pytest.approx(1.0, rel=1e-4)


def test_simsiam():
    p = torch.randn(5, 7)
    assert simsiam_loss(p, p, p * 2, p * 3).item() == pytest.approx(-1.0, abs=1e-6)
    p1, p2 = torch.randn(5, 7, requires_grad=True), torch.randn(5, 7, requires_grad=True)
    z1, z2 = torch.randn(5, 7, requires_grad=True), torch.randn(5, 7, requires_grad=True)
    loss = simsiam_loss(p1, p2, z1, z2)
    ref = -0.5 * (F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean())
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    loss.backward()
    assert p1.grad is not None and p2.grad is not None
    assert z1.grad is None and z2.grad is None


def test_restoration_loss():
    pred = torch.zeros(1, 1, 2, 2)
    tgt = torch.tensor([0.5, -0.5, 1.0, 0.0]).view(1, 1, 2, 2)
    assert restoration_loss(pred, tgt).item() == pytest.approx(1.5 / 4)
    assert restoration_loss(pred, tgt, "l1").item() == pytest.approx(2.0 / 4)
    with pytest.raises(ValueError, match="kind"):
        restoration_loss(pred, tgt, "l2")
    with pytest.raises(ValueError, match="shape"):
        restoration_loss(pred, tgt[0])


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (4, 1, 3, 3), (3,)])
def test_lsgan_any_shape(shape):
    assert lsgan_generator_loss(torch.zeros(shape)).item() == pytest.approx(1.0)
    assert lsgan_generator_loss(torch.full(shape, 0.8)).item() == pytest.approx(0.04, rel=1e-5)
    assert lsgan_discriminator_loss(torch.ones(shape), torch.zeros(shape)).item() == pytest.approx(0.0)
    assert lsgan_discriminator_loss(torch.zeros(shape), torch.ones(shape)).item() == pytest.approx(1.0)
    # ½[(0.6-1)² + 0.2²] = ½[0.16 + 0.04] = 0.1
    assert lsgan_discriminator_loss(torch.full(shape, 0.6), torch.full(shape, 0.2)).item() == pytest.approx(0.1, rel=1e-5)


def test_index_aware_queue_masks_exactly_own_keys():
    """Issue 12: a query's older keys in the queue are never negatives; every other key is."""
    torch.manual_seed(0)
    mq = MoCoQueue(dim=8, size=12)
    for step in range(3):                                   # images 0..3 enqueued three times
        mq.enqueue(torch.randn(4, 8), ids=torch.arange(4))
    q = F.normalize(torch.randn(3, 8), dim=1)
    q_ids = torch.tensor([1, 2, 9])                         # image 9 was never enqueued
    _, logits = info_nce_loss(q, q, mq.queue, 0.2, q_ids=q_ids, queue_ids=mq.ids)
    own = (mq.ids[None, :] == q_ids[:, None])
    assert torch.equal(torch.isinf(logits[:, 1:]), own)    # masked exactly where the index matches
    assert own.sum(1).tolist() == [3, 3, 0]
    assert torch.isfinite(logits[:, 0]).all()              # the positive is never masked


def test_cosine_momentum_ramp_endpoints():
    from dira_nb.losses import cosine_momentum
    assert cosine_momentum(0.99, 0, 500) == 0.99
    assert cosine_momentum(0.99, 500, 500) == 1.0
    assert cosine_momentum(0.99, 10**6, 500) == 1.0
    assert cosine_momentum(0.999, 123, None) == 0.999
