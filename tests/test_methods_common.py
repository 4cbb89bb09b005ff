"""Properties every distillation method must have, checked for each registered method.

- resume: a run interrupted after a checkpoint and resumed ends with exactly the synthetic set of
  an uninterrupted run with the same seed;
- NaN guard: an exploding image learning rate stops the run with DistillationDiverged and keeps
  the last good (finite) set on disk;
- every benchmark shape: 3D volumes and 112 px RGB with 3 classes run (or are refused clearly).
"""
from __future__ import annotations

import pytest
import torch
from methodkit import distill, interrupted_at, make_task

from mddbench.api.synset import SyntheticSet
from mddbench.errors import ConfigError, DistillationDiverged
from mddbench.registry import METHODS

DISTILLERS = [n for n in METHODS.names() if not METHODS.get(n).selects_real]  # sets of real images optimise nothing
SHORT = {"iterations": 6}
QUICK = ("dm", "mtt")  # stay in `-m "not slow"`: one method without experts, one on the trajectory base
SHAPES = [("tiny3d", (1, 12, 12, 12)), ("tiny112", (3, 112, 112))]


def slow_unless(quick: bool, *values, id: str | None = None):
    """One parameter set, marked slow unless ``quick`` (the full suite runs every one)."""
    return pytest.param(*values, id=id, marks=() if quick else pytest.mark.slow)


def _hp(method: str, **extra) -> dict:
    m = METHODS.get(method)()
    hp = {k: v for k, v in SHORT.items() if k in m.defaults}
    hp.update({k: v for k, v in extra.items() if k in m.defaults})
    return hp


@pytest.mark.parametrize("method", [slow_unless(m in QUICK, m) for m in DISTILLERS])
def test_resume_equals_uninterrupted(method, tmp_path, monkeypatch, expert_cache):
    experts = expert_cache
    full, full_task = distill(method, hp=_hp(method), run_dir=tmp_path / "a", expert_root=experts, checkpoint_every=2)

    interrupted_at(3, monkeypatch, lambda: distill(method, hp=_hp(method), run_dir=tmp_path / "b", expert_root=experts,
                                                   checkpoint_every=2))
    resumed, task = distill(method, hp=_hp(method), run_dir=tmp_path / "b", expert_root=experts, checkpoint_every=2)
    assert torch.equal(full.images, resumed.images)
    assert torch.equal(full.labels, resumed.labels)
    assert full.lr == resumed.lr
    counts = [loop.updates for loop in full_task.loops]  # gated updates survive the restart
    assert [loop.updates for loop in task.loops] == counts
    assert all(c is None for c in counts) or sum(counts) > 0


@pytest.mark.parametrize("method", DISTILLERS)
def test_nan_guard_keeps_last_good_set(method, tmp_path, expert_cache):
    hp = _hp(method, lr_img=1e38)
    with pytest.raises(DistillationDiverged, match="last good"):
        distill(method, hp=hp, run_dir=tmp_path / "run", expert_root=expert_cache)
    last = SyntheticSet.load(tmp_path / "run" / "last_good.safetensors")
    assert torch.isfinite(last.images).all()


@pytest.mark.parametrize("method,dataset,shape", [
    slow_unless(m == "dm" or (m, d) == ("mtt", "tiny3d"), m, d, shape, id=f"{m}-{d}-shape{i}")
    for i, (d, shape) in enumerate(SHAPES) for m in DISTILLERS])
def test_runs_on_3d_and_112px(method, dataset, shape, tmp_path, expert_cache):
    try:
        synset, task = distill(method, dataset=dataset, ipc=1, hp=_hp(method, iterations=2),
                               run_dir=tmp_path / "run", expert_root=expert_cache)
    except ConfigError as exc:  # a method may refuse a shape, but it must say so clearly
        assert dataset == "tiny3d" and "3D" in str(exc), exc
        return
    assert synset.images.shape[1:] == shape
    assert torch.isfinite(synset.images).all()
    if synset.label_type == "hard":  # every class keeps its images
        assert synset.labels.bincount(minlength=3).min() >= 1
    else:  # learned label logits may move to another class (DATM's do); they stay finite, over the 3 classes
        assert synset.labels.shape == (len(synset.images), 3) and torch.isfinite(synset.labels).all()


@pytest.mark.parametrize("metrics, advice", [({"loss": float("nan")}, "--hp lr_img="),
                                             ({"loss": float("nan"), "syn_lr": float("inf")}, "--hp lr_lr=")])
def test_a_divergence_names_the_rate_to_lower(metrics, advice, tmp_path):
    """A learned step size that is no longer finite points at its own learning rate, not only lr_img."""
    from mddbench.api.loop import distill_loop

    _, task = make_task("dm", run_dir=tmp_path / "run")
    images = torch.zeros(2, 1, 28, 28)
    with pytest.raises(DistillationDiverged, match="diverged at iteration 0") as info:
        distill_loop(task, 3, {"images": images}, lambda it: dict(metrics),
                     lambda: SyntheticSet(images, torch.tensor([0, 1])), name="fake")
    assert advice in str(info.value) and ("syn_lr" in metrics) == ("--hp lr_lr=" in str(info.value))
