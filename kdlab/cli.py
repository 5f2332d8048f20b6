"""The ``kdlab`` console script: train a teacher, distill a student, list methods and models.

    kdlab teacher --model cnn --epochs 8
    kdlab distill --method wttm --temperature 10 --transfer-size 1000
    kdlab methods
    kdlab models
    kdlab study methods --dataset cifar100 --teacher resnet32x4 --student resnet8x4 --out runs
    kdlab choose-temperature --student mlp64 --method kd --temperature 1 2 4 8 16 --seed 0 1 2 --out runs
    kdlab present 01          # a tutorial's sliders and figures without code (Voilà), e.g. on a projector

Every command that trains writes into ``--out`` (default ``kdlab-runs/<command>-<time>``, for ``kdlab study``
too). ``teacher`` and ``distill`` write ``history.csv`` (one row per epoch), ``config.json`` (the options as
given, the settings actually used after the recipe, the kdlab / torch / Python versions, device and thread
count), ``result.json`` (final accuracies, time) and ``model.pt`` (the trained weights as a state_dict). Every
file is written atomically and follows the user's umask.

Adding a command: write ``_add_<name>_command(subparsers)`` (which calls ``set_defaults(run=_run_<name>)``)
and ``_run_<name>(args) -> int``, and add the first to ``build_parser``. ``_add_training_options`` and
``_write_run`` are there to be reused.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def main(argv=None):
    """Entry point of the ``kdlab`` script; returns the exit code (0 on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from kdlab.train import TrainingDiverged

    # A user's error is one line and a non-zero exit, never a traceback; kdlab's own bugs still show theirs.
    try:
        _check_before_work(args)
        return args.run(args)
    except TrainingDiverged as error:
        parser.exit(1, f"kdlab {args.command}: {error}\n")
    except (ValueError, TypeError, OSError) as error:
        parser.exit(2, f"kdlab {args.command}: error: {error}\n")


def _check_before_work(args):
    """What can be checked before a teacher or student trains: the output folders (an existing file, a path
    under a file, a folder that cannot be written to), --resume without --checkpoint-dir. Fixes the default
    --out once (its time stamp) and removes the temporaries a killed earlier run left there."""
    from kdlab.common import check_output_folder, remove_stale_temporaries

    if getattr(args, "resume", False) and not getattr(args, "checkpoint_dir", None):
        raise ValueError("--resume needs --checkpoint-dir (the folder that holds the checkpoint)")
    if hasattr(args, "out"):
        args.out = str(_output_folder(args))
        remove_stale_temporaries(check_output_folder(args.out, "--out"))
    if getattr(args, "checkpoint_dir", None):
        remove_stale_temporaries(check_output_folder(args.checkpoint_dir, "--checkpoint-dir"))


_SETTING_OPTIONS = ("epochs", "optimizer", "lr", "batch_size", "weight_decay", "momentum", "schedule")

# The options that decide what a sweep's sweep.csv holds (not --out, --device or --no-progress).
_SWEEP_DEFINING = ("dataset", "method", "temperature", "seed", "optimizer", "lr", "batch_size", "weight_decay",
                   "overrides", "teacher", "teacher_seed", "teacher_epochs", "student", "transfer_size", "recipe",
                   "epochs", "momentum", "schedule")


def _refuse_another_sweep(folder, args):
    """Two sweeps of different grids into one --out would leave a sweep.csv (and sweep.png) of the second
    only, beside a config.json that no longer tells which: refused. The same options again continue (finished
    groups are reused)."""
    path = folder / "config.json"
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text()).get("options", {})
    except (OSError, ValueError, AttributeError):
        raise ValueError(f"--out {str(folder)!r} holds a config.json that cannot be read; give another --out") from None
    current = json.loads(json.dumps({key: getattr(args, key, None) for key in _SWEEP_DEFINING}, default=str))
    differing = [key for key in _SWEEP_DEFINING if recorded.get(key) != current[key]]
    if differing:
        raise ValueError(f"--out {str(folder)!r} already holds a sweep with other options ("
                         + ", ".join(f"--{k.replace('_', '-')}: {recorded.get(k)!r} there, {current[k]!r} now"
                                     for k in differing[:3])
                         + "); its sweep.csv would then hold only this one: give another --out, or the same "
                           "options to continue that sweep")


def _check_set(overrides, options):
    """--set is for method hyper-parameters; one that names a training option (given or not) is refused, as
    ``distill`` refuses a keyword given twice: ``--epochs 2 --set epochs=1`` would leave one silently unused."""
    clash = sorted(set(overrides) & set(options))
    if clash:
        key = clash[0]
        raise ValueError(f"--set {key}={overrides[key]} names a training option: give it once, as "
                         f"--{key.replace('_', '-')}, not through --set")


