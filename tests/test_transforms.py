"""Tests for dira_nb.data.transforms: crops, jitter, blur, flips and the DiRA distortions (spec §3, quirk 12)."""
import math

import pytest
import torch

from dira_nb.core import seed_everything, tiny_batch
from dira_nb.data.transforms import (DISTORTION_KINDS, DiRAAugment, DiRADistortion, adjust_brightness, adjust_contrast,
                                     color_jitter, cutout_inpaint, distortion_examples, distortion_gallery, gaussian_blur,
                                     hflip, local_patch_swap, outpaint, random_resized_crop_box, resized_crop)

SPEC_PROBS = dict(inpaint=0.30, outpaint=0.05, swap=0.30, none=0.35)


@pytest.fixture(autouse=True)
def one_thread():
    "Tiny tensor ops are dominated by thread-pool overhead on a busy 2-core machine: run these tests single-threaded."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _img(h=64, w=64, seed=0):
    "A random image in [0.05, 1] (strictly positive, so zeroed pixels are recognisable)."
    g = torch.Generator().manual_seed(seed)
    return 0.05 + 0.95 * torch.rand(1, h, w, generator=g)


def _freq_within(counts: dict, probs: dict, n: int, k_sigma=4.5) -> bool:
    "True if every observed frequency is within `k_sigma` binomial standard deviations of its probability."
    return all(abs(counts.get(k, 0) / n - p) <= k_sigma * math.sqrt(max(p * (1 - p), 1e-12) / n) for k, p in probs.items())


# ---------------------------------------------------------------- distortion choice


def test_distortion_frequencies_match_spec():
    n, x = 4000, _img(64, 64)
    torch.manual_seed(0)
    d = DiRADistortion()
    counts = {k: 0 for k in DISTORTION_KINDS}
    for _ in range(n):
        y, kind = d(x)
        counts[kind] += 1
    assert _freq_within(counts, SPEC_PROBS, n), counts
    # the check has teeth: the same counts are rejected for plausible wrong probability tables
    for wrong in (dict(inpaint=0.35, outpaint=0.05, swap=0.30, none=0.30),   # inpaint/none thresholds swapped
                  dict(inpaint=0.30, outpaint=0.10, swap=0.25, none=0.35),   # outpaint doubled
                  dict(inpaint=0.30, outpaint=0.00, swap=0.35, none=0.35),   # outpaint missing (cumulative bug)
                  dict(inpaint=0.25, outpaint=0.05, swap=0.35, none=0.35)):
        assert not _freq_within(counts, wrong, n), wrong


def test_distortion_probabilities_and_validation():
    assert DiRADistortion().probs == pytest.approx(SPEC_PROBS)
    assert DiRADistortion(0, 0, 0)(_img())[1] == "none"
    assert DiRADistortion(1, 0, 0)(_img())[1] == "inpaint"
    assert DiRADistortion(0, 1, 0)(_img())[1] == "outpaint"
    assert DiRADistortion(0, 0, 1)(_img())[1] == "swap"
    with pytest.raises(ValueError, match="sum to <= 1"): DiRADistortion(0.6, 0.3, 0.3)
    with pytest.raises(ValueError, match="unknown kind"): DiRADistortion().apply(_img(), "bezier")


@pytest.mark.parametrize("kind", DISTORTION_KINDS)
def test_each_kind_changes_pixels_except_none(kind):
    x = _img(64, 64)
    x0 = x.clone()
    torch.manual_seed(1)
    y = DiRADistortion().apply(x, kind)
    assert torch.equal(x, x0), "input modified in place"
    assert y.shape == x.shape and y.dtype == x.dtype and 0 <= y.min() and y.max() <= 1
    assert y.data_ptr() != x.data_ptr()
    if kind == "none": assert torch.equal(y, x)
    else: assert not torch.equal(y, x)


# ---------------------------------------------------------------- in-painting


def test_inpaint_zeros_exactly_its_rectangles_at_224():
    x = _img(224, 224)
    torch.manual_seed(2)
    for _ in range(50):
        y, boxes = cutout_inpaint(x, return_boxes=True)
        assert 1 <= len(boxes) <= 10
        mask = torch.zeros_like(x, dtype=torch.bool)
        for t, l, bh, bw in boxes:
            assert 10 <= bh <= 70 and 10 <= bw <= 70                        # sides U{10..70}
            assert t >= 3 and l >= 3 and t + bh <= 221 and l + bw <= 221    # kept 3 px inside the border
            mask[:, t:t + bh, l:l + bw] = True
        assert (y[mask] == 0).all()
        assert torch.equal(y[~mask], x[~mask])


