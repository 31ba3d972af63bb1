"""DiRA, LD and ACE share one restorative + adversarial component (`methods.restore.Restorative`), one config base
(`MethodConfig`) and one batch contract (`batch_keys`, `restoration_pair`), and the consumers use the contract."""
import numpy as np
import pytest
import torch
from dira_nb.core import seed_everything, tiny_batch
from dira_nb.methods.core import Method, MethodConfig, create_method, register_method, METHODS
from dira_nb.methods.restore import Restorative, RestorativeConfig
from dira_nb.methods.dira import DiRA
from dira_nb.methods.ld import LD
from dira_nb.methods.ace import ACE

SIZE = 32
# restorative + adversarial preset of each method, on a small ResNet-18 so the three U-Nets are alike
PRESETS = {"dira": dict(moco_k=16), "ld_ra": dict(backbone="resnet18", n_clusters=4),
           "ace_ra": dict(backbone="resnet18", min_tokens=4, out_dim=64, hidden_dim=32, bottleneck_dim=16)}
INPUT_KEY = {"dira": "x1", "ld_ra": "x_res", "ace_ra": "x1"}      # what each method restores


def _make(name, **kw):
    seed_everything(0)
    return create_method(name, image_size=SIZE, **{**PRESETS[name], **kw})


def _batch(m, n=4):
    "A collated batch of `n` samples from the method's own views."
    seed_everything(1)
    v = m.views(SIZE)
    return torch.utils.data.default_collate([v(img) for img in tiny_batch(n, 40, seed=2)])


def test_one_component_class():
    for cls in (DiRA, LD, ACE):
        assert issubclass(cls, Restorative) and issubclass(cls.config_class, RestorativeConfig)
        assert issubclass(cls.config_class, MethodConfig)
        for hook in ("discriminator_loss", "restoration_losses", "reconstruct", "critic_optimizer", "build_critic",
                     "generator_parameters", "restoration_pair"):
            assert getattr(cls, hook) is getattr(Restorative, hook, getattr(Method, hook, None)), (cls.__name__, hook)
        assert cls.validation_step is Method.validation_step          # one validation step over `predict`
    assert LD.restoration_keys == ("x_res", "target") and DiRA.restoration_keys == ACE.restoration_keys == ("x1", "target")


def test_critic_step_and_restoration_terms_identical_across_methods():
    methods = {n: _make(n) for n in PRESETS}
    d_state = methods["dira"].discriminator.state_dict()
    for m in methods.values(): m.discriminator.load_state_dict(d_state)
    seed_everything(3)
    target = tiny_batch(4, SIZE, seed=4)
    recon = (target + 0.1 * torch.randn_like(target)).clamp(0, 1).requires_grad_(True)
    batch, pred = dict(target=target), dict(recon=recon)
    critic = {n: m.discriminator_loss(batch, pred) for n, m in methods.items()}
    ref = critic["dira"]
    assert set(ref) == {"loss_critic", "critic_real", "critic_fake"}
    for n, d in critic.items():
        for k in ref: assert torch.equal(d[k], ref[k]), (n, k)
    # the generator's restoration + adversarial terms (same weights for the comparison: ACE's default w_res is 1)
    terms = {}
    for n, m in methods.items():
        m.config.w_res, m.config.w_adv = 10.0, 0.001
        out = {}
        total = m.restoration_losses(batch, pred, out, 0.0)
        terms[n] = (total, out)
        assert all(p.requires_grad for p in m.discriminator.parameters())
    for n, (total, out) in terms.items():
        assert set(out) == {"loss_res", "psnr", "loss_adv"}
        assert torch.equal(total, terms["dira"][0]), n
    # D is frozen while the adversarial term is built: its gradient reaches the restoration, not D
    m = methods["ld_ra"]; m.zero_grad(set_to_none=True); recon.grad = None
    terms["ld_ra"][0].backward()
    assert recon.grad is not None and all(p.grad is None for p in m.discriminator.parameters())


@pytest.mark.parametrize("name", list(PRESETS))
def test_batch_contract_and_restoration_pair(name):
    m = _make(name)
    b = _batch(m)
    assert m.check_batch(b) is b
    x, t = m.restoration_pair(b)
    assert x is b[INPUT_KEY[name]] and t is b["target"]
    assert not torch.equal(x, t)                               # the input is the distorted one
    # a single sample works as well (report and dashboard pass samples)
    s = {k: v[0] for k, v in b.items()}
    assert m.restoration_pair(s)[0] is s[INPUT_KEY[name]]
    with pytest.raises(KeyError, match="lacks"): m.check_batch({k: v for k, v in b.items() if k != m.batch_keys[0]})
    # training and the default validation step run on the views' batch; the critic terms are reported
    out = m.eval().validation_step(b)
    assert {"loss", "loss_res", "psnr", "loss_adv", "loss_critic", "critic_real", "critic_fake"} <= set(out)
    assert m.reconstruct(x).shape == t.shape


@pytest.mark.parametrize("name", ["di", "ld", "ace"])
def test_no_decoder_no_pair(name):
    seed_everything(0)
    kw = dict(moco_k=16) if name == "di" else dict(backbone="resnet18", min_tokens=4) if name == "ace" else {}
    m = create_method(name, image_size=SIZE, **kw)
    b = _batch(m)
    assert m.restoration_pair(b) is None and m.reconstruct(tiny_batch(2, SIZE)) is None
    assert m.discriminator_loss(b, dict(recon=None)) is None


def test_dashboard_restores_what_ld_r_restores():
    "The dashboard's restoration panel feeds `x_res` (LD's distorted input), not the undistorted view 1."
    from dira_nb.viz.dashboard import Dashboard, _whole_image_views
    seed_everything(0)
    m = create_method("ld_r", image_size=SIZE, n_clusters=4)
    probes = tiny_batch(4, 40)
    d = Dashboard(m, probes, labels=np.arange(4) % 2, n_show=2, reducer="pca")
    assert d.framing in ("whole image", "training crop")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(d.seed)
        v = m.views(d.probes.shape[-1])
        if d.framing == "whole image": v = _whole_image_views(v)   # the dashboard restores whole upright images when it can
        samples = [v(img) for img in d.probes]
    x_res = torch.stack([s["x_res"] for s in samples]).float()
    x1 = torch.stack([s["x1"] for s in samples]).float()
    assert torch.equal(d.inputs, x_res) and not torch.equal(d.inputs, x1)
    assert torch.equal(d.targets, torch.stack([s["target"] for s in samples]).float())


def test_register_method_checks_the_config_base():
    from dataclasses import dataclass

    @dataclass
    class Lacking:
        lr: float = 0.1
    class Bad(Method): name = "bad"; config_class = Lacking
    with pytest.raises(TypeError, match=r"lacks the MethodConfig field\(s\) \['backbone', 'in_chans', 'image_size', 'stage'"):
        register_method("bad_method", Bad)
    class NotDC(Method): name = "nodc"; config_class = dict
    with pytest.raises(TypeError, match="must be a dataclass"): register_method("nodc", NotDC)
    assert "bad_method" not in METHODS and "nodc" not in METHODS


def test_state_dict_keys_keep_their_names():
    "Checkpoints written before the shared component load: the U-Net and the PatchGAN keep their attribute names."
    for n in PRESETS:
        keys = list(_make(n).state_dict())
        assert any(k.startswith("unet.") for k in keys) and any(k.startswith("discriminator.") for k in keys), n
        assert not any(k.startswith(("restore.", "restorative.")) for k in keys)
