"""The promises of the front door: two set-up commands that work as root, CI that runs them, a CPU-only torch
where there is no GPU, one repository URL, a small Binder image, and a package that looks like one."""
import http.server
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _script(name):
    """A module from scripts/ (they are not part of the package)."""
    spec = importlib.util.spec_from_file_location(f"_kdlab_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _make_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    env.update(extra)
    return env


# ----------------------------------------------------------------------------------------------------
# README, Makefile, CI


def test_readme_first_screen_gives_both_commands():
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:12])
    assert "make lab" in first_screen
    assert "make test" in first_screen


def test_makefile_targets_create_or_reuse_the_venv():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("lab", "test", "figures", "widgets7"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"Makefile has no '{target}' target"
    # the install step depends on pyproject.toml only, so a second `make test` reinstalls nothing
    assert re.search(r"^\$\(LAB_STAMP\): pyproject.toml$", makefile, re.MULTILINE)
    assert re.search(r"^\$\(TEST_STAMP\): \$\(LAB_STAMP\)$", makefile, re.MULTILINE)
    assert "--nbval-lax --nbval-current-env" in makefile
    assert re.search(r"^test: .*\bwidgets7\b", makefile, re.MULTILINE), "make test runs the ipywidgets 7.7.1 tests"
    # kdlab picks the thread count (kdlab.threads); the Makefile no longer forces one
    assert "OMP_NUM_THREADS" not in "\n".join(l for l in makefile.splitlines() if not l.startswith("#"))


def _fake_venv(folder, stamps):
    (folder / ".venv" / "bin").mkdir(parents=True)
    for name in ("python", "jupyter"):
        tool = folder / ".venv" / "bin" / name
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
    for stamp in stamps:
        (folder / ".venv" / stamp).touch()


def _dry_run(folder, target, *variables, path=None):
    env = _make_env(**({"PATH": path} if path else {}))
    return subprocess.run(["make", "-n", target, *variables], cwd=folder, capture_output=True, text=True,
                          check=True, env=env).stdout


def test_second_make_test_reinstalls_nothing_unless_pyproject_changed(tmp_path):
    # A copy of the Makefile beside a fake venv: `make -n` prints what it would run.
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    now = time.time()
    os.utime(tmp_path / "pyproject.toml", (now - 10, now - 10))
    _fake_venv(tmp_path, [".kdlab-lab-installed", ".kdlab-test-installed"])
    for stamp in (".kdlab-lab-installed", ".kdlab-test-installed"):
        os.utime(tmp_path / ".venv" / stamp, (now - 5, now - 5))

    fresh = _dry_run(tmp_path, "unit")
    assert "pip install" not in fresh and "pytest tests" in fresh
    assert "pip install" not in _dry_run(tmp_path, "lab")
    os.utime(tmp_path / "pyproject.toml", (now + 10, now + 10))
    changed = _dry_run(tmp_path, "unit")
    assert "-e '.[lab]'" in changed and "-e '.[lab,test]'" in changed and "scripts/install_torch.py" in changed
    # `make lab` installs what the tutorials need, not the test tools (playwright, pytest, ...)
    lab = _dry_run(tmp_path, "lab")
    assert "-e '.[lab]'" in lab and "test]" not in lab


def test_make_lab_adds_allow_root_only_for_root_and_passes_lab_args(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    _fake_venv(tmp_path, [".kdlab-lab-installed"])
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    commands = {}
    for uid in ("0", "1000"):
        (fake_bin / "id").write_text(f"#!/bin/sh\necho {uid}\n")
        (fake_bin / "id").chmod(0o755)
        output = _dry_run(tmp_path, "lab", "LAB_ARGS=--port 9999 --no-browser",
                          path=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
        commands[uid] = next(line for line in output.splitlines() if "jupyter lab" in line)
    assert commands["0"] == ".venv/bin/jupyter lab --allow-root --port 9999 --no-browser notebooks/"
    assert commands["1000"] == ".venv/bin/jupyter lab --port 9999 --no-browser notebooks/"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_make_lab_starts_jupyterlab_that_lists_the_notebooks(tmp_path):
    """`make lab` in the checkout, as the CI user (root) runs it: the server answers and its contents API lists
    every notebook. The venv is this test's own interpreter behind a fresh stamp, so nothing is installed."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    jupyter = Path(sys.executable).with_name("jupyter")
    assert jupyter.exists(), f"no jupyter beside {sys.executable}"
    (venv / "bin" / "jupyter").symlink_to(jupyter)
    (venv / ".kdlab-lab-installed").touch()  # newer than pyproject.toml: make installs nothing
    port, token = _free_port(), secrets.token_hex(16)
    lab_args = (f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --ServerApp.port_retries=0 "
                f"--IdentityProvider.token={token} --LabApp.news_url=None "
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate --ServerApp.terminals_enabled=False")
    jupyter_dirs = {name: str(tmp_path / "jupyter" / name.lower()) for name in
                    ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
                     "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR")}
    log = open(tmp_path / "make-lab.log", "wb")
    process = subprocess.Popen(["make", "lab", f"VENV={venv}", f"LAB_ARGS={lab_args}"], cwd=ROOT,
                               env=_make_env(**jupyter_dirs), stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        listing = None
        while time.monotonic() < deadline and listing is None:
            assert process.poll() is None, "make lab exited:\n" + (tmp_path / "make-lab.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/api/contents?token={token}", timeout=5) as response:
                    listing = json.load(response)
            except OSError:
                time.sleep(0.5)
        assert listing is not None, "JupyterLab did not answer:\n" + (tmp_path / "make-lab.log").read_text()[-3000:]
        names = sorted(entry["name"] for entry in listing["content"] if entry["type"] == "notebook")
        assert names == [path.name for path in NOTEBOOKS]
        if os.geteuid() == 0:
            assert "--allow-root" in (tmp_path / "make-lab.log").read_text()
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
    assert not list((ROOT / "notebooks").glob(".ipynb_checkpoints"))


def test_ci_runs_make_test_and_nothing_else_of_its_own():
    script = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in script.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert commands[-1] == "make test"
    assert not any("pytest" in line for line in commands), "CI must go through `make test`"


def test_widget_tests_run_against_ipywidgets_7_7_1_in_their_own_environment():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nwidgets7:", 1)[1].split("\n\n", 1)[0]
    assert "$(WIDGETS7)/bin/python" in recipe and "7.7.1" in recipe
    assert "$(wildcard tests/test_widgets*.py)" in recipe  # every widget test file
    assert len(list((ROOT / "tests").glob("test_widgets*.py"))) >= 3
    assert "ipywidgets==7.7.1" in makefile and "--no-deps" in makefile


# ----------------------------------------------------------------------------------------------------
# CPU-only torch where there is no NVIDIA GPU


@pytest.fixture
def install_torch(monkeypatch):
    module = _script("install_torch")
    monkeypatch.setattr(module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else importlib.util.find_spec(name, *a))
    return module


def _fake_nvidia_smi(folder, exit_code, output):
    folder.mkdir(exist_ok=True)
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\necho '{output}'\nexit {exit_code}\n")
    tool.chmod(0o755)
    return str(folder)


class _TorchIndex(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200 if self.path.rstrip("/").endswith("/torch") else 404)
        self.end_headers()
        self.wfile.write(b"<a href='torch-2.9.1+cpu-cp311-cp311-linux_x86_64.whl'>torch</a>")

    def log_message(self, *args):
        pass


def test_torch_comes_from_the_cpu_index_when_no_gpu_is_found(tmp_path, monkeypatch, install_torch):
    server = http.server.HTTPServer(("127.0.0.1", 0), _TorchIndex)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        index = f"http://127.0.0.1:{server.server_port}/whl/cpu"
        monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path / "no-gpu", 9, "NVIDIA-SMI has failed"))
        arguments, reason = install_torch.plan("linux", {"KDLAB_TORCH_INDEX": index})
        assert arguments == ["install", "--quiet", "torch", "torchvision", "--index-url", index]
        assert "no NVIDIA GPU" in reason
        monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path / "gpu", 0, "GPU 0: NVIDIA A100 (UUID: GPU-1)"))
        arguments, reason = install_torch.plan("linux", {"KDLAB_TORCH_INDEX": index})
        assert arguments is None and "lists a GPU" in reason
    finally:
        server.shutdown()
    assert install_torch.plan("darwin", {})[0] is None
    assert install_torch.plan("linux", {"KDLAB_TORCH_INDEX": "default"})[0] is None


def test_unreachable_cpu_index_falls_back_within_the_timeout(tmp_path, monkeypatch, install_torch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi at all
    refused = f"http://127.0.0.1:{_free_port()}/whl/cpu"  # nothing listens there
    start = time.perf_counter()
    arguments, reason = install_torch.plan("linux", {"KDLAB_TORCH_INDEX": refused})
    assert arguments is None and "cannot be reached" in reason and "default index" in reason
    assert time.perf_counter() - start < 5
    silent = socket.socket()  # accepts connections, never answers: the probe's timeout ends the wait
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        start = time.perf_counter()
        arguments, reason = install_torch.plan("linux", {"KDLAB_TORCH_INDEX": f"http://127.0.0.1:"
                                                         f"{silent.getsockname()[1]}/whl/cpu",
                                                         "KDLAB_TORCH_PROBE_TIMEOUT": "1"})
        assert arguments is None and "cannot be reached" in reason
        assert time.perf_counter() - start < 4
    finally:
        silent.close()


def test_installed_torch_is_left_alone():
    module = _script("install_torch")
    arguments, reason = module.plan("linux", {})
    assert arguments is None and "already installed" in reason


def test_readme_gives_pip_users_the_cpu_one_liner():
    readme = (ROOT / "README.md").read_text()
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in readme


# ----------------------------------------------------------------------------------------------------
# One repository URL; Colab and Binder


def test_repository_url_is_one_constant_that_every_link_follows():
    sync = _script("sync_repository_url")
    url, owner, name = sync.repository()
    tag = sync.release_tag()
    urls = PYPROJECT["project"]["urls"]
    assert url == urls["Repository"]
    assert all(value.startswith(url) for value in urls.values()), urls
    readme = (ROOT / "README.md").read_text()
    for notebook in NOTEBOOKS:
        binder, colab = sync.expected_links(notebook.name)
        assert binder in readme, f"no Binder link for {notebook.name} at {tag}"
        assert colab in readme, f"no Colab link for {notebook.name} at {tag}"
    named = re.findall(r"(?:github\.com|mybinder\.org/v2/gh|colab\.research\.google\.com/github)/([\w.-]+)/([\w.-]+)",
                       readme)
    others = {pair for pair in named if pair != (owner, name) and pair[0] != "mybinder"}
    assert not others, f"README names other repositories than {url}: {others}"
    assert not re.search(r"mybinder\.org/v2/gh/[\w.-]+/[\w.-]+/HEAD", readme), "Binder links pin a tag, not HEAD"
    for notebook in NOTEBOOKS:
        source = "".join(json.loads(notebook.read_text())["cells"][0]["source"])
        assert source == sync.install_cell(), f"{notebook.name}: the install cell differs from the constant"
        assert f"git+{url}@{tag}" in source
    citation = (ROOT / "CITATION.cff").read_text()
    assert f'repository-code: "{url}"' in citation
    assert subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_repository_url.py"), "--check"],
                          capture_output=True, text=True).returncode == 0


def test_ipywidgets_lower_bound_keeps_colabs_7_7_1():
    dependencies = PYPROJECT["project"]["dependencies"]
    assert "ipywidgets>=7.7" in dependencies


def test_binder_installs_cpu_builds_then_kdlab_without_dependencies():
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    lines = [l.strip() for l in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    torch_pin = next(l for l in lines if re.fullmatch(r"torch==[\d.]+\+cpu", l))
    assert any(re.fullmatch(r"torchvision==[\d.]+\+cpu", l) for l in lines)
    assert not any(l.startswith(".") for l in lines), "kdlab itself comes from postBuild, with --no-deps"
    # every dependency of kdlab and of its lab extra is in requirements.txt, so --no-deps misses nothing
    listed = {re.split(r"[<>=!~ \[]", l)[0].lower() for l in lines if not l.startswith("-")}
    needed = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["lab"]
    missing = {re.split(r"[<>=!~ \[]", r)[0].lower() for r in needed} - listed
    assert not missing, f"binder/requirements.txt lacks {missing}"
    post_build = ROOT / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK)
    script = post_build.read_text()
    assert "pip install --no-cache-dir --no-deps ." in script and "train_teacher('mnist10k'" in script
    version = torch_pin.split("==")[1].split("+")[0]
    assert f"Binder runs torch {version}" in (ROOT / "README.md").read_text()


# ----------------------------------------------------------------------------------------------------
# A package that looks like one


def test_pyproject_has_lower_bounds_only_and_the_extras():
    project = PYPROJECT["project"]
    for requirement in project["dependencies"]:
        assert "==" not in requirement and "<" not in requirement, f"no exact pins or caps: {requirement}"
    names = {re.split(r"[<>=!~ ]", r)[0] for r in project["dependencies"]}
    assert {"torch", "torchvision", "numpy", "pandas", "matplotlib", "seaborn", "ipywidgets", "tqdm"} <= names
    assert any(r.startswith("jupyterlab") for r in project["optional-dependencies"]["lab"])
    test_extra = {re.split(r"[<>=!~ ]", r)[0] for r in project["optional-dependencies"]["test"]}
    assert {"pytest", "nbval", "hypothesis"} <= test_extra
    assert project["scripts"]["kdlab"] == "kdlab.cli:main"


def test_license_citation_changelog_and_version():
    import yaml

    import kdlab

    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert not any("License ::" in c for c in project.get("classifiers", []))  # SPDX string instead
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "CC BY-SA 3.0" in license_text and "mnist10k.npz" in license_text
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["version"] == kdlab.__version__
    assert citation["license"] == "MIT"
    titles = [reference["title"] for reference in citation["references"]]
    assert titles == ["Knowledge Distillation Based on Transformed Teacher Matching",
                      "Dynamic Temperature Knowledge Distillation",
                      "A Unified Revisit of Temperature in Classification-Based Knowledge Distillation"]
    assert f"## [{kdlab.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


@pytest.mark.slow
def test_wheel_ships_the_licence_the_teacher_and_the_metadata(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv*", ".cache", "__pycache__", "*.egg-info",
                                                                 "build", "dist", "figures", "kdlab-runs", "runs"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "license" not in done.stderr.lower(), done.stderr  # no deprecation warnings about the licence table
    import kdlab

    wheel = next((tmp_path / "dist").glob("kdlab-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"kdlab-{kdlab.__version__}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
    assert f"{info}/licenses/LICENSE" in names
    assert {"kdlab/_data/mnist10k.npz", "kdlab/_data/teacher-mnist10k-cnn-seed0.pt"} <= names
    assert "License-Expression: MIT" in metadata
    assert f"Project-URL: Repository, {PYPROJECT['project']['urls']['Repository']}" in metadata
    assert f"Version: {kdlab.__version__}" in metadata


def test_package_data_ships_the_embedded_dataset():
    import kdlab.data  # noqa: F401  (the file must be found through the installed package)
    assert (Path(kdlab.data.__file__).parent / "_data" / "mnist10k.npz").is_file()
    assert sys.version_info >= (3, 10)
