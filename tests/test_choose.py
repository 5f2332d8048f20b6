"""Tests of kdlab.choose: round budgets, the drop rule (paired interval + catching up), the table, the cost, the
explanation, the figure, agreement with a plain sweep, and bad input."""
import importlib
import itertools
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

import kdlab
from kdlab.data import load_dataset
from kdlab.models import create_model

matplotlib.use("Agg")
choose_module = importlib.import_module("kdlab.choose")


def _fake_sweep(accuracy, calls):
    """A stand-in for kdlab.sweep: test_acc = accuracy(T, seed, epoch, epochs); records every call."""
    def fake(teacher, dataset, student="mlp64", grid=None, epochs=None, out=None, progress=True, recipe=None,
             device="auto", method="kd", **common):
        calls.append({"temperatures": list(grid["temperature"]), "seeds": list(grid["seed"]), "epochs": epochs})
        rows = []
        for config, (t, s) in enumerate(itertools.product(grid["temperature"], grid["seed"])):
            for epoch in range(1, epochs + 1):
                rows.append({"config": config, "method": method, "temperature": float(t), "seed": s,
                             "epochs": epochs, "epoch": epoch, "test_acc": accuracy(t, s, epoch, epochs)})
        return pd.DataFrame(rows)
    return fake


def _noise(t, s):
    return 0.3 * math.sin(7.3 * t + 3.1 * s)  # small, deterministic, different per (T, seed)


# T = 4 best; T = 2 and 8 within noise of it; T = 1 and 16 five and eight points below, at every epoch
OFFSETS = {1.0: -5.0, 2.0: -0.1, 4.0: 0.0, 8.0: -0.15, 16.0: -8.0}


def _choose_among_five(monkeypatch, calls, warm_up=2.0, **options):
    """choose_temperature over T = 1..16 and 5 seeds, 10 epochs, on the OFFSETS accuracies (which rise by
    warm_up / epoch); the fake sweep records its calls in ``calls``."""
    monkeypatch.setattr(choose_module, "sweep", _fake_sweep(
        lambda t, s, e, E: 90.0 + OFFSETS[float(t)] + _noise(t, s) - warm_up / e, calls))
    return kdlab.choose_temperature(None, "mnist10k", temperatures=[1, 2, 4, 8, 16], seeds=[0, 1, 2, 3, 4],
                                    epochs=10, progress=False, **options)


def test_round_budgets_are_geometric_increasing_and_end_at_the_full_length():
    assert choose_module.round_budgets(10) == (1, 3, 10)
    assert choose_module.round_budgets(240) == (27, 80, 240)
    assert choose_module.round_budgets(2, rounds=3) == (1, 2)  # duplicates collapse
    assert choose_module.round_budgets(9, rounds=1) == (9,)
    assert choose_module.round_budgets(16, rounds=3, eta=2) == (4, 8, 16)
    with pytest.raises(ValueError, match="eta"):
        choose_module.round_budgets(10, eta=1)
    with pytest.raises(ValueError, match="epochs"):
        choose_module.round_budgets(0)
    with pytest.raises(ValueError, match="rounds"):
        choose_module.round_budgets(10, rounds=0)


def test_clearly_worse_candidates_are_dropped_and_close_ones_kept(monkeypatch):
    calls = []
    choice = _choose_among_five(monkeypatch, calls, cap=False)  # the interval rule alone
    assert choice.budgets == (1, 3, 10)
    assert [c["epochs"] for c in calls] == [1, 3, 10]
    assert calls[0]["temperatures"] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert calls[1]["temperatures"] == [2.0, 4.0, 8.0] == calls[2]["temperatures"]
    table = choice.table.set_index("temperature")
    assert table.loc[1.0, "dropped_in_round"] == 0 and table.loc[16.0, "dropped_in_round"] == 0
    assert table.loc[[2.0, 4.0, 8.0], "dropped_in_round"].isna().all()
    assert table.loc[1.0, "epochs"] == 1 and table.loc[4.0, "epochs"] == 10
    assert table.loc[1.0, "verdict"] == "worse" and table.loc[4.0, "verdict"] == "leader"
    assert choice.temperature == 4.0
    # cost: 5 x 5 x 1 + 3 x 5 x 3 + 3 x 5 x 10 against 5 x 5 x 10
    assert choice.student_epochs == 25 + 45 + 150
    assert choice.full_grid_student_epochs == 250
    assert set(choice.results["round"]) == {0, 1, 2}
    # the interval of a final candidate is kdlab.compare's, against the final leader
    final = choice.results[choice.results["round"] == 2]
    row = kdlab.compare(final, by="temperature", baseline=4.0).set_index("temperature").loc[8.0]
    assert table.loc[8.0, "ci_low"] == pytest.approx(row["ci_low"]) and table.loc[8.0, "verdict"] == row["verdict"]
    assert table.loc[4.0, "mean"] == pytest.approx(final[(final.temperature == 4.0) & (final.epoch == 10)].test_acc.mean())


