"""Throughput of one DiRA training step (images/s), the figure the spec compares with the original code (§10).

A step = momentum update, key forward, query U-Net forward + backward, the discriminator's forwards, both optimiser
steps and the enqueue — exactly what `Learner` runs per batch. Random inputs, warm-up steps skipped.

    python bench/step_throughput.py --backbone resnet50 --size 224 --batch 8 --threads 2 --variant dira
"""
import argparse, json, platform, time
import torch
from dira_nb.callback.core import Callback
from dira_nb.methods.core import create_method
from dira_nb.learner import Learner
import dira_nb.methods.dira  # noqa: F401


class StepTimer(Callback):
    "Wall time of every training step (synchronising CUDA so GPU time is counted)."
    def __init__(self): self.times = []
    def _sync(self):
        if self.learn.device.type == "cuda": torch.cuda.synchronize()
    def before_batch(self): self._sync(); self.t0 = time.perf_counter()
    def after_batch(self): self._sync(); self.times.append(time.perf_counter() - self.t0)


def measure(variant, backbone, size, batch, threads, steps, warmup, device):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = create_method(variant, backbone=backbone, image_size=size, moco_k=4096)
    x = torch.rand(batch, 1, size, size)
    b = dict(x1=x, x2=x.flip(-1), target=x)
    timer = StepTimer()
    learn = Learner(m, [b] * (warmup + steps), None, cbs=[timer], device=device, quiet=True)
    learn.fit(1)
    t = sorted(timer.times[warmup:])
    s = t[len(t) // 2]
    return dict(variant=variant, backbone=backbone, size=size, batch=batch, threads=threads, device=str(learn.device),
                median_s_per_step=round(s, 4), images_per_s=round(batch / s, 2), steps=steps)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="dira")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    r = measure(a.variant, a.backbone, a.size, a.batch, a.threads, a.steps, a.warmup, a.device)
    r.update(cpu=platform.processor() or platform.machine(), torch=torch.__version__)
    print(json.dumps(r))
