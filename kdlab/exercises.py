"""Exercises that check themselves, and predict-then-check questions, for the notebooks.

Three kinds of task, one contract (``check`` returns a :class:`Feedback`, shown as a coloured box in Jupyter
and as one line of text elsewhere; it never raises because of the student's answer):

- **Implement it** (``"kd_loss"``, ``"ttm_loss"``, ``"wttm_loss"``, ``"dtkd_temperatures"``): the student
  writes a function with the reference's signature, ``fn(student_logits, teacher_logits, temperature)``.
  The checker calls it on its *own* random inputs -- several batch sizes B, classes K up to 100,
  temperatures T from 1 to 20 -- and compares what it returns with kdlab's reference *and* with every known
  wrong version (missing T^2, reversed KL, ``kl_div``'s element-wise mean, ...). A known bug is recognised
  by what the function computes, never by reading its source, so a correct implementation written any way
  (loops, other torch calls, float32) passes. At T = 1 several bugs give the reference's value, which is why
  every exercise is probed at several T.
- **Numeric** (one or more per notebook): a number, checked with a relative tolerance; when it matches the
  result of a known wrong step (T instead of T^2, bits instead of nats, ...) the hint names that step.
- **Predict, then check** (:func:`predict`): a small ipywidgets choice or number the student commits
  *before* an experiment; a later cell passes the measured numbers to :meth:`Prediction.check`, which says
  whether the prediction held. An unanswered question reports "not attempted" and never stops Run All.

``solution(name)`` shows a worked solution. With the environment variable ``KDLAB_EXERCISE_SOLUTIONS=1``
every unanswered exercise is checked with its worked solution instead (the code shown by ``solution``),
which is how the tests run every notebook "with the solutions filled in" -- and how an instructor runs a
notebook to show the answers.
"""
from __future__ import annotations

import html
import math
import os
import textwrap
from dataclasses import dataclass, field
from itertools import product
from numbers import Real

import torch
import torch.nn.functional as F

from kdlab.losses import LearnableTemperature, dtkd_temperatures, kd_loss, ttm_loss, wttm_loss
from kdlab.temperature import entropy, power_sum, smoothing_for_entropy, temperature_for_entropy

__all__ = [
    "Feedback",
    "Prediction",
    "Solution",
    "SOLUTIONS_ENV",
    "names",
    "describe",
    "check",
    "solution",
    "predict",
    "solutions_enabled",
]

SOLUTIONS_ENV = "KDLAB_EXERCISE_SOLUTIONS"

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"
_COLOURS = {PASSED: ("#e6f4ea", "#1e8e3e"), FAILED: ("#fce8e6", "#d93025"), NOT_ATTEMPTED: ("#f1f3f4", "#5f6368")}


def solutions_enabled() -> bool:
    """True when ``KDLAB_EXERCISE_SOLUTIONS`` is set to 1 / true / yes (any case)."""
    return os.environ.get(SOLUTIONS_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


# ----------------------------------------------------------------------------------------------------------
# Feedback and solutions: what a cell shows.

@dataclass(frozen=True)
class Feedback:
    """The result of one check. ``passed`` is a bool, ``message`` one or a few sentences, ``status`` one of
    "passed", "failed", "not attempted". Jupyter shows a coloured box (``_repr_html_``); ``str``/``repr``
    give one line of text, ``[status] name: message``."""

    name: str
    passed: bool
    message: str
    status: str

    def __str__(self) -> str:
        return f"[{self.status}] {self.name}: {self.message}"

    __repr__ = __str__

    def __bool__(self) -> bool:
        return self.passed

    def _repr_html_(self) -> str:
        background, border = _COLOURS[self.status]
        message = html.escape(self.message).replace("\n", "<br>")
        return (f'<div style="background:{background};border-left:4px solid {border};padding:6px 10px;'
                f'margin:4px 0;font-family:sans-serif;font-size:0.92em;color:#202124">'
                f'<b style="color:{border}">{html.escape(self.status)}</b> · <code>{html.escape(self.name)}</code>'
                f'<br>{message}</div>')


@dataclass(frozen=True)
class Solution:
    """A worked solution: an explanation and the code (the code is what the solutions switch runs)."""

    name: str
    explanation: str
    code: str

    def __str__(self) -> str:
        return f"Solution of {self.name!r}\n\n{self.explanation}\n\n{self.code}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return (f'<div style="border-left:4px solid #1a73e8;padding:6px 10px;font-family:sans-serif;font-size:0.92em">'
                f'<b>Solution</b> · <code>{html.escape(self.name)}</code><p>{html.escape(self.explanation)}</p>'
                f'<pre style="background:#f8f9fa;padding:6px">{html.escape(self.code)}</pre></div>')


def _feedback(name, status, message):
    return Feedback(name=name, passed=status == PASSED, message=message, status=status)


# ----------------------------------------------------------------------------------------------------------
# The registry.

@dataclass
class _Exercise:
    name: str
    notebook: str
    kind: str                  # "function" or "number"
    statement: str
    explanation: str
    code: str                  # defines `answer` (numbers) or a function called `name` (functions)
    checker: object            # (exercise, answer, given) -> Feedback
    defaults: dict = field(default_factory=dict)


_EXERCISES: dict[str, _Exercise] = {}


def _register(exercise: _Exercise) -> None:
    _EXERCISES[exercise.name] = exercise


def names(notebook: str | None = None) -> list[str]:
    """The exercises' names, optionally only those of one notebook ("01" ... "06")."""
    return [name for name, exercise in _EXERCISES.items() if notebook is None or exercise.notebook == notebook]


def _get(name) -> _Exercise:
    if name not in _EXERCISES:
        raise ValueError(f"name must be one of {names()}, got {name!r}")
    return _EXERCISES[name]


def describe(name: str) -> str:
    """The task, as the notebook states it (including any convention the checker holds you to)."""
    return _get(name).statement


def solution(name: str, **given) -> Solution:
    """A worked solution of exercise ``name`` (explanation + code). ``given`` as for :func:`check`."""
    exercise = _get(name)
    _given(exercise, given)
    return Solution(name=name, explanation=exercise.explanation, code=exercise.code)


def _solution_answer(exercise: _Exercise, given: dict):
    namespace = {"torch": torch, "F": F, "math": math, **given}
    exec(compile(exercise.code, f"<solution of {exercise.name}>", "exec"), namespace)  # noqa: S102 - our code
    return namespace["answer"] if exercise.kind == "number" else namespace[exercise.name]


def _given(exercise: _Exercise, given: dict) -> dict:
    unknown = set(given) - set(exercise.defaults)
    if unknown:
        raise ValueError(f"check({exercise.name!r}) accepts the keyword arguments {sorted(exercise.defaults)}, "
                         f"got {sorted(unknown)}")
    return {**exercise.defaults, **given}


