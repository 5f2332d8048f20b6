"""Tests for kdlab.methods: the recipes' terms and weights, warm-up, overrides and bad input."""
import math

import pytest
import torch
import torch.nn.functional as F

from kdlab.losses import dkd_loss, dtkd_loss, dtkd_temperatures, kd_loss, lskd_loss, normkd_loss, ttm_loss, wttm_loss
from kdlab.methods import Method, get_method, list_methods

NAMES = ["ce", "label_smoothing", "kd", "ttm", "wttm", "dtkd", "lskd", "dkd", "ctkd", "normkd"]


def batch(seed=0, size=6, num_classes=10):
    generator = torch.Generator().manual_seed(seed)
    student = 2 * torch.randn(size, num_classes, generator=generator)
    teacher = 3 * torch.randn(size, num_classes, generator=generator) + 1
    targets = torch.randint(0, num_classes, (size,), generator=generator)
    return student, teacher, targets


def test_list_methods_names_and_paper_defaults():
    methods = list_methods()
    assert list(methods) == NAMES
    assert methods["kd"] == {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9, "warmup": 0}
    assert methods["ttm"]["temperature"] == 10.0 and methods["ttm"]["beta"] == 100.0 and methods["ttm"]["ce_weight"] == 1.0
    assert methods["wttm"]["temperature"] == 10.0 and methods["wttm"]["beta"] == 3.0
    assert {k: methods["dtkd"][k] for k in ("temperature", "alpha", "beta", "ce_weight", "warmup")} == {
        "temperature": 4.0, "alpha": 3.0, "beta": 1.0, "ce_weight": 1.0, "warmup": 20}
    assert methods["dtkd"]["detach"] is False
    assert {k: methods["lskd"][k] for k in ("temperature", "ce_weight", "kd_weight")} == {"temperature": 2.0, "ce_weight": 0.1, "kd_weight": 9.0}
    assert {k: methods["dkd"][k] for k in ("temperature", "alpha", "beta", "ce_weight", "warmup")} == {
        "temperature": 4.0, "alpha": 1.0, "beta": 8.0, "ce_weight": 1.0, "warmup": 20}
    assert methods["ctkd"]["temperature"] == pytest.approx(15.6212, abs=1e-4)
    assert methods["label_smoothing"]["smoothing"] == 0.1
    methods["kd"]["temperature"] = 99.0  # a copy: changing it does not change the defaults
    assert list_methods()["kd"]["temperature"] == 4.0


@pytest.mark.parametrize("name", NAMES)
def test_every_method_returns_its_named_scalar_terms_with_gradients(name):
    student, teacher, targets = batch()
    method = get_method(name)
    assert isinstance(method, Method) and isinstance(method, torch.nn.Module)
    assert method.name == name
    student = student.requires_grad_(True)
    terms = method(student, teacher, targets, 25)
    assert tuple(terms) == method.term_names and "ce" in terms
    for value in terms.values():
        assert value.dim() == 0 and torch.isfinite(value) and value.item() >= 0
    sum(terms.values()).backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    assert method.needs_teacher == (name not in ("ce", "label_smoothing"))
    assert method.uses_temperature == (name not in ("ce", "label_smoothing"))
    assert ("temperature" in method.hparams) == method.uses_temperature


