"""The command line end to end: listing, info, runs, leaderboards, reruns, and clear errors for bad input."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import BREAST, BREAST_MD5, RANDOM_DEMO, SHARED_DATA, cli, needs_breast, skip_without_data

from mddbench.cli import main
from mddbench.datasets import medmnist_sets
from mddbench.results.store import ResultStore, artifact_path

pytestmark = pytest.mark.usefixtures("isolated")  # no ambient data root, ~/.medmnist or network



# ----------------------------------------------------------------------------------- listing
def test_list_methods_datasets_networks_budgets(capsys):
    rc, out, _ = cli(capsys, "list", "methods")
    assert rc == 0 and {"random", "real", "mtt"} <= {line.split()[0] for line in out.splitlines()[2:]}
    rc, out, _ = cli(capsys, "list", "methods", "--pattern", "r*")
    assert rc == 0 and "random" in out and "mtt" not in out

    rc, out, _ = cli(capsys, "list", "datasets")
    names = {line.split()[0] for line in out.splitlines()[2:]}
    assert rc == 0 and {"demo", "pathmnist", "breastmnist", "organmnist3d", "covid19-cxr", "skin-ham",
                        "breast-uls"} <= names
    rc, out, _ = cli(capsys, "list", "datasets", "--pattern", "organ*3d*")
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["organmnist3d", "organmnist3d_64"]
    assert "1x28x28x28" in out

    rc, out, _ = cli(capsys, "list", "networks", "--pattern", "convnet*")
    assert rc == 0 and out.split() == ["convnet", "convnet_bn"]
    rc, out, _ = cli(capsys, "list", "budgets")
    assert rc == 0 and all(b in out for b in ("smoke", "quick", "medium", "paper"))


def test_budget_help_names_every_registered_budget(monkeypatch):
    """--budget's help is read from the registry, so a budget added there (medium was missed once) is listed."""
    from mddbench.api.budgets import BUDGETS, Budget
    from mddbench.cli import build_parser
    monkeypatch.setitem(BUDGETS, "cluster", Budget("cluster", eval_models=1, eval_epochs=1, real_epochs=1,
                                                   experts=1, expert_epochs=1))
    parser = build_parser()
    for command in ("run", "sweep", "eval", "privacy"):
        sub = parser._subparsers._group_actions[0].choices[command]
        budget = next(a for a in sub._actions if "--budget" in a.option_strings)
        assert budget.help.startswith(" | ".join(BUDGETS)) and "cluster" in budget.help, (command, budget.help)


def test_info(capsys):
    rc, out, _ = cli(capsys, "info", "pathmnist")
    assert rc == 0
    for needed in ("PathMNIST", "3x28x28 (2D)", "classes      9: 0 adipose", "train 89,996 / val 10,004 / test 7,180",
                   "a8b06965200029087d5bd730944a56c1", "zenodo.org", "--data-root", "MDD benchmark", "missing"):
        assert needed in out, needed
    if BREAST.is_file():
        rc, out, _ = cli(capsys, "info", "breastmnist", "--data-root", SHARED_DATA)
        assert rc == 0 and f"{BREAST} (present)" in out and "CC BY 4.0" in out


def test_info_finds_a_file_in_medmnists_own_folder(capsys, monkeypatch, tmp_path):
    """The loader also reads ~/.medmnist, where the medmnist package keeps its files; info says so."""
    skip_without_data(BREAST.name)
    medmnist_root = tmp_path / "medmnist-root"
    medmnist_root.mkdir()
    (medmnist_root / BREAST.name).symlink_to(BREAST)
    monkeypatch.setattr(medmnist_sets, "MEDMNIST_ROOT", medmnist_root)
    rc, out, _ = cli(capsys, "info", "breastmnist", "--data-root", tmp_path / "empty")
    assert rc == 0 and f"{medmnist_root / BREAST.name} (present)" in out


