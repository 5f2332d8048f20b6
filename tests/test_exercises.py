"""kdlab.exercises: every known bug, written as a wrong function, fails with its own diagnosis; correct
implementations written other ways pass; nothing the answer does makes check() raise."""
import math

import pytest
import torch
import torch.nn.functional as F

import kdlab
from kdlab import exercises


@pytest.fixture(autouse=True)
def _no_solutions(monkeypatch):
    monkeypatch.delenv(exercises.SOLUTIONS_ENV, raising=False)


def _log_q(z, T=1.0):
    return F.log_softmax(z / T, dim=1)


def _p(v, T=1.0):
    return F.softmax(v / T, dim=1)


def _kl(log_target, log_input):
    """Per-sample KL(target || input) from log-probabilities."""
    return (log_target.exp() * (log_target - log_input)).sum(1)


# ----------------------------------------------------------------------------------------------------------
# kd_loss

KD_BUGS = {
    "missing T^2": (lambda z, v, T: F.kl_div(_log_q(z, T), _p(v, T), reduction="batchmean"), "missing T^2"),
    "reversed": (lambda z, v, T: T ** 2 * _kl(_log_q(z, T), _log_q(v, T)).mean(), "KL direction reversed"),
    "elementwise mean": (lambda z, v, T: T ** 2 * F.kl_div(_log_q(z, T), _p(v, T), reduction="mean"),
                         "element-wise mean"),
    "batch sum": (lambda z, v, T: T ** 2 * F.kl_div(_log_q(z, T), _p(v, T), reduction="sum"), "summed over the batch"),
    "student untempered": (lambda z, v, T: T ** 2 * F.kl_div(_log_q(z), _p(v, T), reduction="batchmean"),
                           "student not tempered"),
    "teacher untempered": (lambda z, v, T: T ** 2 * F.kl_div(_log_q(z, T), _p(v), reduction="batchmean"),
                           "teacher not tempered"),
    "probabilities to kl_div": (lambda z, v, T: T ** 2 * F.kl_div(_p(z, T), _p(v, T), reduction="batchmean"),
                                "probabilities passed where F.kl_div expects log-probabilities"),
    "T instead of T^2": (lambda z, v, T: T * F.kl_div(_log_q(z, T), _p(v, T), reduction="batchmean"),
                         "multiplied by T instead of T^2"),
}


def _kd_loops(z, v, T):
    """A correct KD written with Python loops and math.log, in float32."""
    z, v = z.float(), v.float()
    total = 0.0
    for b in range(z.shape[0]):
        zs, vs = (z[b] / T).tolist(), (v[b] / T).tolist()
        mz, mv = max(zs), max(vs)
        log_norm_z = mz + math.log(sum(math.exp(x - mz) for x in zs))
        log_norm_v = mv + math.log(sum(math.exp(x - mv) for x in vs))
        for i in range(len(zs)):
            log_p, log_q = vs[i] - log_norm_v, zs[i] - log_norm_z
            total += math.exp(log_p) * (log_p - log_q)
    return torch.tensor(T * T * total / z.shape[0])


KD_CORRECT = {
    "kdlab": lambda z, v, T: kdlab.kd_loss(z, v, T),
    "float32 kl_div": lambda z, v, T: F.kl_div(_log_q(z.float(), T), _p(v.float(), T), reduction="batchmean") * T * T,
    "log_target": lambda z, v, T: T ** 2 * F.kl_div(_log_q(z, T), _log_q(v, T), reduction="batchmean", log_target=True),
    "loops": _kd_loops,
    "cross-entropy minus entropy": lambda z, v, T: T ** 2 * ((-(_p(v, T) * _log_q(z, T)).sum(1))
                                                            - (-(_p(v, T) * _log_q(v, T)).sum(1))).mean(),
    "float64 shape (1,)": lambda z, v, T: (T ** 2 * _kl(_log_q(v.double(), T), _log_q(z.double(), T)).mean()).reshape(1),
    "python float": lambda z, v, T: float(kdlab.kd_loss(z, v, T)),
}


def test_kd_two_bugs_are_both_named():
    # haitongli's loss: KLDivLoss() with its element-wise mean, and no T^2
    feedback = exercises.check("kd_loss", lambda z, v, T: torch.nn.KLDivLoss()(_log_q(z, T), _p(v, T)))
    assert not feedback.passed
    assert "missing T^2" in feedback.message and "element-wise mean" in feedback.message


