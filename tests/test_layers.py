"""Layers point down: every `dira_nb` module imports only from modules whose notebook number is not above its own.

The notebook numbers in `nbs/` are the layers (`06_data.loaders` < `22_checkpoint` < `31_learner` < ... < `70_cli`).
Imports inside functions count too: a lazy import still ties a low layer to a high one."""
import ast, json, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def notebook_layers(nbs: Path) -> dict:
    "Module name (`data.loaders`) → its notebook's number prefix (`06`), from every `#| default_exp`."
    out = {}
    for nb in sorted(nbs.glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            m = re.search(r"#\|\s*default_exp\s+(\S+)", "".join(cell["source"]))
            if m: out[m.group(1)] = nb.name.split("_")[0]; break
    return out


def imported_modules(module: str, source: str) -> list:
    "(line, target module) for every import of a package module in `source`, relative or absolute, at any depth."
    pkg, out = module.split(".")[:-1], []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module == "dira_nb": target = ""
            elif node.module and node.module.startswith("dira_nb."): target = node.module[len("dira_nb."):]
            else: continue
            out += [(node.lineno, target)] + [(node.lineno, f"{target}.{a.name}".lstrip(".")) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name[len("dira_nb."):]) for a in node.names if a.name.startswith("dira_nb.")]
    return out


def upward_imports(layers: dict, sources: dict) -> list:
    "Every import from a module to one in a higher layer: `module (layer) -> target (layer), line N`."
    bad = []
    for mod, src in sources.items():
        for line, target in imported_modules(mod, src):
            if target in layers and layers[target] > layers[mod]:
                bad.append(f"{mod} ({layers[mod]}) -> {target} ({layers[target]}), line {line}")
    return sorted(set(bad))


def test_checker_finds_upward_imports():
    layers = {"core": "00", "data.io": "01", "learner": "31", "viz.recon": "60"}
    sources = {"core": "import os\n", "data.io": "from ..core import x\n",
               "learner": "def f():\n    from dira_nb.viz.recon import snap\n",
               "viz.recon": "from ..learner import Learner\nimport dira_nb.core\n"}
    assert upward_imports(layers, sources) == ["learner (31) -> viz.recon (60), line 2"]
    sources["data.io"] = "from dira_nb import learner\n"
    assert upward_imports(layers, sources) == ["data.io (01) -> learner (31), line 1", "learner (31) -> viz.recon (60), line 2"]


def test_no_module_imports_from_a_higher_layer():
    layers = notebook_layers(ROOT / "nbs")
    assert len(layers) > 40 and layers["core"] == "00" and layers["cli"] == "70"
    sources = {m: (ROOT / "dira_nb" / (m.replace(".", "/") + ".py")).read_text() for m in layers}
    bad = upward_imports(layers, sources)
    assert not bad, "imports that point up the layers:\n" + "\n".join(bad)
