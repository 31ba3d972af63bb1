"""Discriminative, restorative and adversarial self-supervised learning for medical images, taught in notebooks

Modules:

- `dira_nb.data.transforms`: Random resized crops, brightness/contrast jitter, Gaussian blur, flips and the three DiRA distortions (in-painting, out-painting, local patch swapping), all as plain torch ops on `C×H×W` images in [0, 1] (grey, or RGB where colour matters).
- `dira_nb.data.views`: DiRA's paired views: two independently cropped, jittered, blurred, flipped and distorted views of one image, plus the clean restoration target; a dataset wrapper and train/valid data loaders."""

__version__ = "0.0.1"