def test_inpaint_first_box_always_and_early_stop():
    x = _img(64, 64)
    torch.manual_seed(3)
    assert all(len(cutout_inpaint(x, p_stop=1.0, return_boxes=True)[1]) == 1 for _ in range(20))
    assert all(len(cutout_inpaint(x, p_stop=0.0, return_boxes=True)[1]) == 10 for _ in range(5))
    n = 600
    counts = [len(cutout_inpaint(x, return_boxes=True)[1]) for _ in range(n)]
    expected = sum(0.9 ** k for k in range(10))                             # E[#boxes] = 6.51 with stop p = 0.1, cap 10
    var = sum((k + 1) ** 2 * (0.9 ** k * 0.1 if k < 9 else 0.9 ** 9) for k in range(10)) - expected ** 2
    assert abs(sum(counts) / n - expected) < 4.5 * math.sqrt(var / n)


# ---------------------------------------------------------------- out-painting


def test_outpaint_zero_outside_windows_original_inside():
    for size in (224, 64):
        x = _img(size, size)
        torch.manual_seed(4)
        for _ in range(30):
            y, boxes = outpaint(x, return_boxes=True)
            assert 1 <= len(boxes) <= 10
            mask = torch.zeros_like(x, dtype=torch.bool)
            for t, l, bh, bw in boxes:
                if size == 224: assert 154 <= bh <= 174 and 154 <= bw <= 174 and min(t, l) >= 3
                mask[:, t:t + bh, l:l + bw] = True
            assert (y[~mask] == 0).all() and (~mask).any()
            assert torch.equal(y[mask], x[mask])


# ---------------------------------------------------------------- local patch swapping


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 64, 64), (1, 224, 224), (1, 50, 80)])
def test_swap_is_a_pixel_permutation(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(5))
    x0 = x.clone()
    torch.manual_seed(5)
    for _ in range(20):
        y, pairs = local_patch_swap(x, return_pairs=True)
        assert len(pairs) == 10
        assert not torch.equal(y, x)
        assert torch.equal(y.flatten().sort().values, x.flatten().sort().values)   # same pixel multiset
    assert torch.equal(x, x0)


def test_swap_block_sizes_and_quirk12_overlap():
    x = _img(224, 224)
    torch.manual_seed(6)
    pairs = [p for _ in range(40) for p in local_patch_swap(x, return_pairs=True)[1]]
    assert all(10 <= h <= 15 and 10 <= w <= 15 for *_, h, w in pairs)
    overlap = lambda y1, x1, y2, x2, h, w: not (y1 + h <= y2 or y2 + h <= y1 or x1 + w <= x2 or x2 + w <= x1)
    small = _img(28, 28)
    many = [p for _ in range(100) for p in local_patch_swap(small, return_pairs=True)[1]]
    assert any(overlap(*p) for p in many), "default should allow overlapping blocks, as the original (quirk 12)"
    strict = [p for _ in range(100) for p in local_patch_swap(small, allow_overlap=False, return_pairs=True)[1]]
    assert not any(overlap(*p) for p in strict)


def test_swap_moves_the_right_content():
    x = torch.arange(64 * 64, dtype=torch.float32).view(1, 64, 64) / (64 * 64)
    torch.manual_seed(7)
    y, pairs = local_patch_swap(x, n_swaps=1, allow_overlap=False, return_pairs=True)
    (y1, x1, y2, x2, h, w), = pairs
    assert torch.equal(y[:, y1:y1 + h, x1:x1 + w], x[:, y2:y2 + h, x2:x2 + w])
    assert torch.equal(y[:, y2:y2 + h, x2:x2 + w], x[:, y1:y1 + h, x1:x1 + w])


# ---------------------------------------------------------------- shapes, ranges, no mutation, determinism


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 64, 64), (1, 224, 224), (1, 50, 80), (1, 9, 7)])
def test_all_ops_keep_shape_range_and_input(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(8))
    x0 = x.clone()
    torch.manual_seed(8)
    ops = [cutout_inpaint, outpaint, local_patch_swap, color_jitter, hflip, lambda t: gaussian_blur(t, 1.5),
           lambda t: adjust_brightness(t, 1.4), lambda t: adjust_contrast(t, 0.6), DiRAAugment(1, p_blur=1, p_flip=1),
           lambda t: DiRADistortion()(t)[0]]
    for op in ops:
        for _ in range(5):
            y = op(x)
            assert y.shape == x.shape and y.dtype == torch.float32
            assert 0 <= y.min() and y.max() <= 1
            assert torch.equal(x, x0), f"{op} modified its input"


def test_determinism_global_seed_and_generator():
    x = _img(64, 64)
    d, a = DiRADistortion(), DiRAAugment()
    run = lambda g=None: [d(a(x, generator=g), generator=g) for _ in range(10)]
    seed_everything(11); r1 = run()
    seed_everything(11); r2 = run()
    assert all(torch.equal(u[0], v[0]) and u[1] == v[1] for u, v in zip(r1, r2))
    state = torch.get_rng_state()
    g1 = run(torch.Generator().manual_seed(3)); g2 = run(torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state), "an explicit generator must leave the global RNG alone"
    assert all(torch.equal(u[0], v[0]) and u[1] == v[1] for u, v in zip(g1, g2))


