"""Issue 12, points 5, 6 and 8: corrupted run state recovers, degenerate values are refused where they
enter, and bad synthetic sets get a message instead of a traceback.

- corrupted run state: a zero-byte, truncated or foreign checkpoint, a checkpoint that does not fit
  the run, a half-written metrics-log line, a truncated expert file, a missing or unreadable expert
  meta.json and a broken run artifact are each recovered (with a warning naming the file), and the
  recovered run gives the set an undisturbed run gives;
- degenerate values: hyperparameters outside their declared range, options such as
  ``--eval-epochs 0``, crafted sets (NaN/inf, lr 0, short stage step sizes, wrong shapes or labels)
  and dataset arrays of the wrong size or type are refused before any work, with a clear message;
- one atomic write path: a failed write leaves the old file and no temporary file.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from methodkit import distill, load, make_task

from mddbench.api.budgets import get_budget
from mddbench.api.loop import MetricsLog, read_log
from mddbench.api.synset import SyntheticSet
from mddbench.atomic import replacing, write_text
from mddbench.cli import main
from mddbench.data.dataset import SPLITS, DatasetSpec, RawArrays, load_dataset
from mddbench.errors import ArtifactError, ConfigError, CorruptRunState, DataError
from mddbench.evaluation.protocol import EvalConfig, evaluate
from mddbench.registry import DATASETS, METHODS
from mddbench.run.job import Job
from mddbench.run.pipeline import distill as run_distill
from mddbench.run.pipeline import prepare
from mddbench.trajectory.experts import MTT_RECIPE, ExpertProvider, mean_expert_accuracy

PACKAGE = Path(__file__).resolve().parents[1] / "mddbench"


def cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:  # argparse refuses an option before anything runs
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def warned(caplog, *needles: str) -> str:
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    for needle in needles:
        assert needle in text, (needle, text)
    return text


# ---------------------------------------------------------------------------------- run state
def _truncate(path: Path, how: str) -> None:
    if how == "zero-byte":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # a pickle that is not tensors: torch's weights_only refusal, whose advice must not reach the user
        import pickle

        path.write_bytes(pickle.dumps({"state": object}))


@pytest.mark.parametrize("how", ["zero-byte", "truncated", "foreign pickle"])
def test_broken_checkpoint_restarts_its_loop(tmp_path, caplog, how):
    reference, _ = distill("dm", run_dir=tmp_path / "a", checkpoint_every=4)
    run = tmp_path / "b"
    distill("dm", run_dir=run, checkpoint_every=4)
    (ckpt,) = run.glob("*.ckpt")
    _truncate(ckpt, how)
    with caplog.at_level(logging.WARNING):
        again, task = distill("dm", run_dir=run, checkpoint_every=4)
    text = warned(caplog, str(ckpt), "starts again from iteration 0")
    assert "weights_only" not in text
    assert torch.equal(again.images, reference.images)  # seeded: restarting loses time, not the result
    assert (run / f"{ckpt.name}.corrupt").is_file()  # kept for inspection, never used again
    assert [r["it"] for r in read_log(run / "dm_log.jsonl")] == list(range(task.hp["iterations"]))


def test_checkpoint_that_does_not_fit_restarts_the_method(tmp_path, caplog):
    job = Job(method="dm", dataset="tiny28", ipc=2, budget="smoke", out=str(tmp_path / "out"), progress=False)
    reference = run_distill(prepare(job))
    (ckpt,) = job.run_dir.glob("*.ckpt")
    (job.run_dir / "synset.safetensors").unlink()
    torch.save({"state": {"images": torch.zeros(1, 2)}, "iteration": 10, "seconds": 1.0}, ckpt)  # another layout
    with caplog.at_level(logging.WARNING):
        again = run_distill(prepare(job))
    warned(caplog, str(ckpt), "does not fit this run", "starts again")
    assert torch.equal(again.images, reference.images)


def test_checkpoint_that_does_not_fit_outside_the_runner_names_the_file_and_the_fix(tmp_path):
    m, task = make_task("dm", run_dir=tmp_path / "run")
    torch.save({"state": {"images": torch.zeros(1, 2)}, "iteration": 3, "seconds": 1.0}, tmp_path / "run" / "dm.ckpt")
    with pytest.raises(CorruptRunState, match=re.escape(f"rm '{tmp_path / 'run' / 'dm.ckpt'}'")):
        m.distill(task)


def test_half_written_last_log_line_is_dropped(tmp_path, caplog):
    path = tmp_path / "dm_log.jsonl"
    rows = [json.dumps({"it": i, "loss": 1.0 / (i + 1)}) for i in range(4)]
    path.write_text("\n".join(rows) + '\n{"it": 4, "loss": 0.1')  # what a crash during a write leaves
    with caplog.at_level(logging.WARNING):
        assert [r["it"] for r in read_log(path)] == [0, 1, 2, 3]
        MetricsLog(path, resume_from=3).write(it=3, loss=0.5)
    warned(caplog, str(path), "line 5")
    assert [r["it"] for r in read_log(path)] == [0, 1, 2, 3]
    assert path.read_text().endswith('{"it": 3, "loss": 0.5}\n')


def _provider(root: Path) -> ExpertProvider:
    return ExpertProvider(root, load("tiny28"), get_budget("smoke"), torch.device("cpu"), progress=False)


@pytest.fixture(scope="module")
def built_experts(tmp_path_factory):
    root = tmp_path_factory.mktemp("experts")
    provider = _provider(root)
    traj = provider(MTT_RECIPE)
    return root, provider.folder(MTT_RECIPE).name, traj


def _copy_experts(built, tmp_path) -> Path:
    import shutil

    root, name, _ = built
    shutil.copytree(root / name, tmp_path / name)
    return tmp_path / name


def test_truncated_expert_file_is_rebuilt(built_experts, tmp_path, caplog):
    folder = _copy_experts(built_experts, tmp_path)
    broken = folder / "expert_001.safetensors"
    broken.write_bytes(broken.read_bytes()[:3000])
    with caplog.at_level(logging.WARNING):
        traj = _provider(tmp_path)(MTT_RECIPE)
    warned(caplog, str(broken), "built again")
    reference = built_experts[2]
    assert all(torch.equal(a, b) for a, b in zip(traj.trajectories, reference.trajectories))
    assert (folder / "expert_001.safetensors.corrupt").is_file()


@pytest.mark.parametrize("how", ["missing", "unreadable"])
def test_missing_or_unreadable_expert_meta_is_rebuilt(built_experts, tmp_path, caplog, how):
    folder = _copy_experts(built_experts, tmp_path)
    original = json.loads((folder / "meta.json").read_text())
    if how == "missing":
        (folder / "meta.json").unlink()
    else:
        (folder / "meta.json").write_text('{"key": "e45')
    with caplog.at_level(logging.WARNING):
        traj = _provider(tmp_path)(MTT_RECIPE)
    warned(caplog, "meta.json", "scoring them from their final parameters")
    assert sorted(traj.meta["experts"]) == sorted(original["experts"])
    for i, scores in original["experts"].items():  # the same numbers, from the stored final parameters
        assert {k: v for k, v in traj.meta["experts"][i].items() if k != "built_on"} == \
               {k: v for k, v in scores.items() if k != "built_on"}
    assert mean_expert_accuracy(traj.meta) == pytest.approx(mean_expert_accuracy(original))
    assert json.loads((folder / "meta.json").read_text())["key"] == original["key"]


def test_a_runs_own_broken_artifact_is_distilled_again(tmp_path, caplog):
    job = Job(method="dm", dataset="tiny28", ipc=2, budget="smoke", out=str(tmp_path / "out"), progress=False)
    reference = run_distill(prepare(job))
    artifact = job.run_dir / "synset.safetensors"
    artifact.write_bytes(artifact.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        again = run_distill(prepare(job))
    warned(caplog, str(artifact), "distilled again")
    assert torch.equal(again.images, reference.images)
    assert SyntheticSet.load(artifact).meta["job_id"] == job.job_id


# ------------------------------------------------------------------------- degenerate values
@pytest.mark.parametrize("method,key,value", [
    ("mtt", "iterations", "-3"), ("dm", "batch_real", "0"), ("mtt", "syn_steps", "0"), ("mtt", "lr_img", "-1"),
    ("dc", "momentum_img", "1.5"), ("dc", "lr_net", "-0.01"), ("mtt", "lr_teacher", "NaN"),
    ("datm", "lr_y", "-1"), ("ptm", "backend_p", "2"), ("haba", "momentum_style", "-0.5"),
    ("seqmatch", "stage_max_start", "[1, 0]"), ("ftd", "ema_decay", "Infinity")])
def test_hyperparameters_outside_their_declared_range_are_refused(method, key, value):
    spec, budget = load("tiny28").spec, get_budget("smoke")
    with pytest.raises(ConfigError, match=rf"{method}: hyperparameter {key} must be"):
        METHODS.get(method)().resolve(spec, 2, budget, {key: value})


@pytest.mark.slow
def test_every_method_default_lies_in_its_declared_range():
    for name in METHODS.names():
        m = METHODS.get(name)()
        for spec in (load("tiny28").spec, load("tiny112").spec):
            for ipc in (1, 2, 10, 50):
                for budget in ("smoke", "quick", "paper"):
                    try:
                        m.resolve(spec, ipc, get_budget(budget))
                    except ConfigError as exc:
                        assert "must be" not in str(exc), (name, ipc, budget, exc)
    assert "iterations" in METHODS.get("ptm").hp_limits()  # declared once, by TrajectoryMatching


@pytest.mark.parametrize("option", [["--eval-epochs", "0"], ["--eval-n-models", "0"], ["--time-budget", "-5"],
                                    ["--snapshot-every", "-1"], ["--eval-epochs", "x"]])
def test_degenerate_options_are_refused_before_any_work(tmp_path, capsys, option):
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "run", "--method", "random", "--budget", "smoke", "--quiet", "--out", out, *option)
    assert rc == 2 and option[0] in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("field,value", [("eval_n_models", 0), ("eval_epochs", 0), ("time_budget", -5.0),
                                         ("snapshot_every", -1)])
def test_a_jobs_degenerate_options_fail_in_prepare(tmp_path, field, value):
    job = Job(method="random", dataset="tiny28", budget="smoke", out=str(tmp_path), **{field: value})
    with pytest.raises(ConfigError, match="must be"):
        prepare(job)
    with pytest.raises(ConfigError):
        EvalConfig(n_models=0)


def _crafted(base: SyntheticSet, change: str) -> SyntheticSet:
    x, y, lr, stages, stage_lrs = base.images.clone(), base.labels.clone(), base.lr, None, None
    if change == "nan image":
        x[0, 0, 0, 0] = float("nan")
    elif change == "inf image":
        x[1, 0, 3, 3] = float("inf")
    elif change == "nan soft labels":
        y = torch.full((len(y), 3), float("nan"))
    elif change == "lr 0":
        lr = 0.0
    elif change == "lr nan":
        lr = float("nan")
    elif change == "short stage lrs":
        stages, stage_lrs = [3, len(x) - 3], [0.01]
    elif change == "inf stage lr":
        stages, stage_lrs = [3, len(x) - 3], [0.01, float("inf")]
    elif change == "wrong size":
        x = x[:, :, :20, :20].contiguous()
    elif change == "wrong channels":
        x = x.repeat(1, 3, 1, 1)
    elif change == "rank 3":
        x = x[:, 0].contiguous()
    elif change == "integer images":
        x = (x * 100).long()
    elif change == "label out of range":
        y = y + 5
    elif change == "negative label":
        y = y - 1
    elif change == "soft labels, wrong classes":
        y = torch.zeros(len(y), 7)
    elif change == "no images":
        x, y = x[:0].contiguous(), y[:0].contiguous()
    return SyntheticSet(x, y, lr=lr, stages=stages, stage_lrs=stage_lrs, meta=dict(base.meta))


CHANGES = ["nan image", "inf image", "nan soft labels", "lr 0", "lr nan", "short stage lrs", "inf stage lr",
           "wrong size", "wrong channels", "rank 3", "integer images", "label out of range", "negative label",
           "soft labels, wrong classes", "no images"]


@pytest.fixture(scope="module")
def good_set(tmp_path_factory):
    synset, _ = distill("random")
    synset.meta.update(dataset="tiny28", n_classes=3, method="random", ipc=2, seed=0, budget="smoke")
    return synset


@pytest.mark.parametrize("change", CHANGES)
def test_crafted_sets_are_refused_with_a_message(good_set, tmp_path, capsys, change):
    path = _crafted(good_set, change).save(tmp_path / "crafted.safetensors")
    with pytest.raises(ArtifactError, match=re.escape(str(path))):
        evaluate(SyntheticSet.load(path), load("tiny28"), EvalConfig(n_models=1, epochs=1), progress=False)
    for args in (["eval", path, "--eval-n-models", "1", "--eval-epochs", "1", "--no-record", "--quiet"],
                 ["show", path, "-o", tmp_path / "grid.png"]):
        rc, _, err = cli(capsys, *args)
        assert rc == 2 and err.startswith("mddbench: error: ") and str(path) in err and "Traceback" not in err
    assert not (tmp_path / "grid.png").exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_the_unchanged_set_still_evaluates_and_shows(good_set, tmp_path, capsys, dtype):
    path = SyntheticSet(good_set.images.to(dtype), good_set.labels, meta=good_set.meta).save(tmp_path / "good.st")
    result = evaluate(SyntheticSet.load(path), load("tiny28"), EvalConfig(n_models=1, epochs=1), progress=False)
    assert result.summary()["test_acc"]["n"] == 1
    rc, _, err = cli(capsys, "show", path, "-o", tmp_path / "grid.png")
    assert rc == 0 and (tmp_path / "grid.png").is_file(), err


def _arrays(change: str) -> RawArrays:
    rng = np.random.default_rng(0)
    size = 20 if change == "wrong image size" else 16
    images = {s: rng.integers(0, 255, (12, size, size), dtype=np.uint8) for s in SPLITS}
    labels = {s: np.repeat(np.arange(3, dtype=np.uint8), 4)[:, None] for s in SPLITS}
    if change == "float labels":
        labels["train"] = labels["train"] + 0.5
    if change == "non-finite pixels":
        images["val"] = images["val"].astype(np.float32)
        images["val"][0, 0, 0] = np.nan
    return RawArrays(images, labels, "0" * 32, f"/data/{change.replace(' ', '_')}.npz")


@pytest.mark.parametrize("change", ["wrong image size", "float labels", "non-finite pixels"])
def test_dataset_arrays_that_are_not_the_datasets_are_refused(change):
    name = "crafted-" + change.replace(" ", "-")
    if name not in DATASETS:
        arrays = _arrays(change)
        DATASETS.register(name, DatasetSpec(
            name=name, title=name, source="generated", dims=2, channels=1, size=16, label_names=("a", "b", "c"),
            task="multi-class", license="test", citation="test", description="test",
            load=lambda spec, root, offline: arrays))
    with pytest.raises(DataError, match=re.escape(_arrays(change).path)):
        load_dataset(name)


def test_plot_to_a_file_is_a_message(tmp_path, capsys):
    blocker = tmp_path / "figures.png"
    blocker.write_text("not a folder")
    rc, _, err = cli(capsys, "plot", tmp_path, "--to", blocker)
    assert rc == 2 and f"cannot write to {blocker}" in err and "--to" in err


@pytest.mark.parametrize("content", [None, '{"method": "dm", "data'])
def test_curve_on_a_folder_without_a_readable_job_json_is_a_message(tmp_path, capsys, content):
    if content is not None:
        (tmp_path / "job.json").write_text(content)
    rc, _, err = cli(capsys, "curve", tmp_path)
    assert rc == 2 and str(tmp_path / "job.json") in err and "Traceback" not in err


# ------------------------------------------------------------------------------ atomic writes
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_text(tmp_path / "records.jsonl", "old\n")
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["records.jsonl"]


def test_one_atomic_write_path():
    """Every tmp-then-rename goes through mddbench/atomic.py (a hand-written copy is how files get lost)."""
    offenders = [str(p.relative_to(PACKAGE.parent)) for root in (PACKAGE, PACKAGE.parent / "methods",
                                                                   PACKAGE.parent / "datasets")
                 for p in root.rglob("*.py") if p.name != "atomic.py" and
                 re.search(r"os\.replace\(|\.tmp\"\)|\.tmp\b.*\.replace\(|mkstemp", p.read_text())]
    assert offenders == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_atomic_writes_get_the_mode_of_a_new_file(tmp_path, umask, mode):
    """safetensors creates its file 0600: through replacing() a saved set is readable as any other file (issue 46)."""
    import os

    from safetensors.torch import save_file

    from mddbench.api.synset import SyntheticSet

    old = os.umask(umask)
    try:
        with replacing(tmp_path / "raw.safetensors") as tmp:
            save_file({"x": torch.zeros(2)}, str(tmp))
        synset = SyntheticSet(images=torch.zeros(2, 1, 4, 4), labels=torch.tensor([0, 1]))
        synset.save(tmp_path / "set.safetensors")
        write_text(tmp_path / "job.json", "{}")
    finally:
        os.umask(old)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {
        "raw.safetensors": oct(mode), "set.safetensors": oct(mode), "job.json": oct(mode)}


def test_a_runs_files_are_all_readable_by_the_group(random_run):
    """Every file a run leaves (its saved set included) is 0644 under the usual umask, none 0600."""
    modes = {str(p.relative_to(random_run)): oct(p.stat().st_mode & 0o777)
             for p in random_run.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert any(name.endswith("synset.safetensors") for name in modes)
    assert set(modes.values()) == {oct(0o644)}, modes
