"""settings.ini is nbdev 2's layout of exactly what pyproject.toml says, and nbdev 3 never reads it."""
import configparser, importlib.util, shutil, subprocess, sys, tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("settings_ini", ROOT / "scripts" / "settings_ini.py")
settings_ini = importlib.util.module_from_spec(spec); spec.loader.exec_module(settings_ini)


def _ini(text: str) -> configparser.SectionProxy:
    cp = configparser.ConfigParser(interpolation=None); cp.read_string(text)
    return cp["DEFAULT"]


def test_mirror_is_up_to_date():
    "Regenerating the mirror leaves no diff (fix: python scripts/settings_ini.py)."
    assert (ROOT / "settings.ini").read_text() == settings_ini.render(ROOT)
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "settings_ini.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mirror_holds_pyproject_values():
    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())
    ini = _ini((ROOT / "settings.ini").read_text())
    import dira_nb
    assert ini["lib_name"] == "dira_nb" and ini["lib_path"] == "dira_nb" and ini["nbs_path"] == "nbs"
    assert ini["version"] == dira_nb.__version__
    assert ini["requirements"].split() == pp["project"]["dependencies"]                  # the exact pins, in order
    assert ini["dev_requirements"].split() == pp["project"]["optional-dependencies"]["dev"]
    assert ini["tst_flags"] == pp["tool"]["nbdev"]["tst_flags"]
    assert ini["min_python"] == pp["project"]["requires-python"].lstrip(">=")
    assert ini["license"] == "apache2" and ini["recursive"] == "True"
    assert ini["console_scripts"] == "dira-nb=dira_nb.cli:main"


def test_check_fails_when_pyproject_changes(tmp_path):
    "The check can fail: a changed pin in a copy of the project makes --check exit 1 with a diff."
    for f in ("pyproject.toml", "settings.ini"): shutil.copy(ROOT / f, tmp_path / f)
    (tmp_path / "dira_nb").mkdir(); shutil.copy(ROOT / "dira_nb" / "__init__.py", tmp_path / "dira_nb" / "__init__.py")
    assert settings_ini.main(["--check", "--root", str(tmp_path)]) == 0
    pp = (tmp_path / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(pp.replace('"scipy>=1.10"', '"scipy>=1.11"'))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "settings_ini.py"), "--check", "--root", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "scipy>=1.11" in r.stdout and "out of date" in r.stderr
    assert settings_ini.main(["--root", str(tmp_path)]) == 0                              # regenerate
    assert "scipy>=1.11" in _ini((tmp_path / "settings.ini").read_text())["requirements"].split()


def test_nbdev3_reads_pyproject_with_the_mirror_present():
    "With settings.ini beside it, nbdev 3's config still comes from pyproject.toml."
    from nbdev.config import get_config
    assert (ROOT / "settings.ini").exists()
    cfg = get_config(path=ROOT)
    assert Path(cfg.config_file).name == "pyproject.toml"
    assert cfg.lib_name == "dira_nb" and Path(cfg.lib_path) == ROOT / "dira_nb"