def build_parser():
    """The argparse parser with one sub-command per ``_add_*_command`` function."""
    parser = argparse.ArgumentParser(
        prog="kdlab",
        description="Temperature in knowledge distillation: train teachers, distill students, list what "
                    "is available. Run 'kdlab COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=_version_line(),
                        help="print the versions of kdlab, torch and Python, then exit")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_teacher_command(subparsers)
    _add_distill_command(subparsers)
    _add_sweep_command(subparsers)
    _add_study_command(subparsers)
    _add_choose_temperature_command(subparsers)
    _add_methods_command(subparsers)
    _add_models_command(subparsers)
    _add_present_command(subparsers)
    return parser


def _version_line():
    import platform

    import torch

    from kdlab import __version__
    return f"kdlab {__version__} (torch {torch.__version__}, Python {platform.python_version()})"


# ----------------------------------------------------------------------------------------------------
# kdlab teacher
# ----------------------------------------------------------------------------------------------------

def _add_teacher_command(subparsers):
    from kdlab.models import list_models

    command = subparsers.add_parser(
        "teacher", help="train a teacher with cross-entropy (cached)",
        description="Train a teacher with cross-entropy. The weights are cached (see --no-cache), so the "
                    "same command a second time loads them in a second.")
    _add_dataset_options(command)
    command.add_argument("--model", default="cnn", choices=list_models(), metavar="NAME",
                         help="teacher architecture (default: cnn); one of: %(choices)s")
    _add_training_options(command, "teacher")
    command.add_argument("--no-cache", action="store_true",
                         help="always train (neither the shipped weights nor the cache), and do not store the "
                              "teacher in the kdlab cache")
    command.set_defaults(run=_run_teacher)


def _run_teacher(args):
    from kdlab.train import evaluate, train_teacher

    dataset = _load_dataset(args)
    model, history = train_teacher(dataset, model=args.model, cache=not args.no_cache,
                                   pretrained=not args.no_cache, **_training_kwargs(args))
    result = {"test_acc": evaluate(model, dataset), "cached": bool(history.attrs.get("cached", False)),
              "source": history.attrs.get("source"),
              "seconds": float(history["seconds"].sum()), "epochs": int(history["epoch"].max())}
    used = {"model": args.model, "seed": args.seed, "settings": history.attrs.get("settings")}
    _write_run(args, history, result, model, used=used)
    return 0


# ----------------------------------------------------------------------------------------------------
# kdlab distill
# ----------------------------------------------------------------------------------------------------

def _add_distill_command(subparsers):
    from kdlab.methods import list_methods
    from kdlab.models import list_models

    command = subparsers.add_parser(
        "distill", help="distill a (cached) teacher into a student with any method",
        description="Distill a teacher into a student. The teacher is trained on the full training split "
                    "(or loaded from the cache); the student learns from --transfer-size images of it.")
    _add_dataset_options(command)
    command.add_argument("--method", default="kd", choices=list(list_methods()), metavar="NAME",
                         help="distillation method (default: kd); one of: %(choices)s")
    command.add_argument("--temperature", type=float, default=None,
                         help="the method's temperature (default: the method's paper default, see "
                              "'kdlab methods')")
    command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="another method hyper-parameter, e.g. --set beta=2 --set warmup=0 (repeatable)")
    command.add_argument("--teacher", default="cnn", choices=list_models(), metavar="NAME",
                         help="teacher architecture, trained with its recipe and --teacher-seed, cached "
                              "(default: cnn); one of: %(choices)s")
    command.add_argument("--teacher-seed", type=int, default=0, help="seed of the teacher (default: 0)")
    command.add_argument("--teacher-epochs", type=int, default=None,
                         help="epochs of the teacher (default: the recipe's, see 'kdlab teacher --help')")
    command.add_argument("--student", default="mlp64", choices=list_models(), metavar="NAME",
                         help="student architecture (default: mlp64); one of: %(choices)s")
    command.add_argument("--transfer-size", type=int, default=None,
                         help="train the student on a seeded stratified subset of this many training images "
                              "(default: the whole training split)")
    _add_training_options(command, "student")
    command.set_defaults(run=_run_distill)


def _run_distill(args):
    from kdlab.train import evaluate, distill, train_teacher

    dataset = _load_dataset(args)
    overrides = _parse_overrides(args.overrides)
    kwargs = _training_kwargs(args)
    _check_set(overrides, [*kwargs, "temperature", "method", "student", "teacher", "transfer_size"])
    teacher, teacher_history = train_teacher(dataset, model=args.teacher, seed=args.teacher_seed,
                                             epochs=args.teacher_epochs, recipe=args.recipe,
                                             device=kwargs["device"], progress=kwargs["progress"])
    transfer = dataset.transfer_set(args.transfer_size) if args.transfer_size is not None else dataset
    student, history = distill(teacher, transfer, student=args.student, method=args.method,
                               temperature=args.temperature, **kwargs, **overrides)
    result = {"test_acc": evaluate(student, dataset), "teacher_test_acc": evaluate(teacher, dataset),
              "seconds": float(history["seconds"].sum()), "epochs": int(history["epoch"].max())}
    used = {"student": args.student, "seed": args.seed, "settings": history.attrs.get("settings"),
            "method": history.attrs.get("method"), "transfer_size": len(transfer.train_targets),
            "teacher": _teacher_used(args.teacher, args.teacher_seed, teacher_history)}
    _write_run(args, history, result, student, used=used)
    return 0