def test_weighted_terms_match_the_losses():
    student, teacher, targets = batch(seed=1)
    ce = F.cross_entropy(student, targets)

    def check(name, expected, **overrides):
        terms = get_method(name, **overrides)(student, teacher, targets, 30)
        assert set(terms) == set(expected)
        for key, value in expected.items():
            assert terms[key].item() == pytest.approx(value.item(), rel=1e-6), key

    check("ce", {"ce": ce})
    check("kd", {"ce": 0.1 * ce, "kd": 0.9 * kd_loss(student, teacher, 4.0)})
    check("ttm", {"ce": ce, "ttm": 100 * ttm_loss(student, teacher, 10.0)})
    check("wttm", {"ce": ce, "wttm": 3 * wttm_loss(student, teacher, 10.0)})
    check("dtkd", {"ce": ce, "dtkd": 3 * dtkd_loss(student, teacher, 4.0), "kd": kd_loss(student, teacher, 4.0)})
    check("lskd", {"ce": 0.1 * ce, "lskd": 9 * lskd_loss(student, teacher, 2.0)})
    dkd = dkd_loss(student, teacher, targets, alpha=1.0, beta=8.0, temperature=4.0)
    terms = get_method("dkd")(student, teacher, targets, 30)
    assert (terms["tckd"] + terms["nckd"]).item() == pytest.approx(dkd.item(), rel=1e-6)
    assert terms["tckd"].item() == pytest.approx(dkd_loss(student, teacher, targets, 1.0, 0.0, 4.0).item(), rel=1e-6)
    check("kd", {"ce": 0.5 * ce, "kd": 2 * kd_loss(student, teacher, 7.0)}, temperature=7.0, ce_weight=0.5, kd_weight=2.0)