def test_kd_bugs_that_agree_at_t1_are_still_caught():
    # correct at T = 1, wrong elsewhere: T^2 and both temperatures vanish at T = 1
    for fn, _ in [KD_BUGS["missing T^2"], KD_BUGS["student untempered"], KD_BUGS["teacher untempered"]]:
        z, v = torch.randn(4, 10), torch.randn(4, 10)
        assert torch.allclose(torch.as_tensor(fn(z, v, 1.0)).double(), kdlab.kd_loss(z, v, 1.0).double(), atol=1e-6)
        assert not exercises.check("kd_loss", fn).passed


def test_kd_unknown_error_names_the_mismatch():
    feedback = exercises.check("kd_loss", lambda z, v, T: 1.5 * kdlab.kd_loss(z, v, T))
    assert not feedback.passed and "ratio 1.5" in feedback.message and "nor any mistake" in feedback.message


# ----------------------------------------------------------------------------------------------------------
# ttm_loss / wttm_loss

TTM_BUGS = {
    "tempered student": (lambda z, v, T: _kl(_log_q(v, T), _log_q(z, T)).mean(), "tempered student"),
    "T^2 factor": (lambda z, v, T: T ** 2 * _kl(_log_q(v, T), _log_q(z)).mean(), "a T^2 factor"),
    "reversed": (lambda z, v, T: _kl(_log_q(z), _log_q(v, T)).mean(), "KL direction reversed"),
    "untransformed teacher": (lambda z, v, T: _kl(_log_q(v), _log_q(z)).mean(), "untransformed teacher"),
    "gamma = T": (lambda z, v, T: _kl(_log_q(v * T), _log_q(z)).mean(), "gamma = T instead of 1/T in the power transform"),
}


def _ttm_official(z, v, T):
    """The official code's way: softmax(v) ** gamma, renormalised, with kl_div(reduction='none')."""
    p = F.softmax(v.double(), dim=1) ** (1 / T)
    p = p / p.sum(1, keepdim=True)
    return F.kl_div(F.log_softmax(z.double(), 1), p, reduction="none").sum(1).mean()


TTM_CORRECT = {
    "kdlab": lambda z, v, T: kdlab.ttm_loss(z, v, T),
    "official power transform": _ttm_official,
    "float32 kl_div": lambda z, v, T: F.kl_div(_log_q(z.float()), _p(v.float(), T), reduction="batchmean"),
}


def _weight(v, T, transformed=False, gamma=None):
    p = _p(v, T) if transformed else _p(v)
    return (p ** (gamma if gamma is not None else 1 / T)).sum(1)


WTTM_BUGS = {
    "weight missing": (lambda z, v, T: _kl(_log_q(v, T), _log_q(z)).mean(), "the weight is missing"),
    "weight of transformed teacher": (lambda z, v, T: (_weight(v, T, transformed=True) * _kl(_log_q(v, T), _log_q(z))).mean(),
                                      "the weight is taken from the transformed teacher"),
    "gamma = T": (lambda z, v, T: (_weight(v, T, gamma=T) * _kl(_log_q(v * T), _log_q(z))).mean(),
                  "gamma = T instead of 1/T in the weight"),
}


WTTM_CORRECT = {
    "kdlab": lambda z, v, T: kdlab.wttm_loss(z, v, T),
    "float32": lambda z, v, T: (_weight(v.float(), T) * _kl(_log_q(v.float(), T), _log_q(z.float()))).mean(),
    "power_sum times ttm per sample": lambda z, v, T: (kdlab.power_sum(_p(v.double()), 1 / T)
                                                      * kdlab.ttm_loss(z, v, T, reduction="none")).mean(),
}


def test_wttm_gamma_t_also_names_the_transform():
    feedback = exercises.check("wttm_loss", WTTM_BUGS["gamma = T"][0])
    assert "gamma = T instead of 1/T in the power transform" in feedback.message


def test_wttm_gamma_t_in_the_weight_only():
    fn = lambda z, v, T: (_weight(v, T, gamma=T) * _kl(_log_q(v, T), _log_q(z))).mean()  # noqa: E731
    feedback = exercises.check("wttm_loss", fn)
    assert not feedback.passed and feedback.message.startswith("gamma = T instead of 1/T in the weight")


# ----------------------------------------------------------------------------------------------------------
# dtkd_temperatures