def _parse_overrides(pairs):
    """["beta=2", "detach=true"] -> {"beta": 2, "detach": True} (int, float, bool; else ValueError)."""
    overrides = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            value = lowered == "true"
        else:
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    raise ValueError(f"--set {key}: expected a number or true/false, got {text!r}") from None
        overrides[key.strip()] = value
    return overrides


# ----------------------------------------------------------------------------------------------------
# kdlab sweep (owner: sweep)
# ----------------------------------------------------------------------------------------------------

def _add_sweep_command(subparsers):
    from kdlab.methods import list_methods
    from kdlab.models import list_models
    from kdlab.train import RECIPES

    student = RECIPES["mnist10k"]["student"]
    command = subparsers.add_parser(
        "sweep", help="train a grid of students (methods x temperatures x seeds ...) as one batched run",
        description="Train every combination of the given values as a few batched runs (kdlab.sweep) and "
                    "write sweep.csv (one row per configuration and epoch) and sweep.png (final test "
                    "accuracy vs temperature, mean and standard deviation over seeds, one line per method). "
                    "Options with several values are swept. Rerunning with the same --out skips finished "
                    "groups.")
    _add_dataset_options(command)
    command.add_argument("--method", nargs="+", default=["kd"], choices=list(list_methods()), metavar="NAME",
                         help="methods to sweep (default: kd); any of: %(choices)s")
    command.add_argument("--temperature", nargs="+", type=float, default=None, metavar="T",
                         help="temperatures to sweep (default: each method's own)")
    command.add_argument("--seed", nargs="+", type=int, default=[0], metavar="S",
                         help="seeds (initialisation and shuffling) to sweep (default: 0)")
    command.add_argument("--optimizer", nargs="+", default=None, choices=["sgd", "adamw"],
                         help="optimizers to sweep (recipe: sgd with momentum)")
    command.add_argument("--lr", nargs="+", type=float, default=None, metavar="LR",
                         help=f"learning rates to sweep (mnist10k recipe: {student['lr']})")
    command.add_argument("--batch-size", nargs="+", type=int, default=None, metavar="B",
                         help=f"batch sizes to sweep (mnist10k recipe: {student['batch_size']})")
    command.add_argument("--weight-decay", nargs="+", type=float, default=None, metavar="WD",
                         help=f"weight decays to sweep (mnist10k recipe: {student['weight_decay']})")
    command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="a method hyper-parameter for every run, e.g. --set warmup=0 (repeatable)")
    command.add_argument("--teacher", default="cnn", choices=list_models(), metavar="NAME",
                         help="teacher architecture, trained with its recipe and --teacher-seed, cached "
                              "(default: cnn)")
    command.add_argument("--teacher-seed", type=int, default=0, help="seed of the teacher (default: 0)")
    command.add_argument("--teacher-epochs", type=int, default=None,
                         help="epochs of the teacher (default: the recipe's, see 'kdlab teacher --help')")
    command.add_argument("--student", default="mlp64", choices=list_models(), metavar="NAME",
                         help="student architecture (default: mlp64)")
    command.add_argument("--transfer-size", type=int, default=1000,
                         help="train the students on a seeded stratified subset of this many training images "
                              "(default: 1000)")
    group = command.add_argument_group("training (defaults come from the recipe)")
    group.add_argument("--recipe", default=None, choices=sorted(RECIPES), metavar="NAME",
                       help="training recipe (default: cifar for CIFAR datasets, else mnist10k)")
    group.add_argument("--epochs", type=int, default=None, help=f"epochs (mnist10k recipe: {student['epochs']})")
    group.add_argument("--momentum", type=float, default=None, help="SGD momentum (recipes: 0.9)")
    group.add_argument("--schedule", default=None, type=_schedule,
                       help="learning-rate schedule: constant, cosine, step or milestone epochs like 150,180,210")
    group.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N or mps")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument("--out", default=None, metavar="DIR",
                       help="output folder for sweep.csv, sweep.png and the finished groups "
                            "(default: kdlab-runs/sweep-<date-time>)")
    command.set_defaults(run=_run_sweep)


