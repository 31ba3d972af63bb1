"""Colour end to end (issue 15): a folder of RGB images trains DiRA in RGB — views, restoration target, critic, backbone
export and the report's pictures keep three channels — while `--gray` and the grey-only methods (LD, ACE) train on one
grey channel, and asking those for colour is a clear error."""
from __future__ import annotations
import warnings
from pathlib import Path
import numpy as np
import pytest
import yaml
from PIL import Image


def _colour_folder(root: Path, n: int = 12, size: int = 40) -> Path:
    "Reddish skin-like images with a purple blob: colour that a grey conversion would flatten."
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        a = np.zeros((size, size, 3), np.uint8)
        a[...] = [150 + rng.integers(0, 60), 70, 50]
        cy, cx = rng.integers(10, size - 10, 2)
        a[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = [70, 30, 110]
        Image.fromarray(a).save(root / f"img{i:02d}.png")
    return root


def _grey_folder(root: Path, n: int = 12, size: int = 40) -> Path:
    "Grey images saved as RGB PNGs (R = G = B), as many X-ray exports are."
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        g = rng.integers(0, 256, (size, size), dtype=np.uint8)
        Image.fromarray(np.stack([g] * 3, -1)).save(root / f"g{i:02d}.png")
    return root


def test_colour_folder_trains_in_rgb_and_the_report_keeps_colour(tmp_path, capsys):
    from dira_nb.pretrain import PretrainConfig, pretrain
    from dira_nb.checkpoint import load_checkpoint, read_safetensors
    from dira_nb.report import write_report
    data = _colour_folder(tmp_path / "derm")
    out = tmp_path / "run"
    pretrain(PretrainConfig(data=str(data), out=str(out), image_size=32, epochs_warmup=1, epochs_main=1, batch_size=4,
                            snapshots=4, probe=8), quiet=False)
    assert "colour images found: training in RGB" in capsys.readouterr().out
    assert yaml.safe_load((out / "config.yaml").read_text())["in_chans"] == 3
    ck = load_checkpoint(out / "final.pt")
    assert ck["meta"]["in_chans"] == 3
    state, meta = read_safetensors(out / "backbone.safetensors")
    assert tuple(state["conv1.weight"].shape) == (64, 3, 7, 7)
    snap = np.asarray(Image.open(out / "dira" / "recon_epoch_001.png"))
    assert snap.ndim == 3 and np.abs(snap[..., 0].astype(int) - snap[..., 2]).max() > 40     # the snapshot is in colour
    page = write_report(out, n_probe=8, how="pca", n_show=4, n_attr=2)
    assert 'class="err"' not in page.read_text(), "a report section failed"
    for name in ("reconstructions.png", "realism_maps.png", "attributions.png"):
        im = np.asarray(Image.open(page.parent / name).convert("RGB")).astype(int)
        assert np.abs(im[..., 0] - im[..., 2]).max() > 40, f"{name} lost the colour"


def test_gray_flag_grey_files_and_grey_only_methods(tmp_path, monkeypatch):
    from dira_nb.pretrain import PretrainConfig, pretrain
    from dira_nb.data.io import image_channels, list_images
    colour, grey = _colour_folder(tmp_path / "derm"), _grey_folder(tmp_path / "xray")
    assert image_channels(list_images(colour)) == 3 and image_channels(list_images(grey)) == 1
    kw = dict(image_size=32, epochs_warmup=0, epochs_main=0, batch_size=4, snapshots=0, probe=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                   # 0 epochs: "the backbone is untrained"
        runs = {"gray": PretrainConfig(data=str(colour), out=str(tmp_path / "r1"), gray=True, **kw),
                "grey files": PretrainConfig(data=str(grey), out=str(tmp_path / "r2"), **kw)}
        for name, cfg in runs.items():
            pretrain(cfg, quiet=True)
            assert yaml.safe_load((Path(cfg.out) / "config.yaml").read_text())["in_chans"] == 1, name
    # a method that declares no colour support (e.g. one a user adds) falls back to grey, and refuses in_chans=3
    from dira_nb.methods.ld import LD
    monkeypatch.setattr(LD, "colour", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pretrain(PretrainConfig(data=str(colour), out=str(tmp_path / "r3"), method="ld", **kw), quiet=True)
    assert yaml.safe_load((tmp_path / "r3" / "config.yaml").read_text())["in_chans"] == 1
    with pytest.raises(ValueError, match="grey images only"):
        pretrain(PretrainConfig(data=str(colour), out=str(tmp_path / "r4"), method="ld", in_chans=3, **kw), quiet=True)
    with pytest.raises(ValueError, match="contradicts gray=True"):
        PretrainConfig(data=str(colour), out=str(tmp_path / "r5"), gray=True, in_chans=3)
    with pytest.raises(ValueError, match="in_chans"):
        PretrainConfig(data=str(colour), out=str(tmp_path / "r6"), in_chans=2)


def test_cli_has_the_colour_flags():
    from dira_nb.cli import build_parser
    a = build_parser().parse_args(["pretrain", "--data", "x", "--gray", "--in-chans", "3"])
    assert a.gray is True and a.in_chans == 3


@pytest.mark.parametrize("method", ["ld_r", "ace_r"])
def test_ld_and_ace_train_in_rgb_and_restore_colour(tmp_path, method):
    "LD and ACE (restorative variants) on a colour folder: RGB views, a 3-channel restoration and backbone, a report."
    from dira_nb.pretrain import PretrainConfig, pretrain
    from dira_nb.methods.core import Method
    from dira_nb.report import write_report
    import torch
    out = tmp_path / method
    pretrain(PretrainConfig(data=str(_colour_folder(tmp_path / "derm")), out=str(out), method=method, image_size=32,
                            epochs_warmup=1, epochs_main=1, epochs=2, batch_size=4, snapshots=0, probe=8), quiet=True)
    assert yaml.safe_load((out / "config.yaml").read_text())["in_chans"] == 3
    m = Method.from_checkpoint(out / "final.pt").eval()
    with torch.no_grad(): r = m.reconstruct(torch.rand(2, 3, 32, 32))
    assert r.shape == (2, 3, 32, 32)
    page = write_report(out, n_probe=8, how="pca", n_show=2, n_attr=2)
    assert 'class="err"' not in page.read_text(), "a report section failed"
