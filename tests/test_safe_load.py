"""Loading never executes code: malicious pickles are refused with a CheckpointError naming the file; the package
only uses weights_only torch loads or safetensors; backbones export to safetensors with metadata."""
import json, os, re
from pathlib import Path
import pytest
import torch

from dira_nb.checkpoint import (load_checkpoint, load_backbone, export_backbone, safe_torch_load, read_safetensors,
                                CheckpointError)
from dira_nb.methods.core import Method, create_method
from dira_nb.pretrain import pretrain
import dira_nb

PKG = Path(dira_nb.__file__).resolve().parent


class Payload:
    "Unpickling this runs `os.system(cmd)` — what a poisoned checkpoint would do."
    def __init__(self, cmd): self.cmd = cmd
    def __reduce__(self): return (os.system, (self.cmd,))


class EvalPayload:
    def __init__(self, code): self.code = code
    def __reduce__(self): return (eval, (self.code,))


def poisoned(path: Path, marker: Path, kind="system"):
    payload = Payload(f"touch {marker}") if kind == "system" else EvalPayload(f"open({str(marker)!r}, 'w').close()")
    torch.save({"meta": {"method": "dira", "backbone": "resnet18", "in_chans": 1}, "backbone_state": {},
                "method_state": {}, "training_state": payload, "x": payload}, path)
    return path


LOADERS = {
    "load_checkpoint": lambda p: load_checkpoint(p),
    "load_backbone": lambda p: load_backbone(p),
    "Method.from_checkpoint": lambda p: Method.from_checkpoint(p),
    "export_backbone": lambda p: export_backbone(p, p.parent / "bb.safetensors"),
    "pretrain(resume=)": lambda p: pretrain(resume=p, quiet=True),
}


@pytest.mark.parametrize("kind", ["system", "eval"])
@pytest.mark.parametrize("loader", list(LOADERS))
def test_malicious_checkpoint_runs_no_code(tmp_path, loader, kind):
    marker = tmp_path / "PWNED"
    p = poisoned(tmp_path / "evil.pt", marker, kind)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused to load"):
        LOADERS[loader](p)
    assert not marker.exists(), "loading executed code from the checkpoint"
    # and the payload really is live: an unsafe load would have run it
    torch.load(p, weights_only=False)
    assert marker.exists()


def test_truncated_and_empty_checkpoints_are_clear_errors(tmp_path):
    m = create_method("di", moco_k=8)
    good = m.save_checkpoint(tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt: not a readable checkpoint \(truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt: the checkpoint file is empty"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        safe_torch_load(tmp_path)


def test_backbone_exports_are_safetensors_with_metadata(tmp_path):
    m = create_method("dir", moco_k=8)
    ck = m.save_checkpoint(tmp_path / "ck.pt", extra_meta=dict(epoch=3, history=[dict(train_loss=1.0)]))
    bb = export_backbone(ck, tmp_path / "backbone.safetensors")
    assert bb.read_bytes()[8:9] == b"{"                                   # a safetensors header, not a pickle
    from safetensors import safe_open
    with safe_open(str(bb), "pt") as f:
        md = f.metadata()
    assert (md["method"], md["backbone"], md["in_chans"], md["stage"]) == ("dira", "resnet18", "1", "dir")
    assert json.loads(md["intensity"])["range"] == [0.0, 1.0] and "torch" in json.loads(md["versions"])
    state, meta = read_safetensors(bb)
    assert "history" not in meta and meta["intensity"]["range"] == (0.0, 1.0)
    model, report = load_backbone(bb)
    assert report.ok and torch.equal(model.conv1.weight, m.encoder.backbone_state_dict()["conv1.weight"])
    # old torch-format exports (and names without the suffix) still load
    old = export_backbone(ck, tmp_path / "backbone.pt")
    assert report.ok and load_backbone(old)[1].ok
    (tmp_path / "noext").write_bytes(bb.read_bytes())
    assert load_backbone(tmp_path / "noext")[1].ok
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: not a readable safetensors file"):
        load_backbone(tmp_path / "bad.safetensors")


UNSAFE = [(re.compile(r"torch\.load\((?![^)]*weights_only=True)"), "torch.load without weights_only=True"),
          (re.compile(r"\bpickle\.loads?\("), "pickle.load"), (re.compile(r"\bdill\."), "dill"),
          (re.compile(r"allow_pickle\s*=\s*True"), "np.load(allow_pickle=True)")]


def test_package_audit_no_unsafe_loads():
    "Every module of the installed package loads weights only through weights_only=True torch.load or safetensors."
    offenders = []
    for f in sorted(PKG.rglob("*.py")):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for rx, what in UNSAFE:
                if rx.search(code): offenders.append(f"{f.relative_to(PKG.parent)}:{i}: {what}: {line.strip()}")
    print(f"audited {len(list(PKG.rglob('*.py')))} modules")
    assert offenders == [], "\n".join(offenders)