def _run_sweep(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdlab.common import atomic_write, resolve_device
    from kdlab.plots import plot_sweep
    from kdlab.sweeps import sweep
    from kdlab.train import train_teacher

    dataset = _load_dataset(args)
    device = resolve_device(args.device)
    swept = {"method": args.method, "temperature": args.temperature, "seed": args.seed,
             "optimizer": args.optimizer, "lr": args.lr, "batch_size": args.batch_size,
             "weight_decay": args.weight_decay}
    grid = {key: values for key, values in swept.items() if values is not None}
    common = {key: value for key, value in (("epochs", args.epochs), ("momentum", args.momentum),
                                            ("schedule", args.schedule)) if value is not None}
    overrides = _parse_overrides(args.overrides)
    _check_set(overrides, [*swept, "epochs", "momentum", "schedule", "student", "recipe"])
    common.update(overrides)
    _refuse_another_sweep(Path(args.out), args)
    teacher, teacher_history = train_teacher(dataset, model=args.teacher, seed=args.teacher_seed,
                                             epochs=args.teacher_epochs, device=device,
                                             progress=not args.no_progress)
    transfer = dataset.transfer_set(args.transfer_size) if args.transfer_size is not None else dataset
    folder = _output_folder(args)
    _write_config(folder, args, {"grid": grid, "common": common, "student": args.student,
                                 "transfer_size": len(transfer.train_targets),
                                 "teacher": _teacher_used(args.teacher, args.teacher_seed, teacher_history)})
    frame = sweep(teacher, transfer, student=args.student, grid=grid, out=folder, recipe=args.recipe,
                  device=device, progress=not args.no_progress, **common)
    figure = plot_sweep(frame)
    try:
        atomic_write(folder / "sweep.png", lambda file: figure.savefig(file, format="png"))
    finally:
        plt.close(figure)
    final = frame[frame["epoch"] == frame["epochs"]]
    runs = final["config"].nunique()
    best = final.groupby(["method", "temperature"], dropna=False)["test_acc"].mean().reset_index()
    for method, rows in best.groupby("method", sort=False):
        top = rows.loc[rows["test_acc"].idxmax()]
        print(f"  {method:16s} best temperature {top['temperature']:g}: mean test accuracy {top['test_acc']:.2f} %")
    print(f"kdlab sweep: {runs} runs; results in {folder} (sweep.csv, sweep.png)")
    return 0


# ----------------------------------------------------------------------------------------------------
# kdlab choose-temperature
# ----------------------------------------------------------------------------------------------------

def _add_choose_temperature_command(subparsers):
    from kdlab.choose import DEFAULT_TEMPERATURES
    from kdlab.methods import list_methods
    from kdlab.models import list_models
    from kdlab.train import RECIPES

    student = RECIPES["mnist10k"]["student"]
    with_temperature = [name for name, defaults in list_methods().items() if "temperature" in defaults]
    command = subparsers.add_parser(
        "choose-temperature", help="recommend a temperature, dropping clearly worse candidates early",
        description="Run kdlab.choose_temperature: the candidates train together (kdlab.sweep) in rounds of "
                    "growing length; after each round a candidate is dropped only when its paired interval "
                    "against the leader lies below 0 and, in rounds of 2 or more epochs, it is not catching "
                    "up. Writes choice.csv (one row per candidate), choice.png (accuracy vs T with the "
                    "intervals), choice.txt (the explanation) and results.csv (every round's epochs). "
                    "Rerunning with the same --out loads finished runs.")
    _add_dataset_options(command)
    command.add_argument("--method", default="kd", choices=with_temperature, metavar="NAME",
                         help="method whose temperature is chosen (default: kd); any of: %(choices)s")
    command.add_argument("--temperature", nargs="+", type=float, default=None, metavar="T",
                         help="candidate temperatures (default: "
                              f"{' '.join(f'{t:g}' for t in DEFAULT_TEMPERATURES)})")
    command.add_argument("--seed", nargs="+", type=int, default=[0, 1, 2], metavar="S",
                         help="seeds, at least 2 (default: 0 1 2); intervals are paired by seed")
    command.add_argument("--rounds", type=int, default=3, help="number of rounds (default: 3)")
    command.add_argument("--eta", type=float, default=3.0,
                         help="factor between round lengths (default: 3: E/9, E/3, E epochs)")
    command.add_argument("--confidence", type=float, default=0.95, help="interval level (default: 0.95)")
    command.add_argument("--teacher", default="cnn", choices=list_models(), metavar="NAME",
                         help="teacher architecture, trained with its recipe and --teacher-seed, cached "
                              "(default: cnn)")
    command.add_argument("--teacher-seed", type=int, default=0, help="seed of the teacher (default: 0)")
    command.add_argument("--teacher-epochs", type=int, default=None,
                         help="epochs of the teacher (default: the recipe's, see 'kdlab teacher --help')")
    command.add_argument("--student", default="mlp64", choices=list_models(), metavar="NAME",
                         help="student architecture (default: mlp64)")
    command.add_argument("--transfer-size", type=int, default=1000,
                         help="train the students on a seeded stratified subset of this many training images "
                              "(default: 1000)")
    command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="a method hyper-parameter for every run, e.g. --set beta=3 (repeatable)")
    group = command.add_argument_group("training (defaults come from the recipe)")
    group.add_argument("--recipe", default=None, choices=sorted(RECIPES), metavar="NAME",
                       help="training recipe (default: cifar for CIFAR datasets, else mnist10k)")
    group.add_argument("--epochs", type=int, default=None,
                       help=f"full training length E (mnist10k recipe: {student['epochs']})")
    group.add_argument("--optimizer", default=None, choices=["sgd", "adamw"], help="optimizer (recipes: sgd)")
    group.add_argument("--lr", type=float, default=None, help=f"learning rate (mnist10k recipe: {student['lr']})")
    group.add_argument("--batch-size", type=int, default=None,
                       help=f"batch size (mnist10k recipe: {student['batch_size']})")
    group.add_argument("--weight-decay", type=float, default=None,
                       help=f"weight decay (mnist10k recipe: {student['weight_decay']})")
    group.add_argument("--momentum", type=float, default=None, help="SGD momentum (recipes: 0.9)")
    group.add_argument("--schedule", default=None, type=_schedule,
                       help="learning-rate schedule: constant, cosine, step or milestone epochs like 150,180,210")
    group.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda or cuda:N")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument("--out", default=None, metavar="DIR",
                       help="output folder (default: kdlab-runs/choose-temperature-<date-time>)")
    command.set_defaults(run=_run_choose_temperature)


