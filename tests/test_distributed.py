"""Two CPU processes (gloo) training DiRA on halves of each batch must match one process on the whole batch.

Why BatchNorm is frozen for the equivalence check: with BN in training mode each rank normalises its own half-batch
(per-rank BN, as in MoCo and the original DiRA code), so 2 ranks and 1 process compute *different* functions and no
tolerance would be honest. With BN in eval mode (fixed statistics) every layer is per-sample — the discriminator uses
InstanceNorm — and the distributed step is mathematically identical to the single-process step on the global batch:
mean gradients over the global batch (G and D), the same momentum update, the same keys entering the queue in the same
order. Only the summation order of the all-reduce differs, hence the float tolerance. A second run with BN in training
mode checks what must hold anyway: the replicas stay identical (parameters and queues) and the losses stay finite.
"""
import os, socket
import pytest
import torch
import torch.multiprocessing as mp

STEPS, GLOBAL_BATCH, SIZE = 3, 4, 32


def _batches():
    from dira_nb.core import tiny_batch
    out = []
    for i in range(STEPS):
        x = tiny_batch(GLOBAL_BATCH, SIZE, seed=i)
        out.append(dict(x1=(x * 0.9).contiguous(), x2=x.flip(-1).contiguous(), target=x))
    return out


def _shard(b, rank, world):
    n = GLOBAL_BATCH // world
    return {k: v[rank * n:(rank + 1) * n] for k, v in b.items()}


def _train(batches, cbs, frozen_bn):
    from dira_nb.callback.core import Callback
    from dira_nb.core import seed_everything
    from dira_nb.learner import Learner
    from dira_nb.methods.core import create_method

    class FreezeBN(Callback):
        def before_batch(self):
            for mod in self.learn.method.modules():
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm): mod.eval()

    torch.set_num_threads(1)
    seed_everything(0)
    m = create_method("dira", moco_k=16, lr=0.01)
    learn = Learner(m, batches, None, cbs=[*cbs, *([FreezeBN()] if frozen_bn else [])], device="cpu", quiet=True).fit(1)
    return m, [r["loss"] for r in learn.recorder.batch_losses]


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    from dira_nb.distributed import init_distributed, cleanup_distributed, DistributedCallback
    info = init_distributed(device="cpu")
    assert info.backend == "gloo" and info.world_size == world
    try:
        for frozen in (True, False):
            batches = [_shard(b, rank, world) for b in _batches()]
            m, losses = _train(batches, [DistributedCallback()], frozen_bn=frozen)
            torch.save(dict(state={k: v.clone() for k, v in m.state_dict().items()}, losses=losses),
                       os.path.join(out_dir, f"rank{rank}_{'frozen' if frozen else 'train'}.pt"))
    finally:
        cleanup_distributed()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return {f"{r}_{mode}": torch.load(out / f"rank{r}_{mode}.pt") for r in (0, 1) for mode in ("frozen", "train")}


def _params(state):
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}


def _biases_before_instance_norm(method):
    "Conv biases directly followed by InstanceNorm: their exact gradient is 0 (IN subtracts the channel mean), so Adam's"
    "normalised step turns pure rounding noise into ±lr updates. Excluded from the comparison; all other weights count."
    net, names = method.discriminator.net, set()
    for i, (a, b) in enumerate(zip(net, list(net)[1:])):
        if isinstance(a, torch.nn.Conv2d) and isinstance(b, torch.nn.InstanceNorm2d): names.add(f"discriminator.net.{i}.bias")
    return names


def test_two_ranks_match_one_process(two_rank_results):
    single, single_losses = _train(_batches(), [], frozen_bn=True)
    ref, skip = single.state_dict(), _biases_before_instance_norm(single)
    assert len(skip) == 3
    for r in (0, 1):
        got = two_rank_results[f"{r}_frozen"]["state"]
        assert got.keys() == ref.keys()
        for k, v in ref.items():
            if k in skip: continue
            if v.is_floating_point():
                assert torch.allclose(got[k], v, rtol=1e-4, atol=1e-5), (r, k, (got[k] - v).abs().max())
            else:
                assert torch.equal(got[k], v), (r, k)
    # the logged loss is the mean over ranks, i.e. the single-process loss on the global batch
    torch.testing.assert_close(torch.tensor(two_rank_results["0_frozen"]["losses"]), torch.tensor(single_losses),
                               rtol=1e-4, atol=1e-5)
    # the queue holds both ranks' keys, in rank order, like one process's batch
    assert torch.allclose(two_rank_results["1_frozen"]["state"]["queue.queue"], ref["queue.queue"], atol=1e-5)


def test_replicas_stay_identical_with_per_rank_batchnorm(two_rank_results):
    a, b = two_rank_results["0_train"], two_rank_results["1_train"]
    pa, pb = _params(a["state"]), _params(b["state"])
    for k in pa: assert torch.equal(pa[k], pb[k]), k           # same averaged gradients → bit-identical replicas
    assert a["losses"] == b["losses"] and all(torch.isfinite(torch.tensor(a["losses"])))
    # per-rank BN: the running statistics are each rank's own (what the original DiRA/MoCo code does too)
    assert any(not torch.equal(a["state"][k], b["state"][k]) for k in a["state"] if "running_mean" in k)