def _dtkd(z, v, tau, reduce_fn=lambda x: x.amax(1, keepdim=True), guard=True, factor=2.0, with_tau=True):
    x, y = reduce_fn(v), reduce_fn(z)
    scale = tau if with_tau else 1.0
    teacher_t, student_t = factor * x / (x + y) * scale, factor * y / (x + y) * scale
    if guard:
        valid = (x > 0) & (y > 0)
        teacher_t = torch.where(valid, teacher_t, torch.full_like(x, tau))
        student_t = torch.where(valid, student_t, torch.full_like(y, tau))
    return teacher_t, student_t


DTKD_BUGS = {
    "swapped": (lambda z, v, tau: _dtkd(z, v, tau)[::-1], "swapped temperatures"),
    "sum is tau": (lambda z, v, tau: _dtkd(z, v, tau, factor=1.0), "the temperatures sum to tau, not 2 tau"),
    "mean logit": (lambda z, v, tau: _dtkd(z, v, tau, reduce_fn=lambda x: x.mean(1, keepdim=True)),
                   "the mean logit instead of the max"),
    "no guard": (lambda z, v, tau: _dtkd(z, v, tau, guard=False), "no guard for non-positive maxima"),
    "absolute max": (lambda z, v, tau: _dtkd(z, v, tau, reduce_fn=lambda x: x.abs().amax(1, keepdim=True)),
                     "the largest |logit| instead of the signed max"),
    "no tau": (lambda z, v, tau: _dtkd(z, v, tau, with_tau=False), "the reference temperature tau is missing"),
}


def _dtkd_loops(z, v, tau):
    """Correct, per sample in Python, returning shape (B,) in float32."""
    teacher_t, student_t = [], []
    for zs, vs in zip(z.tolist(), v.tolist()):
        x, y = max(vs), max(zs)
        if x > 0 and y > 0:
            teacher_t.append(2 * x / (x + y) * tau)
            student_t.append(2 * y / (x + y) * tau)
        else:
            teacher_t.append(tau)
            student_t.append(tau)
    return torch.tensor(teacher_t), torch.tensor(student_t)


DTKD_CORRECT = {
    "kdlab": lambda z, v, tau: kdlab.dtkd_temperatures(z, v, tau),
    "loops": _dtkd_loops,
    "guarded torch.where": lambda z, v, tau: _dtkd(z, v, tau),
}


# exercise -> (its bugs: name -> (implementation, the words its diagnosis must contain), its correct versions)
FUNCTION_EXERCISES = {
    "kd_loss": (KD_BUGS, KD_CORRECT),
    "ttm_loss": (TTM_BUGS, TTM_CORRECT),
    "wttm_loss": (WTTM_BUGS, WTTM_CORRECT),
    "dtkd_temperatures": (DTKD_BUGS, DTKD_CORRECT),
}


@pytest.mark.parametrize("exercise, bug", [(e, b) for e, (bugs, _) in FUNCTION_EXERCISES.items() for b in bugs])
def test_each_bug_gets_its_own_diagnosis(exercise, bug):
    bugs = FUNCTION_EXERCISES[exercise][0]
    fn, expected = bugs[bug]
    feedback = exercises.check(exercise, fn)
    assert not feedback.passed and feedback.status == "failed", feedback.message
    assert expected in feedback.message, feedback.message
    others = [text for name, (_, text) in bugs.items() if name != bug]
    assert not any(text in feedback.message for text in others), feedback.message


@pytest.mark.parametrize("bug", KD_BUGS)
def test_each_kd_bug_is_a_single_mistake(bug):
    assert "Several mistakes" not in exercises.check("kd_loss", KD_BUGS[bug][0]).message


@pytest.mark.parametrize("exercise, name", [(e, n) for e, (_, good) in FUNCTION_EXERCISES.items() for n in good])
def test_correct_implementations_pass(exercise, name):
    feedback = exercises.check(exercise, FUNCTION_EXERCISES[exercise][1][name])
    assert feedback.passed and feedback.status == "passed", feedback.message


def test_dtkd_no_guard_message_states_the_convention():
    feedback = exercises.check("dtkd_temperatures", DTKD_BUGS["no guard"][0])
    assert "both temperatures are tau" in feedback.message