def _run_choose_temperature(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdlab.choose import choose_temperature
    from kdlab.common import atomic_write, atomic_write_text, resolve_device
    from kdlab.train import train_teacher

    dataset = _load_dataset(args)
    device = resolve_device(args.device)
    common = {key: value for key, value in (("optimizer", args.optimizer), ("lr", args.lr),
                                            ("batch_size", args.batch_size), ("weight_decay", args.weight_decay),
                                            ("momentum", args.momentum), ("schedule", args.schedule))
              if value is not None}
    overrides = _parse_overrides(args.overrides)
    _check_set(overrides, [*_SETTING_OPTIONS, "temperature", "seed", "method", "student", "recipe"])
    common.update(overrides)
    rounds = args.rounds
    eta = int(args.eta) if float(args.eta).is_integer() else args.eta
    teacher, teacher_history = train_teacher(dataset, model=args.teacher, seed=args.teacher_seed,
                                             epochs=args.teacher_epochs, device=device,
                                             progress=not args.no_progress)
    transfer = dataset.transfer_set(args.transfer_size) if args.transfer_size is not None else dataset
    folder = _output_folder(args)
    choice = choose_temperature(teacher, transfer, student=args.student, method=args.method,
                                temperatures=args.temperature, seeds=args.seed, epochs=args.epochs,
                                progress=not args.no_progress, rounds=rounds, eta=eta,
                                confidence=args.confidence, out=folder / "runs", recipe=args.recipe,
                                device=device, **common)
    _write_config(folder, args, {"common": common, "student": args.student,
                                 "transfer_size": len(transfer.train_targets),
                                 "teacher": _teacher_used(args.teacher, args.teacher_seed, teacher_history)})
    atomic_write_text(folder / "choice.csv", choice.table.to_csv(index=False))
    atomic_write_text(folder / "results.csv", choice.results.to_csv(index=False))
    explanation = choice.explain()
    atomic_write_text(folder / "choice.txt", explanation + "\n")
    figure = choice.plot()
    try:
        atomic_write(folder / "choice.png", lambda file: figure.savefig(file, format="png"))
    finally:
        plt.close(figure)
    print(explanation)
    print(f"kdlab choose-temperature: T = {choice.temperature:g}; results in {folder} "
          "(choice.csv, choice.png, choice.txt, results.csv)")
    return 0


# ----------------------------------------------------------------------------------------------------
# kdlab study (owner: revisit)
# ----------------------------------------------------------------------------------------------------

def _add_study_command(subparsers):
    from kdlab.models import list_models
    from kdlab.studies import STUDY_NAMES

    command = subparsers.add_parser(
        "study", help="run one of Frank & Davis's temperature studies (notebook 05) and write <study>.csv",
        description="Run a study of Frank & Davis (2026), 'A Unified Revisit of Temperature in KD', through "
                    "kdlab.sweep and write OUT/<study>.csv (one row per configuration, seed and epoch). "
                    "Notebook 05 loads these files instead of its own small runs when they are in "
                    "$KDLAB_STUDY_DIR (or ./runs). Grids: kdlab.studies.STUDY_SETTINGS (mnist10k for a "
                    "laptop, cifar100 for a GPU); the options below override them. Rerunning with the same "
                    "--out skips finished runs.")
    command.add_argument("study", choices=[*STUDY_NAMES, "all"], metavar="STUDY",
                         help="which study: %(choices)s")
    _add_dataset_options(command)
    command.add_argument("--teacher", default=None, choices=list_models(), metavar="NAME",
                         help="teacher architecture, trained with its recipe (cached); also the architecture of "
                              "the teachers that 'origin' and 'granularity' train (default: cnn, or resnet32x4 "
                              "for CIFAR)")
    command.add_argument("--teacher-seed", type=int, default=0, help="seed of the teacher (default: 0)")
    command.add_argument("--student", default=None, choices=list_models(), metavar="NAME",
                         help="student architecture (default: mlp64, or resnet8x4 for CIFAR)")
    command.add_argument("--temperatures", nargs="+", type=float, default=None, metavar="T",
                         help="temperatures (default: the study grid's)")
    command.add_argument("--seeds", nargs="+", type=int, default=None, metavar="S",
                         help="student seeds (default: 0 1 2)")
    command.add_argument("--epochs", type=int, default=None, help="student epochs (default: the study grid's)")
    command.add_argument("--training-epochs", type=int, default=None,
                         help="epochs of the long runs of the 'training' study (default: the grid's)")
    command.add_argument("--early-epoch", type=int, default=None,
                         help="the earlier epoch at which the 'training' study also evaluates (default: the grid's)")
    command.add_argument("--teacher-epochs", type=int, default=None,
                         help="epochs of every teacher: the main one (default: its recipe's) and those trained by "
                              "'origin' and 'granularity' (default: the grid's)")
    command.add_argument("--transfer-size", type=int, default=None,
                         help="students learn from this many training images (default: the grid's; all for CIFAR)")
    command.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N or mps")
    command.add_argument("--no-progress", action="store_true", help="no progress bar")
    command.add_argument("--out", default=None, metavar="DIR",
                         help="output folder for <study>.csv and the finished sweep groups "
                              "(default: kdlab-runs/study-<date-time>; notebook 05 reads --out runs)")
    command.set_defaults(run=_run_study)


def _run_study(args):
    from kdlab.common import atomic_write_text, resolve_device
    from kdlab.studies import STUDY_NAMES, run_study, study_settings
    from kdlab.train import train_teacher

    dataset = _load_dataset(args)
    device = resolve_device(args.device)
    cifar = args.dataset.startswith("cifar")
    teacher_name = args.teacher or ("resnet32x4" if cifar else "cnn")
    overrides = {"teacher_model": teacher_name}
    for key in ("student", "temperatures", "seeds", "epochs", "training_epochs", "early_epoch", "teacher_epochs",
                "transfer_size"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    study_settings("cifar100" if cifar else "mnist10k", **overrides)  # bad settings fail before any training
    teacher, teacher_history = train_teacher(dataset, model=teacher_name, seed=args.teacher_seed,
                                             epochs=args.teacher_epochs, device=device,
                                             progress=not args.no_progress)
    folder = _output_folder(args)
    _write_config(folder, args, {"overrides": overrides,
                                 "teacher": _teacher_used(teacher_name, args.teacher_seed, teacher_history)})
    for name in (STUDY_NAMES if args.study == "all" else [args.study]):
        frame = run_study(name, teacher, dataset, out=folder / "sweeps", progress=not args.no_progress,
                          device=device, **overrides)
        frame.insert(1, "dataset", args.dataset)
        atomic_write_text(folder / f"{name}.csv", frame.to_csv(index=False))
        final = frame[frame["epoch"] == frame["epochs"]]
        print(f"kdlab study {name}: {final['config'].nunique()} runs x {frame['epoch'].max()} epochs; "
              f"final test accuracy {final['test_acc'].min():.2f}..{final['test_acc'].max():.2f} %; "
              f"results in {folder / (name + '.csv')}")
    return 0


# ----------------------------------------------------------------------------------------------------
# kdlab methods / kdlab models
# ----------------------------------------------------------------------------------------------------

def _add_methods_command(subparsers):
    command = subparsers.add_parser("methods", help="list the distillation methods and their defaults",
                                    description="List every method name with its default hyper-parameters "
                                                "(the papers' values) and what a training recipe changes.")
    command.set_defaults(run=_run_methods)


def _run_methods(args):
    from kdlab.methods import list_methods
    from kdlab.train import RECIPE_METHODS

    def listing(values):
        return ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                         for key, value in values.items())

    for name, defaults in list_methods().items():
        changes = "".join(f"   [{recipe} recipe: {listing(methods[name])}]"
                          for recipe, methods in RECIPE_METHODS.items() if name in methods)
        print(f"{name:16s} {listing(defaults)}{changes}")
    return 0


def _add_models_command(subparsers):
    command = subparsers.add_parser("models", help="list the model architectures",
                                    description="List every model name with its number of parameters "
                                                "(for 10 classes).")
    command.set_defaults(run=_run_models)


def _run_models(args):
    from kdlab.models import create_model, list_models

    for name in list_models():
        model = create_model(name, num_classes=10)
        print(f"{name:12s} {sum(p.numel() for p in model.parameters()):>10,d} parameters")
    return 0


# ----------------------------------------------------------------------------------------------------
# kdlab present
# ----------------------------------------------------------------------------------------------------

def _add_present_command(subparsers):
    command = subparsers.add_parser(
        "present", help="show a tutorial's sliders and figures without code, with Voila (presenter mode)",
        description="Serve one notebook with Voila: its cells run in a live kernel, the page shows the outputs "
                    "without code, and the sliders redraw their figures. The server listens on 127.0.0.1 only "
                    "and the page needs the random token of its URL. Ctrl+C stops it.")
    command.add_argument("notebook", metavar="NOTEBOOK",
                         help="a tutorial's number or the start of its name (01, 3, 03_ttm) looked up in "
                              "./notebooks and in the notebooks/ folder of this kdlab checkout, or a path "
                              "to a .ipynb file")
    command.add_argument("--port", type=int, default=8866, help="port on 127.0.0.1 (default: 8866)")
    command.add_argument("--no-browser", action="store_true",
                         help="do not open a web browser; just print the URL (with its token)")
    command.set_defaults(run=_run_present)


def _find_notebook(name):
    """The notebook that ``kdlab present NAME`` shows: a path to a .ipynb file, or a tutorial's number/prefix."""
    path = Path(name).expanduser()
    if path.suffix == ".ipynb" or "/" in name or path.is_file():
        if path.is_file() and path.suffix == ".ipynb":
            return path.resolve()
        raise FileNotFoundError(f"NOTEBOOK {name!r} is not a .ipynb file (expected a tutorial number such "
                                f"as 01 or a path to a notebook)")
    prefix = name.zfill(2) if name.isdigit() else name
    folders = list(dict.fromkeys([Path.cwd() / "notebooks", Path(__file__).resolve().parents[1] / "notebooks"]))
    for folder in folders:
        matches = sorted(folder.glob(f"{prefix}*.ipynb"))
        if len(matches) > 1:
            raise ValueError(f"NOTEBOOK {name!r} matches {len(matches)} notebooks in {folder}: "
                             f"{', '.join(m.name for m in matches)}; give more of the name")
        if matches:
            return matches[0]
    available = sorted({p.name for folder in folders for p in folder.glob("*.ipynb")})
    raise FileNotFoundError(f"NOTEBOOK {name!r}: no notebook starting with {prefix!r} in "
                            f"{' or '.join(str(f) for f in folders)}; available: {', '.join(available) or 'none'}")


def _run_present(args):
    import importlib.util
    import os
    import secrets
    import signal
    import socket
    import subprocess
    import time
    import webbrowser

    notebook = _find_notebook(args.notebook)
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    if importlib.util.find_spec("voila") is None:
        raise FileNotFoundError("kdlab present needs Voila: pip install voila (or pip install 'kdlab[book]')")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", args.port))
        except OSError:
            raise ValueError(f"--port {args.port} is already in use on 127.0.0.1; choose another with --port")

    token = secrets.token_hex(16)
    url = f"http://127.0.0.1:{args.port}/?token={token}"
    command = [sys.executable, "-m", "voila", str(notebook), f"--port={args.port}", "--Voila.ip=127.0.0.1",
               "--Voila.port_retries=0", f"--token={token}", "--no-browser", "--strip_sources=True"]
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the notebooks draw with the inline backend
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)  # `kill` stops Voila and its kernel too
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise ValueError(f"Voila exited with code {process.returncode} before serving {notebook.name}")
            try:
                socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ValueError(f"Voila did not listen on 127.0.0.1:{args.port} within 60 s")
                time.sleep(0.2)
        print(f"kdlab present: {notebook.name} at {url}\n"
              f"  (Voila: code hidden, sliders live; the first page load runs the notebook; Ctrl+C stops it)",
              flush=True)
        if not args.no_browser:
            webbrowser.open(url)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # Voila shuts its kernels down on SIGINT
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ----------------------------------------------------------------------------------------------------
# Shared options and output
# ----------------------------------------------------------------------------------------------------

