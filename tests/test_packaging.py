"""The promises of the front door: two set-up commands, CI that runs them, a small Binder image."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_first_screen_gives_both_commands():
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:12])
    assert "make lab" in first_screen
    assert "make test" in first_screen


def test_makefile_targets_create_or_reuse_the_venv():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("lab", "test", "figures"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"Makefile has no '{target}' target"
    # the install step depends on pyproject.toml only, so a second `make test` reinstalls nothing
    assert re.search(r"^\$\(STAMP\): pyproject.toml$", makefile, re.MULTILINE)
    assert "--nbval-lax --nbval-current-env" in makefile


def test_second_make_test_reinstalls_nothing_unless_pyproject_changed(tmp_path):
    # A copy of the Makefile beside a fake venv: `make -n` prints what it would run.
    import os, shutil, time
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    python = tmp_path / ".venv" / "bin" / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    stamp = tmp_path / ".venv" / ".kdlab-installed"
    stamp.touch()
    now = time.time()
    os.utime(tmp_path / "pyproject.toml", (now - 10, now - 10))

    def dry_run():
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
        return subprocess.run(["make", "-n", "unit"], cwd=tmp_path, capture_output=True, text=True,
                              check=True, env=env).stdout

    fresh = dry_run()
    assert "pip install" not in fresh and "pytest tests" in fresh
    os.utime(tmp_path / "pyproject.toml", (now + 10, now + 10))
    assert "pip install" in dry_run()


def test_ci_runs_make_test_and_nothing_else_of_its_own():
    script = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in script.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert commands[-1] == "make test"
    assert not any("pytest" in line for line in commands), "CI must go through `make test`"


def test_pyproject_has_lower_bounds_only_and_the_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        assert "==" not in requirement and "<" not in requirement, f"no exact pins or caps: {requirement}"
    names = {re.split(r"[<>=!~ ]", r)[0] for r in project["dependencies"]}
    assert {"torch", "torchvision", "numpy", "pandas", "matplotlib", "seaborn", "ipywidgets", "tqdm"} <= names
    assert any(r.startswith("jupyterlab") for r in project["optional-dependencies"]["lab"])
    test_extra = {re.split(r"[<>=!~ ]", r)[0] for r in project["optional-dependencies"]["test"]}
    assert {"pytest", "nbval", "hypothesis"} <= test_extra
    assert project["scripts"]["kdlab"] == "kdlab.cli:main"


def test_binder_installs_cpu_builds_and_kdlab_itself():
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    lines = [l.strip() for l in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    assert any(re.fullmatch(r"torch==[\d.]+\+cpu", l) for l in lines)
    assert any(re.fullmatch(r"torchvision==[\d.]+\+cpu", l) for l in lines)
    assert any(l.startswith(".") for l in lines), "Binder must install kdlab itself"


def test_readme_links_every_notebook_on_binder_and_colab():
    readme = (ROOT / "README.md").read_text()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"labpath=notebooks%2F{notebook.name}" in readme, f"no Binder link for {notebook.name}"
        assert f"colab.research.google.com/github/kdlab-org/kdlab/blob/main/notebooks/{notebook.name}" in readme


def test_package_data_ships_the_embedded_dataset():
    import kdlab.data  # noqa: F401  (the file must be found through the installed package)
    assert (Path(kdlab.data.__file__).parent / "_data" / "mnist10k.npz").is_file()
    assert sys.version_info >= (3, 10)