def test_dtkd_unknown_error_says_which_property_fails():
    fn = lambda z, v, tau: (kdlab.dtkd_temperatures(z, v, tau)[0] * 1.1, kdlab.dtkd_temperatures(z, v, tau)[1])  # noqa: E731
    feedback = exercises.check("dtkd_temperatures", fn)
    assert not feedback.passed and "should be 2 tau" in feedback.message


def test_dtkd_bad_returns():
    single = exercises.check("dtkd_temperatures", lambda z, v, tau: torch.ones(len(z), 2))
    assert not single.passed and "expected a pair" in single.message
    wrong_shape = exercises.check("dtkd_temperatures", lambda z, v, tau: (torch.ones(3), torch.ones(3)))
    assert not wrong_shape.passed and "one temperature per sample" in wrong_shape.message


# ----------------------------------------------------------------------------------------------------------
# Whatever the answer does, check() does not raise.

def _raises(z, v, T):
    raise RuntimeError("boom")


def _shape_error(z, v, T):
    return F.softmax(z, dim=1) @ F.softmax(v, dim=1)


@pytest.mark.parametrize("name", ["kd_loss", "ttm_loss", "wttm_loss"])
@pytest.mark.parametrize("answer, words", [
    (_raises, "raised RuntimeError"),
    (_shape_error, "raised RuntimeError"),
    (lambda z, v, T: torch.tensor(float("nan")), "returned nan"),
    (lambda z, v, T: torch.tensor(float("inf")), "returned inf"),
    (lambda z, v, T: kdlab.kd_loss(z, v, T, reduction="none"), "per-sample losses"),
    (lambda z, v, T: F.kl_div(_log_q(z, T), _p(v, T), reduction="none"), "sum over the classes"),
    (lambda z, v, T: None, "missing `return`"),
    (lambda z, v, T: "0.5", "expected a scalar"),
    (lambda z, v, T: torch.tensor(1), "floating-point"),
    (42, "expected a function"),
])
def test_bad_answers_fail_with_a_message(name, answer, words):
    feedback = exercises.check(name, answer)
    assert feedback.passed is False and feedback.status == "failed"
    assert words in feedback.message, feedback.message


def test_dtkd_exceptions_and_nan_fail():
    assert "raised RuntimeError" in exercises.check("dtkd_temperatures", _raises).message
    nan = exercises.check("dtkd_temperatures", lambda z, v, tau: (torch.full((len(z),), math.nan),) * 2)
    assert not nan.passed and "non-finite" in nan.message


def test_the_students_tensors_are_copies():
    def in_place(z, v, T):
        z.zero_()
        v.zero_()
        return kdlab.kd_loss(z, v, T)

    assert not exercises.check("kd_loss", in_place).passed
    assert exercises.check("kd_loss", KD_CORRECT["kdlab"]).passed


@pytest.mark.parametrize("name", exercises.names())
def test_unanswered_is_not_attempted(name):
    for answer in (None, ...):
        feedback = exercises.check(name, answer)
        assert feedback.status == "not attempted" and feedback.passed is False
        assert "not attempted" in str(feedback)


def test_stub_raising_not_implemented_is_not_attempted():
    def stub(student_logits, teacher_logits, temperature):
        raise NotImplementedError

    for name in ["kd_loss", "ttm_loss", "wttm_loss", "dtkd_temperatures"]:
        assert exercises.check(name, stub).status == "not attempted"


def test_bad_exercise_name_or_keyword_is_the_notebooks_error():
    with pytest.raises(ValueError, match="name must be one of"):
        exercises.check("no_such_exercise", 1.0)
    with pytest.raises(ValueError, match="accepts the keyword arguments"):
        exercises.check("kd_loss", None, logits=[1.0])


# ----------------------------------------------------------------------------------------------------------
# Numeric exercises: correct within tolerance, known wrong steps named.

NUMERIC_WRONG = {
    "kl_mean_factor": [(640, "B * K"), (64, "batch size")],
    "kd_weight_ratio": [(9, "forgot the T^2"), (36, "T instead of T^2"), (14.4, "ratio to CE")],
    "ttm_beta": [(144, "T^2 as in KD"), (9, "left out the factor T"), (3.6, "1 - lambda")],
    "power_sum_bound": [(100 ** 0.25, "the exponent is gamma"), (1, "smallest value"), (100, "limit gamma -> 0")],
    "dtkd_teacher_temperature": [(2, "student's temperature"), (3, "factor 2 is missing"), (1.5, "tau is missing")],
    "dtkd_weight_ratio": [(12, "divide by tau^2"), (1, "only when x = y")],
    "kd_balance_growth": [(16, "not T"), (2304, "at T = 16 itself")],
}


