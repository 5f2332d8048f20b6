"""kdlab.stats: calibration (NLL, ECE) and the paired comparison rule."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import kdlab
from kdlab.stats import calibration, compare, describe_comparison


# --------------------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------------------

def test_nll_equals_cross_entropy():
    torch.manual_seed(0)
    logits, targets = torch.randn(50, 7), torch.randint(0, 7, (50,))
    expected = torch.nn.functional.cross_entropy(logits.double(), targets).item()
    assert calibration(logits, targets)["nll"] == pytest.approx(expected, abs=1e-12)


def test_ece_by_hand():
    # Four samples, 15 bins. Top probabilities 0.9 (right), 0.9 (wrong), 0.6 (right), ~0.5 (wrong; K = 2)
    logits = torch.tensor([[math.log(9), 0.0], [math.log(9), 0.0], [math.log(1.5), 0.0], [0.0, 1e-9]])
    targets = torch.tensor([0, 1, 0, 0])
    # bin of 0.9: 2 samples, conf 0.9, acc 0.5 -> 2/4 * 0.4; bin of 0.6: conf 0.6, acc 1 -> 1/4 * 0.4;
    # bin of ~0.5 (prediction = class 1, wrong): conf ~0.5, acc 0 -> 1/4 * 0.5
    expected = 100 * (0.5 * 0.4 + 0.25 * 0.4 + 0.25 * 0.5)
    assert calibration(logits, targets)["ece"] == pytest.approx(expected, abs=1e-6)


def test_ece_zero_for_one_hot_correct_and_batched_shape():
    logits = torch.tensor([[50.0, 0.0, 0.0], [0.0, 50.0, 0.0]])
    targets = torch.tensor([0, 1])
    assert calibration(logits, targets)["ece"] == pytest.approx(0.0, abs=1e-12)
    stacked = torch.stack([logits, logits.flip(-1)])  # (2, B, K)
    result = calibration(stacked, targets)
    assert len(result["ece"]) == 2 and result["ece"][0] == pytest.approx(0.0, abs=1e-12)
    assert result["ece"][1] == pytest.approx(calibration(logits.flip(-1), targets)["ece"], abs=1e-12)


@pytest.mark.parametrize("bad", [dict(logits=torch.randn(5)), dict(targets=torch.zeros(4, dtype=torch.long)),
                                 dict(bins=0), dict(targets=torch.full((5,), 9))])
def test_calibration_bad_input(bad):
    arguments = dict(logits=torch.randn(5, 3), targets=torch.zeros(5, dtype=torch.long), bins=15) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        calibration(**arguments)


# --------------------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------------------

def _frame(method_values, epochs=(1,)):
    rows = []
    for method, values in method_values.items():
        for seed, value in enumerate(values):
            for epoch in epochs:
                rows.append({"method": method, "seed": seed, "epoch": epoch,
                             "test_acc": value if epoch == max(epochs) else value - 50})
    return pd.DataFrame(rows)


def test_known_paired_difference_matches_hand_computed_interval():
    frame = _frame({"ce": [80.0, 82.0, 81.0], "kd": [81.2, 83.0, 82.1]}, epochs=(1, 2))
    table = compare(frame, by="method", baseline="ce")
    row = table.iloc[0]
    d = np.array([1.2, 1.0, 1.1])
    half = 4.302652729911275 * d.std(ddof=1) / math.sqrt(3)  # t_{0.975, 2}
    assert list(table.columns) == ["method", "n", "mean", "baseline_mean", "difference", "ci_low", "ci_high",
                                   "verdict"]
    assert row["method"] == "kd" and row["n"] == 3
    assert row["mean"] == pytest.approx(246.3 / 3) and row["baseline_mean"] == pytest.approx(81.0)
    assert row["difference"] == pytest.approx(1.1)
    assert row["ci_low"] == pytest.approx(1.1 - half, abs=1e-9)
    assert row["ci_high"] == pytest.approx(1.1 + half, abs=1e-9)
    assert row["verdict"] == "better"  # 1.1 - 0.248 > 0


def test_pairing_detects_constant_difference_under_large_seed_variance():
    rng = np.random.default_rng(0)
    base = rng.normal(80, 10, size=6)          # between-seed spread of 10 points
    frame = _frame({"ce": base, "kd": base + 0.5})
    row = compare(frame, by="method", baseline="ce").iloc[0]
    assert row["verdict"] == "better" and row["difference"] == pytest.approx(0.5)
    # An unpaired rule (sum of the stds) would never see it:
    assert 0.5 < 2 * base.std()
    worse = compare(_frame({"ce": base, "kd": base - 0.5}), by="method", baseline="ce").iloc[0]
    assert worse["verdict"] == "worse"


def test_one_pair_is_never_a_verdict():
    frame = _frame({"ce": [80.0], "kd": [95.0]})
    row = compare(frame, by="method", baseline="ce").iloc[0]
    assert row["n"] == 1 and row["verdict"] == "inconclusive"
    assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    assert "inconclusive" in describe_comparison(row, "kd", "ce")


def test_equivalence_needs_a_margin_and_inconclusive_is_not_equal():
    frame = _frame({"ce": [80.0, 81.0, 82.0, 83.0, 84.0], "kd": [80.1, 80.9, 82.1, 82.9, 84.0]})
    plain = compare(frame, by="method", baseline="ce").iloc[0]
    assert plain["verdict"] == "inconclusive"
    assert compare(frame, by="method", baseline="ce", margin=0.5).iloc[0]["verdict"] == "equivalent"
    assert compare(frame, by="method", baseline="ce", margin=0.05).iloc[0]["verdict"] == "inconclusive"


def test_unmatched_seeds_are_left_out():
    frame = _frame({"ce": [80.0, 81.0, 82.0, 83.0], "kd": [81.0, 82.0]})
    frame = frame[~((frame["method"] == "ce") & (frame["seed"] == 0))]   # ce: seeds 1-3, kd: seeds 0-1
    row = compare(frame, by="method", baseline="ce").iloc[0]
    assert row["n"] == 1 and row["verdict"] == "inconclusive"
    assert row["difference"] == pytest.approx(1.0)


def test_within_groups_epoch_choice_and_lower_is_better():
    rows = []
    for temperature in (1.0, 4.0):
        for seed in range(4):
            rows.append({"method": "ce", "temperature": temperature, "seed": seed, "epoch": 3, "test_ece": 5.0 + seed})
            rows.append({"method": "kd", "temperature": temperature, "seed": seed, "epoch": 3,
                         "test_ece": 5.0 + seed + (1.0 if temperature == 1 else -1.0) + 0.01 * seed})
    table = compare(pd.DataFrame(rows), by="method", baseline="ce", metric="test_ece", within=["temperature"],
                    epoch=3, higher_is_better=False)
    assert table["temperature"].tolist() == [1.0, 4.0]
    assert table["verdict"].tolist() == ["worse", "better"]


def test_duplicate_runs_are_an_error():
    frame = pd.concat([_frame({"ce": [1.0, 2.0], "kd": [2.0, 3.0]})] * 2)
    with pytest.raises(ValueError, match="within"):
        compare(frame, by="method", baseline="ce")


@pytest.mark.parametrize("arguments, message", [
    (dict(by="nope"), "by="), (dict(metric="nope"), "metric="), (dict(pair="nope"), "pair="),
    (dict(within=["nope"]), "within="), (dict(baseline="dkd"), "baseline="), (dict(confidence=1.0), "confidence"),
    (dict(confidence=0), "confidence"), (dict(margin=0), "margin"), (dict(margin=-1.0), "margin"),
    (dict(epoch="first"), "epoch"), (dict(epoch=7), "epoch"), (dict(by="seed"), "different"),
])
def test_bad_input_names_the_argument(arguments, message):
    frame = _frame({"ce": [80.0, 81.0], "kd": [81.0, 83.0]})
    with pytest.raises(ValueError, match=message):
        compare(frame, **({"by": "method", "baseline": "ce"} | arguments))
    with pytest.raises(ValueError, match="DataFrame"):
        compare([1, 2], by="method", baseline="ce")


def test_sweep_history_has_calibration_and_compare_reads_it():
    data = kdlab.load_dataset("mnist10k").transfer_set(300, seed=0)
    frame = kdlab.sweep(None, data, grid={"method": ["ce", "label_smoothing"], "seed": [0, 1]}, epochs=2,
                        progress=False)
    assert {"test_nll", "test_ece"} <= set(frame.columns)
    assert frame["test_nll"].gt(0).all() and frame["test_ece"].between(0, 100).all()
    student, history = kdlab.distill(None, data, method="ce", epochs=2, seed=0, progress=False)
    ce_last = frame[(frame["method"] == "ce") & (frame["seed"] == 0)].iloc[-1]
    assert history.iloc[-1]["test_nll"] == pytest.approx(ce_last["test_nll"], rel=1e-4)
    table = compare(frame, by="method", baseline="ce")
    assert table.iloc[0]["n"] == 2 and table.iloc[0]["method"] == "label_smoothing"


def test_plot_comparison_draws_every_row_and_centres_zero():
    import matplotlib
    matplotlib.use("Agg")
    frame = _frame({"ce": [80.0, 81.0, 82.0], "kd": [81.2, 82.1, 83.0], "ttm": [79.0, 80.0, 81.5]})
    table = compare(frame, by="method", baseline="ce")
    figure = kdlab.plots.plot_comparison(table, baseline="ce", margin=0.5)
    ax = figure.axes[0]
    low, high = ax.get_xlim()
    assert low == pytest.approx(-high) and high > table["ci_high"].abs().max()
    assert len(ax.collections) >= len(table)
    with pytest.raises(ValueError, match="kdlab.compare"):
        kdlab.plots.plot_comparison(frame)


def test_unpaired_welch_interval_by_hand_and_what_pairing_buys():
    base = np.array([70.0, 80.0, 90.0, 75.0, 85.0])
    kd = base + np.array([0.9, 1.1, 1.0, 0.8, 1.2])
    frame = _frame({"ce": base, "kd": kd})
    unpaired = compare(frame, by="method", baseline="ce", paired=False).iloc[0]
    se = math.sqrt(kd.var(ddof=1) / 5 + base.var(ddof=1) / 5)
    df = se ** 4 / ((kd.var(ddof=1) / 5) ** 2 / 4 + (base.var(ddof=1) / 5) ** 2 / 4)
    from scipy.stats import t as student_t
    half = student_t.ppf(0.975, df) * se
    assert unpaired["difference"] == pytest.approx(1.0)
    assert unpaired["ci_low"] == pytest.approx(1.0 - half, abs=1e-9)
    assert unpaired["ci_high"] == pytest.approx(1.0 + half, abs=1e-9)
    assert unpaired["verdict"] == "inconclusive" and unpaired["n"] == 5
    paired = compare(frame, by="method", baseline="ce").iloc[0]
    assert paired["verdict"] == "better"
    assert paired["ci_high"] - paired["ci_low"] < (unpaired["ci_high"] - unpaired["ci_low"]) / 10
    with pytest.raises(ValueError, match="paired"):
        compare(frame, by="method", baseline="ce", paired="no")
