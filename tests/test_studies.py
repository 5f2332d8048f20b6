"""Tests for kdlab.studies: the teacher-distribution ablations, entropy matching, coarse labels, the
verdict rules, and (marked slow) the study runners and the ``kdlab study`` command on a tiny grid."""
import math

import pandas as pd
import pytest
import torch

from kdlab.studies import (
    CIFAR100_SUPERCLASSES,
    DIGIT_GROUPS,
    STUDY_SETTINGS,
    AblatedTeacher,
    best_temperature,
    coarsen,
    conclude_best_temperature_shift,
    conclude_entropy,
    conclude_methods,
    conclude_optimizers,
    conclude_relational,
    conclude_training_length,
    at_best_lr,
    entropy_matched_smoothing,
    keep_top_k_flat_tail,
    flatten_non_target,
    label_smoothing_distribution,
    lr_edge_note,
    run_study,
    scale_of,
    shuffle_non_target,
    sorted_distribution,
    study_results,
    study_settings,
    summarize,
    truncate_top_k,
)
from kdlab.temperature import entropy, smoothing_for_entropy, tempered_softmax


def _probs(batch=6, classes=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, classes, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, classes, (batch,), generator=generator)
    return torch.softmax(logits, dim=1), targets


# ----------------------------------------------------------------------------------------------------------
# Ablations

def test_shuffle_keeps_target_and_multiset_of_others_and_entropy():
    probs, targets = _probs()
    shuffled = shuffle_non_target(probs, targets, torch.Generator().manual_seed(3))
    rows = torch.arange(len(targets))
    assert torch.equal(shuffled[rows, targets], probs[rows, targets])
    for i, y in enumerate(targets.tolist()):
        others = [k for k in range(probs.shape[1]) if k != y]
        assert torch.equal(shuffled[i, others].sort().values, probs[i, others].sort().values)
    torch.testing.assert_close(entropy(shuffled), entropy(probs), rtol=0, atol=1e-12)
    # It really permutes: with 7 classes and 6 samples, some non-target probability moves.
    assert not torch.equal(shuffled, probs)


def test_shuffle_is_reproducible_with_a_seeded_generator_and_uniform_over_placements():
    probs, targets = _probs(batch=1, classes=4)
    first = shuffle_non_target(probs, targets, torch.Generator().manual_seed(5))
    again = shuffle_non_target(probs, targets, torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    # Over many draws each of the 3 non-target probabilities lands in each non-target slot ~1/3 of the time.
    generator = torch.Generator().manual_seed(0)
    many = shuffle_non_target(probs.expand(3000, 4).clone(), targets.expand(3000).clone(), generator)
    y = int(targets)
    largest_other = max(float(probs[0, k]) for k in range(4) if k != y)
    for slot in (k for k in range(4) if k != y):
        share = float((many[:, slot] == largest_other).double().mean())
        assert abs(share - 1 / 3) < 0.04  # binomial sd ~0.009


def test_flatten_keeps_target_confidence_and_is_uniform_elsewhere():
    probs, targets = _probs()
    flat = flatten_non_target(probs, targets)
    rows = torch.arange(len(targets))
    torch.testing.assert_close(flat.sum(1), torch.ones(len(targets), dtype=flat.dtype), rtol=0, atol=1e-12)
    assert torch.equal(flat[rows, targets], probs[rows, targets])
    mask = torch.ones_like(flat, dtype=torch.bool)
    mask[rows, targets] = False
    others = flat[mask].view(len(targets), -1)
    torch.testing.assert_close(others, others[:, :1].expand_as(others), rtol=0, atol=1e-15)
    # Flattening maximises the entropy among distributions with the same target probability.
    assert bool((entropy(flat) >= entropy(probs) - 1e-12).all())


def test_truncate_top_k_keeps_the_k_largest_renormalised():
    probs = torch.tensor([[0.5, 0.2, 0.2, 0.1], [0.05, 0.6, 0.05, 0.3]], dtype=torch.float64)
    top2 = truncate_top_k(probs, 2)
    expected = torch.tensor([[0.5 / 0.7, 0.2 / 0.7, 0.0, 0.0], [0.0, 0.6 / 0.9, 0.0, 0.3 / 0.9]], dtype=torch.float64)
    torch.testing.assert_close(top2, expected, rtol=0, atol=1e-12)
    assert torch.equal(truncate_top_k(probs, 4), probs / probs.sum(1, keepdim=True))
    # k = 1 is the teacher's hard label.
    assert torch.equal(truncate_top_k(probs, 1), torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]], dtype=torch.float64))
    # Truncation commutes with temperature: top-k of softmax(v / T) = softmax of the top-k logits at T.
    logits = torch.tensor([[2.0, 1.0, -0.5, 0.3]], dtype=torch.float64)
    masked = torch.tensor([[2.0, 1.0, -math.inf, 0.3]], dtype=torch.float64)
    torch.testing.assert_close(truncate_top_k(tempered_softmax(logits, 3.0), 3), torch.softmax(masked / 3.0, 1),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("bad", [0, 5, 1.5, True])
def test_truncate_top_k_rejects_bad_k(bad):
    probs, _ = _probs(classes=4)
    with pytest.raises(ValueError, match="k must be"):
        truncate_top_k(probs, bad)


def test_ablation_functions_reject_bad_targets():
    probs, targets = _probs()
    with pytest.raises(ValueError, match="targets must"):
        flatten_non_target(probs, targets.float())
    with pytest.raises(ValueError, match="targets must lie"):
        shuffle_non_target(probs, targets + 7)
    with pytest.raises(ValueError, match="probs must"):
        flatten_non_target(probs[0], targets)


def test_keep_top_k_flat_tail_keeps_the_top_k_and_the_tail_mass():
    probs, _ = _probs()
    kept = keep_top_k_flat_tail(probs, 3)
    torch.testing.assert_close(kept.sum(1), torch.ones(len(probs), dtype=probs.dtype))
    top = probs.topk(3, dim=1)
    assert torch.equal(kept.gather(1, top.indices), top.values)
    tail = torch.ones_like(probs, dtype=torch.bool).scatter_(1, top.indices, False)
    expected = (1 - top.values.sum(1)) / 4
    for i in range(len(probs)):
        torch.testing.assert_close(kept[i, tail[i]], expected[i].expand(4))
    assert bool((kept > 0).all())  # unlike truncate_top_k, no zero targets
    assert torch.equal(keep_top_k_flat_tail(probs, 7), probs)
    with pytest.raises(ValueError, match="k must be"):
        keep_top_k_flat_tail(probs, 0)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 16.0])
