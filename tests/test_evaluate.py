"""Evaluation protocol v1 on real data, its determinism, and the metrics against sklearn and MedMNIST."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from medmnist.evaluator import getACC, getAUC
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from mddbench.api.synset import SyntheticSet
from mddbench.evaluation.metrics import auc, classification_metrics, summarize
from mddbench.evaluation.protocol import EvalConfig, evaluate


def subset(data, per_class: int, seed: int = 0) -> SyntheticSet:
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([data.sample_class(c, per_class, g) for c in range(data.n_classes)])
    return SyntheticSet(x, torch.arange(data.n_classes).repeat_interleave(per_class))


# -------------------------------------------------------------------------------- protocol
@pytest.mark.slow
def test_real_breastmnist_beats_the_majority_class(breast):
    full = SyntheticSet(breast.x["train"], breast.y["train"])
    result = evaluate(full, breast, EvalConfig(n_models=1, epochs=4), seed=0, progress=False)
    [scores] = result.per_model
    majority = torch.bincount(breast.y["test"]).max().item() / len(breast.y["test"])  # 114 / 156
    assert scores["balanced_acc"] > 0.6  # always predicting the majority class scores 0.5
    assert scores["test_acc"] > majority
    assert scores["auc"] > 0.7
    assert result.summary()["balanced_acc"]["per_model"] == [scores["balanced_acc"]]


def test_a_diverging_evaluation_network_is_recorded_as_diverged(breast):
    """LeNet has no normalisation: at a huge step size its outputs go non-finite. Such a model has no
    score (it used to surface as scikit-learn's "Input contains NaN"); the summary counts it apart."""
    synset = subset(breast, 2)
    synset.lr = 1e4
    result = evaluate(synset, breast, EvalConfig(model="lenet", n_models=2, epochs=3), seed=0, progress=False)
    assert result.per_model == [dict.fromkeys(("test_acc", "val_acc", "auc", "balanced_acc", "val_balanced_acc"))] * 2
    summary = result.summary()["test_acc"]
    assert summary["n"] == 0 and summary["diverged"] == 2 and math.isnan(summary["mean"])
    synset.lr = 0.01  # the same networks at a sane step size score
    assert evaluate(synset, breast, EvalConfig(model="lenet", n_models=1, epochs=3), seed=0,
                    progress=False).summary()["test_acc"]["n"] == 1


@pytest.mark.slow
def test_same_seed_same_numbers(breast):
    synset = subset(breast, 5)
    config = EvalConfig(n_models=2, epochs=4)
    first = evaluate(synset, breast, config, seed=3, progress=False)
    second = evaluate(synset, breast, config, seed=3, progress=False)
    assert first.per_model == second.per_model
    other = evaluate(synset, breast, config, seed=4, progress=False)
    assert other.per_model != first.per_model
    # model i has its own seed streams: trained one by one, it does not depend on how many others there are
    one_by_one = evaluate(synset, breast, config, seed=3, progress=False, engine="loop")
    alone = evaluate(synset, breast, EvalConfig(n_models=1, epochs=4), seed=3, progress=False)
    assert alone.per_model == one_by_one.per_model[:1]
    assert one_by_one.per_model[1] != alone.per_model[0]
    # and the final network is scored with the set's own learned step size when it has one
    with_lr = SyntheticSet(synset.images, synset.labels, lr=0.05)
    assert evaluate(with_lr, breast, EvalConfig(n_models=1, epochs=4), seed=3, progress=False).per_model \
        != alone.per_model


# --------------------------------------------------------------------------------- metrics
def probabilities(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)  # every class present
    return probs, y


def test_binary_metrics_use_the_positive_class_score():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    m = classification_metrics(np.stack([1 - p1, p1], 1), y)
    assert m == pytest.approx({"acc": 0.75, "auc": 0.75, "balanced_acc": 0.75})  # worked by hand

    probs, y = probabilities(60, 2, seed=0)
    m = classification_metrics(probs, y)
    assert m["auc"] == pytest.approx(roc_auc_score(y, probs[:, 1]))
    assert m["auc"] == pytest.approx(getAUC(y, probs, "binary-class"))
    assert m["auc"] != pytest.approx(roc_auc_score(y, probs[:, 0]))  # not the negative class's score
    assert m["acc"] == pytest.approx(accuracy_score(y, probs.argmax(1)))
    assert m["acc"] == pytest.approx(getACC(y, probs, "binary-class"))
    assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)))


def test_multiclass_metrics_are_macro_one_vs_rest():
    probs, y = probabilities(80, 4, seed=1)
    m = classification_metrics(probs, y)
    assert m["auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert m["auc"] == pytest.approx(getAUC(y, probs, "multi-class"))
    assert m["acc"] == pytest.approx(getACC(y, probs, "multi-class"))
    assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)))
    # imbalanced test sets are why balanced accuracy is reported: majority voting scores 1 / K
    majority = np.zeros_like(probs)
    majority[:, 0] = 1
    assert classification_metrics(majority, y)["balanced_acc"] == pytest.approx(0.25)


def test_degenerate_auc_cases():
    probs, y = probabilities(30, 3, seed=2)
    present = y != 2  # class 2 absent: the macro average is over the classes present
    expected = np.mean([roc_auc_score(y[present] == c, probs[present, c]) for c in (0, 1)])
    assert auc(probs[present], y[present]) == pytest.approx(expected)
    assert math.isnan(auc(np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 1])))


def test_summary_uses_population_std():
    s = summarize([0.5, 0.7, 0.9])
    assert s == {"per_model": [0.5, 0.7, 0.9], "mean": pytest.approx(0.7), "std": pytest.approx(math.sqrt(0.08 / 3)),
                 "n": 3, "diverged": 0}  # ddof=0: sqrt(((-0.2)^2 + 0 + 0.2^2) / 3)


def test_summary_leaves_diverged_models_out_of_the_statistics():
    s = summarize([0.5, None, 0.9])
    assert s == {"per_model": [0.5, None, 0.9], "mean": pytest.approx(0.7), "std": pytest.approx(0.2),
                 "n": 2, "diverged": 1}


def test_min_steps_raises_the_epochs_of_a_set_of_several_batches():
    from mddbench.api.budgets import get_budget
    from mddbench.evaluation.protocol import EvalConfig
    from mddbench.registry import METHODS

    cfg = EvalConfig(epochs=30, batch=256, min_steps=300)
    assert cfg.for_set(546).epochs == 100  # 3 batches per epoch: 100 epochs give 300 steps
    assert cfg.for_set(4708).epochs == 30  # 19 batches: 30 epochs are already 570 steps
    assert cfg.for_set(4).epochs == 300 and EvalConfig(epochs=300).for_set(4).epochs == 300
    quick = get_budget("quick")
    assert METHODS.get("real")().eval_overrides(quick) == {"epochs": 30, "lr": 0.01, "min_steps": 900}
    assert EvalConfig(epochs=30, min_steps=900).for_set(546).epochs == 300  # BreastMNIST at quick