def _add_dataset_options(command):
    from kdlab.data import DATASET_NAMES

    group = command.add_argument_group("data")
    group.add_argument("--dataset", default="mnist10k", choices=list(DATASET_NAMES), metavar="NAME",
                       help="dataset (default: mnist10k, embedded); one of: %(choices)s")
    group.add_argument("--data-root", default=None, metavar="DIR",
                       help="folder of the downloaded datasets (default: $KDLAB_DATA or ~/.cache/kdlab/data)")
    group.add_argument("--download", action="store_true",
                       help="download mnist/cifar10/cifar100 into --data-root if missing")


def _add_training_options(command, role):
    """Options shared by every training command; None means "from the recipe" (see kdlab.train.RECIPES)."""
    from kdlab.train import RECIPES

    defaults = RECIPES["mnist10k"][role]
    group = command.add_argument_group("training (defaults come from the recipe)")
    group.add_argument("--recipe", default=None, choices=sorted(RECIPES), metavar="NAME",
                       help="training recipe: mnist10k (class-scale) or cifar (the papers': SGD 0.05, batch 64, "
                            "240 epochs, x0.1 at 150/180/210); default: cifar for CIFAR datasets, else mnist10k")
    group.add_argument("--epochs", type=int, default=None,
                       help=f"epochs (mnist10k recipe: {defaults['epochs']})")
    group.add_argument("--seed", type=int, default=0, help="seed of initialisation and shuffling (default: 0)")
    group.add_argument("--optimizer", default=None, choices=["sgd", "adamw"],
                       help="optimizer (recipes: sgd with momentum)")
    group.add_argument("--lr", type=float, default=None, help=f"learning rate (mnist10k recipe: {defaults['lr']})")
    group.add_argument("--batch-size", type=int, default=None,
                       help=f"batch size (mnist10k recipe: {defaults['batch_size']})")
    group.add_argument("--weight-decay", type=float, default=None,
                       help=f"weight decay (mnist10k recipe: {defaults['weight_decay']})")
    group.add_argument("--momentum", type=float, default=None, help="SGD momentum (recipes: 0.9)")
    group.add_argument("--schedule", default=None, type=_schedule,
                       help="learning-rate schedule: constant, cosine, step (x0.1 at 5/8, 3/4, 7/8 of the "
                            "epochs) or milestone epochs like 150,180,210 "
                            f"(mnist10k recipe: {defaults['schedule'] or 'constant'})")
    group.add_argument("--device", default="auto",
                       help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N or mps (default: auto)")
    group.add_argument("--compile", action="store_true", help="torch.compile the model (useful on CUDA)")
    group.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                       help="save a checkpoint every epoch into DIR (continue later with --resume)")
    group.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument("--out", default=None, metavar="DIR",
                       help="output folder for history.csv, config.json, result.json and model.pt "
                            "(default: kdlab-runs/<command>-<date-time>)")