# -------------------------------------------------------------------------------------- runs
def test_run_random_on_demo(random_run):
    store = ResultStore(random_run / "results.sqlite")
    [record] = store.records()
    assert (record["method"], record["dataset"], record["ipc"], record["budget"], record["eval_model"]) == \
        ("random", "demo", 2, "smoke", "convnet")
    assert record["metrics"]["test_acc"]["n"] == 2 and record["protocol"] == "v1"
    assert (record["resolution"], record["channels"], record["dims"]) == (28, 1, 2)
    assert record["updates"] is None  # random has no gated update to count
    assert record["record_schema"] == 2 and not Path(record["artifact"]).is_absolute()  # moves with --out
    assert record["environment"]["torch"] == torch.__version__ and record["environment"]["python"]
    assert record["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # which kernels ran
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    assert record["environment"]["cpu"] == (names[0] if names else None)
    memory = record["environment"]["memory"]  # the activation budget and what it chose, recorded per run
    assert memory["budget_mib"] > 0 and memory["budget_source"] in ("auto", "set")
    assert memory["micro_batch"]["train"] >= 256  # 28 px: a whole batch fits, the numbers are as before
    assert record["environment"]["allocator"] in ("heap", "thresholds", "default")
    run_dir = artifact_path(record, random_run).parent
    assert run_dir.parent == random_run / "runs"
    assert {"job.json", "synset.safetensors", "result_convnet.json"} <= {p.name for p in run_dir.iterdir()}


@pytest.mark.slow
@needs_breast
def test_run_real_on_breastmnist(tmp_path, capsys):
    rc, out, _ = cli(capsys, "run", "--method", "real", "--dataset", "breastmnist", "--data-root", SHARED_DATA,
                     "--budget", "smoke", "--out", tmp_path, "--quiet")
    assert rc == 0 and "real" in out and "breastmnist" in out
    [record] = ResultStore(tmp_path / "results.sqlite").records()
    assert record["ipc"] == "full" and record["data_checksum"] == BREAST_MD5
    assert record["eval_config"]["epochs"] == 1 and record["metrics"]["test_acc"]["n"] == 2  # smoke budget
    assert record["eval_config"]["min_steps"] == 0  # smoke keeps 1 epoch (quick: at least 900 steps)
    assert record["artifact"] is None  # real patient images are never written out
    assert not list(tmp_path.rglob("*.safetensors"))


def test_leaderboard_writes_csv_and_markdown(random_run, tmp_path, capsys):
    to = tmp_path / "lb"
    rc, out, _ = cli(capsys, "leaderboard", "--results", random_run, "--to", to)
    assert rc == 0 and "1 records" in out
    table = pd.read_csv(to / "main_smoke.csv", index_col=0)
    [record] = ResultStore(random_run / "results.sqlite").records()
    mean = 100 * record["metrics"]["test_acc"]["mean"]
    assert list(table.index) == ["random"] and table.loc["random", "demo ipc2"].startswith(f"{mean:.2f} ± ")
    markdown = (to / "main_smoke.md").read_text()
    assert "| random" in markdown and "demo ipc2" in markdown
    assert (to / "records.jsonl").read_text().count("\n") == 1
    rc, _, err = cli(capsys, "leaderboard", "--results", tmp_path / "nothing", "--to", to)
    assert rc == 2 and "no results store" in err


def test_rerunning_a_finished_job_adds_nothing(random_run, capsys):
    store = ResultStore(random_run / "results.sqlite")
    before = store.records()
    artifact = artifact_path(before[0], random_run)
    stamp = artifact.stat().st_mtime_ns
    rc, out, _ = cli(capsys, *RANDOM_DEMO, "--out", random_run)
    assert rc == 0 and "random" in out  # the finished result is shown again
    assert store.records() == before and artifact.stat().st_mtime_ns == stamp  # not redistilled


# -------------------------------------------------------------------------------- bad input
def broken_breast(folder: Path, how: str) -> Path:
    folder.mkdir()
    payload = BREAST.read_bytes()
    if how == "truncated":
        payload = payload[: len(payload) // 3]
    else:
        middle = len(payload) // 2
        payload = payload[:middle] + bytes(b ^ 0xFF for b in payload[middle:middle + 8]) + payload[middle + 8:]
    (folder / "breastmnist.npz").write_bytes(payload)
    return folder


BAD_INPUT = {
    "unknown method": (["--method", "nosuch"], ["unknown method 'nosuch'", "random", "real"]),
    "unknown dataset": (["--method", "random", "--dataset", "nosuch"], ["unknown dataset 'nosuch'", "pathmnist"]),
    "unknown eval model": (["--method", "random", "--eval-model", "nosuch"],
                           ["unknown network 'nosuch'", "convnet", "lenet"]),
    "unknown budget": (["--method", "random", "--budget", "huge"], ["unknown budget 'huge'", "smoke"]),
    "unknown hyperparameter": (["--method", "random", "--hp", "lr_img=1"], ["no hyperparameter 'lr_img'"]),
    "ipc 0": (["--method", "random", "--ipc", "0"], ["--ipc must be a positive integer", "got 0"]),
    "negative ipc": (["--method", "random", "--ipc", "-3"], ["--ipc must be a positive integer", "got -3"]),
}


@pytest.mark.parametrize("args, expected", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_exit_code_2_with_a_clear_message(tmp_path, capsys, args, expected):
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "run", "--budget", "smoke", *args, "--out", out, "--quiet")
    assert rc == 2
    assert err.startswith("mddbench: error: ") and "Traceback" not in err
    for text in expected:
        assert text in err, text
    assert not (out / "runs").exists()  # refused before any distillation


@needs_breast
def test_ipc_larger_than_a_class(tmp_path, capsys):
    rc, _, err = cli(capsys, "run", "--method", "random", "--dataset", "breastmnist", "--data-root", SHARED_DATA,
                     "--ipc", "148", "--budget", "smoke", "--out", tmp_path, "--quiet")
    assert rc == 2 and "--ipc 148 is larger than class 0 ('malignant')" in err and "147 train images" in err
    rc, _, _ = cli(capsys, "run", "--method", "random", "--dataset", "breastmnist", "--data-root", SHARED_DATA,
                   "--ipc", "147", "--budget", "smoke", "--eval-n-models", "1", "--eval-epochs", "1",
                   "--out", tmp_path, "--quiet")
    assert rc == 0  # exactly a class's size is fine


@needs_breast
@pytest.mark.parametrize("how", ["flipped", "truncated"])
def test_corrupt_data_file(tmp_path, capsys, how):
    root = broken_breast(tmp_path / "data", how)
    rc, _, err = cli(capsys, "run", "--method", "random", "--dataset", "breastmnist", "--data-root", root,
                     "--budget", "smoke", "--out", tmp_path / "out", "--quiet")
    assert rc == 2 and "Traceback" not in err
    assert str(root / "breastmnist.npz") in err and "corrupt" in err and f"expected {BREAST_MD5}" in err


def test_missing_file_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MDDBENCH_OFFLINE", "1")
    rc, _, err = cli(capsys, "run", "--method", "random", "--dataset", "pneumoniamnist", "--data-root", tmp_path,
                     "--budget", "smoke", "--out", tmp_path / "out", "--quiet")
    assert rc == 2 and "Traceback" not in err
    for needed in ("pneumoniamnist.npz", str(tmp_path), "offline", "--data-root", "MDDBENCH_DATA",
                   "https://zenodo.org/records/10519652/files/pneumoniamnist.npz"):
        assert needed in err, needed


@pytest.mark.parametrize("where", ["under a file", "a file"])
def test_unwritable_output_folder(tmp_path, capsys, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")  # chmod would not stop root; a file in the path stops everyone
    out = blocker / "out" if where == "under a file" else blocker
    rc, _, err = cli(capsys, *RANDOM_DEMO, "--out", out)
    assert rc == 2 and f"cannot write to {out}" in err and "choose another --out" in err
    assert blocker.read_text() == "a regular file"


def test_runs_sharing_an_out_folder_do_not_break_each_others_write_check(tmp_path):
    """Two runs started together on one --out (a sweep's workers, two shells) each probe the folder;
    with one shared probe name the slower one found the probe unlinked and refused to run."""
    from concurrent.futures import ThreadPoolExecutor

    from mddbench.atomic import ensure_writable

    def probe(_):
        for _ in range(300):
            ensure_writable(tmp_path)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(probe, range(4)))  # raises what any thread raised
    assert list(tmp_path.iterdir()) == []


def test_unwritable_expert_cache_fails_before_distilling(tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    rc, _, err = cli(capsys, "run", "--method", "mtt", "--dataset", "demo", "--budget", "smoke", "--quiet",
                     "--out", tmp_path / "out", "--expert-cache", blocker / "experts")
    assert rc == 2 and f"cannot write to {blocker / 'experts'}" in err and "choose another --expert-cache" in err
    assert not (tmp_path / "out" / "runs").exists()


def test_argument_errors_and_the_real_exit_code(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["run", "--method", "random", "--ipc", "two"])
    assert info.value.code == 2
    proc = subprocess.run([sys.executable, "-m", "mddbench", "run", "--method", "nosuch", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("mddbench: error: unknown method 'nosuch'") and "Traceback" not in proc.stderr


def test_console_script_is_installed():
    assert shutil.which("mddbench") or (Path(sys.executable).parent / "mddbench").is_file()


def test_a_record_made_under_another_default_is_not_taken_for_the_job(tmp_path, capsys, monkeypatch):
    """The job id names overrides, not defaults: after a default changes (without a new budget version) the
    stored record would silently stand for the new definition. run and sweep refuse and say what to do."""
    from mddbench.registry import METHODS

    job = ["--method", "dm", "--dataset", "demo", "--ipc", "1", "--budget", "smoke", "--quiet", "--out", tmp_path]
    dm = [*job, "--eval-n-models", "1", "--eval-epochs", "1"]
    assert cli(capsys, "run", *dm)[0] == 0
    assert cli(capsys, "run", *dm)[0] == 0  # unchanged: the stored record is the job's
    assert cli(capsys, "distill", *job, "--seed", "1")[0] == 0  # a run folder with a set, no record yet
    assert (tmp_path / "runs").is_dir() and len(list((tmp_path / "runs").glob("*/hparams.json"))) == 2
    cls = METHODS.get("dm")
    monkeypatch.setattr(cls, "defaults", {**cls.defaults, "lr_img": 2.0})
    rc, _, err = cli(capsys, "run", *dm)
    assert rc == 2 and "lr_img 1.0 -> 2.0" in err and "Bump `version` of 'smoke'" in err
    rc, _, err = cli(capsys, "run", *job, "--seed", "1")  # the set it would reuse was made under lr_img 1.0
    assert rc == 2 and "its set or checkpoints" in err and "lr_img 1.0 -> 2.0" in err
    sweep = ["--methods", "dm", "--datasets", "demo", "--ipc", "1", "--budget", "smoke", "--quiet", "--out", tmp_path,
             "--eval-n-models", "1", "--eval-epochs", "1"]
    rc, _, err = cli(capsys, "sweep", *sweep)
    assert rc == 2 and "lr_img 1.0 -> 2.0" in err
    assert len(ResultStore(tmp_path).records()) == 1  # nothing ran, nothing was added