def check(name: str, answer, **given) -> Feedback:
    """Check an answer to exercise ``name`` and return a :class:`Feedback`.

    ``answer``: a function (implement-it exercises) or a number (numeric ones). ``None`` or ``...`` -- or a
    function that raises ``NotImplementedError`` -- counts as "not attempted"; with
    ``KDLAB_EXERCISE_SOLUTIONS=1`` the worked solution is checked in its place. ``given``: the inputs a
    numeric exercise is about when a notebook supplies its own (e.g. ``logits=`` of one digit); see
    :func:`describe`. Nothing the answer does (raise, return NaN, a wrong shape or type) makes ``check``
    raise; a wrong exercise name or an unknown keyword does (those are the notebook's mistakes).
    """
    exercise = _get(name)
    given = _given(exercise, given)
    try:
        if _unattempted(answer):
            raise _NotAttempted
        return exercise.checker(exercise, answer, given)
    except _NotAttempted:
        pass
    except Exception as error:  # a bug in the student's answer that escaped a narrower handler
        return _feedback(name, FAILED, f"checking your answer raised {type(error).__name__}: {error}")
    if solutions_enabled():
        feedback = exercise.checker(exercise, _solution_answer(exercise, given), given)
        return _feedback(name, feedback.status, f"(worked solution filled in: {SOLUTIONS_ENV}=1) {feedback.message}")
    return _feedback(name, NOT_ATTEMPTED, "not attempted yet: write your answer above and run this cell again "
                     f"(stuck? kdlab.exercises.solution({name!r}))")


def _unattempted(answer) -> bool:
    return answer is None or answer is Ellipsis


class _NotAttempted(Exception):
    """The answer is None / ... or a stub that raises NotImplementedError."""


# ----------------------------------------------------------------------------------------------------------
# Implement-it exercises on losses: probe, then compare with the reference and every known wrong version.
#
# A candidate is a structural variant (which distributions, which direction, which weight) times a factor
# T^a * K^b * B^c (the reduction and T^2 mistakes). Probing computes every candidate's value on every case;
# the student's function is diagnosed by the candidate with the fewest mistakes that matches it in every case.

# (B, K, T): several batch sizes, K up to 100, T from 1 to 20; T = 1 is included on purpose (bugs coincide there).
_LOSS_CASES = [(4, 10, 1.0), (3, 100, 20.0), (8, 5, 4.0), (2, 2, 2.5), (16, 37, 10.0), (5, 100, 1.0), (6, 10, 8.0)]
# Relative tolerance: a float32 kl_div implementation is within 2e-6 of the float64 reference on these cases
# (measured); every known mistake changes the value by far more (tests check that no two coincide).
_RTOL, _ATOL = 2e-3, 1e-7


def _probe_inputs(seed=12):
    generator = torch.Generator().manual_seed(seed)
    inputs = []
    for batch, num_classes, temperature in _LOSS_CASES:
        teacher = 3.0 * torch.randn(batch, num_classes, generator=generator)
        student = 2.0 * torch.randn(batch, num_classes, generator=generator)
        inputs.append((student, teacher, temperature))
    return inputs


def _log_probs(logits, scale):
    return torch.log_softmax(logits.double() * scale, dim=-1)