def test_a_candidate_catching_up_is_kept_even_when_worse_at_the_end_of_a_round(monkeypatch):
    # T = 8 is 3 points behind after every budget's end but was 6 behind at half-way: it is catching up.
    # T = 1 is 3 points behind at the end and was only 1 behind half-way: falling back, dropped.
    def accuracy(t, s, e, E):
        frac = e / E
        gap = {2.0: 0.0, 8.0: -6.0 + 3.0 * min(1.0, 2 * (frac - 0.5)) if frac > 0.5 else -6.0,
               1.0: -1.0 if frac <= 0.5 else -3.0}[float(t)]
        return 80.0 + gap + _noise(t, s)
    calls = []
    monkeypatch.setattr(choose_module, "sweep", _fake_sweep(accuracy, calls))
    choice = kdlab.choose_temperature(None, "mnist10k", temperatures=[1, 2, 8], seeds=[0, 1, 2], epochs=8,
                                      rounds=2, eta=2, progress=False)
    assert choice.budgets == (4, 8)
    assert calls[1]["temperatures"] == [2.0, 8.0]
    table = choice.table.set_index("temperature")
    assert table.loc[1.0, "dropped_in_round"] == 0
    assert pd.isna(table.loc[8.0, "dropped_in_round"])
    # a 4-epoch round ran the catching-up test, and the explanation says so
    text = choice.explain()
    assert "Dropped after round 1 (4 epochs): T = 1, each worse than that round's leader at 95 % and not catching up" in text
    assert "catching-up test was skipped" not in text


def test_inconclusive_candidates_are_never_dropped(monkeypatch):
    # large seed-to-seed noise in the differences: nothing can be told apart, so everyone reaches the end
    calls = []
    monkeypatch.setattr(choose_module, "sweep", _fake_sweep(
        lambda t, s, e, E: 85.0 + 0.3 * float(t) + 5.0 * math.sin(11.0 * t * (s + 1)), calls))
    choice = kdlab.choose_temperature(None, "mnist10k", temperatures=[1, 2, 3], seeds=[0, 1], epochs=9,
                                      progress=False, cap=False)
    assert [c["temperatures"] for c in calls] == [[1.0, 2.0, 3.0]] * 3
    assert choice.table["dropped_in_round"].isna().all()
    assert choice.student_epochs == 3 * 2 * (1 + 3 + 9) > choice.full_grid_student_epochs


def test_explain_and_plot_are_printed_from_the_numbers(monkeypatch):
    choice = _choose_among_five(monkeypatch, [], warm_up=0.0, cap=False)
    text = choice.explain()
    mean4 = choice.table.set_index("temperature").loc[4.0, "mean"]
    assert text.startswith(f"Recommended T = 4: mean test accuracy {mean4:.2f} % after 10 epochs (5 seeds).")
    assert "cannot be told apart at 95 %" in text and "T = 2" in text and "T = 8" in text
    assert "Dropped after round 1 (1 epoch): T = 1 and T = 16" in text
    # a 1-epoch round has no half-way point: the explanation must not claim the catching-up test ran
    assert "catching-up test was skipped" in text and "not catching up" not in text
    assert "a third-party summary of Frank & Davis, not verified" in text and "Frank & Davis report" not in text
    ratio = choice.student_epochs / choice.full_grid_student_epochs
    assert f"{choice.student_epochs} student-epochs, {ratio:.0%} of the full grid's 250" in text
    figure = choice.plot()
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "dropped after round 1 (1 epoch)" in labels and "trained the full 10 epochs" in labels
    assert ax.get_xlabel().startswith("temperature") and "[%]" in ax.get_ylabel()
    with pytest.raises(ValueError, match="TemperatureChoice.table"):
        kdlab.plots.temperature_choice(pd.DataFrame({"temperature": [1.0]}))


