"""Statistics of results: how well calibrated a model is, and one rule for "is A really better than B".

Two ideas live here, both about reading numbers honestly.

**Calibration.** Accuracy says how often the arg-max is right; calibration says whether the confidence can be
trusted. ``calibration(logits, targets)`` gives

* the negative log-likelihood ``NLL = -(1/B) sum_b log softmax(z_b)[y_b]`` (nats), and
* the expected calibration error with M equal-width confidence bins (Guo et al., 2017, "On Calibration of
  Modern Neural Networks"): ``ECE = sum_m (|B_m| / B) * |acc(B_m) - conf(B_m)|``, where ``conf`` is the mean
  top probability and ``acc`` the accuracy of the samples whose top probability falls in bin m. kdlab
  reports it in percent, like accuracy; M = 15 is the common choice.

**Comparisons.** ``compare(results, by, baseline)`` is the only rule kdlab's notebooks and studies use to say
that one configuration beats another. Runs are *paired by seed*: seed s of method A and seed s of the
baseline share their initial weights and data order, so the difference of the pair removes the part of the
between-seed spread that both share. For n pairs with differences d_1..d_n,

    mean d  +-  t_{(1 + c)/2, n - 1} * sd(d) / sqrt(n)

is the Student-t interval at confidence c. The verdict is "better" or "worse" when the interval excludes 0;
with a ``margin`` it is "equivalent" when the whole interval lies inside (-margin, +margin); otherwise
"inconclusive" — which means "these runs cannot tell", never "equal". One pair gives no interval and no
verdict.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

__all__ = ["calibration", "compare", "describe_comparison", "VERDICTS"]

VERDICTS = ("better", "worse", "equivalent", "inconclusive")
_COLUMNS = ("n", "mean", "baseline_mean", "difference", "ci_low", "ci_high", "verdict")


# --------------------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------------------

def calibration(logits: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> dict:
    """Negative log-likelihood (nats) and expected calibration error (percent) of ``logits`` for ``targets``.

    logits: (B, K) or (N, B, K) for N models scored on the same B samples; targets: (B,) class indices.
    Returns ``{"nll": ..., "ece": ...}`` with floats for (B, K) logits and lists of N floats for (N, B, K).
    ECE uses ``bins`` equal-width bins of the top probability over [0, 1] (a probability of exactly 1 falls
    in the last bin); see the module docstring for both formulas.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() not in (2, 3):
        raise ValueError(f"logits must be a tensor of shape (B, K) or (N, B, K), got "
                         f"{getattr(logits, 'shape', type(logits).__name__)}")
    if not isinstance(targets, torch.Tensor) or targets.dim() != 1 or targets.shape[0] != logits.shape[-2]:
        raise ValueError(f"targets must be a 1-d tensor of {logits.shape[-2]} class indices (one per row of "
                         f"logits), got {getattr(targets, 'shape', type(targets).__name__)}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[-1]):
        raise ValueError(f"targets must lie in [0, {logits.shape[-1] - 1}] (the number of classes in logits)")
    single = logits.dim() == 2
    log_probs = torch.log_softmax((logits[None] if single else logits).double(), dim=-1)  # (N, B, K)
    targets = targets.to(log_probs.device).long()
    index = targets.expand(log_probs.shape[0], -1)[..., None]
    nll = -log_probs.gather(-1, index).squeeze(-1).mean(dim=1)

    confidence, predicted = log_probs.exp().max(dim=-1)                                    # (N, B)
    correct = (predicted == targets).double()
    which = (confidence * bins).long().clamp_(0, bins - 1)                                  # bin of each sample
    shape = (log_probs.shape[0], bins)
    count = torch.zeros(shape, dtype=torch.float64, device=log_probs.device).scatter_add_(1, which,
                                                                                        torch.ones_like(correct))
    conf_sum = torch.zeros_like(count).scatter_add_(1, which, confidence)
    correct_sum = torch.zeros_like(count).scatter_add_(1, which, correct)
    ece = 100.0 * (conf_sum - correct_sum).abs().sum(dim=1) / targets.shape[0]
    result = {"nll": nll.tolist(), "ece": ece.tolist()}
    return {k: v[0] for k, v in result.items()} if single else result


# --------------------------------------------------------------------------------------------------------
# Paired comparisons
# --------------------------------------------------------------------------------------------------------

def compare(results: pd.DataFrame, by: str, baseline, metric: str = "test_acc", pair: str = "seed",
            within=None, epoch="last", confidence: float = 0.95, margin: float | None = None,
            higher_is_better: bool = True, paired: bool = True) -> pd.DataFrame:
    """Paired, seed-by-seed comparison of every value of ``by`` against ``baseline`` (the one kdlab rule).

    results: a tidy frame (``kdlab.sweep``, ``run_study``, ``distill`` histories concatenated with their
    configuration columns). Only the rows of ``epoch`` are used: "last" takes each run's final epoch, an int
    takes that epoch. A run is one combination of the ``within`` columns, ``by`` and ``pair``; two rows for
    the same run at that epoch are an error (add the column that tells them apart to ``within``).

    For each group of ``within`` (e.g. ``["temperature"]``) and each value v != baseline of ``by``, the runs of
    v are paired with the baseline's runs on ``pair`` (only pair values present on both sides count), and the
    mean paired difference ``metric(v) - metric(baseline)`` gets a Student-t interval at ``confidence``.
    ``higher_is_better=False`` (for NLL, ECE, loss) turns "better" into "the metric is lower".

    ``paired=False`` is for teaching only (notebook 02 shows what pairing buys): it ignores the pairing and
    uses every run of each side, with Welch's two-sample interval ``mean(a) - mean(b) +- t_{(1+c)/2, df} *
    sqrt(s_a^2/n_a + s_b^2/n_b)`` (Welch-Satterthwaite df); "n" is then min(n_a, n_b).

    Returns a DataFrame with the columns ``[*within, by, "n", "mean", "baseline_mean", "difference",
    "ci_low", "ci_high", "verdict"]``: ``mean``/``baseline_mean`` over the paired runs, ``verdict`` one of
    "better", "worse", "equivalent" (only with ``margin``: the whole interval inside +-margin) and
    "inconclusive" (always, with a NaN interval, when fewer than 2 pairs exist).

    Example: ``compare(results, by="method", baseline="ce", within=["temperature"])``.
    """
    within = _check_compare_arguments(results, by, baseline, metric, pair, within, epoch, confidence, margin,
                                      higher_is_better)
    if not isinstance(paired, bool):
        raise ValueError(f"paired must be True or False, got {paired!r}")
    keys = [*within, by, pair]
    rows = results.dropna(subset=[metric])
    if "epoch" in rows.columns:
        if epoch == "last":
            last = rows.groupby(keys, dropna=False, sort=False)["epoch"].transform("max")
            rows = rows[rows["epoch"] == last]
        else:
            rows = rows[rows["epoch"] == epoch]
            if rows.empty:
                raise ValueError(f"epoch={epoch!r}: no row of results has that epoch (epochs present: "
                                 f"{sorted(results['epoch'].dropna().unique().tolist())})")
    duplicated = rows.duplicated(subset=keys, keep=False)
    if duplicated.any():
        example = rows.loc[duplicated, keys].iloc[0].to_dict()
        raise ValueError(f"results hold several runs for {example} at the chosen epoch; add the column that "
                         f"tells them apart (e.g. 'lr' or 'optimizer') to within")
    if not (rows[by] == baseline).any():
        raise ValueError(f"baseline={baseline!r} has no runs in column {by!r} (values: "
                         f"{sorted(map(str, rows[by].dropna().unique()))})")

    out = []
    groups = rows.groupby(within, dropna=False, sort=True) if within else [((), rows)]
    for group_key, group in groups:
        group_key = group_key if isinstance(group_key, tuple) else (group_key,)
        base = group[group[by] == baseline].set_index(pair)[metric]
        for value in _ordered_unique(group[by]):
            if _same(value, baseline):
                continue
            other = group[group[by] == value].set_index(pair)[metric]
            if not paired:
                out.append({**dict(zip(within, group_key)), by: value,
                            **_welch_interval(other.to_numpy(float), base.to_numpy(float), confidence, margin,
                                              higher_is_better)})
                continue
            common = base.index.intersection(other.index)
            a, b = other.loc[common].to_numpy(float), base.loc[common].to_numpy(float)
            out.append({**dict(zip(within, group_key)), by: value,
                        **_paired_interval(a, b, confidence, margin, higher_is_better)})
    return pd.DataFrame(out, columns=[*within, by, *_COLUMNS])


def _welch_interval(values, baseline_values, confidence, margin, higher_is_better):
    """Unpaired (Welch) interval for mean(values) - mean(baseline_values); see ``compare(paired=False)``."""
    n_a, n_b = int(values.shape[0]), int(baseline_values.shape[0])
    row = {"n": min(n_a, n_b),
           "mean": float(values.mean()) if n_a else math.nan,
           "baseline_mean": float(baseline_values.mean()) if n_b else math.nan,
           "difference": float(values.mean() - baseline_values.mean()) if n_a and n_b else math.nan,
           "ci_low": math.nan, "ci_high": math.nan, "verdict": "inconclusive"}
    if min(n_a, n_b) < 2:
        return row
    from scipy.stats import t as student_t

    var_a, var_b = float(values.var(ddof=1)) / n_a, float(baseline_values.var(ddof=1)) / n_b
    se = math.sqrt(var_a + var_b)
    if se == 0:
        low = high = row["difference"]
    else:
        df = (var_a + var_b) ** 2 / (var_a ** 2 / (n_a - 1) + var_b ** 2 / (n_b - 1))
        half = float(student_t.ppf((1 + confidence) / 2, df)) * se
        low, high = row["difference"] - half, row["difference"] + half
    return _with_verdict(row, low, high, margin, higher_is_better)


def _with_verdict(row, low, high, margin, higher_is_better):
    row["ci_low"], row["ci_high"] = low, high
    if low > 0:
        row["verdict"] = "better" if higher_is_better else "worse"
    elif high < 0:
        row["verdict"] = "worse" if higher_is_better else "better"
    elif margin is not None and -margin < low and high < margin:
        row["verdict"] = "equivalent"
    return row


def _paired_interval(values, baseline_values, confidence, margin, higher_is_better):
    """Mean paired difference, its Student-t interval and the verdict for one comparison."""
    n = int(values.shape[0])
    differences = values - baseline_values
    row = {"n": n,
           "mean": float(values.mean()) if n else math.nan,
           "baseline_mean": float(baseline_values.mean()) if n else math.nan,
           "difference": float(differences.mean()) if n else math.nan,
           "ci_low": math.nan, "ci_high": math.nan, "verdict": "inconclusive"}
    if n < 2:
        return row
    from scipy.stats import t as student_t

    half = float(student_t.ppf((1 + confidence) / 2, n - 1)) * float(differences.std(ddof=1)) / math.sqrt(n)
    return _with_verdict(row, row["difference"] - half, row["difference"] + half, margin, higher_is_better)


def describe_comparison(row, name: str | None = None, baseline: str | None = None, unit: str = "points",
                        digits: int = 2) -> str:
    """One sentence, printed from the numbers, for one row of ``compare``'s table.

    e.g. "kd vs ce: +2.41 points (95 % interval +1.90 to +2.92, 5 paired seeds): better."
    ``name``/``baseline`` label the two sides (default: the row's values are not known to this function,
    so pass them); the confidence level is not stored in the row, so the sentence says "interval".
    """
    name = "A" if name is None else name
    baseline = "the baseline" if baseline is None else baseline
    n, verdict = int(row["n"]), row["verdict"]
    if n < 2 or math.isnan(row["ci_low"]):
        return (f"{name} vs {baseline}: {row['difference']:+.{digits}f} {unit} from {n} paired run(s); "
                f"no interval from fewer than 2 pairs, so: inconclusive.")
    return (f"{name} vs {baseline}: {row['difference']:+.{digits}f} {unit} (interval {row['ci_low']:+.{digits}f} "
            f"to {row['ci_high']:+.{digits}f}, {n} paired seeds): {verdict}.")


def _ordered_unique(series):
    seen = []
    for value in series:
        if not any(_same(value, s) for s in seen):
            seen.append(value)
    try:
        return sorted(seen)
    except TypeError:
        return seen


def _same(a, b):
    try:
        return bool(a == b) or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    except (TypeError, ValueError):
        return False


def _check_compare_arguments(results, by, baseline, metric, pair, within, epoch, confidence, margin,
                             higher_is_better):
    if not isinstance(results, pd.DataFrame):
        raise ValueError(f"results must be a pandas DataFrame (from sweep, run_study or distill), got "
                         f"{type(results).__name__}")
    if within is None:
        within = []
    elif isinstance(within, str):
        within = [within]
    else:
        within = list(within)
    for argument, column in [("by", by), ("metric", metric), ("pair", pair)] + [("within", c) for c in within]:
        if not isinstance(column, str) or column not in results.columns:
            raise ValueError(f"{argument}={column!r} is not a column of results (columns: {list(results.columns)})")
    if by == pair or by in within or pair in within:
        raise ValueError(f"by ({by!r}), pair ({pair!r}) and within ({within}) must name different columns")
    if not pd.api.types.is_numeric_dtype(results[metric]):
        raise ValueError(f"metric={metric!r} must be a numeric column, got dtype {results[metric].dtype}")
    if not (epoch == "last" or (isinstance(epoch, (int, np.integer)) and not isinstance(epoch, bool))):
        raise ValueError(f"epoch must be 'last' or an integer epoch, got {epoch!r}")
    if epoch != "last" and "epoch" not in results.columns:
        raise ValueError(f"epoch={epoch!r} needs an 'epoch' column in results")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), e.g. 0.95, got {confidence!r}")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))
                               or not margin > 0 or math.isinf(margin)):
        raise ValueError(f"margin must be a positive finite number (in the metric's units) or None, got {margin!r}")
    if not isinstance(higher_is_better, bool):
        raise ValueError(f"higher_is_better must be True or False, got {higher_is_better!r}")
    if baseline is None or (isinstance(baseline, float) and math.isnan(baseline)):
        raise ValueError("baseline must be a value of the by column, got None/NaN")
    return within
