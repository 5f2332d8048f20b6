"""kdlab: learn how temperature works in knowledge distillation."""
__version__ = "0.1.0"

# CPU threads: torch's intra-op threads follow the CPUs this process may use (affinity, cgroup quota,
# CPU_LIMIT) unless the user chose (OMP_NUM_THREADS, torch.set_num_threads); see kdlab.threads.
from kdlab.threads import available_cpus, configure_threads

configure_threads()

# core: temperature math, losses, recipes
from kdlab.temperature import (
    entropy,
    log_tempered_softmax,
    power_sum,
    power_transform,
    renyi_entropy,
    sharpness,
    smoothing_for_entropy,
    temperature_for_entropy,
    tempered_softmax,
)
from kdlab.losses import (
    LearnableTemperature,
    dkd_loss,
    dtkd_loss,
    dtkd_temperatures,
    kd_loss,
    lskd_loss,
    normkd_loss,
    standardize,
    ttm_loss,
    wttm_loss,
)
from kdlab.methods import Method, get_method, list_methods, register_method, unregister_method

# data and models: tensors on the training device, MNIST and CIFAR model zoo
from kdlab.data import Dataset, augment_batch, load_dataset
from kdlab.models import create_model, list_models

# training: teachers (cached), distillation with any method, checkpoints, torchrun
from kdlab.train import RECIPE_METHODS, RECIPES, TrainingDiverged, cache_dir, distill, evaluate, predict, train_teacher

# sweeps: a grid of students (temperatures x seeds x methods x optimizers) trained as one batched model
from kdlab.sweeps import expand_grid, sweep

# training dynamics: the first optimizer steps of a run, step by step (loss, gradient, update size, dead units)
from kdlab.dynamics import first_steps

# statistics: calibration (NLL, ECE) and the one rule for "is A better than B" (paired by seed, t interval)
from kdlab.stats import calibration, compare, describe_comparison

# choosing T: successive halving over candidate temperatures, dropping only on a paired interval
from kdlab.choose import TemperatureChoice, choose_temperature

# studies: Frank & Davis (2026)'s temperature studies as data + runners, teacher ablations, verdicts (notebook 05)
from kdlab.studies import (
    STUDY_NAMES,
    AblatedTeacher,
    coarsen,
    run_study,
    study_results,
    study_settings,
    summarize,
    summary_table,
)

# notebooks: figures (kdlab.plots.<figure>(...)), slider explorers (kdlab.widgets.<builder>(...)) and
# exercises that check themselves (kdlab.exercises.check(name, answer))
from kdlab import exercises, plots, widgets