# ---------------------------------------------------------------- crop, jitter, blur vs torchvision


def test_crop_box_matches_torchvision_get_params():
    from dira_nb.tvcompat import torchvision  # noqa: F401  (shim first)
    import torchvision.transforms as T
    for (h, w) in ((224, 224), (97, 131), (30, 400)):
        for s in range(200):
            torch.manual_seed(s); a = random_resized_crop_box(h, w)
            torch.manual_seed(s); b = T.RandomResizedCrop.get_params(torch.zeros(1, h, w), (0.2, 1.0), (3 / 4, 4 / 3))
            assert a == tuple(b), (h, w, s)


def test_crop_box_bounds_and_fallback():
    torch.manual_seed(0)
    for _ in range(300):
        t, l, bh, bw = random_resized_crop_box(50, 80)
        assert 0 <= t and t + bh <= 50 and 0 <= l and l + bw <= 80
    assert random_resized_crop_box(10, 100, scale=(0.9, 1.0)) == (0, 43, 10, 13)   # centre crop, ratio clipped
    x = _img(40, 60)
    assert resized_crop(x, (5, 7, 20, 30), 16).shape == (1, 16, 16)
    with pytest.raises(ValueError, match="does not fit"): resized_crop(x, (30, 0, 20, 20), 8)


def test_color_jitter_matches_torchvision_and_is_grayscale_only():
    from dira_nb.tvcompat import torchvision  # noqa: F401
    import torchvision.transforms as T
    import torchvision.transforms.functional as TF
    x = _img(40, 50)
    for s in range(50):
        torch.manual_seed(s); a = color_jitter(x)
        torch.manual_seed(s); b = T.ColorJitter(0.4, 0.4, 0.4, 0.1)(x)
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(adjust_contrast(x, 0.7), TF.adjust_contrast(x, 0.7), atol=1e-6)
    assert torch.allclose(adjust_brightness(x, 1.3), TF.adjust_brightness(x, 1.3), atol=1e-6)
    assert torch.equal(color_jitter(x, 0, 0, 0.4, 0.1), x)                 # saturation and hue: no-ops on 1 channel
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3 \\(RGB\\)"): color_jitter(torch.rand(2, 8, 8))
    rgb = torch.rand(3, 8, 8)
    assert not torch.equal(color_jitter(rgb, 0, 0, 0.4, 0.1), rgb)          # on RGB, saturation and hue act


def test_gaussian_blur_matches_torchvision():
    from dira_nb.tvcompat import torchvision  # noqa: F401
    import torchvision.transforms.functional as TF
    x = _img(40, 50)
    for sigma in (0.3, 1.0, 2.0):
        k = 2 * math.ceil(3 * sigma) + 1
        assert torch.allclose(gaussian_blur(x, sigma), TF.gaussian_blur(x, [k, k], [sigma, sigma]), atol=1e-5)
    assert torch.equal(gaussian_blur(x, 0.0), x)


def test_augment_probabilities_and_sigma_scaling():
    x = _img(64, 64)
    torch.manual_seed(9)
    ps = [DiRAAugment()(x, return_params=True)[1] for _ in range(2000)]
    assert abs(sum(p["jitter"] for p in ps) / 2000 - 0.8) < 4.5 * math.sqrt(0.16 / 2000)
    assert abs(sum(p["sigma"] is not None for p in ps) / 2000 - 0.5) < 4.5 * math.sqrt(0.25 / 2000)
    assert abs(sum(p["flip"] for p in ps) / 2000 - 0.5) < 4.5 * math.sqrt(0.25 / 2000)
    sig = [p["sigma"] for p in ps if p["sigma"] is not None]
    assert 0.1 * 64 / 224 <= min(sig) and max(sig) <= 2.0 * 64 / 224
    assert torch.equal(DiRAAugment(0, p_blur=0, p_flip=0)(x), x)
    assert torch.equal(DiRAAugment(0, p_blur=0, p_flip=1)(x), x.flip(-1))


def test_gallery_figure():
    import plotly.graph_objects as go
    x = tiny_batch(1, 64)[0]
    ex = distortion_examples(x, seed=0)
    assert list(ex) == ["original", "inpaint", "outpaint", "swap"]
    fig = distortion_gallery(x)
    assert isinstance(fig, go.Figure) and len(fig.data) == 8


def test_bad_input_messages():
    with pytest.raises(ValueError, match="C×H×W"): cutout_inpaint(torch.rand(8, 8))
    with pytest.raises(TypeError, match="float"): outpaint(torch.zeros(1, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"): local_patch_swap([[0.0]])