def test_ablated_teacher_smooth_and_top_k_tail_are_their_targets_at_their_temperature(temperature):
    teacher, images, logits = _teacher_and_images()
    logits = logits.double()
    smooth = AblatedTeacher(teacher, "smooth", temperature=temperature, smoothing=0.2)
    got = tempered_softmax(smooth(images).double(), temperature)
    expected = torch.full_like(got, 0.2 / 6).scatter_(1, logits.argmax(1, keepdim=True), 0.8 + 0.2 / 6)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    tail = AblatedTeacher(teacher, "top_k_tail", k=2, temperature=temperature)
    torch.testing.assert_close(tempered_softmax(tail(images).double(), temperature),
                               keep_top_k_flat_tail(tempered_softmax(logits, temperature), 2), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="smoothing must be"):
        AblatedTeacher(teacher, "smooth", temperature=temperature)
    with pytest.raises(ValueError, match="temperature must be"):
        AblatedTeacher(teacher, "top_k_tail", k=2)


def test_ablated_teacher_shuffle_does_not_depend_on_call_history():
    teacher, images, _ = _teacher_and_images()
    shuffled = AblatedTeacher(teacher, "shuffle", seed=4)
    first = shuffled(images)
    shuffled(images[:3])  # another call in between
    assert torch.equal(shuffled(images), first)
    assert not torch.equal(AblatedTeacher(teacher, "shuffle", seed=5)(images), first)