@pytest.mark.parametrize("name, wrong, words", [(n, w, t) for n, items in NUMERIC_WRONG.items() for w, t in items])
def test_numeric_wrong_step_is_named(name, wrong, words):
    feedback = exercises.check(name, wrong)
    assert not feedback.passed and words in feedback.message, feedback.message


def test_half_entropy_temperature():
    logits = torch.tensor([9.1, -2.3, 1.2, 3.4, -4.0, 0.8, -1.5, 5.2, 0.1, -3.3])
    truth = float(kdlab.temperature_for_entropy(logits.double()[None], 0.5 * math.log(10)))
    assert kdlab.entropy(kdlab.tempered_softmax(logits.double(), truth)).item() == pytest.approx(0.5 * math.log(10))
    assert exercises.check("half_entropy_temperature", truth * 1.005).passed
    assert exercises.check("half_entropy_temperature", torch.tensor(truth)).passed
    bits = float(kdlab.temperature_for_entropy(logits.double()[None], 0.5 * math.log2(10)))
    assert "bits" in exercises.check("half_entropy_temperature", bits).message
    assert "gamma = 1/T" in exercises.check("half_entropy_temperature", 1 / truth).message
    assert "too high" in exercises.check("half_entropy_temperature", truth * 1.5).message
    # a notebook passes its own digit
    other = torch.tensor([4.0, 1.0, 0.5, -1.0, 0.0, 0.3, -2.0, 1.5, 0.2, -0.5])
    other_truth = float(kdlab.temperature_for_entropy(other.double()[None], 0.5 * math.log(10)))
    assert exercises.check("half_entropy_temperature", other_truth, logits=other).passed
    assert not exercises.check("half_entropy_temperature", truth, logits=other).passed


def test_label_smoothing_epsilon():
    eps = kdlab.smoothing_for_entropy(10, 1.0)
    assert exercises.check("label_smoothing_epsilon", eps).passed
    target = torch.full((10,), eps / 10, dtype=torch.float64)
    target[0] += 1 - eps
    assert kdlab.entropy(target.double()).item() == pytest.approx(1.0, abs=1e-9)
    # eps spread over the K - 1 wrong classes
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        p = torch.tensor([1 - mid] + [mid / 9] * 9, dtype=torch.float64)
        low, high = (mid, high) if kdlab.entropy(p) < 1.0 else (low, mid)
    assert "K - 1 wrong classes" in exercises.check("label_smoothing_epsilon", low).message
    assert exercises.check("label_smoothing_epsilon", kdlab.smoothing_for_entropy(10, 1.5), entropy=1.5).passed


@pytest.mark.parametrize("answer, words", [("31.6", "expected a number"), (math.nan, "finite"), ([1.0, 2.0], "single number"),
                                           (True, "expected a number")])
def test_numeric_bad_answers(answer, words):
    feedback = exercises.check("power_sum_bound", answer)
    assert not feedback.passed and words in feedback.message


def test_power_sum_bound_is_the_uniform_value():
    uniform = torch.full((100,), 0.01, dtype=torch.float64)
    value = float(kdlab.power_sum(uniform, 0.25))
    assert exercises.check("power_sum_bound", value).passed
    assert float(kdlab.power_sum(torch.softmax(torch.randn(100, dtype=torch.float64) * 3, 0), 0.25)) < value


def test_every_notebook_has_an_exercise():
    for notebook in ["01", "02", "03", "04", "05", "06"]:
        assert exercises.names(notebook), notebook


# ----------------------------------------------------------------------------------------------------------
# Solutions: shown by solution(), checked by the switch.

@pytest.mark.parametrize("name", exercises.names())
def test_solution_switch_fills_in_a_passing_solution(name, monkeypatch):
    monkeypatch.setenv(exercises.SOLUTIONS_ENV, "1")
    assert exercises.solutions_enabled()
    feedback = exercises.check(name, None)
    assert feedback.passed, feedback.message
    assert "worked solution" in feedback.message
    shown = exercises.solution(name)
    assert shown.code.strip() and shown.code in str(shown) and "<pre" in shown._repr_html_()


