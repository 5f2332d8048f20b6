"""Choosing a temperature for your own teacher, student and data, cheaper than the full grid and honestly.

The question KD users ask most is "which T for my pair?". The reliable answer is a grid: every candidate T,
several seeds, the full training length, then ``kdlab.compare``. ``choose_temperature`` gives the same kind of
answer for a fraction of the student-epochs by stopping clearly worse candidates early.

**What the algorithm does** (successive halving with restarts, guarded by a paired interval):

1. Round budgets grow geometrically up to the full length E: with ``eta = 3`` and 3 rounds, E/9, E/3 and E
   epochs (rounded, at least 1, strictly increasing; e.g. 1, 3, 10 for E = 10).
2. In each round, every surviving candidate is trained *from scratch* for that round's budget, all seeds at
   once, as one ``kdlab.sweep`` (the candidates are batched together). ``kdlab.sweep`` cannot continue a run
   for more epochs, so a candidate that survives a round is trained again for the next, longer budget; the
   rounds' student-epochs add up, and ``student_epochs`` counts all of them. A restart is also what makes
   each round an honest measurement of "training for that long" under any learning-rate schedule.
3. After a round that is not the last, the leader is the candidate with the highest mean final test accuracy.
   Every other candidate is compared with it by ``kdlab.compare`` (paired by seed, Student-t interval at
   ``confidence``). A candidate is **dropped as worse** only when (a) its whole interval lies below zero
   (verdict "worse") and (b) it is not catching up: its gap to the leader at the end of the round is at least
   as large as at the round's half-way epoch (rounds of 1 epoch have no half-way point and skip (b)).
4. **The halving cap** (``cap=True``, the default): at most ceil(n / eta) of the round's n candidates go on
   (9 -> 3 -> 1 for the nine defaults). When more candidates than that survive step 3 — they cannot be told
   apart from the leader — the ones with the highest mean accuracy go on and the others are **not continued**
   (reason "halving cap" in the table; their interval against the leader is kept, so the table shows they were
   ties, not losers). The cap is what bounds the cost: with restarts, a round that keeps k candidates costs
   k x seeds x its budget, so E/9, E/3, E with 9 -> 3 -> 1 candidates costs at most
   (9/9 + 3/3 + 1) x E x seeds = 3 E x seeds student-epochs, 1/3 of the full grid's 9 E x seeds (plus
   rounding of the budgets; 140 of 450 for E = 10). Without the cap (``cap=False``) every tie goes on, and
   when many candidates are ties the search can cost more than the full grid.
5. The last round trains the survivors for the full E epochs; the recommendation is the survivor with the
   highest mean final test accuracy, and the table says which survivors cannot be told apart from it.

**What it does not guarantee.** The ranking of temperatures can change with training length (a third-party
summary of Frank & Davis (2026), not verified against the paper, says that under SGD small T does better
early and large T later; which way it moves for your pair is for your runs to show). A short round measures
short training, so a candidate that is worse (or only ranked lower among ties) after a short budget can be
stopped even if it would have won at the full length; rule (b) protects only against reversals that have begun
inside a round, and a 1-epoch round (the first round for E = 10) drops on the interval alone. The table therefore keeps each
stopped candidate's round, verdict and reason, and ``explain()`` says when the leader changed between rounds
(an unstable ranking: train the stopped neighbours of the winner at full length if it matters).
``benchmarks/bench_choose.py`` measures cost and quality on mnist10k against the full grid, and notebook 06
shows what a naive rule (keep the leader after the first round) would have chosen.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kdlab.stats import compare
from kdlab.sweeps import sweep

__all__ = ["choose_temperature", "TemperatureChoice", "DEFAULT_TEMPERATURES", "round_budgets"]

# Nine candidates in steps of about sqrt(2) from 1 to 16: the range the papers sweep (KD's T = 4, DKD's 4,
# CTKD's learned T inside [1, 21], Frank & Davis's 1-16), fine enough that neighbours are hard to tell apart.
DEFAULT_TEMPERATURES = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
_TABLE_COLUMNS = ("temperature", "mean", "difference", "ci_low", "ci_high", "verdict", "n", "epochs",
                  "dropped_in_round", "reason")
_WORSE, _CAPPED = "worse", "halving cap"


@dataclasses.dataclass
class TemperatureChoice:
    """What ``choose_temperature`` found.

    Attributes:
        temperature: the recommended T (one of the candidates): the highest mean final test accuracy among the
            candidates that reached the last round.
        table: one row per candidate, in temperature order: "mean" (mean test accuracy, percent, over the
            seeds, after "epochs" epochs — the budget of the last round it was trained in), "difference",
            "ci_low", "ci_high", "verdict" (``kdlab.compare`` against the leader of that round, paired by
            seed; the leader's own row has difference 0 and verdict "leader"), "n" (paired seeds), "epochs",
            "dropped_in_round" (the round after which it stopped; <NA> if it reached the last round), "reason"
            ("worse": interval below the leader and, in a round of 2 or more epochs, not catching up; "halving
            cap": a tie with the leader ranked
            below the ceil(n / eta) that went on; "" for the last round's candidates).
        student_epochs: student-epochs trained over all rounds (one student trained for one epoch = 1).
        full_grid_student_epochs: what the full grid would cost (candidates x seeds x E).
        budgets: the epochs of each round. seconds: wall time of the whole search.
        results: every round's ``kdlab.sweep`` frame, with a "round" column (0-based).
        confidence: the interval level used. leaders: the leader (highest mean) of each round, in order.
    """

    temperature: float
    table: pd.DataFrame
    student_epochs: int
    full_grid_student_epochs: int
    budgets: tuple
    seconds: float
    results: pd.DataFrame
    confidence: float = 0.95
    leaders: tuple = ()

    def plot(self, axes=None):
        """Accuracy vs T with the intervals, dropped candidates marked (``kdlab.plots.temperature_choice``)."""
        from kdlab.plots import temperature_choice

        return temperature_choice(self.table, confidence=self.confidence, axes=axes)

    def explain(self) -> str:
        """A short paragraph printed from the numbers: the choice, the ties, the drops, the cost."""
        table = self.table
        level = f"{100 * self.confidence:g} %"
        final = table[table["dropped_in_round"].isna()]
        leader = final.loc[final["temperature"] == self.temperature].iloc[0]
        epochs = int(leader["epochs"])
        parts = [f"Recommended T = {self.temperature:g}: mean test accuracy {leader['mean']:.2f} % after "
                 f"{epochs} epochs ({int(leader['n'])} seeds)."]
        ties = final[(final["temperature"] != self.temperature) & (final["verdict"] != "worse")]
        worse = final[(final["temperature"] != self.temperature) & (final["verdict"] == "worse")]
        if len(ties):
            names = _join([f"T = {t:g}" for t in ties["temperature"]])
            verb = "cannot"
            spans = "; ".join(f"T = {r.temperature:g}: {r.difference:+.2f} points, interval {r.ci_low:+.2f} to "
                              f"{r.ci_high:+.2f}" if np.isfinite(r.ci_low) else
                              f"T = {r.temperature:g}: {r.difference:+.2f} points, no interval"
                              for r in ties.itertuples())
            parts.append(f"T = {self.temperature:g} and {names} {verb} be told apart at {level} ({spans}); "
                         f"on this evidence none of them is measurably better (which does not make them equal).")
        else:
            parts.append("It is the only candidate that reached the last round."
                         if len(final) == 1 else
                         f"Every other candidate of the last round is worse at {level}.")
        if len(worse):
            parts.append(f"At the full length, {_join([f'T = {t:g}' for t in worse['temperature']])} "
                         f"{'is' if len(worse) == 1 else 'are'} worse (interval below 0).")
        dropped = table[table["dropped_in_round"].notna()]
        for round_index, rows in dropped.groupby("dropped_in_round", sort=True):
            budget = int(rows["epochs"].iloc[0])
            when = f"after round {int(round_index) + 1} ({budget} epoch{'s' if budget != 1 else ''})"
            worse_rows = rows[rows["reason"] == _WORSE]
            capped_rows = rows[rows["reason"] == _CAPPED]
            if len(worse_rows):
                names = _join([f"T = {t:g}" for t in worse_rows["temperature"]])
                if budget >= 2:  # rule (b) ran: the gap at the round's end was at least the gap half-way
                    parts.append(f"Dropped {when}: {names}, each worse than that round's leader at {level} and not "
                                 f"catching up (its gap at the round's end at least its gap half-way).")
                else:
                    parts.append(f"Dropped {when}: {names}, each worse than that round's leader at {level} "
                                 f"(a 1-epoch round has no half-way point, so the catching-up test was skipped).")
            if len(capped_rows):
                names = _join([f"T = {t:g}" for t in capped_rows["temperature"]])
                parts.append(f"Not continued {when}: {names}, which could not be told apart from that round's "
                             f"leader but ranked below the candidates that went on (the halving cap).")
        if len(self.leaders) > 1 and len(set(self.leaders)) > 1:
            sequence = ", ".join(f"T = {t:g}" for t in self.leaders)
            parts.append(f"The leader changed between rounds ({sequence}): the early ranking was not stable, so a "
                         f"candidate stopped early might have won at the full length.")
        ratio = self.student_epochs / self.full_grid_student_epochs
        parts.append(f"Cost: {self.student_epochs} student-epochs, {ratio:.0%} of the full grid's "
                     f"{self.full_grid_student_epochs}, in {self.seconds:.0f} s.")
        if len(dropped):
            parts.append("A dropped candidate was judged on shorter training than the winner: a T that only "
                         "wins late can be lost that way (a third-party summary of Frank & Davis, not verified, "
                         "says that under SGD small T does better early and large T later).")
        return " ".join(parts)


def round_budgets(epochs, rounds=3, eta=3):
    """The epochs of each round: E / eta^(rounds-1), ..., E / eta, E, rounded, >= 1, strictly increasing.

    Example: ``round_budgets(10)`` -> (1, 3, 10); ``round_budgets(240)`` -> (27, 80, 240).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta <= 1:
        raise ValueError(f"eta must be a number > 1 (the factor between round budgets), got {eta!r}")
    budgets = []
    for r in range(rounds - 1, -1, -1):
        value = max(1, int(round(epochs / eta ** r)))
        if not budgets or value > budgets[-1]:
            budgets.append(value)
    if budgets[-1] != epochs:
        budgets.append(epochs)
    return tuple(budgets)


def choose_temperature(teacher, dataset="mnist10k", student="mlp64", method="kd", temperatures=None,
                       seeds=(0, 1, 2), epochs=None, progress=True, *, rounds=3, eta=3, confidence=0.95,
                       cap=True, out=None, recipe=None, device="auto", **common) -> TemperatureChoice:
    """Recommend a temperature for ``teacher`` -> ``student`` on ``dataset``, dropping clearly worse T early.

    teacher, dataset, student, recipe, device and ``**common`` (``optimizer``, ``lr``, ``batch_size``,
    ``weight_decay``, ``momentum``, ``schedule``, method hyper-parameters such as ``beta``) mean what they mean
    in ``kdlab.sweep``: the dataset is any ``kdlab.Dataset`` (e.g. ``Dataset.from_tensors(...)`` of your own
    data) or a name, the student any model name or ``nn.Module``.
    method: a method with a temperature (see ``kdlab.list_methods()``). temperatures: the candidates (default
    ``DEFAULT_TEMPERATURES``, 1 to 16). seeds: at least 2 (an interval needs 2 pairs; 5 give much tighter
    intervals). epochs: the full training length E (default: the recipe's). rounds, eta: the round budgets
    (:func:`round_budgets`). confidence: the level of ``kdlab.compare``'s intervals. cap: the halving cap (at
    most ceil(n / eta) candidates go on after each round; False keeps every tie). out: a folder; each
    round's sweep is saved in ``out/round-<r>`` and a rerun loads finished runs instead of training them.

    The algorithm and what it does not guarantee are in the module docstring (``help(kdlab.choose)``).
    Returns a :class:`TemperatureChoice`.
    """
    from kdlab.data import Dataset
    from kdlab.methods import get_method
    from kdlab.train import RECIPES

    if not isinstance(method, str):
        raise TypeError(f"method must be a method name (see kdlab.list_methods()), got {method!r}")
    if not get_method(method).uses_temperature:
        raise ValueError(f"method={method!r} has no temperature to choose; use e.g. 'kd', 'ttm', 'wttm', 'dkd'")
    if "temperature" in common or "seed" in common or "grid" in common:
        raise TypeError("choose_temperature sets temperature and seed itself; pass temperatures=... and seeds=...")
    temperatures = _check_temperatures(DEFAULT_TEMPERATURES if temperatures is None else temperatures)
    seeds = _check_seeds(seeds)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), e.g. 0.95, got {confidence!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if not isinstance(cap, bool):
        raise TypeError(f"cap must be True or False, got {cap!r}")
    if epochs is None:
        # the recipe's student epochs, resolved as kdlab.train resolves recipes (explicit > recipe > by dataset)
        name = dataset.name if isinstance(dataset, Dataset) else str(dataset)
        if isinstance(recipe, dict) and "epochs" in recipe:
            epochs = recipe["epochs"]
        else:
            key = recipe if isinstance(recipe, str) else ("cifar" if name.lower().startswith("cifar") else "mnist10k")
            if key not in RECIPES:
                raise ValueError(f"recipe must be one of {sorted(RECIPES)} or a dict, got {recipe!r}")
            epochs = RECIPES[key]["student"]["epochs"]
    budgets = round_budgets(epochs, rounds, eta)
    if isinstance(teacher, str):  # train (or load) it once, not once per round
        from kdlab.train import train_teacher

        teacher, _ = train_teacher(dataset, model=teacher, device=device, progress=progress)

    start = time.perf_counter()
    survivors = list(temperatures)
    rows, frames, cost, leaders = {}, [], 0, []
    for round_index, budget in enumerate(budgets):
        last = round_index == len(budgets) - 1
        folder = Path(out) / f"round-{round_index}" if out is not None else None
        frame = sweep(teacher, dataset, student=student, grid={"temperature": survivors, "seed": list(seeds)},
                      epochs=budget, out=folder, progress=progress, recipe=recipe, device=device,
                      method=method, **common)
        frame = frame.assign(round=round_index)
        frames.append(frame)
        cost += len(survivors) * len(seeds) * budget
        table = _round_table(frame, confidence)
        leader = table.loc[table["mean"].idxmax(), "temperature"]
        leaders.append(float(leader))
        drop = {}
        if not last:
            halfway = _half_way_gaps(frame, leader, budget, confidence)
            for row in table.itertuples():
                if row.verdict != "worse":
                    continue
                if halfway is not None and not row.difference <= halfway.get(row.temperature, -math.inf):
                    continue  # the gap is shrinking: it is catching up, keep it
                drop[row.temperature] = _WORSE
            if cap:
                keep = max(1, math.ceil(len(survivors) / eta))
                going_on = table[~table["temperature"].isin(list(drop))].sort_values(
                    ["mean", "temperature"], ascending=[False, True])
                for temperature in going_on["temperature"].iloc[keep:]:
                    drop[temperature] = _CAPPED
        for row in table.to_dict("records"):
            if last or row["temperature"] in drop:
                rows[row["temperature"]] = {**row, "epochs": budget,
                                            "dropped_in_round": pd.NA if last else round_index,
                                            "reason": "" if last else drop[row["temperature"]]}
        survivors = [t for t in survivors if t not in drop]
    seconds = time.perf_counter() - start

    table = pd.DataFrame([rows[t] for t in temperatures], columns=list(_TABLE_COLUMNS))
    table["dropped_in_round"] = table["dropped_in_round"].astype("Int64")
    final = table[table["dropped_in_round"].isna()]
    recommended = float(final.loc[final["mean"].idxmax(), "temperature"])
    return TemperatureChoice(temperature=recommended, table=table, student_epochs=int(cost),
                             full_grid_student_epochs=len(temperatures) * len(seeds) * budgets[-1],
                             budgets=budgets, seconds=seconds, results=pd.concat(frames, ignore_index=True),
                             confidence=float(confidence), leaders=tuple(leaders))


def _round_table(frame, confidence, epoch="last"):
    """One row per temperature: mean accuracy and ``kdlab.compare`` against the round's leader at ``epoch``."""
    at = frame if epoch == "last" else frame[frame["epoch"] == epoch]
    at = at[at["epoch"] == at.groupby("config")["epoch"].transform("max")]
    means = at.groupby("temperature")["test_acc"].mean()
    leader = float(means.idxmax())
    compared = compare(frame, by="temperature", baseline=leader, epoch=epoch, confidence=confidence)
    out = [{"temperature": leader, "mean": float(means[leader]), "difference": 0.0, "ci_low": 0.0,
            "ci_high": 0.0, "verdict": "leader", "n": int((at["temperature"] == leader).sum())}]
    for row in compared.itertuples():
        out.append({"temperature": float(row.temperature), "mean": float(means[row.temperature]),
                    "difference": row.difference, "ci_low": row.ci_low, "ci_high": row.ci_high,
                    "verdict": row.verdict, "n": int(row.n)})
    return pd.DataFrame(out).sort_values("temperature", ignore_index=True)


def _half_way_gaps(frame, leader, budget, confidence):
    """Paired mean gap of each candidate to ``leader`` at the round's half-way epoch (None for 1-epoch rounds)."""
    if budget < 2:
        return None
    halfway = int(math.ceil(budget / 2))
    compared = compare(frame, by="temperature", baseline=leader, epoch=halfway, confidence=confidence)
    return {float(row.temperature): float(row.difference) for row in compared.itertuples()}


def _check_temperatures(temperatures):
    if isinstance(temperatures, (str, bytes)) or not hasattr(temperatures, "__iter__"):
        raise TypeError(f"temperatures must be a list of numbers > 0, got {temperatures!r}")
    values = list(temperatures)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(value) or value <= 0:
            raise ValueError(f"temperatures must be finite numbers > 0, got {value!r}")
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"temperatures must hold at least 2 candidates to choose from, got {values}")
    if len(set(values)) != len(values):
        raise ValueError(f"temperatures must be distinct, got {values}")
    return sorted(values)


def _check_seeds(seeds):
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"seeds must be a list of non-negative integers, got {seeds!r}")
    values = list(seeds)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"seeds must be non-negative integers, got {value!r}")
    values = [int(v) for v in values]
    if len(values) < 2 or len(set(values)) != len(values):
        raise ValueError(f"seeds must hold at least 2 distinct seeds (a paired interval needs 2 pairs), got {values}")
    return values


def _join(names):
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
