"""Tests for kdlab.models: names, exact parameter counts, shapes, channels_last, vmap-ability."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import kdlab
from kdlab.models import count_parameters, create_model, list_models

# Counted by instantiating HobbitLong/RepDistiller models/{resnet,wrn,vgg}.py (commit b84f547,
# vgg = the *_bn variants, as in its model_dict) with num_classes=100 and num_classes=10.
REPDISTILLER_PARAMETERS = {
    #  name:        (100 classes, 10 classes)
    "resnet8": (83_892, 78_042),
    "resnet14": (181_108, 175_258),
    "resnet20": (278_324, 272_474),
    "resnet32": (472_756, 466_906),
    "resnet44": (667_188, 661_338),
    "resnet56": (861_620, 855_770),
    "resnet110": (1_736_564, 1_730_714),
    "resnet8x4": (1_233_540, 1_210_410),
    "resnet32x4": (7_433_860, 7_410_730),
    "wrn_16_1": (180_916, 175_066),
    "wrn_16_2": (703_284, 691_674),
    "wrn_40_1": (569_780, 563_930),
    "wrn_40_2": (2_255_156, 2_243_546),
    "vgg8": (3_965_028, 3_918_858),
    "vgg11": (9_277_284, 9_231_114),
    "vgg13": (9_462_180, 9_416_010),
}

MNIST_PARAMETERS = {"cnn": 417_578, "small_cnn": 9_098, "mlp16": 12_730, "mlp64": 50_890, "mlp256": 203_530}


def test_list_models_names_and_groups():
    assert list_models("cifar") == sorted(REPDISTILLER_PARAMETERS)
    assert list_models("mnist") == sorted(MNIST_PARAMETERS)
    assert list_models() == sorted([*REPDISTILLER_PARAMETERS, *MNIST_PARAMETERS])
    with pytest.raises(ValueError, match="kind"):
        list_models("imagenet")


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet18'") as info:
        create_model("resnet18")
    assert "resnet8x4" in str(info.value) and "mlp64" in str(info.value)


@pytest.mark.parametrize("name", sorted(REPDISTILLER_PARAMETERS))
def test_cifar_parameter_counts_match_repdistiller_exactly(name):
    hundred, ten = REPDISTILLER_PARAMETERS[name]
    assert count_parameters(create_model(name, num_classes=100)) == hundred
    # only the classifier depends on num_classes: (features + 1) * classes
    difference = hundred - ten
    assert difference % 90 == 0
    assert count_parameters(create_model(name, num_classes=10)) == ten


def test_literature_sizes_in_millions():
    # the sizes quoted in CRD/DKD tables, to 0.01M
    quoted = {"resnet8x4": 1.23, "resnet32x4": 7.43, "resnet20": 0.28, "resnet56": 0.86, "resnet110": 1.74,
              "wrn_40_2": 2.26, "wrn_16_2": 0.70, "vgg13": 9.46, "vgg8": 3.97}
    for name, millions in quoted.items():
        assert abs(REPDISTILLER_PARAMETERS[name][0] / 1e6 - millions) <= 0.005 + 1e-9, name


@pytest.mark.parametrize("name", ["resnet8", "resnet8x4", "wrn_16_1", "vgg8"])
def test_cifar_models_accept_channels_last(name, one_thread):
    torch.manual_seed(0)
    model = create_model(name, num_classes=100).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(images)
        logits_cl = model(images.contiguous(memory_format=torch.channels_last))
    assert logits.shape == (2, 100)
    torch.testing.assert_close(logits_cl, logits, rtol=1e-4, atol=1e-5)


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine OpenMP barriers make
    hundreds of tiny conv calls 50x slower; run them on one thread, then restore the setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_cifar_model_runs_forward_and_backward(one_thread):
    images = torch.randn(2, 3, 8, 8)  # global average pooling makes any size >= 8 work; 8 keeps this fast
    for name in list_models("cifar"):
        model = create_model(name, num_classes=10)
        logits = model(images)
        assert logits.shape == (2, 10), name
        logits.sum().backward()
        assert all(p.grad is not None for p in model.parameters()), name


@pytest.mark.parametrize("name", sorted(MNIST_PARAMETERS))
def test_mnist_models_shapes_and_counts(name):
    model = create_model(name)
    assert count_parameters(model) == MNIST_PARAMETERS[name]
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    wide = create_model(name, num_classes=7, in_channels=3, image_size=32)
    assert wide(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_creation_is_reproducible_under_a_seed():
    torch.manual_seed(3)
    first = create_model("mlp64").state_dict()
    torch.manual_seed(3)
    second = create_model("mlp64").state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize("name", ["mlp16", "mlp64", "mlp256", "small_cnn"])
def test_students_can_be_batched_with_vmap(name):
    """Sweeps train many students at once: stack their parameters and vmap one functional call."""
    students = []
    for seed in range(3):
        torch.manual_seed(seed)
        students.append(create_model(name))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for s in students for m in s.modules())
    params, buffers = torch.func.stack_module_state(students)
    template = create_model(name).to("meta")

    def run(p, b, x):
        return torch.func.functional_call(template, (p, b), (x,))

    images = torch.randn(4, 1, 28, 28)
    batched = torch.vmap(run, in_dims=(0, 0, None))(params, buffers, images)
    expected = torch.stack([student(images) for student in students])
    torch.testing.assert_close(batched, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "cnn", "num_classes": 0}, "num_classes"),
        ({"name": "cnn", "num_classes": True}, "num_classes"),
        ({"name": "cnn", "num_classes": 10.0}, "num_classes"),
        ({"name": "mlp64", "in_channels": 0}, "in_channels"),
        ({"name": "cnn", "image_size": 30}, "image_size"),
        ({"name": "resnet20", "image_size": 32}, "image_size"),
        ({"name": 3}, "unknown model"),
    ],
)
def test_create_model_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model(**kwargs)


def test_public_names_are_exported():
    assert kdlab.create_model is create_model and kdlab.list_models is list_models
