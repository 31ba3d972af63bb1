"""Time the ORIGINAL DiRA code's own training step (`trainer.train_dira` / `train_dir`) on random tensors, on CPU.

Run with the current folder = a checkout of the original repository (github.com/fhaghighi/DiRA, obtained by you; its
licence is non-commercial, so it is never copied into dira_nb). No file of that checkout is edited: the CPU
adaptations below are made at run time. Prints one JSON line: {"images_per_s": ..., "step_s": [...], ...}.

    cd /path/to/DiRA && /path/to/its/venv/bin/python /path/to/dira_nb/bench/original_step.py --size 224 --batch 8

`bench/compare_original.py` runs this alternately with dira_nb's own step (`bench/step_bench.py`).
"""
import argparse, contextlib, io, json, os, statistics, sys, time, types

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--size", type=int, default=224)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
p.add_argument("--mode", default="dira", choices=["dira", "dir"])
p.add_argument("--backbone", default="resnet50")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--ddp", action="store_true", help="wrap in DistributedDataParallel as the released script does")
a = p.parse_args()

sys.path.insert(0, os.getcwd())
import torch, torch.nn as nn, torch.distributed as dist
try:
    import torchvision  # noqa: F401
except Exception:
    # A CUDA torchvision wheel beside a CPU torch: declare the two op schemas it registers fake kernels for, then retry.
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    for m in [m for m in sys.modules if m.startswith("torchvision")]: del sys.modules[m]
    import torchvision  # noqa: F401

torch.set_num_threads(a.threads)
torch.manual_seed(0)
# Run-time CPU adaptations (the original code assumes CUDA and an initialised process group).
torch.Tensor.cuda = lambda self, *args, **kw: self
torch.cuda.FloatTensor = torch.FloatTensor
os.environ.setdefault("MASTER_ADDR", "127.0.0.1"); os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
dist.init_process_group("gloo", rank=0, world_size=1)

from DiRA_models import DiRA_UNet, DiRA_MoCo, Discriminator, weights_init_normal   # the original repository's
from trainer import train_dira, train_dir

args = types.SimpleNamespace(gpu=None, contrastive_weight=1.0, mse_weight=10.0, adv_weight=0.001, print_freq=10**9, mode=a.mode)
model = DiRA_MoCo(DiRA_UNet, 128, 65536, 0.999, 0.2, True, backbone=a.backbone, encoder_weights=None, activation="sigmoid")
disc = Discriminator(1); disc.apply(weights_init_normal)
if a.ddp: model, disc = nn.parallel.DistributedDataParallel(model), nn.parallel.DistributedDataParallel(disc)
opt_g = torch.optim.SGD(model.parameters(), 0.03, momentum=0.9, weight_decay=1e-4)
opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=[0.5, 0.999])
B, S, n = a.batch, a.size, a.warmup + a.steps
d_shape = (1, S // 8, S // 8)            # the original hard-codes (1, 28, 28), right only at 224 px

marks = []
class RandomBatches:
    "The original's batch layout: [view 1 (3 ch), view 2 (3 ch), target (1 ch)]; a time mark at every step start."
    def __len__(self): return n
    def __iter__(self):
        for _ in range(n):
            marks.append(time.perf_counter())
            yield [torch.rand(B, 3, S, S), torch.rand(B, 3, S, S), torch.rand(B, 1, S, S)]
        marks.append(time.perf_counter())

with contextlib.redirect_stdout(io.StringIO()):
    if a.mode == "dira": train_dira(RandomBatches(), model, nn.CrossEntropyLoss(), nn.MSELoss(), nn.MSELoss(), opt_g, 0, args, disc, opt_d, d_shape)
    else: train_dir(RandomBatches(), model, nn.CrossEntropyLoss(), nn.MSELoss(), opt_g, 0, args)
steps = [marks[i + 1] - marks[i] for i in range(n)][a.warmup:]
med = statistics.median(steps)
print(json.dumps(dict(code="original", mode=a.mode, backbone=a.backbone, size=S, batch=B, threads=torch.get_num_threads(),
                      ddp=a.ddp, torch=torch.__version__, step_s=[round(s, 4) for s in steps], median_step_s=round(med, 4),
                      images_per_s=round(B / med, 3))))
dist.destroy_process_group()