def _schedule(text):
    if text in ("constant", "cosine", "step"):
        return text
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected constant, cosine, step or comma-separated milestone epochs, got {text!r}") from None


def _training_kwargs(args):
    return {"epochs": args.epochs, "seed": args.seed, "optimizer": args.optimizer, "lr": args.lr,
            "batch_size": args.batch_size, "weight_decay": args.weight_decay, "momentum": args.momentum,
            "schedule": args.schedule, "recipe": args.recipe, "device": args.device, "compile": args.compile,
            "checkpoint_dir": args.checkpoint_dir, "resume": args.resume, "progress": not args.no_progress}


def _load_dataset(args):
    from kdlab.data import load_dataset
    from kdlab.common import resolve_device

    return load_dataset(args.dataset, root=args.data_root, download=args.download,
                        device=resolve_device(args.device))


def _output_folder(args):
    if args.out is not None:
        return Path(args.out)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("kdlab-runs") / f"{args.command}-{stamp}"


def _run_config(args, used=None):
    """What config.json records: the command, its options as given, the settings actually used (``used``:
    every recipe value, the method's hyper-parameters after the recipe), versions, device and threads."""
    import platform

    import torch

    from kdlab import __version__
    from kdlab.threads import thread_setting
    from kdlab.common import resolve_device

    threads = thread_setting()
    return {
        "command": args.command,
        "options": {key: value for key, value in vars(args).items() if key not in ("run", "command")},
        "used": used or {},
        "dataset": getattr(args, "dataset", None),
        "device": str(resolve_device(getattr(args, "device", "auto"))),
        "threads": threads["threads"],
        "threads_reason": threads["reason"],
        "versions": {"kdlab": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def _teacher_used(name, seed, history):
    """What config.json says about the teacher: architecture, seed, training settings, where it came from."""
    return {"model": name, "seed": seed, "settings": history.attrs.get("settings"),
            "source": history.attrs.get("source")}


def _write_config(folder, args, used):
    """config.json (see ``_run_config``) into ``folder``, by rank 0 only."""
    from kdlab.common import atomic_write_text, process_rank

    if process_rank() == 0:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "config.json", json.dumps(_run_config(args, used), indent=2, default=str) + "\n")


def _write_run(args, history, result, model=None, used=None):
    """Write history.csv, config.json, result.json (and model.pt) into the output folder; print a summary."""
    from kdlab.common import atomic_write_text, process_rank

    folder = _output_folder(args)
    if process_rank() != 0:  # under torchrun, rank 0 writes
        return folder
    _write_config(folder, args, used)
    atomic_write_text(folder / "history.csv", history.to_csv(index=False))
    atomic_write_text(folder / "result.json", json.dumps(result, indent=2) + "\n")
    if model is not None:
        from kdlab.common import atomic_save

        atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / "model.pt")
    summary = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items())
    print(f"kdlab {args.command}: {summary}; results in {folder}")
    return folder


if __name__ == "__main__":
    sys.exit(main())
