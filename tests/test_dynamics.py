"""kdlab.dynamics.first_steps: step-by-step replay of distill's first steps."""

import math

import numpy as np
import pytest
import torch

import kdlab
from kdlab.dynamics import first_steps


@pytest.fixture(scope="module")
def setting():
    dataset = kdlab.load_dataset("mnist10k").transfer_set(200, seed=0)
    torch.manual_seed(1)
    teacher = kdlab.create_model("mlp16")  # any fixed network works as a teacher here
    return teacher, dataset


def test_one_epoch_of_steps_is_distills_first_epoch(setting):
    teacher, dataset = setting
    _, history = kdlab.distill(teacher, dataset, student="mlp16", method="kd", temperature=4.0, epochs=1,
                               lr=0.1, seed=3, progress=False)
    frame = first_steps(teacher, dataset, student="mlp16", method="kd", temperature=4.0, lr=0.1, seed=3, steps=4)
    sizes = np.array([64, 64, 64, 8])                     # 200 images in batches of 64
    assert list(frame["step"]) == [1, 2, 3, 4] and set(frame["epoch"]) == {1}
    assert (frame["loss"] * sizes).sum() / 200 == pytest.approx(history["loss"].iloc[0], rel=1e-5)
    assert (frame["kd"] * sizes).sum() / 200 == pytest.approx(history["kd"].iloc[0], rel=1e-5)
    assert frame["temperature"].iloc[0] == 4.0 and frame["lr"].iloc[0] == 0.1


def test_first_sgd_update_is_lr_times_gradient_and_units_are_shares(setting):
    teacher, dataset = setting
    frame = first_steps(teacher, dataset, student="mlp16", method="kd", temperature=2.0, lr=0.05, steps=20)
    # SGD with momentum: the first velocity is the gradient itself, so |update_1| = lr * |g_1| (no weight decay)
    assert frame["update_norm"].iloc[0] == pytest.approx(0.05 * frame["grad_norm"].iloc[0], rel=1e-5)
    assert frame["epoch"].iloc[-1] == 5                   # 4 steps per epoch
    assert frame["dead_units"].between(0, 1).all() and frame["batch_acc"].between(0, 100).all()
    ce = first_steps(None, dataset, student="mlp16", method="ce", steps=2)
    assert math.isnan(ce["temperature"].iloc[0]) and "kd" not in ce.columns


@pytest.mark.parametrize("arguments, message", [
    ({"steps": 0}, "steps"), ({"seed": -1}, "seed"), ({"lr": 0.0}, "lr"), ({"optimizer": "adam"}, "optimizer"),
])
def test_bad_input_names_the_argument(setting, arguments, message):
    teacher, dataset = setting
    with pytest.raises(ValueError, match=message):
        first_steps(teacher, dataset, student="mlp16", **arguments)
    with pytest.raises(ValueError, match="dataset"):
        first_steps(teacher, "mnist10k")
    with pytest.raises(ValueError, match="teacher"):
        first_steps(None, dataset, method="kd")
