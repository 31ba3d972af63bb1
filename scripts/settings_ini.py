#!/usr/bin/env python
"""Write `settings.ini`, nbdev 2's `[DEFAULT]` layout, as a mirror of `pyproject.toml` (the one source of truth).

nbdev 3 reads `pyproject.toml` (`[project]` + `[tool.nbdev]`) and never looks at `settings.ini` while a
`pyproject.toml` with `[tool.nbdev]` exists. The mirror serves people and tools that still read nbdev 2's layout.

    python scripts/settings_ini.py            # rewrite settings.ini from pyproject.toml
    python scripts/settings_ini.py --check    # exit 1 (with a diff) when settings.ini is not what pyproject.toml says
"""
from __future__ import annotations
import argparse, difflib, re, sys, tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = ("# GENERATED from pyproject.toml by scripts/settings_ini.py -- do not edit; run that script instead.\n"
          "# nbdev 3 reads pyproject.toml and ignores this file; it mirrors nbdev 2's layout for older tools.\n")
# SPDX identifiers of pyproject.toml -> nbdev 2's licence keys
LICENSES = {"Apache-2.0": "apache2", "MIT": "mit", "GPL-3.0": "gpl3", "GPL-2.0": "gpl2", "BSD-3-Clause": "bsd3"}


def _version(root: Path, pyproject: dict) -> str:
    "The package version: `[project].version`, or the `__version__` that `[tool.setuptools.dynamic]` points to."
    if "version" in pyproject["project"]: return pyproject["project"]["version"]
    attr = pyproject["tool"]["setuptools"]["dynamic"]["version"]["attr"]            # e.g. dira_nb.__version__
    module, name = attr.rsplit(".", 1)
    path = root.joinpath(*module.split(".")) / "__init__.py"
    m = re.search(rf"^{name}\s*=\s*['\"]([^'\"]+)['\"]", path.read_text(), re.M)
    if not m: raise SystemExit(f"settings_ini: no {name} = '...' in {path}")
    return m.group(1)


def _flag(v) -> str: return str(bool(v))


def settings(root: Path = ROOT) -> dict:
    "The `[DEFAULT]` keys of nbdev 2's settings.ini, every value taken from `root/pyproject.toml`."
    pp = tomllib.loads((root / "pyproject.toml").read_text())
    proj, nb = pp["project"], pp["tool"].get("nbdev", {})
    lib = nb.get("lib_name", proj["name"])
    url = proj.get("urls", {}).get("Repository", "")
    user = url.rstrip("/").split("/")[-2] if url.count("/") >= 4 else ""
    docs = proj.get("urls", {}).get("Documentation", "")
    doc_host, doc_baseurl = (re.match(r"(https?://[^/]+)(/.*)?", docs).groups("") if docs else ("", ""))
    lic = proj.get("license", "")
    if lic not in LICENSES: raise SystemExit(f"settings_ini: pyproject.toml licence {lic!r} has no nbdev 2 key; add it to LICENSES")
    author = proj.get("authors", [{}])[0]
    scripts = " ".join(f"{k}={v}" for k, v in proj.get("scripts", {}).items())
    return {
        "repo": proj["name"], "lib_name": lib, "version": _version(root, pp),
        "min_python": proj.get("requires-python", "").lstrip(">="), "license": LICENSES[lic],
        "black_formatting": _flag(nb.get("black_formatting", False)),
        "doc_path": nb.get("doc_path", "_docs"), "lib_path": nb.get("lib_path", lib), "nbs_path": nb.get("nbs_path", "nbs"),
        "recursive": _flag(nb.get("recursive", True)), "tst_flags": nb.get("tst_flags", "notest"),
        "put_version_in_init": _flag(nb.get("put_version_in_init", True)), "branch": nb.get("branch", "main"),
        "custom_sidebar": _flag(nb.get("custom_sidebar", False)), "doc_host": doc_host, "doc_baseurl": doc_baseurl.rstrip("/"),
        "git_url": url, "title": nb.get("title", lib), "author": author.get("name", ""), "author_email": author.get("email", ""),
        "description": proj.get("description", ""), "keywords": ", ".join(proj.get("keywords", [])), "user": user,
        "requirements": " ".join(proj.get("dependencies", [])),
        "dev_requirements": " ".join(proj.get("optional-dependencies", {}).get("dev", [])),
        "console_scripts": scripts, "jupyter_hooks": _flag(nb.get("jupyter_hooks", True)),
        "clean_ids": _flag(nb.get("clean_ids", True)), "clear_all": _flag(nb.get("clear_all", False)),
        "readme_nb": nb.get("readme_nb", "index.ipynb"),
    }


def render(root: Path = ROOT) -> str:
    "The full text of settings.ini for `root/pyproject.toml`."
    return HEADER + "[DEFAULT]\n" + "".join(f"{k} = {v}\n" for k, v in settings(root).items())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 when they differ")
    p.add_argument("--root", type=Path, default=ROOT, help="project folder holding pyproject.toml")
    a = p.parse_args(argv)
    want, path = render(a.root), a.root / "settings.ini"
    if a.check:
        have = path.read_text() if path.exists() else ""
        if have == want: print(f"{path} mirrors pyproject.toml"); return 0
        sys.stdout.writelines(difflib.unified_diff(have.splitlines(True), want.splitlines(True), str(path), "from pyproject.toml"))
        print(f"\n{path} is out of date: run python scripts/settings_ini.py", file=sys.stderr)
        return 1
    tmp = path.with_name(path.name + ".tmp-write")
    tmp.write_text(want); tmp.replace(path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