class _LinearTeacher(torch.nn.Module):
    """A stand-in teacher: fixed logits per image index (images are (B, 1, 1, 1) tensors holding the index)."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("table", logits)

    def forward(self, images):
        return self.table[images.flatten().long()]


def _teacher_and_images(batch=8, classes=6, seed=2):
    generator = torch.Generator().manual_seed(seed)
    logits = 4 * torch.randn(batch, classes, generator=generator)
    return _LinearTeacher(logits), torch.arange(batch, dtype=torch.float32).view(-1, 1, 1, 1), logits


@pytest.mark.parametrize("temperature", [1.0, 4.0, 16.0])
def test_ablated_teacher_shuffle_and_top_k_hold_at_every_temperature(temperature):
    teacher, images, logits = _teacher_and_images()
    targets = logits.argmax(1)
    rows = torch.arange(len(targets))
    original = tempered_softmax(logits.double(), temperature)

    shuffled = tempered_softmax(AblatedTeacher(teacher, "shuffle", seed=1)(images).double(), temperature)
    torch.testing.assert_close(shuffled[rows, targets], original[rows, targets], rtol=0, atol=1e-6)
    torch.testing.assert_close(shuffled.sort(1).values, original.sort(1).values, rtol=0, atol=1e-6)
    assert not torch.allclose(shuffled, original, atol=1e-3)

    top_logits = AblatedTeacher(teacher, "top_k", k=2)(images)
    top = tempered_softmax(top_logits.double(), temperature)
    torch.testing.assert_close(top, truncate_top_k(original, 2), rtol=0, atol=1e-6)
    # In float32 (what training uses) the probabilities outside the top 2 are exactly zero.
    assert int((tempered_softmax(top_logits, temperature) > 0).sum(1).max()) == 2


def test_ablated_teacher_flatten_keeps_the_tempered_confidence_at_its_temperature():
    teacher, images, logits = _teacher_and_images()
    flat_logits = AblatedTeacher(teacher, "flatten", temperature=4.0)(images)
    flat = tempered_softmax(flat_logits.double(), 4.0)
    torch.testing.assert_close(flat, flatten_non_target(tempered_softmax(logits.double(), 4.0), logits.argmax(1)),
                               rtol=0, atol=1e-6)
    assert flat_logits.dtype == logits.dtype and bool(torch.isfinite(flat_logits).all())


def test_ablated_teachers_give_finite_kd_losses_and_distinct_states():
    from kdlab.losses import kd_loss

    teacher, images, logits = _teacher_and_images()
    student = torch.randn_like(logits)
    ablated = {
        "shuffle": AblatedTeacher(teacher, "shuffle"),
        "top_k": AblatedTeacher(teacher, "top_k", k=1),
        "flatten": AblatedTeacher(teacher, "flatten", temperature=2.0),
    }
    for model in ablated.values():
        loss = kd_loss(student, model(images), temperature=2.0)
        assert bool(torch.isfinite(loss)) and float(loss) > 0
    states = [model.state_dict()["ablation_settings"].tolist() for model in ablated.values()]
    assert len({tuple(s) for s in states}) == 3


def test_ablated_teacher_validates_its_arguments():
    teacher, _, _ = _teacher_and_images()
    with pytest.raises(ValueError, match="ablation must be one of"):
        AblatedTeacher(teacher, "blur")
    with pytest.raises(ValueError, match="temperature must be a finite number > 0 for ablation 'flatten'"):
        AblatedTeacher(teacher, "flatten")
    with pytest.raises(ValueError, match="k must be"):
        AblatedTeacher(teacher, "top_k", k=0)
    with pytest.raises(TypeError, match="teacher must be an nn.Module"):
        AblatedTeacher("cnn", "shuffle")


# ----------------------------------------------------------------------------------------------------------
# Study 4: entropy matching

def test_sorted_distribution_and_label_smoothing_distribution():
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.3, 0.3, 0.4]], dtype=torch.float64)
    torch.testing.assert_close(sorted_distribution(probs), torch.tensor([0.55, 0.25, 0.2], dtype=torch.float64))
    assert sorted_distribution(probs, top=2).shape == (2,)
    smooth = label_smoothing_distribution(5, 0.1)
    torch.testing.assert_close(smooth, torch.tensor([0.92, 0.02, 0.02, 0.02, 0.02], dtype=torch.float64))
    # research notes §3: K = 5, eps = 0.1 has entropy 0.38967.
    assert abs(float(entropy(smooth)) - 0.38967) < 1e-5
    with pytest.raises(ValueError, match="smoothing must be"):
        label_smoothing_distribution(5, 1.5)


def test_entropy_matched_smoothing_has_the_teachers_mean_entropy_and_grows_with_temperature():
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(50, 10, generator=generator)
    table = entropy_matched_smoothing(logits, [1, 2, 4, 8])
    assert list(table.columns) == ["temperature", "teacher_entropy", "teacher_confidence", "smoothing",
                                   "smoothing_confidence"]
    for row in table.itertuples():
        expected = float(entropy(tempered_softmax(logits.double(), row.temperature)).mean())
        assert abs(row.teacher_entropy - expected) < 1e-9
        assert abs(float(entropy(label_smoothing_distribution(10, row.smoothing))) - expected) < 1e-6
        assert abs(row.smoothing - smoothing_for_entropy(10, expected)) < 1e-12
    assert table["smoothing"].is_monotonic_increasing and table["teacher_entropy"].is_monotonic_increasing
    with pytest.raises(ValueError, match="temperatures must be"):
        entropy_matched_smoothing(logits, [1, -2])


# ----------------------------------------------------------------------------------------------------------
# Study 6: coarse labels

def test_coarsen_maps_each_digit_to_its_group():
    from kdlab.data import load_dataset

    dataset = load_dataset("mnist10k")
    coarse = coarsen(dataset)
    assert coarse.num_classes == len(DIGIT_GROUPS) == 5
    assert coarse.classes == ["4+9", "3+5", "1+7", "0+6", "2+8"]
    for group_index, group in enumerate(DIGIT_GROUPS):
        for digit in group:
            assert bool((coarse.train_targets[dataset.train_targets == digit] == group_index).all())
            assert bool((coarse.test_targets[dataset.test_targets == digit] == group_index).all())
    assert coarse.train_images is dataset.train_images  # shared, not copied
    with pytest.raises(ValueError, match="exactly one group"):
        coarsen(dataset, [(0, 1), (1, 2, 3, 4, 5, 6, 7, 8, 9)])
    with pytest.raises(ValueError, match="cover every class"):
        coarsen(dataset, [(0, 1), (2, 3)])
    with pytest.raises(ValueError, match="not in dataset.classes"):
        coarsen(dataset, {"a": ("0", "x")})


def test_cifar100_superclasses_cover_100_distinct_fine_classes_in_20_groups_of_5():
    fine = [name for members in CIFAR100_SUPERCLASSES.values() for name in members]
    assert len(CIFAR100_SUPERCLASSES) == 20
    assert all(len(members) == 5 for members in CIFAR100_SUPERCLASSES.values())
    assert len(set(fine)) == 100
    # A few well-known memberships of the official coarse labels.
    assert "whale" in CIFAR100_SUPERCLASSES["aquatic_mammals"]
    assert "maple_tree" in CIFAR100_SUPERCLASSES["trees"]
    assert "pickup_truck" in CIFAR100_SUPERCLASSES["vehicles_1"]


# ----------------------------------------------------------------------------------------------------------
# Summaries and verdicts (synthetic results: the rules, not the training)

def _frame(rows, columns):
    """rows: (config..., seed, epoch, test_acc)."""
    return pd.DataFrame(rows, columns=columns + ["seed", "epoch", "test_acc"])


def test_summarize_uses_the_last_epoch_and_the_sample_std():
    frame = _frame([(1.0, 0, 1, 10.0), (1.0, 0, 2, 80.0), (1.0, 1, 1, 20.0), (1.0, 1, 2, 84.0)], ["temperature"])
    last = summarize(frame, "temperature")
    assert last.loc[0, "mean"] == 82.0 and abs(last.loc[0, "std"] - math.sqrt(8.0)) < 1e-12 and last.loc[0, "n"] == 2
    early = summarize(frame, "temperature", epoch=1)
    assert early.loc[0, "mean"] == 15.0
    with pytest.raises(ValueError, match="epoch 7 is not in results"):
        summarize(frame, "temperature", epoch=7)
    with pytest.raises(ValueError, match="columns"):
        summarize(frame, "method")


_NOISE = (-1.0, 0.5, 2.0, -0.7, 1.2)  # a large between-seed spread, shared by the paired runs of a seed


def test_best_temperature_uses_paired_comparisons():
    rows = []
    for seed, noise in enumerate(_NOISE):
        rows += [(1.0, seed, 1, 70.0 + noise), (2.0, seed, 1, 80.0 + noise), (4.0, seed, 1, 79.9 + noise + 0.3 * (-1) ** seed)]
    best, tied, table = best_temperature(_frame(rows, ["temperature"]))
    assert best == 2.0 and tied == [2.0, 4.0]  # T = 4 within noise of the best, T = 1 clearly worse
    assert table.set_index("temperature").loc[1.0, "verdict"] == "worse"


def test_at_best_lr_keeps_each_groups_own_best_rate():
    rows = []
    for seed, noise in enumerate(_NOISE[:3]):
        for t in (1.0, 4.0):
            rows += [("kd", 0.01, t, seed, 1, 80 + noise), ("kd", 0.1, t, seed, 1, 85 + noise),
                     ("ttm", 0.01, t, seed, 1, 88 + noise), ("ttm", 0.1, t, seed, 1, 60 + noise)]
    kept, choice = at_best_lr(_frame(rows, ["method", "lr", "temperature"]), "method")
    assert choice.set_index("method")["lr"].to_dict() == {"kd": 0.1, "ttm": 0.01}
    assert len(kept) == 2 * 2 * 3 and set(zip(kept["method"], kept["lr"])) == {("kd", 0.1), ("ttm", 0.01)}
    with pytest.raises(ValueError, match="'lr'"):
        at_best_lr(_frame(rows, ["method", "lr", "temperature"]).drop(columns="lr"), "method")


def _methods_results(dtkd_shift, seeds=5):
    rows = []
    for seed, noise in enumerate(_NOISE[:seeds]):
        for t, kd in ((1.0, 80.0), (4.0, 85.0)):
            rows.append(("kd", t, seed, 1, kd + noise))
            rows.append(("dtkd", t, seed, 1, kd + dtkd_shift + noise + 0.1 * (-1) ** seed))
    return _frame(rows, ["method", "temperature"])


def test_conclude_methods_through_paired_comparisons():
    verdict = conclude_methods(_methods_results(-0.5))
    assert verdict.agrees is True and verdict.source == "summary"  # dtkd's worst case is worse than kd's
    assert "AGREES" in str(verdict) and "third-party summary" in str(verdict)
    verdict = conclude_methods(_methods_results(+5.0))
    assert verdict.agrees is False and "Better than kd at every temperature: dtkd" in verdict.text
    assert conclude_methods(_methods_results(0.0)).agrees is None  # within noise: no verdict either way
    # A constant +0.5 under a between-seed spread of 3 points is found by pairing, not hidden by the spread.
    assert conclude_methods(_methods_results(+0.5)).agrees is False
    one_seed = conclude_methods(_methods_results(+5.0, seeds=1))
    assert one_seed.agrees is None and set(one_seed.table["verdict"]) == {"inconclusive"}


def test_conclude_methods_says_when_it_rests_on_a_rate_at_the_grids_edge():
    frame = _methods_results(+0.5).assign(lr=lambda f: f["method"].map({"kd": 0.03, "dtkd": 0.01}))
    verdict = conclude_methods(frame, lr_grid=(0.01, 0.03))
    assert verdict.agrees is False and "Caveat: this rests on kd at the grid's largest rate (0.03)" in verdict.text
    assert "Caveat" not in conclude_methods(frame, lr_grid=(0.01, 0.03, 0.1)).text  # kd's rate inside the grid
    assert "Caveat" not in conclude_methods(frame).text
    agreeing = _methods_results(-0.5).assign(lr=lambda f: f["method"].map({"kd": 0.03, "dtkd": 0.01}))
    assert "dtkd at the grid's smallest rate (0.01)" in conclude_methods(agreeing, lr_grid=(0.01, 0.03)).text


def test_lr_edge_note_names_choices_at_either_end_of_the_grid():
    results = pd.DataFrame({"method": ["kd"] * 3 + ["ttm"] * 3 + ["dkd"] * 3, "lr": [0.01, 0.03, 0.1] * 3})
    choice = pd.DataFrame({"method": ["kd", "ttm", "dkd"], "lr": [0.1, 0.03, 0.01], "mean": [1.0, 2.0, 3.0]})
    note = lr_edge_note(choice, results)
    assert note.startswith("Best rate at the top of its grid: kd at 0.1 (grid 0.01, 0.03, 0.1). At the bottom of "
                           "its grid: dkd at 0.01 (grid 0.01, 0.03, 0.1). A rate outside its grid")
    assert "ttm" not in note and "every choice is at an edge" not in note
    assert lr_edge_note(choice[choice["method"] == "ttm"], results) == ""
    # Each group's grid is named beside it (the optimizers have different grids).
    two = pd.DataFrame({"optimizer": ["adamw"] * 4 + ["sgd"] * 4, "batch_size": [32, 32, 128, 128] * 2,
                        "lr": [0.001, 0.003] * 2 + [0.01, 0.03] * 2})
    choice = pd.DataFrame({"optimizer": ["adamw", "adamw", "sgd", "sgd"], "batch_size": [32, 128, 32, 128],
                           "lr": [0.003, 0.003, 0.01, 0.03], "mean": [1.0] * 4})
    note = lr_edge_note(choice, two)
    assert ("top of its grid: adamw batch 32, adamw batch 128 at 0.003 (grid 0.001, 0.003); sgd batch 128 at 0.03 "
            "(grid 0.01, 0.03). At the bottom of its grid: sgd batch 32 at 0.01 (grid 0.01, 0.03).") in note
    assert note.endswith("with two rates every choice is at an edge.")


def test_scale_of_reads_the_dataset_or_the_student():
    assert scale_of(pd.DataFrame({"dataset": ["cifar100"], "student": ["resnet8x4"]})) == "cifar100"
    assert scale_of(pd.DataFrame({"student": ["mlp64"]})) == "mnist10k"
    assert scale_of(pd.DataFrame({"student": ["resnet8x4"]})) == "cifar100"
    with pytest.raises(ValueError, match="dataset"):
        scale_of(pd.DataFrame({"student": ["mlp16"]}))


def test_the_first_rate_of_each_method_grid_is_the_student_recipes():
    from kdlab.common import RECIPES

    assert STUDY_SETTINGS["mnist10k"]["method_lrs"][0] == RECIPES["mnist10k"]["student"]["lr"]
    assert STUDY_SETTINGS["cifar100"]["method_lrs"][0] == RECIPES["cifar"]["student"]["lr"]


def _optimizer_results(sgd_spread, adamw_spread):
    rows = []
    for seed, noise in enumerate(_NOISE):
        for t, shape in ((1.0, 0.0), (8.0, 1.0)):
            for epoch in (1, 3):
                wobble = 0.1 * (-1) ** seed
                rows.append(("sgd", 64, t, seed, epoch, 80 - sgd_spread * shape + noise + epoch + wobble * shape))
                rows.append(("adamw", 64, t, seed, epoch, 80 - adamw_spread * shape + noise + epoch - wobble * shape))
    return pd.DataFrame(rows, columns=["optimizer", "batch_size", "temperature", "seed", "epoch", "test_acc"])


def test_conclude_optimizers():
    assert conclude_optimizers(_optimizer_results(sgd_spread=6, adamw_spread=1)).agrees is True
    assert conclude_optimizers(_optimizer_results(sgd_spread=1, adamw_spread=6)).agrees is False
    assert conclude_optimizers(_optimizer_results(sgd_spread=1.05, adamw_spread=1.0)).agrees is None
    verdict = conclude_optimizers(_optimizer_results(sgd_spread=6, adamw_spread=1))
    assert "AdamW less sensitive" in verdict.text and list(verdict.table["verdict"]) == ["better"]


def test_conclude_optimizers_is_judged_at_every_batch_size():
    one = _optimizer_results(sgd_spread=6, adamw_spread=1)
    tied = _optimizer_results(sgd_spread=1.05, adamw_spread=1.0).assign(batch_size=128)
    mixed = conclude_optimizers(pd.concat([one, tied], ignore_index=True))
    assert mixed.agrees is None and "By batch size: agrees at batch 64 only; inconclusive at batch 128." in mixed.text
    both = conclude_optimizers(pd.concat([one, one.assign(batch_size=128)], ignore_index=True))
    assert both.agrees is True and "agrees at every batch size (64, 128)" in both.text
    worse = _optimizer_results(sgd_spread=1, adamw_spread=6).assign(batch_size=128)
    assert conclude_optimizers(pd.concat([one, worse], ignore_index=True)).agrees is False


def _length_results(early_large=60.0):
    rows = []
    for seed, noise in enumerate(_NOISE):
        for t in (1.0, 8.0):
            rows.append(("sgd", 64, t, seed, 1, (70.0 if t == 1.0 else early_large) + noise))
            rows.append(("sgd", 64, t, seed, 5, (80.0 if t == 1.0 else 85.0) + noise + 0.2 * (-1) ** seed))
    return pd.DataFrame(rows, columns=["optimizer", "batch_size", "temperature", "seed", "epoch", "test_acc"])


def test_conclude_training_length_requires_small_temperatures_best_early_at_every_batch_size():
    # T = 8 gains more from the extra epochs, but it is already better than T = 1 early: not what is claimed.
    early_large = conclude_training_length(_length_results(early_large=75.0), early_epoch=1)
    assert early_large.agrees is False and "better than T = 1 at epoch 1: T = {8}" in early_large.text
    # Agrees at one batch size, inconclusive at the other: inconclusive overall, and the text says where.
    good = _length_results()
    flat = good.assign(batch_size=128)
    flat.loc[(flat["temperature"] == 8.0), "test_acc"] = flat.loc[flat["temperature"] == 1.0, "test_acc"].values
    flat.loc[(flat["temperature"] == 8.0), "test_acc"] += [0.1 * (-1) ** s for s in flat.loc[flat["temperature"] == 8.0, "seed"]]
    mixed = conclude_training_length(pd.concat([good, flat], ignore_index=True), early_epoch=1)
    assert mixed.agrees is None and "agrees at batch 64 only; inconclusive at batch 128" in mixed.text
    # Another optimizer is our contrast, not the summary's claim.
    contrast = conclude_training_length(good.assign(optimizer="adamw"), early_epoch=1, optimizer="adamw")
    assert contrast.source == "contrast" and contrast.label == "holds"
    assert str(contrast).startswith("Our contrast: the summary's SGD sentence, tried on AdamW (the summary does "
                                    "not say it for AdamW): with AdamW, small temperatures")
    assert "third-party" not in str(contrast)
    assert "Result: HOLDS" in str(contrast) and "holds at batch 64" in contrast.text


def test_conclude_training_length_compares_the_gains_of_larger_temperatures():
    rows = []
    for seed, noise in enumerate(_NOISE):
        for t in (1.0, 8.0):
            rows.append(("sgd", 64, t, seed, 1, (70.0 if t == 1.0 else 60.0) + noise))  # small T best early
            rows.append(("sgd", 64, t, seed, 5, (80.0 if t == 1.0 else 85.0) + noise + 0.2 * (-1) ** seed))
    frame = pd.DataFrame(rows, columns=["optimizer", "batch_size", "temperature", "seed", "epoch", "test_acc"])
    verdict = conclude_training_length(frame, early_epoch=1)
    assert verdict.agrees is True and "highest mean at epoch 1 T = 1, at epoch 5 T = 8" in verdict.text
    assert "vs T = 1's: larger at T = {8} -> agrees" in verdict.text  # empty parts are left out (no "at no T")
    assert "at no T" not in verdict.text
    flipped = frame.assign(epoch=frame["epoch"].map({1: 5, 5: 1}))
    assert conclude_training_length(flipped, early_epoch=1).agrees is False
    noisy = frame.assign(test_acc=frame["test_acc"] + 20 * frame["seed"] * (frame["temperature"] == 8.0)
                         * (frame["epoch"] == 5) * (-1) ** frame["seed"])
    assert conclude_training_length(noisy, early_epoch=1).agrees is None


def test_conclude_training_length_does_not_agree_when_a_larger_temperature_is_worse_at_the_end():
    # T = 8 gains more from the extra epochs, but T = 1 stays clearly better at the final epoch, and no larger
    # T is better there: the numbers contradict "larger ones later", they do not just fail to show it.
    rows = []
    for seed, noise in enumerate(_NOISE):
        for t in (1.0, 8.0):
            rows.append(("sgd", 64, t, seed, 1, (70.0 if t == 1.0 else 60.0) + noise))
            rows.append(("sgd", 64, t, seed, 5, (85.0 if t == 1.0 else 80.0) + noise + 0.2 * (-1) ** seed))
    frame = pd.DataFrame(rows, columns=["optimizer", "batch_size", "temperature", "seed", "epoch", "test_acc"])
    verdict = conclude_training_length(frame, early_epoch=1)
    assert verdict.agrees is False
    assert "at epoch 5: no T (worse: T = {8})" in verdict.text and "larger at T = {8} -> does not agree" in verdict.text
    contrast = conclude_training_length(frame.assign(optimizer="adamw"), early_epoch=1, optimizer="adamw")
    assert contrast.agrees is False and "Result: DOES NOT HOLD" in str(contrast)


def test_conclude_entropy_and_relational_are_our_hypotheses():
    rows = []
    for seed, noise in enumerate(_NOISE):
        wobble = 0.2 * (-1) ** seed
        rows += [("teacher", 2.0, seed, 1, 85 + noise + wobble), ("label_smoothing", 2.0, seed, 1, 80 + noise),
                 ("teacher", 8.0, seed, 1, 82 + noise + wobble), ("label_smoothing", 8.0, seed, 1, 82.0 + noise)]
    verdict = conclude_entropy(_frame(rows, ["target", "temperature"]))
    assert verdict.agrees is True and "better at T = {2}" in verdict.text and "inconclusive at T = {8}" in verdict.text
    assert verdict.source == "ours" and "Our hypothesis" in str(verdict) and "SUPPORTED" in str(verdict)
    assert "paper claims" not in str(verdict).lower()

    rows = []
    for seed, noise in enumerate(_NOISE):
        wobble = 0.2 * (-1) ** seed
        rows += [("none", 4.0, seed, 1, 85 + noise), ("shuffle", 4.0, seed, 1, 80 + noise + wobble),
                 ("flatten", 4.0, seed, 1, 85 + noise + wobble)]
    frame = _frame(rows, ["ablation", "temperature"])
    verdict = conclude_relational(frame)
    assert verdict.agrees is None and "shuffle: worse than the full teacher at T = {4}" in verdict.text
    assert conclude_relational(frame, ablations=["shuffle"]).agrees is True
    with pytest.raises(ValueError, match="not in results"):
        conclude_relational(frame, ablations=["top3"])
    better_without = frame.assign(test_acc=frame["test_acc"] + 10 * (frame["ablation"] != "none"))
    assert conclude_relational(better_without, ablations=["flatten"]).agrees is False
    smoothing_wins = _frame(rows, ["target", "temperature"]).replace({"none": "label_smoothing", "shuffle": "teacher"})
    assert conclude_entropy(smoothing_wins[smoothing_wins["target"] != "flatten"]).agrees is False


def test_conclude_best_temperature_shift():
    rows = []
    for seed, noise in enumerate(_NOISE):
        wobble = 0.2 * (-1) ** seed
        rows += [("scratch", 1.0, seed, 1, 90 + noise), ("scratch", 8.0, seed, 1, 85 + noise + wobble),
                 ("finetuned", 1.0, seed, 1, 84 + noise), ("finetuned", 8.0, seed, 1, 88 + noise + wobble)]
    frame = _frame(rows, ["teacher", "temperature"])
    verdict = conclude_best_temperature_shift(frame, "teacher", "origin shifts T")
    assert verdict.agrees is True and verdict.source == "ours"
    # Both teachers clearly best at T = 1: no shift.
    same = frame.copy()
    same.loc[(same["teacher"] == "finetuned") & (same["temperature"] == 1.0), "test_acc"] += 10
    assert conclude_best_temperature_shift(same, "teacher", "x").agrees is False
    # The same highest mean, but T = 8 is tied with it for one teacher and worse for the other: the peaks are
    # not located in the same place, so no contradiction either.
    rows = []
    for seed, noise in enumerate(_NOISE):
        wobble = 0.2 * (-1) ** seed
        rows += [("scratch", 1.0, seed, 1, 90 + noise), ("scratch", 8.0, seed, 1, 85 + noise + wobble),
                 ("finetuned", 1.0, seed, 1, 88 + noise), ("finetuned", 8.0, seed, 1, 87.9 + noise + 5 * wobble)]
    ties_differ = _frame(rows, ["teacher", "temperature"])
    verdict = conclude_best_temperature_shift(ties_differ, "teacher", "x")
    assert verdict.agrees is None
    assert "not worse than it: T = {1}" in verdict.text and "not worse than it: T = {1, 8}" in verdict.text
    # Different best temperatures but within the paired noise: inconclusive.
    close = frame.copy()
    close.loc[(close["teacher"] == "finetuned") & (close["temperature"] == 1.0), "test_acc"] += 3.9
    assert conclude_best_temperature_shift(close, "teacher", "x").agrees is None


# ----------------------------------------------------------------------------------------------------------
# Settings, loading saved results

def test_study_settings_and_overrides():
    settings = study_settings("mnist10k", seeds=[0, 1], temperatures=[2, 8])
    assert settings["seeds"] == (0, 1) and settings["temperatures"] == (2.0, 8.0)
    assert set(STUDY_SETTINGS["cifar100"]) == set(STUDY_SETTINGS["mnist10k"])
    assert study_settings("cifar100")["student"] == "resnet8x4"
    with pytest.raises(ValueError, match="unknown study setting"):
        study_settings("mnist10k", temprature=[1])
    with pytest.raises(ValueError, match="scale must be one of"):
        study_settings("imagenet")
    with pytest.raises(ValueError, match="early_epoch must lie"):
        study_settings("mnist10k", early_epoch=20)
    with pytest.raises(ValueError, match="seeds must be"):
        study_settings("mnist10k", seeds=[])


def test_study_results_prefers_a_saved_csv(tmp_path, monkeypatch):
    saved = pd.DataFrame({"study": ["methods"], "config": [0], "method": ["kd"], "temperature": [4.0], "lr": [0.01],
                          "seed": [0], "epoch": [1], "epochs": [1], "test_acc": [12.5]})
    saved.to_csv(tmp_path / "methods.csv", index=False)

    def must_not_run():
        raise AssertionError("the saved file should have been used")

    frame, source = study_results("methods", must_not_run, directory=tmp_path)
    assert source == str(tmp_path / "methods.csv") and frame["test_acc"].tolist() == [12.5]
    monkeypatch.setenv("KDLAB_STUDY_DIR", str(tmp_path))
    assert study_results("methods", must_not_run)[1] == str(tmp_path / "methods.csv")
    computed, source = study_results("training", lambda: saved, directory=tmp_path)
    assert source == "computed here" and computed is saved
    with pytest.raises(ValueError, match="name must be one of"):
        study_results("nope", lambda: saved)


# ----------------------------------------------------------------------------------------------------------
# The runners and the CLI on tiny grids (real training, a few seconds each)

_TINY = dict(seeds=(0, 1), temperatures=(1.0, 4.0), epochs=1, transfer_size=200, training_epochs=2, early_epoch=1,
             student="mlp16", teacher_model="mlp64", teacher_epochs=1, pretrain_epochs=1, finetune_epochs=1,
             method_lrs=(0.01, 0.1), optimizer_lrs={"sgd": (0.01,), "adamw": (0.001, 0.003)})


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    from kdlab.data import load_dataset
    from kdlab.train import train_teacher

    data = load_dataset("mnist10k")
    teacher, _ = train_teacher(data, model="mlp64", epochs=1, cache=False, progress=False)
    return data, teacher, tmp_path_factory.mktemp("study-runs")


@pytest.mark.slow
def test_run_study_methods_and_training_on_a_tiny_grid(tiny_setup):
    data, teacher, out = tiny_setup
    methods = run_study("methods", teacher, data, out=out, progress=False, methods=("kd", "ttm", "dkd"), **_TINY)
    final = methods[methods["epoch"] == methods["epochs"]]
    assert set(methods["study"]) == {"methods"} and len(final) == 3 * 2 * 2 * 2  # methods x T x seeds x lrs
    assert final.groupby(["method", "temperature", "lr"]).size().tolist() == [2] * 12
    assert final["config"].nunique() == 24  # numbered across the study's sweeps
    fair, choice = at_best_lr(methods, "method")
    assert len(choice) == 3 and set(fair.groupby("method")["lr"].nunique()) == {1}
    assert set(final.loc[final["method"] == "ttm", "beta"]) == {3.0}  # STUDY_SETTINGS' method_overrides
    assert bool(final["test_acc"].between(0, 100).all()) and final["test_acc"].max() > 15  # above chance (10 %)
    assert set(final.loc[final["method"] == "dkd", "warmup"]) == {1}
    assert isinstance(conclude_methods(fair).agrees, (bool, type(None)))

    training = run_study("training", teacher, data, out=out, progress=False, **_TINY)
    assert set(training["optimizer"]) == {"sgd", "adamw"} and set(training["batch_size"]) == {32, 128}
    assert set(training["epoch"]) == {1, 2} and set(training["early_epoch"]) == {1}
    assert set(training.loc[training["optimizer"] == "adamw", "lr"]) == {0.001, 0.003}
    assert set(training.loc[training["optimizer"] == "sgd", "lr"]) == {0.01}
    assert len(training) == 3 * 2 * 2 * 2 * 2  # (optimizer, lr) x batch sizes x temperatures x seeds x epochs
    fair, choice = at_best_lr(training, ["optimizer", "batch_size"])
    assert len(choice) == 4 and len(fair) == 2 * 2 * 2 * 2 * 2
    assert conclude_optimizers(fair).table["n"].tolist() == [2, 2]


@pytest.mark.slow
def test_run_study_entropy_and_relational_on_a_tiny_grid(tiny_setup):
    data, teacher, out = tiny_setup
    entropy_frame = run_study("entropy", teacher, data, out=out, progress=False, **_TINY)
    assert set(entropy_frame["target"]) == {"teacher", "label_smoothing"}
    smoothing_rows = entropy_frame[entropy_frame["target"] == "label_smoothing"]
    assert set(entropy_frame["method"]) == {"kd"}  # like with like: both targets distilled with KD at T
    assert set(smoothing_rows["temperature"]) == {1.0, 4.0}  # each epsilon distilled at its temperature
    by_t = smoothing_rows.groupby("temperature")["smoothing"].first()
    assert by_t[1.0] < by_t[4.0]
    for row in smoothing_rows.drop_duplicates("temperature").itertuples():
        assert abs(row.smoothing - smoothing_for_entropy(10, row.teacher_entropy)) < 1e-9

    relational = run_study("relational", teacher, data, out=out, progress=False, top_k=2, **_TINY)
    final = relational[relational["epoch"] == relational["epochs"]]
    assert sorted(set(final["ablation"])) == ["flatten", "none", "shuffle", "top2 + flat tail", "top2 truncated"]
    assert final.groupby("ablation").size().tolist() == [4] * 5  # 2 temperatures x 2 seeds each
    assert final["config"].nunique() == 20
    # The ablated teachers are different teachers: their students differ from the full teacher's.
    full = final[final["ablation"] == "none"].set_index(["temperature", "seed"])["loss"]
    shuffled = final[final["ablation"] == "shuffle"].set_index(["temperature", "seed"])["loss"]
    assert not full.sort_index().equals(shuffled.sort_index())


@pytest.mark.slow
def test_run_study_origin_on_a_tiny_grid(tiny_setup):
    data, teacher, out = tiny_setup
    small = data.transfer_set(2000)  # the study trains its own teachers: keep them cheap
    origin = run_study("origin", teacher, small, out=out, progress=False, **_TINY)
    assert set(origin["teacher"]) == {"scratch", "pretrained+finetuned"}
    assert bool(origin["teacher_acc"].between(30, 100).all())
    assert origin.groupby("teacher")["teacher_acc"].nunique().tolist() == [1, 1]
    final = origin[origin["epoch"] == origin["epochs"]]
    assert final.groupby("teacher").size().tolist() == [4, 4]  # 2 temperatures x 2 seeds per teacher


@pytest.mark.slow
def test_run_study_granularity_on_a_tiny_grid(tiny_setup):
    data, teacher, out = tiny_setup
    small = data.transfer_set(2000)
    granularity = run_study("granularity", teacher, small, out=out, progress=False, **_TINY)
    assert set(granularity["task"]) == {"fine (10 classes)", "coarse (5 groups)"}
    coarse = granularity[granularity["task"] == "coarse (5 groups)"]
    assert coarse["test_acc"].max() > 25  # a 5-class task: above chance (20 %)
    verdict = conclude_best_temperature_shift(granularity, "task", "granularity matters")
    assert verdict.text.count("highest mean at T") == 2


@pytest.mark.slow
def test_cli_study_writes_the_csv_the_notebook_loads(tmp_path, monkeypatch):
    from kdlab.cli import main

    monkeypatch.setenv("KDLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs"
    code = main(["study", "methods", "--teacher", "mlp64", "--teacher-epochs", "1", "--student", "mlp16",
                 "--temperatures", "1", "4", "--seeds", "0", "1", "--epochs", "1", "--transfer-size", "200",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    frame, source = study_results("methods", lambda: None, directory=out)
    assert source == str(out / "methods.csv")
    assert set(frame["dataset"]) == {"mnist10k"} and set(frame["student"]) == {"mlp16"}
    assert set(frame["method"]) == {"kd", "ttm", "wttm", "dtkd", "lskd", "dkd"}
    assert len(frame) == 6 * 2 * 2 * len(STUDY_SETTINGS["mnist10k"]["method_lrs"])  # ... x the learning-rate grid
    assert isinstance(conclude_methods(at_best_lr(frame, "method")[0]).agrees, (bool, type(None)))
    import json

    config = json.loads((out / "config.json").read_text())
    assert config["used"]["teacher"]["model"] == "mlp64" and config["used"]["teacher"]["settings"]["epochs"] == 1
    assert config["device"] == "cpu" and "torch" in config["versions"]
    with pytest.raises(SystemExit):
        main(["study", "nonsense"])


def _cifar_shaped_study_files(folder):
    """The six study files 'kdlab study all --dataset cifar100' writes, with the CIFAR-100 grids of STUDY_SETTINGS
    (temperatures up to 32, rates 0.025-0.1, batch sizes 64/256, top5 ablations), few epochs, random accuracies."""
    import numpy as np

    s = study_settings("cifar100", training_epochs=4, early_epoch=2)
    rng = np.random.default_rng(0)
    base = dict(dataset="cifar100", student=s["student"], method="kd", optimizer="sgd", lr=0.05, batch_size=64,
                weight_decay=5e-4, momentum=0.9, schedule="step")

    def runs(name, configs, epochs=2, **extra):
        rows = [{**base, "study": name, "config": c, **cfg, "seed": seed, "epoch": e, "epochs": epochs,
                 "test_acc": 60 + 5 * e + rng.normal(0, 1)}
                for c, cfg in enumerate(configs) for seed in s["seeds"] for e in range(1, epochs + 1)]
        pd.DataFrame(rows).assign(**extra).to_csv(folder / f"{name}.csv", index=False)

    temps, k = s["temperatures"], s["top_k"]
    runs("methods", [dict(method=m, temperature=t, lr=lr) for m in s["methods"] for t in temps for lr in s["method_lrs"]])
    runs("training", [dict(optimizer=o, batch_size=b, lr=lr, temperature=t) for o in s["optimizers"]
                      for b in s["batch_sizes"] for lr in s["optimizer_lrs"][o] for t in temps],
         epochs=s["training_epochs"], early_epoch=s["early_epoch"])
    runs("entropy", [dict(target=g, temperature=t, teacher_entropy=0.1 * t, smoothing=0.01 * t)
                     for g in ("teacher", "label_smoothing") for t in temps])
    runs("relational", [dict(ablation=a, temperature=t) for t in temps
                        for a in ("none", "shuffle", f"top{k} truncated", "flatten", f"top{k} + flat tail")])
    runs("origin", [dict(teacher=w, temperature=t, teacher_acc=78.0) for w in ("scratch", "pretrained+finetuned")
                    for t in temps])
    runs("granularity", [dict(task=w, temperature=t, teacher_acc=80.0) for w in ("fine (100 classes)", "coarse (20 groups)")
                         for t in temps])


@pytest.mark.slow
def test_notebook_05_recomputes_every_verdict_from_cifar100_study_files(tmp_path, monkeypatch):
    """Notebook 05's promise: with kdlab study's CIFAR-100 files in $KDLAB_STUDY_DIR it loads them (no training)
    and reads the grids (recipe rate 0.05, temperatures to 32, top5) from them, instead of mnist10k's."""
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    _cifar_shaped_study_files(tmp_path)
    monkeypatch.setenv("KDLAB_STUDY_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    path = Path(__file__).resolve().parents[1] / "notebooks" / "05_revisiting_temperature.ipynb"
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for output in cell.get("outputs", []))
    for name in ("methods", "training", "entropy", "relational", "origin", "granularity"):
        assert f"results {tmp_path / (name + '.csv')}" in text
    assert "computed here" not in text
    assert "every method at lr 0.05" in text and "top5 + flat tail" in text and "T = 32" in text
    assert "teachers as trained by kdlab study" in text
