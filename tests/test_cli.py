"""Tests of the ``kdlab`` console script (run in-process through ``main``, plus one real subprocess)."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import os
import platform

import torch

import kdlab
from kdlab.cli import _output_folder, _parse_overrides, _schedule, build_parser, main
from kdlab.train import RECIPES
from kdlab.methods import list_methods
from kdlab.models import list_models


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLAB_CACHE", str(tmp_path / "cache"))


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_of_every_command_is_explained():
    commands = _subcommands()
    assert {"teacher", "distill", "methods", "models"} <= set(commands)
    for name, command in commands.items():
        assert command.description, name
        for action in command._actions:
            assert action.help and action.help != argparse.SUPPRESS, f"kdlab {name} {action.option_strings}"


def test_methods_and_models_are_listed(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(list_methods())
    assert "temperature=4" in next(line for line in lines if line.startswith("kd "))
    ttm = next(line for line in lines if line.startswith("ttm "))
    assert "beta=100" in ttm and "[mnist10k recipe: beta=3]" in ttm
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == list_models()
    assert "50,890 parameters" in next(line for line in out.splitlines() if line.startswith("mlp64 "))


@pytest.mark.parametrize("argv, listed", [
    (["distill", "--method", "nope"], "wttm"),
    (["distill", "--student", "nope"], "mlp64"),
    (["teacher", "--model", "nope"], "cnn"),
    (["teacher", "--dataset", "nope"], "mnist10k"),
    (["teacher", "--optimizer", "adam"], "adamw"),
    (["frobnicate"], "distill"),
])
def test_unknown_names_are_refused_with_the_choices(capsys, argv, listed):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "invalid choice" in error and listed in error


def test_bad_values_end_with_a_message_not_a_traceback(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["teacher", "--model", "mlp16", "--epochs", "0", "--out", str(tmp_path), "--no-progress"])
    assert exit_info.value.code == 2
    assert "epochs must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["distill", "--set", "beta", "--out", str(tmp_path)])
    assert "KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "history.csv").exists()


def test_option_parsers():
    assert _parse_overrides(["beta=2", "detach=true", "alpha=0.5"]) == {"beta": 2, "detach": True, "alpha": 0.5}
    with pytest.raises(ValueError, match="expected a number"):
        _parse_overrides(["beta=high"])
    assert _schedule("150,180,210") == [150, 180, 210] and _schedule("cosine") == "cosine"
    with pytest.raises(argparse.ArgumentTypeError, match="milestone"):
        _schedule("sometimes")


def test_teacher_writes_history_config_result_and_weights(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["teacher", "--model", "mlp16", "--epochs", "2", "--lr", "0.05", "--out", str(out),
                 "--no-progress"]) == 0
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2] and "test_acc" in history.columns
    config = json.loads((out / "config.json").read_text())
    options = config["options"]
    assert (options["model"], options["epochs"], options["lr"], config["command"]) == ("mlp16", 2, 0.05, "teacher")
    assert options["batch_size"] is None  # as given ...
    used = config["used"]["settings"]  # ... and as used: every recipe value, the explicit ones on top
    assert used == dict(RECIPES["mnist10k"]["teacher"], epochs=2, lr=0.05)
    assert config["device"] == "cpu" and config["threads"] == torch.get_num_threads() >= 1
    assert config["versions"] == {"kdlab": kdlab.__version__, "torch": torch.__version__,
                                  "python": platform.python_version()}
    result = json.loads((out / "result.json").read_text())
    assert result["test_acc"] == pytest.approx(history["test_acc"].iloc[-1], abs=1e-9)
    assert result["cached"] is False and (out / "model.pt").is_file()
    assert str(out) in capsys.readouterr().out
    assert not list(out.glob("*.tmp"))  # atomic writes leave no temporary files behind

    assert main(["teacher", "--model", "mlp16", "--epochs", "2", "--lr", "0.05", "--out", str(out),
                 "--no-progress"]) == 0
    assert json.loads((out / "result.json").read_text())["cached"] is True


def test_distill_with_method_temperature_and_overrides(tmp_path):
    out = tmp_path / "run"
    assert main(["distill", "--teacher", "mlp16", "--teacher-epochs", "1", "--student", "mlp16",
                 "--method", "wttm", "--temperature", "5",
                 "--set", "beta=2", "--transfer-size", "300", "--epochs", "2", "--out", str(out),
                 "--no-progress"]) == 0
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns[:4]) == ["epoch", "ce", "wttm", "loss"]
    config = json.loads((out / "config.json").read_text())
    options = config["options"]
    assert (options["method"], options["temperature"], options["overrides"]) == ("wttm", 5.0, ["beta=2"])
    method = config["used"]["method"]
    assert method["name"] == "wttm" and method["hparams"]["temperature"] == 5.0 and method["hparams"]["beta"] == 2
    assert config["used"]["settings"]["lr"] == RECIPES["mnist10k"]["student"]["lr"]
    assert config["used"]["teacher"]["settings"]["epochs"] == 1
    assert config["used"]["transfer_size"] == 300
    result = json.loads((out / "result.json").read_text())
    assert 10 < result["test_acc"] <= 100 and 10 < result["teacher_test_acc"] <= 100


def test_config_records_the_recipes_method_values(tmp_path):
    # TTM on mnist10k: the recipe's beta = 3 replaces the paper's 100 and config.json says so
    out = tmp_path / "run"
    assert main(["distill", "--teacher", "mlp16", "--teacher-epochs", "1", "--student", "mlp16", "--method", "ttm",
                 "--transfer-size", "200", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["temperature"] is None
    assert config["used"]["method"]["hparams"]["beta"] == 3.0
    assert config["used"]["method"]["hparams"]["temperature"] == list_methods()["ttm"]["temperature"]


def test_output_files_follow_the_umask(tmp_path):
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        assert main(["teacher", "--model", "mlp16", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    finally:
        os.umask(old)
    modes = {path.name: path.stat().st_mode & 0o777 for path in out.iterdir()}
    assert modes == {"history.csv": 0o644, "config.json": 0o644, "result.json": 0o644, "model.pt": 0o644}


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == (f"kdlab {kdlab.__version__} (torch {torch.__version__}, "
                                                f"Python {platform.python_version()})")


def test_every_command_has_the_same_default_output_folder(monkeypatch):
    for argv in (["teacher"], ["distill"], ["sweep"], ["study", "methods"], ["choose-temperature"]):
        args = build_parser().parse_args(argv)
        assert args.out is None, argv
        folder = _output_folder(args)
        assert folder.parent == Path("kdlab-runs") and folder.name.startswith(f"{argv[0]}-")


def test_offline_cifar_error_names_the_download_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["teacher", "--dataset", "cifar100", "--data-root", str(tmp_path), "--out", str(tmp_path / "run"),
              "--no-progress"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--download" in error and "cifar100" in error


@pytest.mark.slow
def test_console_script_help_runs():
    script = Path(sys.executable).with_name("kdlab")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    for command in ("teacher", "distill", "methods", "models"):
        assert command in done.stdout


def test_choose_temperature_writes_table_plot_and_explanation(tmp_path, capsys):
    out = tmp_path / "choice"
    argv = ["choose-temperature", "--teacher", "mlp16", "--teacher-epochs", "1", "--student", "mlp16",
            "--method", "kd", "--temperature", "1", "4", "--seed", "0", "1", "--transfer-size", "200",
            "--epochs", "2", "--rounds", "2", "--lr", "0.05", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    table = pd.read_csv(out / "choice.csv")
    assert table["temperature"].tolist() == [1.0, 4.0]
    assert {"mean", "ci_low", "ci_high", "verdict", "epochs", "dropped_in_round"} <= set(table.columns)
    text = (out / "choice.txt").read_text()
    assert text.startswith("Recommended T = ") and "student-epochs" in text
    assert (out / "choice.png").stat().st_size > 1000 and (out / "results.csv").is_file()
    printed = capsys.readouterr().out
    assert text.strip() in printed and str(out) in printed
    assert not list(out.glob("*.tmp"))
    config = json.loads((out / "config.json").read_text())
    assert config["command"] == "choose-temperature" and config["used"]["common"] == {"lr": 0.05}


def test_choose_temperature_refuses_a_single_seed(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["choose-temperature", "--teacher", "mlp16", "--teacher-epochs", "1", "--student", "mlp16",
              "--seed", "0", "--transfer-size", "100", "--epochs", "1", "--out", str(tmp_path / "x"),
              "--no-progress"])
    assert raised.value.code == 2
    assert "seeds must hold at least 2" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["kdlab", "kdlab.cli"])
def test_python_dash_m_trains_and_writes(module, tmp_path):
    """``python -m kdlab`` and ``python -m kdlab.cli`` run the console script (training, then writing files)."""
    out = tmp_path / "run"
    env = dict(os.environ, KDLAB_CACHE=str(tmp_path / "cache"))  # an empty cache: the teacher is trained
    done = subprocess.run([sys.executable, "-m", module, "teacher", "--model", "mlp16", "--epochs", "1",
                           "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "result.json").read_text())["cached"] is False
    assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [1]
    listed = subprocess.run([sys.executable, "-m", module, "methods"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "wttm" in listed.stdout