def test_solution_switch_does_not_override_an_answer(monkeypatch):
    monkeypatch.setenv(exercises.SOLUTIONS_ENV, "1")
    assert not exercises.check("kd_loss", KD_BUGS["reversed"][0]).passed
    assert not exercises.check("ttm_beta", 144).passed


def test_solutions_switch_values(monkeypatch):
    for value, enabled in [("1", True), ("yes", True), ("TRUE", True), ("0", False), ("", False)]:
        monkeypatch.setenv(exercises.SOLUTIONS_ENV, value)
        assert exercises.solutions_enabled() is enabled


def test_feedback_display():
    passed = exercises.check("ttm_beta", 36)
    failed = exercises.check("ttm_beta", 9)
    assert str(passed).startswith("[passed] ttm_beta:") and bool(passed)
    assert "#1e8e3e" in passed._repr_html_() and "#d93025" in failed._repr_html_()
    assert "<script" not in exercises.Feedback("x", False, "<script>", "failed")._repr_html_()


# ----------------------------------------------------------------------------------------------------------
# Predict, then check.

def test_prediction_choice_through_the_widget():
    question = exercises.predict("Which wins?", ["KD", "CE", "neither"])
    widget = question.widget
    assert question.check("KD").status == "not attempted"
    widget.button.click()                      # nothing chosen yet: nothing committed
    assert question.committed is None
    widget.entry.value = "CE"
    widget.button.click()
    assert question.committed == "CE" and widget.entry.disabled and widget.button.disabled
    assert question.commit("KD") == "already committed: 'CE'"
    held = question.check("CE", evidence="CE 88 % vs KD 87 %")
    assert held.passed and "held" in held.message and "CE 88 %" in held.message
    missed = question.check("KD")
    assert not missed.passed and missed.status == "failed" and "did not hold" in missed.message


def test_prediction_number():
    question = exercises.predict("How many times larger?", tolerance=0.25)
    assert "not attempted" in str(question.check(3.19))
    assert question.commit("three").startswith("expected a number")
    question.commit(3.0)
    assert question.check(3.19).passed
    assert not question.check(8.92).passed
    with pytest.raises(ValueError, match="measured"):
        question.check("a lot")


def test_prediction_bad_arguments():
    with pytest.raises(ValueError, match="choices"):
        exercises.predict("?", ["only one"])
    with pytest.raises(ValueError, match="question"):
        exercises.predict("", ["a", "b"])
    question = exercises.predict("?", ["a", "b"])
    with pytest.raises(ValueError, match="measured must be one of"):
        question.check("c")
    assert question.commit("c").startswith("choose one of")


@pytest.mark.parametrize("name", ["kd_loss", "ttm_loss", "wttm_loss"])
def test_known_mistakes_are_distinguishable_on_the_probes(name):
    """No candidate with at most one mistake gives the same values as another on every probe case (so each
    diagnosis is unambiguous, and none coincides with the reference)."""
    table = [(found, values) for found, values in exercises._EXERCISES[name].checker.candidate_values(1)]
    assert len(table) > 5
    for i, (found_a, a) in enumerate(table):
        for found_b, b in table[i + 1:]:
            same = ((a - b).abs() <= exercises._RTOL * b.abs() + exercises._ATOL).all()
            assert not bool(same), (found_a, found_b)


def test_solution_switch_fills_in_a_stub(monkeypatch):
    def stub(student_logits, teacher_logits, temperature):
        raise NotImplementedError

    monkeypatch.setenv(exercises.SOLUTIONS_ENV, "1")
    for name in ["kd_loss", "ttm_loss", "wttm_loss", "dtkd_temperatures"]:
        feedback = exercises.check(name, stub)
        assert feedback.passed and "worked solution" in feedback.message, feedback.message


@pytest.mark.parametrize("name, right, wrong, words", [
    ("normkd_temperature", 2 * math.sqrt(8.5), 2 * math.sqrt(6.8), "population std"),
    ("normkd_temperature", 2 * math.sqrt(8.5), 17.0, "variance"),
    ("ctkd_lambda", -1 + (math.cos(0.3 * math.pi) + 1) / 2, 0.2061, "sign"),
    ("ctkd_lambda", -1 + (math.cos(0.3 * math.pi) + 1) / 2, -0.3, "linear"),
])
def test_notebook_06_numbers_name_the_wrong_step(name, right, wrong, words):
    assert exercises.check(name, right).passed
    feedback = exercises.check(name, wrong)
    assert not feedback.passed and words in feedback.message, feedback.message