def test_the_halving_cap_bounds_the_cost_to_a_third_and_marks_the_ties_it_stops(monkeypatch):
    # nine candidates that cannot be told apart (noise >> differences), so only the cap stops any of them
    temperatures = [1, 1.5, 2, 3, 4, 6, 8, 12, 16]
    calls = []
    monkeypatch.setattr(choose_module, "sweep", _fake_sweep(
        lambda t, s, e, E: 85.0 + 0.05 * float(t) + 4.0 * math.sin(11.0 * t * (s + 1)), calls))
    choice = kdlab.choose_temperature(None, "mnist10k", temperatures=temperatures, seeds=[0, 1, 2, 3, 4], epochs=10,
                                      progress=False)
    assert [len(c["temperatures"]) for c in calls] == [9, 3, 1]
    assert choice.student_epochs == 9 * 5 * 1 + 3 * 5 * 3 + 1 * 5 * 10 == 140
    assert choice.student_epochs <= choice.full_grid_student_epochs / 3
    table = choice.table.set_index("temperature")
    stopped = table[table["dropped_in_round"].notna()]
    assert len(stopped) == 8 and "halving cap" in set(stopped["reason"]) <= {"halving cap", "worse"}
    capped = stopped[stopped["reason"] == "halving cap"]
    assert (capped["verdict"] != "worse").all()  # ties, not losers
    assert (stopped.loc[stopped["reason"] == "worse", "verdict"] == "worse").all()
    # the candidates that went on after round 1: the three highest means of round 1 among those not worse
    first = choice.results[choice.results["round"] == 0].groupby("temperature")["test_acc"].mean()
    worse_first = table[(table["dropped_in_round"] == 0) & (table["reason"] == "worse")].index
    assert sorted(calls[1]["temperatures"]) == sorted(first.drop(worse_first).nlargest(3).index.tolist())
    assert table.loc[choice.temperature, "reason"] == "" and pd.isna(table.loc[choice.temperature, "dropped_in_round"])
    text = choice.explain()
    assert "Not continued after round 1 (1 epoch)" in text and "halving cap" in text
    assert len(choice.leaders) == 3 and choice.leaders[-1] == choice.temperature
    if len(set(choice.leaders)) > 1:
        assert "The leader changed between rounds" in text


def test_the_cap_never_overrides_the_interval_rule(monkeypatch):
    # T = 1 and 16 are clearly worse: dropped as "worse" even though the cap alone would keep two candidates
    calls = []
    choice = _choose_among_five(monkeypatch, calls)
    table = choice.table.set_index("temperature")
    assert table.loc[1.0, "reason"] == "worse" and table.loc[16.0, "reason"] == "worse"
    assert len(calls[1]["temperatures"]) == 2 and 4.0 in calls[1]["temperatures"]
    assert choice.temperature == 4.0


def test_the_last_round_is_a_plain_sweep_of_the_survivors():
    """Real training (tiny): the last round's students are exactly a kdlab.sweep of the survivors."""
    data = load_dataset("mnist10k").transfer_set(128)
    torch.manual_seed(1)
    teacher = create_model("mlp16").eval()
    choice = kdlab.choose_temperature(teacher, data, student="mlp16", temperatures=[1.0, 4.0], seeds=[0, 1],
                                      epochs=3, rounds=2, progress=False, lr=0.05)
    assert choice.budgets == (1, 3)
    survivors = choice.table.loc[choice.table["dropped_in_round"].isna(), "temperature"].tolist()
    plain = kdlab.sweep(teacher, data, student="mlp16", grid={"temperature": survivors, "seed": [0, 1]},
                        epochs=3, progress=False, lr=0.05)
    last = choice.results[choice.results["round"] == 1]
    np.testing.assert_allclose(last["test_acc"].to_numpy(), plain["test_acc"].to_numpy(), atol=1e-9)
    assert choice.temperature in survivors
    assert choice.student_epochs == 2 * 2 * 1 + len(survivors) * 2 * 3


def test_user_data_from_tensors_and_an_nn_module_student(tmp_path):
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 1, 4, 4, generator=generator) * 2

    def split(n):
        targets = torch.randint(0, 3, (n,), generator=generator)
        return centers[targets] + 0.5 * torch.randn(n, 1, 4, 4, generator=generator), targets

    data = kdlab.Dataset.from_tensors(*split(96), *split(48), classes=["a", "b", "c"], name="blobs")
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    choice = kdlab.choose_temperature(teacher, data, student=student, temperatures=[1, 8], seeds=[0, 1], epochs=2,
                                      rounds=2, progress=False, out=tmp_path / "run")
    assert choice.temperature in (1.0, 8.0)
    assert (tmp_path / "run" / "round-0" / "sweep.csv").exists()
    again = kdlab.choose_temperature(teacher, data, student=student, temperatures=[1, 8], seeds=[0, 1], epochs=2,
                                     rounds=2, progress=False, out=tmp_path / "run")  # loads the finished runs
    pd.testing.assert_frame_equal(again.table, choice.table)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"temperatures": [4]}, ValueError, "at least 2"),
    ({"temperatures": [1, 1]}, ValueError, "distinct"),
    ({"temperatures": [1, -2]}, ValueError, "> 0"),
    ({"temperatures": "1 2"}, TypeError, "temperatures"),
    ({"seeds": [0]}, ValueError, "at least 2"),
    ({"seeds": [0, -1]}, ValueError, "non-negative"),
    ({"method": "ce"}, ValueError, "no temperature"),
    ({"confidence": 1.5}, ValueError, "confidence"),
    ({"progress": "yes"}, TypeError, "progress"),
    ({"cap": 1}, TypeError, "cap"),
    ({"temperature": 4}, TypeError, "temperatures=..."),
    ({"recipe": "imagenet"}, ValueError, "recipe"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        kdlab.choose_temperature(None, "mnist10k", **kwargs)
