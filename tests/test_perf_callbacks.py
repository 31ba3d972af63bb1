"""bf16 autocast and channels-last change speed, not training: loss curves, dtypes and the autocast state."""
import torch
from dira_nb.callback.core import Callback, CancelBatchException
from dira_nb.callback.perf import MixedPrecision, ChannelsLast, step_flops
from dira_nb.core import tiny_batch, seed_everything
from dira_nb.learner import Learner
from dira_nb.methods.core import create_method

TERMS = ("loss", "loss_dis", "loss_res", "loss_adv", "loss_critic")


class FreezeBN(Callback):
    "BatchNorm with fixed statistics (see the test's docstring)."
    def before_batch(self):
        for mod in self.learn.method.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm): mod.eval()


def _curve(cbs, steps=3, size=32):
    seed_everything(0)
    m = create_method("dira", moco_k=32, lr=0.003)
    batches = []
    for i in range(steps):
        x = tiny_batch(4, size, seed=i)
        batches.append(dict(x1=x * 0.9, x2=x.flip(-1), target=x))
    learn = Learner(m, batches, None, cbs=[*cbs, FreezeBN()], device="cpu", quiet=True).fit(1)
    return m, learn.recorder.batch_losses


def test_bf16_curve_matches_float32():
    """Three training steps, bf16 autocast + channels-last against float32.

    BN statistics are frozen: with batch 4 split into 2 shuffle-BN groups, BatchNorm at the 1×1 layer4 maps of 32²
    inputs normalises 2 values to ±1, a discontinuous function, and any rounding change (even float32 in another
    memory layout) flips outputs and sends tiny-batch training elsewhere; that would test chaos, not precision.
    Tolerances: the generator terms within 2 % (bf16's relative spacing is 0.4 %; measured differences ≤ 1 %). The
    adversarial terms within 10 %: D is trained by Adam, whose normalised step turns bf16 rounding of D's near-zero
    gradients (e.g. the conv biases in front of InstanceNorm, exactly zero in exact arithmetic) into full ±lr steps,
    so D's scores drift by a few percent after two D updates (measured: up to 7.6 % at step 3)."""
    _, fp32 = _curve([])
    m, bf16 = _curve([MixedPrecision(), ChannelsLast()])
    for step, (a, b) in enumerate(zip(fp32, bf16)):
        for k, tol in dict(loss=0.02, loss_dis=0.02, loss_res=0.02, loss_adv=0.10, loss_critic=0.10).items():
            assert abs(a[k] - b[k]) <= tol * abs(a[k]) + 1e-3, (step, k, a[k], b[k])
    assert all(p.dtype == torch.float32 for p in m.parameters())      # master weights stay float32
    assert m.queue.queue.dtype == torch.float32


class _CancelAfterPred(Callback):
    def after_pred(self): raise CancelBatchException()


def test_autocast_closed_after_cancelled_batch():
    x = tiny_batch(2, 32)
    m = create_method("dira", moco_k=8)
    Learner(m, [dict(x1=x, x2=x, target=x)], None, cbs=[MixedPrecision(), _CancelAfterPred()], device="cpu", quiet=True).fit(1)
    assert not torch.is_autocast_enabled("cpu")


def test_channels_last_batches_and_flops_ordering():
    seen = []
    class Spy(Callback):
        order = 50
        def after_pred(self): seen.append(self.learn.batch["x1"].is_contiguous(memory_format=torch.channels_last))
    x = tiny_batch(2, 32)
    b = dict(x1=x, x2=x, target=x)
    Learner(create_method("dir", moco_k=8), [b], None, cbs=[ChannelsLast(), Spy()], device="cpu", quiet=True).fit(1)
    assert seen == [True]
    flops = {v: step_flops(create_method(v, moco_k=8), b) for v in ("di", "dir", "dira")}
    assert flops["di"] < flops["dir"] < flops["dira"]