def _kl_rows(log_p, log_q):
    """Per-sample KL(p || q) from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _misused_kl_rows(log_p, log_q):
    """What ``F.kl_div(q, p)`` computes when given probabilities q instead of log q: sum p (log p - q)."""
    return (log_p.exp() * (log_p - log_q.exp())).sum(-1)


@dataclass(frozen=True)
class _Component:
    """One choice in how a loss is built: option name -> message (None = what the reference does)."""

    name: str
    options: dict


def _loss_checker(components, factor_options, value_of, reference_options, result_words):
    """Build a checker for a batch-mean loss exercise.

    components: list of _Component; value_of(options: dict, student, teacher, T) -> per-sample values (B,);
    factor_options: {"T": {exp: message}, "K": {...}, "B": {...}} relative to the reference.
    """

    structural = [dict(zip([c.name for c in components], choice))
                  for choice in product(*[list(c.options) for c in components])]
    factors = [dict(zip(factor_options, choice)) for choice in product(*[list(o) for o in factor_options.values()])]

    def mistakes(options, factor):
        found = [c.options[options[c.name]] for c in components if c.options[options[c.name]] is not None]
        found += [factor_options[key][exponent] for key, exponent in factor.items() if exponent != 0]
        return found

    candidates = sorted(((mistakes(s, f), s, f) for s in structural for f in factors), key=lambda item: len(item[0]))

    def checker(exercise, fn, given):
        name = exercise.name
        if not callable(fn):
            return _feedback(name, FAILED, f"expected a function fn(student_logits, teacher_logits, temperature), "
                             f"got {type(fn).__name__}")
        inputs = _probe_inputs()
        values = []
        for student, teacher, temperature in inputs:
            batch, num_classes = student.shape
            where = f"B = {batch}, K = {num_classes}, T = {temperature:g}"
            try:
                result = fn(student.clone(), teacher.clone(), temperature)
            except NotImplementedError:
                raise _NotAttempted from None
            except Exception as error:
                return _feedback(name, FAILED, f"your function raised {type(error).__name__} at {where}: {error}"
                                 f"{_exception_hint(error)}")
            value, problem = _as_scalar(result, batch, num_classes, result_words)
            if problem:
                return _feedback(name, FAILED, f"at {where}: {problem}")
            if not math.isfinite(value):
                return _feedback(name, FAILED, f"your function returned {value} at {where}. {_NAN_HINT}")
            values.append(value)
        student_values = torch.tensor(values, dtype=torch.float64)

        cache = {}
        for mistakes_found, options, factor in candidates:
            key = tuple(sorted(options.items()))
            if key not in cache:
                cache[key] = torch.stack([value_of(options, s, t, T).mean() for s, t, T in inputs])
            scale = torch.tensor([T ** factor.get("T", 0) * s.shape[1] ** factor.get("K", 0) * s.shape[0] ** factor.get("B", 0)
                                  for s, _, T in inputs], dtype=torch.float64)
            expected = cache[key] * scale
            if bool(((student_values - expected).abs() <= _RTOL * expected.abs() + _ATOL).all()):
                if not mistakes_found:
                    cases = ", ".join(f"(B={b}, K={k}, T={T:g})" for b, k, T in _LOSS_CASES)
                    return _feedback(name, PASSED, f"matches kdlab's reference on {len(inputs)} random cases {cases}.")
                return _feedback(name, FAILED, _join_mistakes(mistakes_found))
        reference = cache[tuple(sorted(reference_options.items()))]
        return _feedback(name, FAILED, _mismatch_message(student_values, reference, inputs))

    def candidate_values(max_mistakes=1):
        """[(mistakes, values on every probe case)] for the candidates with at most ``max_mistakes`` (tests)."""
        inputs = _probe_inputs()
        cache, table = {}, []
        for found, options, factor in candidates:
            if len(found) > max_mistakes:
                continue
            key = tuple(sorted(options.items()))
            if key not in cache:
                cache[key] = torch.stack([value_of(options, s, t, T).mean() for s, t, T in inputs])
            scale = torch.tensor([T ** factor.get("T", 0) * s.shape[1] ** factor.get("K", 0) * s.shape[0] ** factor.get("B", 0)
                                  for s, _, T in inputs], dtype=torch.float64)
            table.append((found, cache[key] * scale))
        return table

    checker.candidate_values = candidate_values
    return checker


_NAN_HINT = ("Common causes: log of a softmax that underflowed to 0 (use log_softmax), or kl_div given log-"
             "probabilities as its target without log_target=True.")


def _exception_hint(error):
    text = str(error)
    if "size" in text or "shape" in text or "dimension" in text:
        return " (check the dim= of softmax/sum: classes are dim=1, the batch is dim=0)"
    return ""


def _as_scalar(result, batch, num_classes, result_words):
    """(float value, None) or (nan, problem sentence) for what a loss function returned."""
    if isinstance(result, bool) or result is None:
        return math.nan, (f"your function returned {result!r}" + (" (a missing `return`?)" if result is None else ""))
    if isinstance(result, Real):
        return float(result), None
    try:
        tensor = torch.as_tensor(result)
    except Exception:
        return math.nan, f"expected {result_words}, got {type(result).__name__}"
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return math.nan, f"expected a floating-point {result_words}, got dtype {tensor.dtype}"
    if tensor.is_complex():
        return math.nan, f"expected a real {result_words}, got dtype {tensor.dtype}"
    if tensor.numel() != 1:
        shape = tuple(tensor.shape)
        hint = ""
        if shape == (batch,) or shape == (batch, 1):
            hint = " -- these look like per-sample losses: take their mean over the batch"
        elif shape == (batch, num_classes):
            hint = " -- element-wise terms: sum over the classes (dim=1), then average over the batch"
        return math.nan, f"expected {result_words}, got shape {shape}{hint}"
    return float(tensor.detach().double().reshape(())), None


def _join_mistakes(mistakes_found):
    if len(mistakes_found) == 1:
        return mistakes_found[0]
    return "Several mistakes, each of which changes the value: " + " ".join(
        f"({i}) {m}" for i, m in enumerate(mistakes_found, 1))


def _mismatch_message(student_values, reference, inputs):
    close = (student_values - reference).abs() <= _RTOL * reference.abs() + _ATOL
    index = int((~close).nonzero()[0])
    student, _, temperature = inputs[index]
    ratio = float(student_values[index] / reference[index]) if float(reference[index]) != 0 else math.inf
    message = (f"does not match the reference, nor any mistake the checker knows: at B = {student.shape[0]}, "
               f"K = {student.shape[1]}, T = {temperature:g} you return {float(student_values[index]):.6g}, the "
               f"reference is {float(reference[index]):.6g} (ratio {ratio:.4g}).")
    at_one = [bool(close[i]) for i, (_, _, T) in enumerate(inputs) if T == 1.0]
    if at_one and all(at_one):
        message += (" It matches at T = 1, so look at what depends on T: where the temperature divides the "
                    "logits, and the factor in front.")
    return message


# --- kd_loss ---------------------------------------------------------------------------------------------

def _kd_value(options, student, teacher, temperature):
    teacher_scale = 1 / temperature if options["teacher"] == "tempered" else 1.0
    student_scale = 1 / temperature if options["student"] == "tempered" else 1.0
    log_p, log_q = _log_probs(teacher, teacher_scale), _log_probs(student, student_scale)
    if options["direction"] == "reversed":
        log_p, log_q = log_q, log_p
    rows = _misused_kl_rows(log_p, log_q) if options["input"] == "probabilities" else _kl_rows(log_p, log_q)
    return temperature ** 2 * rows


_KD_COMPONENTS = [
    _Component("direction", {"teacher||student": None, "reversed": (
        "KL direction reversed: you compute KL(student || teacher). KD is KL(p_teacher || q_student): the "
        "teacher's probabilities weight the log-ratio. With F.kl_div(input, target) the *student's* "
        "log-probabilities are the input and the teacher's probabilities the target.")}),
    _Component("student", {"tempered": None, "untempered": (
        "student not tempered: divide the student's logits by T too (q_T = softmax(z / T)); KD compares two "
        "tempered distributions. (Leaving the student untempered is TTM, notebook 03.)")}),
    _Component("teacher", {"tempered": None, "untempered": (
        "teacher not tempered: the teacher's soft targets are softmax(v / T); without the division by T they "
        "are nearly one-hot and the dark knowledge is lost.")}),
    _Component("input", {"log-probabilities": None, "probabilities": (
        "probabilities passed where F.kl_div expects log-probabilities: its first argument must be "
        "log_softmax(z / T), not softmax(z / T) (kl_div computes target * (log target - input)).")}),
]
_T2_FACTORS = {
    "T": {0: None, -2: ("missing T^2: multiply the KL by T^2. The soft-target gradients scale as 1/T^2 (Hinton et "
                        "al. 2015, §2); without the factor, raising T silently shrinks the distillation term."),
          -1: "multiplied by T instead of T^2 (Hinton's factor is the square of the temperature).",
          2: "T^2 applied twice (T^4): multiply the KL by T^2 once."},
    "K": {0: None, -1: ("element-wise mean: the result is divided by K, the number of classes -- the "
                        "reduction='mean' pitfall of KLDivLoss/kl_div. Sum over the classes, then average over "
                        "the batch (reduction='batchmean').")},
    "B": {0: None, 1: ("summed over the batch instead of averaged: divide by the batch size B "
                       "(reduction='batchmean', or .sum(dim=1).mean()).")},
}


# --- ttm_loss / wttm_loss --------------------------------------------------------------------------------

def _transform_scale(option, temperature):
    return {"1/T": 1 / temperature, "none": 1.0, "T": temperature}[option]


def _ttm_value(options, student, teacher, temperature):
    log_p = _log_probs(teacher, _transform_scale(options["transform"], temperature))
    log_q = _log_probs(student, 1 / temperature if options["student"] == "tempered" else 1.0)
    if options["direction"] == "reversed":
        log_p, log_q = log_q, log_p
    rows = _kl_rows(log_p, log_q)
    weight = options.get("weight", "none")
    if weight != "none":
        if weight == "U_1/T(p)":
            base, gamma = _log_probs(teacher, 1.0), 1 / temperature
        elif weight == "U_1/T(p_T)":
            base, gamma = _log_probs(teacher, 1 / temperature), 1 / temperature
        else:  # "U_T(p)"
            base, gamma = _log_probs(teacher, 1.0), temperature
        rows = torch.logsumexp(gamma * base, dim=-1).exp() * rows
    return rows


_TTM_COMMON = [
    _Component("direction", {"teacher||student": None, "reversed": (
        "KL direction reversed: you compute KL(q || p^t_T). TTM is KL(p^t_T || q): the transformed teacher "
        "weights the log-ratio.")}),
    _Component("student", {"untempered": None, "tempered": (
        "tempered student: TTM keeps the student at temperature 1, q = softmax(z). Only the teacher is "
        "transformed -- dropping the student's temperature is exactly what makes TTM differ from KD.")}),
    _Component("transform", {"1/T": None, "none": (
        "untransformed teacher: the target is the power-transformed teacher p^gamma / sum p^gamma with "
        "gamma = 1/T, i.e. softmax(v / T); you used softmax(v)."),
        "T": ("gamma = T instead of 1/T in the power transform: the teacher must be *softened*, "
              "p^(1/T) / sum = softmax(v / T); p^T / sum = softmax(T v) sharpens it.")}),
]
_TTM_FACTORS = {
    "T": {0: None, 2: ("a T^2 factor: TTM has none (the weight beta absorbs it, beta = lambda T / (1 - lambda)); "
                       "return the plain KL."),
          1: "a factor T: TTM has no temperature factor in front of the KL."},
    "K": _T2_FACTORS["K"],
    "B": _T2_FACTORS["B"],
}
_WTTM_WEIGHT = _Component("weight", {
    "U_1/T(p)": None,
    "none": ("the weight is missing: WTTM multiplies each sample's TTM loss by U_{1/T}(p) = sum_i p_i^(1/T) of "
             "the teacher -- without it this is plain TTM."),
    "U_1/T(p_T)": ("the weight is taken from the transformed teacher: U must be the power sum of the "
                   "*untransformed* p = softmax(v), sum_i softmax(v)_i^(1/T) (the official code's `norm`, "
                   "computed before normalising)."),
    "U_T(p)": ("gamma = T instead of 1/T in the weight: U_gamma(p) = sum_i p_i^gamma with gamma = 1/T, which "
               "lies in [1, K^(1 - 1/T)]; with gamma = T it is at most 1."),
})


# --- registration ----------------------------------------------------------------------------------------

_register(_Exercise(
    name="kd_loss", notebook="01", kind="function",
    statement=("Write kd_loss(student_logits, teacher_logits, temperature) -> a 0-d tensor: Hinton's KD loss "
               "T^2 * KL(softmax(v / T) || softmax(z / T)), with v the teacher's and z the student's logits "
               "(shape (B, K)), summed over the classes and averaged over the batch."),
    explanation=("Temper both models, take the KL with the teacher's probabilities first, sum over the classes, "
                 "average over the batch and multiply by T^2 (the soft-target gradients scale as 1/T^2)."),
    code=textwrap.dedent("""\
        def kd_loss(student_logits, teacher_logits, temperature):
            log_q = F.log_softmax(student_logits / temperature, dim=1)   # student, tempered
            p = F.softmax(teacher_logits / temperature, dim=1)           # teacher, tempered
            kl = F.kl_div(log_q, p, reduction="batchmean")               # sum over classes, mean over batch
            return temperature ** 2 * kl
        """),
    checker=_loss_checker(_KD_COMPONENTS, _T2_FACTORS, _kd_value,
                          {"direction": "teacher||student", "student": "tempered", "teacher": "tempered",
                           "input": "log-probabilities"}, "a scalar (the batch mean)"),
))

_register(_Exercise(
    name="ttm_loss", notebook="03", kind="function",
    statement=("Write ttm_loss(student_logits, teacher_logits, temperature) -> a 0-d tensor: TTM's loss "
               "KL(p^t_T || q) with the power-transformed teacher p^t_T = p^gamma / sum_j p_j^gamma, "
               "p = softmax(v), gamma = 1/T, and the untempered student q = softmax(z); batch mean, no T^2."),
    explanation=("The power transform with gamma = 1/T is softmax(v / T) (eqs. 6-9), so: teacher tempered, "
                 "student not, KL summed over classes and averaged over the batch, no factor in front."),
    code=textwrap.dedent("""\
        def ttm_loss(student_logits, teacher_logits, temperature):
            log_p = F.log_softmax(teacher_logits / temperature, dim=1)   # = log of p^(1/T) / sum p^(1/T)
            log_q = F.log_softmax(student_logits, dim=1)                 # student at T = 1
            return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
        """),
    checker=_loss_checker(_TTM_COMMON, _TTM_FACTORS, _ttm_value,
                          {"direction": "teacher||student", "student": "untempered", "transform": "1/T"},
                          "a scalar (the batch mean)"),
))

_register(_Exercise(
    name="wttm_loss", notebook="03", kind="function",
    statement=("Write wttm_loss(student_logits, teacher_logits, temperature) -> a 0-d tensor: per sample "
               "U_{1/T}(p) * KL(p^t_T || q), with U_gamma(p) = sum_i p_i^gamma of the *untransformed* teacher "
               "p = softmax(v), p^t_T = softmax(v / T), q = softmax(z); averaged over the batch."),
    explanation=("TTM's per-sample loss, multiplied by the power sum of the teacher's plain softmax with "
                 "exponent 1/T (large for uncertain teachers), then the batch mean."),
    code=textwrap.dedent("""\
        def wttm_loss(student_logits, teacher_logits, temperature):
            p = F.softmax(teacher_logits, dim=1)                         # untransformed teacher
            weight = (p ** (1 / temperature)).sum(dim=1)                 # U_{1/T}(p), shape (B,)
            log_p_T = F.log_softmax(teacher_logits / temperature, dim=1)
            log_q = F.log_softmax(student_logits, dim=1)
            per_sample = (log_p_T.exp() * (log_p_T - log_q)).sum(dim=1)
            return (weight * per_sample).mean()
        """),
    checker=_loss_checker([_WTTM_WEIGHT, *_TTM_COMMON], _TTM_FACTORS, _ttm_value,
                          {"weight": "U_1/T(p)", "direction": "teacher||student", "student": "untempered",
                           "transform": "1/T"}, "a scalar (the batch mean)"),
))


# --- dtkd_temperatures -----------------------------------------------------------------------------------

_DTKD_CONVENTION = ("kdlab's convention: x = max_i v_i and y = max_i z_i (signed maxima); teacher_T = 2x/(x+y)*tau, "
                    "student_T = 2y/(x+y)*tau; when x <= 0 or y <= 0 both temperatures are tau (plain KD for "
                    "that sample).")


def _dtkd_inputs(seed=7):
    """Cases (student, teacher, tau, regular mask): regular rows have both maxima > 0 (and positive means);
    guard rows have a non-positive maximum (teacher, student, both, or x + y = 0)."""
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch_regular, num_classes, tau in [(8, 10, 4.0), (6, 100, 1.0), (5, 3, 20.0), (4, 50, 2.5)]:
        rows_v, rows_z = [], []
        while len(rows_v) < batch_regular:
            v = 2.0 * torch.randn(num_classes, generator=generator) + 3.0
            z = 1.0 * torch.randn(num_classes, generator=generator) + 1.0
            if len(rows_v) % 2 == 1 and num_classes >= 10:   # a large negative logit: max |v| != max v
                v[int(v.argmin())] = -(v.max() + 4.0)
            if v.mean() > 0.3 and z.mean() > 0.3 and v.max() > 0.5 and z.max() > 0.5 and abs(v.max() - z.max()) > 0.5:
                rows_v.append(v)
                rows_z.append(z)
        guard_v = [-1.0 - torch.rand(num_classes, generator=generator), 2.0 + torch.rand(num_classes, generator=generator),
                   -2.0 - torch.rand(num_classes, generator=generator)]
        guard_z = [1.0 + torch.rand(num_classes, generator=generator), -1.0 - torch.rand(num_classes, generator=generator),
                   -1.0 - torch.rand(num_classes, generator=generator)]
        balanced_v = -torch.rand(num_classes, generator=generator) - 1.0
        balanced_v[0] = 1.5
        balanced_z = -torch.rand(num_classes, generator=generator) - 2.0
        balanced_z[0] = -1.5                                   # x + y = 0
        teacher = torch.stack(rows_v + guard_v + [balanced_v])
        student = torch.stack(rows_z + guard_z + [balanced_z])
        regular = torch.zeros(len(teacher), dtype=torch.bool)
        regular[:batch_regular] = True
        cases.append((student, teacher, tau, regular))
    return cases


def _dtkd_variant(kind, student, teacher, tau):
    v, z = teacher.double(), student.double()
    if kind == "mean":
        x, y = v.mean(1), z.mean(1)
    elif kind == "absmax":
        x, y = v.abs().amax(1), z.abs().amax(1)
    else:
        x, y = v.amax(1), z.amax(1)
    teacher_t, student_t = 2 * x / (x + y) * tau, 2 * y / (x + y) * tau
    if kind == "swapped":
        return student_t, teacher_t
    if kind == "no_factor_2":
        return teacher_t / 2, student_t / 2
    if kind == "no_tau":
        return teacher_t / tau, student_t / tau
    if kind == "sum_times_tau":         # tau + delta with delta = (x - y) / (x + y) forgotten the tau: tau +- delta
        delta = (x - y) / (x + y)
        return tau + delta, tau - delta
    return teacher_t, student_t


_DTKD_MISTAKES = {
    "swapped": ("swapped temperatures: the *teacher* gets 2x/(x+y)*tau with x its own max logit -- the sharper model "
                "gets the higher temperature. You returned (student_T, teacher_T)."),
    "mean": ("the mean logit instead of the max: DTKD (official code: logits.max(dim=1)) uses each model's largest "
             "logit, x = max_i v_i and y = max_i z_i."),
    "absmax": ("the largest |logit| instead of the signed max: the official code (and kdlab) use the signed maximum "
               "logits.max(dim=1), not max |v_i| as the paper's notation suggests."),
    "no_factor_2": ("the temperatures sum to tau, not 2 tau: teacher_T = 2x/(x+y)*tau -- the factor 2 is missing "
                    "(tau +- delta must average to tau)."),
    "no_tau": ("the reference temperature tau is missing: teacher_T = 2x/(x+y) * tau, so the pair sums to 2 tau; "
               "yours sums to 2."),
    "sum_times_tau": ("delta must be scaled by tau: delta = (x - y)/(x + y) * tau, so teacher_T = tau + delta = "
                      "2x/(x+y)*tau; you used tau +- (x - y)/(x + y)."),
}


def _dtkd_checker(exercise, fn, given):
    name = exercise.name
    if not callable(fn):
        return _feedback(name, FAILED, f"expected a function fn(student_logits, teacher_logits, temperature), got "
                         f"{type(fn).__name__}")
    results = []
    for student, teacher, tau, regular in _dtkd_inputs():
        where = f"B = {len(student)}, K = {student.shape[1]}, tau = {tau:g}"
        try:
            result = fn(student.clone(), teacher.clone(), tau)
        except NotImplementedError:
            raise _NotAttempted from None
        except Exception as error:
            return _feedback(name, FAILED, f"your function raised {type(error).__name__} at {where}: {error}"
                             f"{_exception_hint(error)}")
        pair, problem = _as_pair(result, len(student))
        if problem:
            return _feedback(name, FAILED, f"at {where}: {problem}")
        results.append((pair, student, teacher, tau, regular))

    def close(a, b):
        return bool(((a - b).abs() <= 1e-4 * b.abs() + 1e-6).all())

    def matches(kind):
        for (teacher_t, student_t), student, teacher, tau, regular in results:
            ref_t, ref_s = _dtkd_variant(kind, student, teacher, tau)
            if not (close(teacher_t[regular], ref_t[regular]) and close(student_t[regular], ref_s[regular])):
                return False
        return True

    for (teacher_t, student_t), student, _, tau, regular in results:
        if not (torch.isfinite(teacher_t[regular]).all() and torch.isfinite(student_t[regular]).all()):
            return _feedback(name, FAILED, f"non-finite temperatures for samples whose maxima are both positive "
                             f"(B = {len(student)}, tau = {tau:g}). {_DTKD_CONVENTION}")
    if matches("reference"):
        for (teacher_t, student_t), student, teacher, tau, regular in results:
            guard = ~regular
            expected = torch.full_like(teacher_t[guard], tau)
            if not (close(teacher_t[guard], expected) and close(student_t[guard], expected)):
                got = torch.cat([teacher_t[guard], student_t[guard]])
                what = ("inf or NaN" if not bool(torch.isfinite(got).all()) else
                        "a negative temperature" if bool((got < 0).any()) else "temperatures other than tau")
                return _feedback(name, FAILED, (
                    f"no guard for non-positive maxima: for samples with max v <= 0 or max z <= 0 (x + y may be 0 "
                    f"or negative) you return {what}. {_DTKD_CONVENTION}"))
        return _feedback(name, PASSED, "matches kdlab's dtkd_temperatures on 4 random batches (tau = 1, 2.5, 4, 20), "
                         "including the samples with non-positive maxima.")
    for kind, message in _DTKD_MISTAKES.items():
        if matches(kind):
            return _feedback(name, FAILED, message)
    # Not a known mistake: say which property fails.
    for (teacher_t, student_t), student, teacher, tau, regular in results:
        total = (teacher_t + student_t)[regular]
        if not close(total, torch.full_like(total, 2 * tau)):
            return _feedback(name, FAILED, (f"teacher_T + student_T should be 2 tau for every sample; at tau = {tau:g} "
                                            f"yours sums to {float(total[0]):.4g} (first sample). {_DTKD_CONVENTION}"))
    for (teacher_t, student_t), student, teacher, tau, regular in results:
        ratio = (teacher_t / student_t)[regular]
        expected = (teacher.double().amax(1) / student.double().amax(1))[regular]
        if not close(ratio, expected):
            return _feedback(name, FAILED, (f"the sum is 2 tau, but teacher_T / student_T should be x / y (the ratio of "
                                            f"the max logits); first sample: {float(ratio[0]):.4g} vs "
                                            f"{float(expected[0]):.4g}. {_DTKD_CONVENTION}"))
    return _feedback(name, FAILED, f"does not match the reference. {_DTKD_CONVENTION}")


def _as_pair(result, batch):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        shape = f" of shape {tuple(result.shape)}" if isinstance(result, torch.Tensor) else ""
        return None, f"expected a pair (teacher_T, student_T), got {type(result).__name__}{shape}"
    pair = []
    for label, item in zip(("teacher_T", "student_T"), result):
        try:
            tensor = torch.as_tensor(item).detach()
        except Exception:
            return None, f"{label} should be a tensor, got {type(item).__name__}"
        if not tensor.is_floating_point():
            return None, f"{label} should be a floating-point tensor, got dtype {tensor.dtype}"
        if tensor.numel() != batch or tensor.dim() > 2:
            return None, f"{label} should have one temperature per sample, shape (B, 1) = ({batch}, 1); got shape {tuple(tensor.shape)}"
        pair.append(tensor.double().reshape(batch))
    return tuple(pair), None


_register(_Exercise(
    name="dtkd_temperatures", notebook="04", kind="function",
    statement=("Write dtkd_temperatures(student_logits, teacher_logits, temperature) -> (teacher_T, student_T), "
               "each of shape (B, 1): DTKD's per-sample temperatures with reference temperature tau = temperature. "
               + _DTKD_CONVENTION + " (kdlab also clamps x/(x+y) to [0.001, 0.999]; the checker does not test that.)"),
    explanation=("Take each model's signed max logit per sample, split 2 tau in the ratio x : y, and fall back to "
                 "tau for both when either maximum is not positive."),
    code=textwrap.dedent("""\
        def dtkd_temperatures(student_logits, teacher_logits, temperature):
            x = teacher_logits.max(dim=1, keepdim=True).values        # (B, 1), signed max
            y = student_logits.max(dim=1, keepdim=True).values
            valid = (x > 0) & (y > 0)
            safe_sum = torch.where(valid, x + y, torch.ones_like(x))   # never divide by x + y <= 0
            ratio = torch.where(valid, x / safe_sum, torch.full_like(x, 0.5))
            return 2 * ratio * temperature, 2 * (1 - ratio) * temperature
        """),
    checker=_dtkd_checker,
))


# ----------------------------------------------------------------------------------------------------------
# Numeric exercises.

def _number_checker(truth, wrong_steps, rtol=0.01, unit=""):
    """truth(given) -> float; wrong_steps: list of (value(given) -> float, hint)."""

    def checker(exercise, answer, given):
        name = exercise.name
        value, problem = _as_number(answer)
        if problem:
            return _feedback(name, FAILED, problem)
        expected = float(truth(given))
        if _near(value, expected, rtol):
            return _feedback(name, PASSED, f"correct: {value:.6g}{unit} (within {100 * rtol:g} %).")
        for wrong, hint in wrong_steps:
            wrong_value = float(wrong(given))
            if not _near(wrong_value, expected, rtol) and _near(value, wrong_value, rtol):
                return _feedback(name, FAILED, f"{value:.6g}{unit} is what you get if {hint}")
        direction = "too high" if value > expected else "too low"
        factor = value / expected if expected else math.inf
        return _feedback(name, FAILED, f"{value:.6g}{unit} is {direction} (off by a factor {factor:.3g}); check each "
                         f"step, or see kdlab.exercises.solution({name!r}).")

    return checker


def _as_number(answer):
    if isinstance(answer, bool):
        return math.nan, f"expected a number, got {answer!r}"
    if isinstance(answer, Real):
        value = float(answer)
    else:
        try:
            tensor = torch.as_tensor(answer)
        except Exception:
            return math.nan, f"expected a number, got {type(answer).__name__}"
        if tensor.numel() != 1 or not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
            return math.nan, f"expected a single number, got a {type(answer).__name__} of shape {tuple(tensor.shape)}"
        value = float(tensor.reshape(()))
    if not math.isfinite(value):
        return math.nan, f"expected a finite number, got {value}"
    return value, None


def _near(value, expected, rtol):
    return abs(value - expected) <= rtol * abs(expected) + 1e-12


# A digit as the teacher of notebook 01 sees it (10 logits); the notebook passes its own digit's logits.
_DIGIT_LOGITS = (9.1, -2.3, 1.2, 3.4, -4.0, 0.8, -1.5, 5.2, 0.1, -3.3)


def _entropy_temperature(given, target):
    logits = torch.as_tensor(given["logits"], dtype=torch.float64).reshape(1, -1)
    return float(temperature_for_entropy(logits, target)[0, 0])


def _reachable(given, target):
    logits = torch.as_tensor(given["logits"], dtype=torch.float64).reshape(-1)
    return 0 < target < math.log(len(logits))


def _entropy_wrong_steps():
    def at(target_of_k):
        def value(given):
            k = torch.as_tensor(given["logits"]).numel()
            target = target_of_k(k)
            return _entropy_temperature(given, target) if _reachable(given, target) else math.nan
        return value

    return [
        (at(lambda k: 0.5 * math.log2(k)), "the entropy is measured in bits (log base 2); kdlab and the notebook "
         "use nats (natural log): the target is 0.5 * ln 10 = 1.151 nats."),
        (at(lambda k: 0.5 * math.log10(k)), "log 10 is taken in base 10 (= 1): the target is 0.5 * ln 10 = 1.151 nats."),
        (lambda given: 1 / _entropy_temperature(given, 0.5 * math.log(10)), "you report gamma = 1/T instead of T."),
    ]


_register(_Exercise(
    name="half_entropy_temperature", notebook="01", kind="number",
    statement=("For the digit whose 10 teacher logits are `logits`, find the temperature T at which the entropy "
               "H(softmax(v / T)) is half of its maximum, 0.5 * ln 10 nats (within 1 %). Hint: H rises with T -- "
               "bisect, or use kdlab.temperature_for_entropy."),
    explanation=("H(softmax(v / T)) increases monotonically with T from 0 towards ln 10, so a bisection on T "
                 "(or kdlab.temperature_for_entropy) finds the T where it crosses 0.5 * ln 10 = 1.151 nats."),
    code=textwrap.dedent("""\
        v = torch.as_tensor(logits, dtype=torch.float64)
        low, high = 1e-3, 1e3
        for _ in range(100):                         # bisection on log T
            middle = math.sqrt(low * high)
            p = torch.softmax(v / middle, dim=-1)
            if -(p * p.log()).sum() < 0.5 * math.log(10):
                low = middle
            else:
                high = middle
        answer = middle
        """),
    checker=_number_checker(lambda given: _entropy_temperature(given, 0.5 * math.log(10)), _entropy_wrong_steps()),
    defaults={"logits": _DIGIT_LOGITS},
))

_register(_Exercise(
    name="kl_mean_factor", notebook="01", kind="number",
    statement=("F.kl_div(log_q, p, reduction='mean') on tensors of shape (B, K) = (64, 10): by what factor is it "
               "*smaller* than reduction='batchmean' (the KL the maths means)?"),
    explanation=("'mean' averages over all B * K elements, 'batchmean' sums over the classes and divides by B "
                 "only: the ratio is K = 10, whatever B is."),
    code="answer = 10   # 'mean' divides by B * K = 640, 'batchmean' by B = 64\n",
    checker=_number_checker(lambda given: 10.0, [
        (lambda given: 640.0, "you divide by B * K: that is what 'mean' divides the *sum* by; 'batchmean' already "
         "divides by B, so the ratio between the two is K."),
        (lambda given: 64.0, "you took the batch size: both reductions divide by B, 'mean' by K as well."),
        (lambda given: 0.1, "the question asks how much *smaller* 'mean' is (a factor > 1)."),
    ], rtol=1e-6),
))

_register(_Exercise(
    name="kd_weight_ratio", notebook="02", kind="number",
    statement=("Hinton's loss (1 - lambda) * CE + lambda * T^2 * KL with lambda = 0.9 and T = 4: how many times "
               "larger is the weight in front of the KL than the weight in front of CE?"),
    explanation="The KL's weight is lambda * T^2 = 0.9 * 16 = 14.4, CE's is 0.1: the ratio is 144.",
    code="answer = 0.9 * 4 ** 2 / (1 - 0.9)   # = 144\n",
    checker=_number_checker(lambda given: 144.0, [
        (lambda given: 9.0, "you forgot the T^2 factor (0.9 / 0.1 = 9)."),
        (lambda given: 36.0, "you multiplied by T instead of T^2."),
        (lambda given: 14.4, "you gave the KL's weight lambda * T^2, not its ratio to CE's weight 1 - lambda."),
        (lambda given: 16.0, "you took only T^2 and forgot lambda / (1 - lambda) = 9."),
    ]),
))

_register(_Exercise(
    name="ttm_beta", notebook="03", kind="number",
    statement=("TTM's eq. 19 matches KD with weight lambda at temperature T by TTM with beta = lambda T / (1 - lambda). "
               "What beta corresponds to KD's lambda = 0.9 at T = 4 (the paper's Fig. 1 setting)?"),
    explanation="beta = lambda T / (1 - lambda) = 0.9 * 4 / 0.1 = 36 (a factor T, not KD's T^2).",
    code="answer = 0.9 * 4 / (1 - 0.9)   # = 36\n",
    checker=_number_checker(lambda given: 36.0, [
        (lambda given: 144.0, "you used T^2 as in KD; eq. 19 has a single factor T."),
        (lambda given: 9.0, "you left out the factor T."),
        (lambda given: 3.6, "you forgot to divide by 1 - lambda."),
    ]),
))

_register(_Exercise(
    name="power_sum_bound", notebook="03", kind="number",
    statement=("WTTM's weight U_gamma(p) = sum_i p_i^gamma: what is its largest possible value for K = 100 classes "
               "and gamma = 0.25 (T = 4)? (Which p attains it?)"),
    explanation=("U_gamma is largest for the uniform p: 100 * (1/100)^0.25 = 100^(1 - 0.25) = 31.62. A one-hot p "
                 "gives the smallest value, 1."),
    code="answer = 100 ** (1 - 0.25)   # uniform p: K * (1/K)**gamma = K**(1 - gamma) = 31.62\n",
    checker=_number_checker(lambda given: 100 ** 0.75, [
        (lambda given: 100 ** 0.25, "the exponent is gamma; the uniform p gives K * K^(-gamma) = K^(1 - gamma)."),
        (lambda given: 1.0, "that is the smallest value (a one-hot p); the question asks for the largest."),
        (lambda given: 100.0, "K is the limit gamma -> 0 (T -> infinity); at gamma = 0.25 it is K^(1 - gamma)."),
        (lambda given: 100 ** 4, "gamma is 1/T = 0.25, not T = 4."),
        (lambda given: 100 ** -3, "gamma is 1/T = 0.25, not T = 4."),
    ]),
))

_register(_Exercise(
    name="dtkd_teacher_temperature", notebook="04", kind="number",
    statement=("A sample whose teacher's max logit is x = 12 and student's max logit is y = 4, with DTKD's reference "
               "temperature tau = 4: what is the teacher's temperature teacher_T?"),
    explanation="teacher_T = 2x / (x + y) * tau = 24 / 16 * 4 = 6 (and student_T = 2: together 2 tau).",
    code="x, y, tau = 12, 4, 4\nanswer = 2 * x / (x + y) * tau   # = 6\n",
    checker=_number_checker(lambda given: 6.0, [
        (lambda given: 2.0, "that is the student's temperature 2y/(x+y)*tau: the sharper model (the teacher here) "
         "gets the higher temperature."),
        (lambda given: 3.0, "the factor 2 is missing: the two temperatures must sum to 2 tau, not tau."),
        (lambda given: 1.5, "the reference temperature tau is missing."),
        (lambda given: 4.5, "delta = (x - y)/(x + y) must be multiplied by tau: teacher_T = tau + delta * tau."),
    ]),
))

_register(_Exercise(
    name="dtkd_weight_ratio", notebook="04", kind="number",
    statement=("DTKD multiplies each sample's KL by teacher_T * student_T where KD uses tau^2. For x = 12, y = 4 and "
               "tau = 4, what is teacher_T * student_T / tau^2?"),
    explanation=("teacher_T * student_T = 6 * 2 = 12 against tau^2 = 16: 0.75. In general 4xy/(x+y)^2 <= 1: DTKD's "
                 "factor is never larger than KD's."),
    code="x, y, tau = 12, 4, 4\nanswer = (2 * x / (x + y) * tau) * (2 * y / (x + y) * tau) / tau ** 2   # = 0.75\n",
    checker=_number_checker(lambda given: 0.75, [
        (lambda given: 12.0, "you gave teacher_T * student_T; divide by tau^2 = 16."),
        (lambda given: 1.0, "teacher_T * student_T equals tau^2 only when x = y."),
        (lambda given: 0.1875, "the factor 2 is missing in both temperatures."),
    ]),
))


def _smoothed_entropy(eps, k, spread_over):
    """Entropy of (1 - eps) on the true class plus eps spread uniformly over `spread_over` classes."""
    if spread_over == k:
        probs = [1 - eps + eps / k] + [eps / k] * (k - 1)
    else:
        probs = [1 - eps] + [eps / (k - 1)] * (k - 1)
    return -sum(p * math.log(p) for p in probs if p > 0)


def _bisect(function, target, low=0.0, high=1.0):
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if function(middle) < target else (low, middle)
    return (low + high) / 2


_register(_Exercise(
    name="label_smoothing_epsilon", notebook="05", kind="number",
    statement=("Label smoothing as in PyTorch (cross_entropy(..., label_smoothing=eps)): the target is (1 - eps) on "
               "the true class plus eps / K on every class. For K = 10, which eps gives a target entropy of "
               "`entropy` nats (default 1.0)? (Within 1 %.)"),
    explanation=("The smoothed target has 1 - eps + eps/K on the true class and eps/K on the K - 1 others; its "
                 "entropy rises from 0 to ln K as eps goes from 0 to 1, so bisect on eps "
                 "(kdlab.smoothing_for_entropy does it)."),
    code=textwrap.dedent("""\
        K = 10
        def smoothed_entropy(eps):
            p = torch.full((K,), eps / K, dtype=torch.float64)
            p[0] += 1 - eps
            return float(-(p * p.log()).sum())
        low, high = 0.0, 1.0
        for _ in range(100):
            middle = (low + high) / 2
            low, high = (middle, high) if smoothed_entropy(middle) < entropy else (low, middle)
        answer = middle
        """),
    checker=_number_checker(lambda given: smoothing_for_entropy(10, float(given["entropy"])), [
        (lambda given: _bisect(lambda e: _smoothed_entropy(e, 10, 9), float(given["entropy"])),
         "eps is spread over the K - 1 wrong classes (eps/(K-1) each, 1 - eps on the true class); PyTorch spreads "
         "eps/K over all K classes, so the true class keeps 1 - eps + eps/K."),
        (lambda given: _bisect(lambda e: _smoothed_entropy(e, 10, 10), float(given["entropy"]) * math.log(2)),
         "the entropy is taken in bits; the target is in nats."),
        (lambda given: _bisect(lambda e: _smoothed_entropy(e, 10, 10), float(given["entropy"]) / math.log(2))
         if float(given["entropy"]) / math.log(2) < math.log(10) else math.nan,
         "the entropy is computed with log base 2; the target is in nats (natural log)."),
    ]),
    defaults={"entropy": 1.0},
))

_register(_Exercise(
    name="kd_balance_growth", notebook="05", kind="number",
    statement=("With KD's weights 0.1 * CE + 0.9 * T^2 * KL, by what factor does the KL's weight relative to CE "
               "grow from T = 1 to T = 16?"),
    explanation=("The ratio is 0.9 T^2 / 0.1 = 9 T^2: 9 at T = 1, 2304 at T = 16, a factor 16^2 = 256. Unless the "
                 "optimizer divides the scale out, changing T also changes the CE:KD balance."),
    code="answer = (16 / 1) ** 2   # 9 * 16**2 / (9 * 1**2) = 256\n",
    checker=_number_checker(lambda given: 256.0, [
        (lambda given: 16.0, "the weight grows like T^2, not T."),
        (lambda given: 2304.0, "that is the ratio KL:CE at T = 16 itself (9 T^2); the question asks how much it grows "
         "from its value 9 at T = 1."),
        (lambda given: 255.0, "the growth factor is 16^2 / 1^2, a ratio, not a difference."),
    ]),
))


_NORMKD_LOGITS = (4.0, 1.0, 0.0, -1.0, -4.0)


def _normkd_teacher_temperature(unbiased=True, t_norm=2.0):
    logits = torch.tensor(_NORMKD_LOGITS, dtype=torch.float64)
    return t_norm * float(logits.std(unbiased=unbiased))


_register(_Exercise(
    name="normkd_temperature", notebook="06", kind="number",
    statement=("NormKD gives each sample the temperature T_norm * std(v) of its own logits (torch's unbiased std, "
               "as in the official code). A teacher sample has logits v = [4, 1, 0, -1, -4]; with T_norm = 2, what "
               "is its temperature?"),
    explanation=("mean(v) = 0; the unbiased variance is (16 + 1 + 0 + 1 + 16) / (5 - 1) = 8.5, std = 2.9155, so "
                 "T = 2 * 2.9155 = 5.83. A sample with logits twice as spread out gets twice the temperature."),
    code="v = torch.tensor([4.0, 1.0, 0.0, -1.0, -4.0], dtype=torch.float64)\nanswer = 2 * float(v.std())   # 5.83\n",
    checker=_number_checker(lambda given: _normkd_teacher_temperature(), [
        (lambda given: _normkd_teacher_temperature(unbiased=False),
         "you divided by K = 5 (population std); torch's std, which NormKD's code uses, divides by K - 1 = 4."),
        (lambda given: _normkd_teacher_temperature(t_norm=1.0), "T_norm = 2 is missing: the temperature is T_norm * std."),
        (lambda given: 2.0 * 8.5, "you took the variance (8.5), not the standard deviation."),
        (lambda given: 2.0 * 6.8, "you took the population variance (6.8), not the unbiased standard deviation."),
    ]),
))


def _ctkd_lambda(epoch, form="cosine"):
    curriculum = LearnableTemperature()
    if form == "linear":
        return -min(epoch, curriculum.decay_epochs) / curriculum.decay_epochs
    return curriculum.reversal_strength(epoch)


_register(_Exercise(
    name="ctkd_lambda", notebook="06", kind="number",
    statement=("CTKD's gradient-reversal factor follows the cosine curriculum lambda(e) = lambda_min + (lambda_max - "
               "lambda_min) * (cos(pi e / 10) + 1) / 2 with lambda_max = 0 and lambda_min = -1 (10 decay epochs). "
               "What is lambda at epoch e = 3?"),
    explanation=("(cos(0.3 pi) + 1) / 2 = (0.5878 + 1) / 2 = 0.7939, so lambda = -1 + 0.7939 = -0.206. It is "
                 "negative: the temperature's parameter *ascends* the KD loss, a bit more every epoch."),
    code="answer = -1 + (math.cos(math.pi * 3 / 10) + 1) / 2   # -0.206\n",
    checker=_number_checker(lambda given: _ctkd_lambda(3), [
        (lambda given: -_ctkd_lambda(3), "the sign: lambda runs from 0 down to -1 (a gradient *reversal*)."),
        (lambda given: _ctkd_lambda(3, "linear"), "a linear ramp gives -0.3; CTKD's curriculum is a cosine."),
        (lambda given: 1 + _ctkd_lambda(3), "you left out lambda_min = -1: (cos + 1) / 2 is the fraction of the way "
         "still to go."),
        (lambda given: -1 + (math.cos(3 / 10) + 1) / 2, "the cosine's argument is pi * e / 10 (radians), not e / 10."),
    ], rtol=0.005),
))


# ----------------------------------------------------------------------------------------------------------
# Predict, then check.

class Prediction:
    """A question the student answers *before* an experiment; :meth:`check` compares it with the measurement.

    Display it (the last line of a cell) to get the widget: a choice (``choices=[...]``) or a number
    (``choices=None``) and a **Commit** button; once committed the answer is locked. ``commit(value)`` does the
    same from code. :meth:`check` is called after the experiment with what was *measured* and returns a
    :class:`Feedback`: "passed" when the committed prediction held, "failed" when it did not, "not attempted"
    when nothing was committed (never an error, so Run All goes through).
    """

    def __init__(self, question, choices=None, *, name=None, tolerance=0.2, unit=""):
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question must be a non-empty string, got {question!r}")
        if choices is not None:
            choices = list(choices)
            if len(choices) < 2 or not all(isinstance(c, str) for c in choices) or len(set(choices)) != len(choices):
                raise ValueError(f"choices must be at least two distinct strings (or None for a number), got {choices!r}")
        if isinstance(tolerance, bool) or not isinstance(tolerance, Real) or not 0 < tolerance < math.inf:
            raise ValueError(f"tolerance must be a number > 0 (relative), got {tolerance!r}")
        self.question, self.choices, self.tolerance, self.unit = question, choices, float(tolerance), unit
        self.name = f"prediction · {name or question}"
        self.committed = None
        self._widget = None

    # -- the student's side
    def commit(self, value):
        """Lock in a prediction (what the Commit button does). Returns the Feedback-free confirmation text."""
        if self.committed is not None:
            return f"already committed: {self.committed!r}"
        if self.choices is not None:
            if value not in self.choices:
                return f"choose one of {self.choices}"
        else:
            number, problem = _as_number(value)
            if problem:
                return problem
            value = number
        self.committed = value
        if self._widget is not None:
            self._lock()
        return f"committed: {value!r}"

    @property
    def widget(self):
        """The ipywidgets box: question, input, Commit button, status line (built on first use)."""
        if self._widget is None:
            import ipywidgets

            question = ipywidgets.HTML(f"<b>Predict:</b> {html.escape(self.question)}")
            if self.choices is not None:
                entry = ipywidgets.RadioButtons(options=self.choices, value=None, layout={"width": "max-content"})
            else:
                entry = ipywidgets.FloatText(value=None, description="your guess", placeholder="a number")
            button = ipywidgets.Button(description="Commit", button_style="primary", icon="lock")
            status = ipywidgets.HTML("<i>not committed yet: the cells below run anyway</i>")

            def on_click(_):
                if entry.value is None:
                    status.value = "<i>choose an answer first</i>"
                    return
                status.value = html.escape(self.commit(entry.value))

            button.on_click(on_click)
            self._widget = ipywidgets.VBox([question, entry, ipywidgets.HBox([button, status])])
            self._widget.entry, self._widget.button, self._widget.status = entry, button, status
            if self.committed is not None:
                self._lock()
        return self._widget

    def _lock(self):
        self._widget.entry.disabled = True
        self._widget.button.disabled = True
        self._widget.status.value = f"committed: <b>{html.escape(str(self.committed))}</b>"

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def __repr__(self):
        return f"Prediction({self.question!r}, committed={self.committed!r})"

    # -- the experiment's side
    def check(self, measured, evidence="") -> Feedback:
        """Compare the committed prediction with ``measured`` (a choice, or a number) computed by the notebook.

        ``evidence``: the numbers behind ``measured``, shown in the message (e.g. "KD 88.1 % vs CE 87.9 %").
        A number prediction holds when it is within ``tolerance`` (relative) of the measured value.
        """
        if self.choices is not None and measured not in self.choices:
            raise ValueError(f"measured must be one of {self.choices}, got {measured!r}")
        if self.choices is None:
            measured_value, problem = _as_number(measured)
            if problem:
                raise ValueError(f"measured: {problem}")
            shown = f"{measured_value:.4g}{self.unit}"
        else:
            shown = repr(measured)
        evidence = f" ({evidence})" if evidence else ""
        if self.committed is None:
            return _feedback(self.name, NOT_ATTEMPTED, f"no prediction committed. Measured: {shown}{evidence}.")
        if self.choices is not None:
            held = self.committed == measured
        else:
            held = abs(self.committed - measured_value) <= self.tolerance * abs(measured_value)
        mine = self.committed if self.choices is not None else f"{self.committed:.4g}{self.unit}"
        verdict = "your prediction held" if held else "your prediction did not hold"
        if self.choices is None:
            verdict += f" (tolerance ±{100 * self.tolerance:g} %)"
        return _feedback(self.name, PASSED if held else FAILED, f"you predicted {mine}; measured: {shown}{evidence}: {verdict}.")


def predict(question, choices=None, *, name=None, tolerance=0.2, unit="") -> Prediction:
    """A predict-then-check question (see :class:`Prediction`); ``choices=None`` asks for a number."""
    return Prediction(question, choices, name=name, tolerance=tolerance, unit=unit)