def test_label_smoothing_is_cross_entropy_against_the_smoothed_target():
    student, _, targets = batch(seed=2)
    eps, num_classes = 0.2, 10
    smoothed = (1 - eps) * F.one_hot(targets, num_classes).float() + eps / num_classes
    expected = -(smoothed * torch.log_softmax(student, -1)).sum(-1).mean()
    terms = get_method("label_smoothing", smoothing=eps)(student, None, targets, 1)
    assert terms["ce"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name, keys", [("dkd", ("tckd", "nckd")), ("dtkd", ("dtkd", "kd"))])
def test_warmup_scales_only_the_distillation_terms(name, keys):
    student, teacher, targets = batch(seed=3)
    method = get_method(name)
    full = method(student, teacher, targets, 20)
    for epoch in (1, 5, 10):
        terms = method(student, teacher, targets, epoch)
        assert terms["ce"].item() == pytest.approx(full["ce"].item(), rel=1e-7)
        for key in keys:
            assert terms[key].item() == pytest.approx(epoch / 20 * full[key].item(), rel=1e-6)
    later = method(student, teacher, targets, 200)
    for key in keys:
        assert later[key].item() == pytest.approx(full[key].item(), rel=1e-7)
    short = get_method(name, warmup=2)
    assert short(student, teacher, targets, 1)[keys[0]].item() == pytest.approx(full[keys[0]].item() / 2, rel=1e-6)
    assert short(student, teacher, targets, 2)[keys[0]].item() == pytest.approx(full[keys[0]].item(), rel=1e-6)


def test_no_warmup_by_default_for_kd_but_available():
    student, teacher, targets = batch(seed=4)
    assert get_method("kd")(student, teacher, targets, 1)["kd"].item() == pytest.approx(
        0.9 * kd_loss(student, teacher, 4.0).item(), rel=1e-6)
    assert get_method("kd", warmup=4)(student, teacher, targets, 1)["kd"].item() == pytest.approx(
        0.9 / 4 * kd_loss(student, teacher, 4.0).item(), rel=1e-6)


def test_gamma_is_an_alternative_to_temperature_for_ttm_and_wttm():
    assert get_method("ttm", gamma=0.2).hparams["temperature"] == pytest.approx(5.0)
    assert get_method("wttm", gamma=0.5).hparams["temperature"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="either temperature or gamma"):
        get_method("ttm", gamma=0.2, temperature=5.0)
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        get_method("wttm", gamma=0.0)
    with pytest.raises(ValueError, match="unknown keyword"):
        get_method("kd", gamma=0.25)


def test_dtkd_last_temperatures_and_detach_override():
    student, teacher, targets = batch(seed=5)
    student = student.abs() + 0.1
    teacher = teacher.abs() + 0.1
    method = get_method("dtkd")
    assert method.last_temperatures is None
    method(student, teacher, targets, 20)
    _, student_t = dtkd_temperatures(student, teacher, 4.0)
    torch.testing.assert_close(method.last_temperatures, student_t.reshape(-1), rtol=0, atol=0)
    assert not method.last_temperatures.requires_grad
    grads = []
    for detach in (False, True):
        leaf = student.clone().requires_grad_(True)
        sum(get_method("dtkd", detach=detach)(leaf, teacher, targets, 20).values()).backward()
        grads.append(leaf.grad)
    assert (grads[0] - grads[1]).abs().max() > 1e-6
    assert get_method("kd").last_temperatures is None


def test_ctkd_learnable_temperature_is_a_parameter_with_reversed_gradient():
    student, teacher, targets = batch(seed=6)
    method = get_method("ctkd")
    parameters = list(method.parameters())
    assert len(parameters) == 1 and "temperature_module.theta" in method.state_dict()
    assert len(list(get_method("kd").parameters())) == 0
    terms = method(student, teacher, targets, 10)  # lambda(10) = -1: full reversal
    assert method.last_temperatures.item() == pytest.approx(list_methods()["ctkd"]["temperature"], rel=1e-6)
    assert terms["kd"].item() == pytest.approx(0.9 * kd_loss(student, teacher, method.last_temperatures.item()).item(), rel=1e-5)
    sum(terms.values()).backward()
    theta = torch.tensor(1.0, requires_grad=True)
    (0.9 * kd_loss(student, teacher, 1 + 20 * torch.sigmoid(theta))).backward()
    assert parameters[0].grad.item() == pytest.approx(-theta.grad.item(), rel=1e-5)
    # one SGD step moves tau so that the KD loss goes up (gradient ascent for the temperature)
    before = kd_loss(student, teacher, method.temperature_module(10)).item()
    with torch.no_grad():
        parameters[0] -= 1.0 * parameters[0].grad
    assert kd_loss(student, teacher, method.temperature_module(10)).item() > before


def test_ctkd_temperature_override_sets_the_initial_temperature():
    method = get_method("ctkd", temperature=4.0)
    assert method.temperature_module(1).item() == pytest.approx(4.0, rel=1e-6)
    assert get_method("ctkd", t_span=10.0).hparams["temperature"] == pytest.approx(1 + 10 / (1 + math.exp(-1)))
    with pytest.raises(ValueError, match=r"must lie in \(t_min, t_min \+ t_span\)"):
        get_method("ctkd", temperature=30.0)


def test_methods_without_teacher_accept_none():
    student, _, targets = batch()
    assert set(get_method("ce")(student, None, targets, 1)) == {"ce"}
    with pytest.raises(ValueError, match="teacher_logits must be a tensor"):
        get_method("kd")(student, None, targets, 1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_logits(dtype):
    student, teacher, targets = batch()
    for name in NAMES:
        terms = get_method(name)(student.to(dtype), teacher.to(dtype), targets, 30)
        for value in terms.values():
            assert value.dtype == torch.float32 and torch.isfinite(value)


def test_kd_method_pulls_free_logits_to_the_teacher():
    _, teacher, targets = batch(seed=7)
    student = torch.zeros_like(teacher, requires_grad=True)
    method = get_method("kd", ce_weight=0.0)
    optimizer = torch.optim.SGD([student], lr=6.0)
    start = kd_loss(student, teacher, 4.0).item()
    for _ in range(60):
        optimizer.zero_grad()
        sum(method(student, teacher, targets, 1).values()).backward()
        optimizer.step()
    assert kd_loss(student, teacher, 4.0).item() < 0.01 * start


# --- bad input ----------------------------------------------------------------------------------------------

def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match=r"name must be one of \['ce', 'ctkd', 'dkd'"):
        get_method("fitnet")


def test_unknown_keyword_lists_known_keywords():
    with pytest.raises(ValueError, match=r"unknown keyword\(s\) \['lr'\] for method 'kd'.*known keywords: \['ce_weight', 'kd_weight', 'temperature', 'warmup'\]"):
        get_method("kd", lr=0.1)
    with pytest.raises(ValueError, match="does not use a temperature"):
        get_method("ce", temperature=4.0)
    with pytest.raises(ValueError, match="does not use a temperature"):
        get_method("label_smoothing", temperature=4.0)


@pytest.mark.parametrize(
    "name, overrides, message",
    [
        ("kd", {"temperature": 0.0}, "temperature must be a finite number > 0"),
        ("kd", {"temperature": math.inf}, "temperature must be a finite number > 0"),
        ("kd", {"temperature": "4"}, "temperature must be a finite number > 0"),
        ("kd", {"kd_weight": -1.0}, "kd_weight must be a finite number >= 0"),
        ("dkd", {"warmup": math.nan}, "warmup must be a finite number >= 0"),
        ("dtkd", {"detach": "yes"}, "detach must be True or False"),
        ("label_smoothing", {"smoothing": 1.5}, r"smoothing must be a number in \[0, 1\]"),
    ],
)
def test_bad_override_values(name, overrides, message):
    # a value of the wrong kind ("4", "yes") is a TypeError, a number out of range a ValueError
    with pytest.raises((TypeError, ValueError), match=message):
        get_method(name, **overrides)


def test_bad_call_arguments():
    student, teacher, targets = batch()
    method = get_method("kd")
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 9\]"):
        method(student, teacher, targets + 10, 1)
    with pytest.raises(TypeError, match="targets must be an integer tensor"):
        method(student, teacher, targets.float(), 1)
    with pytest.raises(ValueError, match="epoch must be a finite number >= 0"):
        method(student, teacher, targets, -1)
    with pytest.raises(ValueError, match="same shape"):
        method(student, teacher[:, :5], targets, 1)
    with pytest.raises(TypeError, match="student_logits must be a floating-point tensor"):
        get_method("ce")(targets.view(-1, 1).repeat(1, 10), None, targets, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_teacher_logits_made_under_inference_mode_work_for_every_method(dtype):
    # The trainer computes teacher logits under torch.inference_mode; autograd must not try to save them.
    student, teacher, targets = batch(seed=8)
    with torch.inference_mode():
        teacher = teacher.to(dtype) * 1.0
    student = student.to(dtype).requires_grad_(True)
    for name in NAMES:
        sum(get_method(name)(student, teacher, targets, 3).values()).backward()
    assert torch.isfinite(student.grad).all()


def test_normkd_recipe_is_the_official_config():
    assert list_methods()["normkd"] == {"temperature": 2.0, "ce_weight": 0.1, "kd_weight": 0.9, "warmup": 0}
    student, teacher, targets = batch(seed=4)
    terms = get_method("normkd", temperature=3.0)(student, teacher, targets, epoch=1)
    assert list(terms) == ["ce", "normkd"]
    torch.testing.assert_close(terms["ce"], 0.1 * F.cross_entropy(student, targets))
    torch.testing.assert_close(terms["normkd"], 0.9 * normkd_loss(student, teacher, 3.0))


def test_unregister_method_removes_an_added_method_and_restores_a_replaced_built_in():
    import kdlab

    def doubled_ce(student_logits, teacher_logits, targets, epoch, ce_weight):
        return {"ce": 2 * ce_weight * kdlab.losses.cross_entropy(student_logits, targets)}

    kdlab.register_method("doubled_ce", doubled_ce, {"ce_weight": 1.0}, needs_teacher=False)
    assert "doubled_ce" in kdlab.list_methods()
    kdlab.unregister_method("doubled_ce")
    assert "doubled_ce" not in kdlab.list_methods()
    with pytest.raises(ValueError, match="name must be a registered method"):
        kdlab.unregister_method("doubled_ce")
    with pytest.raises(ValueError, match="'kd' is a built-in method"):
        kdlab.unregister_method("kd")
    built_in = get_method("ce").terms
    kdlab.register_method("ce", doubled_ce, {"ce_weight": 1.0}, needs_teacher=False)
    assert get_method("ce").terms is doubled_ce
    kdlab.unregister_method("ce")
    assert get_method("ce").terms is built_in and kdlab.list_methods()["ce"] == {"ce_weight": 1.0}
