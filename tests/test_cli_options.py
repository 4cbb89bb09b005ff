"""A command offers only the options it uses (issue 14): an ignored option is refused by argparse.

Issue 46: every option says its help and default, one name per concept (old names warn), the printout after
a run, and config files (TOML, or a run's job.json) for run and sweep.
"""
import argparse
import json
import re

import pytest
from conftest import RANDOM_DEMO, cli

from mddbench.cli import build_parser, parse_command
from mddbench.report.printout import printout
from mddbench.results.store import ResultStore


@pytest.mark.parametrize("argv", [
    ["eval", "set.safetensors", "--plugin", "p.py"],
    ["eval", "set.safetensors", "--expert-cache", "dir"],
    ["privacy", "set.safetensors", "--plugin", "p.py"],
    ["buffers", "--dataset", "demo", "--flat"],  # the method says which experts it reads
    ["buffers", "--dataset", "demo", "--experts", "3"],  # buffers no method would read at the budget
    ["run", "--method", "random", "--save", "x.safetensors"],
])
def test_options_a_command_would_ignore_are_not_offered(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_options_a_command_uses_are_offered():
    args = build_parser().parse_args(["distill", "--method", "random", "--save", "x.safetensors", "--plugin", "p.py"])
    assert args.save == "x.safetensors" and args.plugin == ["p.py"]
    assert build_parser().parse_args(["eval", "set.safetensors"]).budget is None  # the set's own, as --help says


def test_eval_help_states_the_default_it_uses(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--help"])
    assert "default: the set's own" in capsys.readouterr().out


# ------------------------------------------------------------------ issue 46: help, names, printout, config

def commands():
    parser = build_parser()
    return parser, parser._subparsers._group_actions[0].choices


def test_every_option_has_help_and_its_default_shows():
    _, subs = commands()
    for name, sub in subs.items():
        text = " ".join(sub.format_help().split())  # unwrapped
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:  # a deprecated name: --help shows the new one
                continue
            assert action.help and action.help.strip(), (name, action.dest)
            default = action.default
            if default in (None, False, argparse.SUPPRESS) or not action.option_strings and action.nargs != "?":
                continue
            shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
            assert f"default: {shown}" in text, (name, action.dest, shown)
        assert sub.description and "`" not in sub.description, name


def test_no_help_text_or_description_shows_markup(capsys):
    parser, subs = commands()
    assert "`" not in parser.description and "``" not in parser.format_help()
    for name, sub in subs.items():
        assert "`" not in sub.format_help(), name
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert "`" not in capsys.readouterr().out


def test_distill_offers_no_evaluation_option(capsys):
    _, subs = commands()
    assert not {a.dest for a in subs["distill"]._actions} & {"eval_model", "eval_n_models", "eval_epochs"}
    for option in ("--eval-model", "--eval-n-models", "--eval-epochs"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["distill", "--method", "random", option, "1"])
        assert "unrecognized arguments" in capsys.readouterr().err


def test_one_name_per_evaluation_option_in_every_command():
    _, subs = commands()
    for name in ("run", "sweep", "eval", "privacy"):
        shown = {o for a in subs[name]._actions if a.help != argparse.SUPPRESS for o in a.option_strings}
        assert {"--eval-model", "--eval-n-models", "--eval-epochs"} <= shown, name
        assert not shown & {"--model", "--n-models", "--epochs"}, name


@pytest.mark.parametrize("command, old, new, value, dest, parsed", [
    (["eval", "set.safetensors"], "--model", "--eval-model", "lenet", "eval_model", ["lenet"]),
    (["privacy", "set.safetensors"], "--model", "--eval-model", "lenet", "eval_model", "lenet"),
    (["privacy", "set.safetensors"], "--n-models", "--eval-n-models", "3", "eval_n_models", 3),
    (["privacy", "set.safetensors"], "--epochs", "--eval-epochs", "3", "eval_epochs", 3),
])
def test_an_old_name_still_works_and_warns_once(capsys, command, old, new, value, dest, parsed):
    assert getattr(parse_command([*command, old, value]), dest) == parsed
    assert capsys.readouterr().err.count(f"{old} is deprecated, use {new}") == 1
    args = parse_command([*command, old, value, old, value])  # given twice: one warning
    assert getattr(args, dest) == (parsed * 2 if isinstance(parsed, list) else parsed)
    assert capsys.readouterr().err.count("deprecated") == 1
    assert getattr(parse_command([*command, new, value]), dest) == parsed  # the new name: no warning
    assert capsys.readouterr().err == ""


def test_an_old_name_is_checked_as_the_new_one(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_command(["privacy", "x.safetensors", "--epochs", "0"])
    assert exc.value.code == 2 and "must be in [1, 1,000,000,000], got 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ printout
def record(method="m", dataset="breastmnist", budget="quick", acc=0.70, bal=0.55, n=5, seconds=12.34):
    stat = lambda v: {"mean": v, "std": 0.01, "n": n, "per_model": [v] * n}  # noqa: E731
    return {"method": method, "dataset": dataset, "ipc": 2, "eval_model": "convnet", "budget": budget,
            "metrics": {"test_acc": stat(acc), "balanced_acc": stat(bal), "auc": stat(0.6), "val_acc": stat(acc)},
            "distill_seconds": seconds}


BREAST_COUNTS = {"breastmnist": (42, 114), "demo": (50, 50, 50, 50)}


def test_the_printout_is_in_percent_with_a_legend():
    text = printout([record(acc=0.8, bal=0.75)], BREAST_COUNTS.get)
    header, _, row = text.splitlines()[:3]
    assert "test acc %" in header and "bal acc %" in header and "AUC %" in header
    assert "80.00 ± 1.00" in row and "75.00" in row and "60.00" in row and "12.3" in row
    for term in ("n: evaluation networks", "diverged:", "distill s: seconds", "test acc %:", "bal acc %:"):
        assert term in text, term
    assert "warning" not in text and "not comparable" not in text and "already done" not in text


def test_accuracy_at_or_below_the_majority_class_rate_is_warned():
    share = 114 / 156  # BreastMNIST's test split: 73.08 % benign
    for acc, warned in ((share, True), (share - 0.05, True), (share + 0.01, False)):
        text = printout([record(acc=acc)], BREAST_COUNTS.get)
        assert ("at or below the majority-class rate of the test split" in text) is warned, acc
    text = printout([record(acc=share)], BREAST_COUNTS.get)
    assert "(73.08 %, 114 of 156 images)" in text and "balanced accuracy (55.00 %)" in text
    assert "warning" not in printout([record(dataset="unlisted", acc=0.1)], lambda d: None)  # counts unknown


def test_smoke_results_are_marked_not_comparable():
    text = printout([record(budget="smoke"), record(budget="smoke-custom"), record(budget="quick")], BREAST_COUNTS.get)
    rows = text.splitlines()[2:5]
    assert "smoke*" in rows[0] and "smoke-custom*" in rows[1] and "quick*" not in rows[2]
    assert "* smoke, smoke-custom: not comparable" in text and "quick, medium, paper" in text


def test_a_rerun_of_a_finished_job_says_already_done(random_run, capsys):
    rc, out, _ = cli(capsys, *RANDOM_DEMO, "--out", random_run)
    assert rc == 0 and "already done: an earlier run of this job stored these records" in out
    assert "smoke*" in out and "* smoke: not comparable" in out and "test acc %" in out



def test_a_first_run_is_not_already_done(tmp_path, capsys):
    rc, out, _ = cli(capsys, *RANDOM_DEMO, "--out", tmp_path, "--eval-n-models", "1", "--eval-epochs", "1")
    assert rc == 0 and "already done" not in out and "smoke-custom*" in out


def test_the_demo_sets_majority_rate_comes_from_its_labels():
    from mddbench.data.class_balance import counts_of_test_split

    assert counts_of_test_split("demo") == (50, 50, 50, 50)
    assert counts_of_test_split("breastmnist") == (42, 114)  # listed: no data needed


# -------------------------------------------------------------------------------- config files
def job_of(argv):
    from mddbench.cli import _job

    args = parse_command([str(a) for a in argv])
    return _job(args, args.method, args.dataset, args.ipc, args.seed)


def test_a_toml_run_is_the_same_job_as_the_command_line(tmp_path, random_run, capsys):
    config = tmp_path / "run.toml"
    config.write_text('method = "random"\ndataset = "demo"\nipc = 2\nbudget = "smoke"\nquiet = true\n'
                      f'out = "{random_run}"\n')
    [stored] = ResultStore(random_run / "results.sqlite").records()
    assert job_of(["run", "--config", config]).job_id == stored["job_id"] == job_of(
        [*RANDOM_DEMO, "--out", random_run]).job_id
    rc, out, _ = cli(capsys, "run", "--config", config)  # the same job: its stored record, nothing run
    assert rc == 0 and "already done" in out


def test_hyperparameters_and_lists_in_toml_match_the_command_line(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('method = "dm"\nbudget = "smoke"\neval-model = ["convnet", "lenet"]\n'
                      'eval_epochs = 3\n[hp]\niterations = 3\nlr_img = 1.5\n')
    cli_job = job_of(["run", "--method", "dm", "--budget", "smoke", "--eval-model", "convnet", "--eval-model",
                      "lenet", "--eval-epochs", "3", "--hp", "iterations=3", "--hp", "lr_img=1.5"])
    assert job_of(["run", "--config", config]) == cli_job


def test_a_run_folders_job_json_replays_to_the_same_job(random_run, capsys):
    [job_json] = random_run.glob("runs/*/job.json")
    saved = json.loads(job_json.read_text())
    assert job_of(["run", "--config", job_json]).job_id == saved["job_id"]
    assert job_of(["run", "--config", job_json.parent]).job_id == saved["job_id"]  # the folder means its job.json
    rc, out, err = cli(capsys, "run", "--config", job_json)
    assert rc == 0 and "already done" in out and "note:" not in err
    out = random_run.parent / "replayed"  # not random_run: its one record is what the other tests read
    rc, _, err = cli(capsys, "run", "--config", job_json, "--seed", "5", "--eval-epochs", "1", "--eval-n-models", "1",
                     "--out", out)
    assert rc == 0 and f"names job {saved['job_id']}" in err  # an option given here made another job: said


def test_an_option_on_the_command_line_wins_over_the_file(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('method = "dm"\nseed = 3\nbudget = "smoke"\neval_model = ["lenet"]\n[hp]\niterations = 3\n'
                      'lr_img = 2\n')
    job = job_of(["run", "--config", config, "--seed", "4", "--eval-model", "alexnet", "--hp", "lr_img=5"])
    assert job.seed == 4 and job.eval_models == ("alexnet",) and dict(job.hparams) == {"iterations": "3",
                                                                                       "lr_img": "5"}
    assert job.budget == "smoke" and job.method == "dm"  # the rest is the file's
    assert job_of(["run", "--config", config]).seed == 3


def test_an_unknown_key_names_itself_and_the_valid_ones(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('method = "random"\neval_modle = "lenet"\n')
    rc, _, err = cli(capsys, "run", "--config", config)
    assert rc == 2 and f"{config}: unknown key 'eval_modle'; valid keys:" in err
    for key in ("eval_model", "eval_epochs", "hp", "seed", "budget"):
        assert re.search(rf"\b{key}\b", err), key
    config.write_text('method = "random"\neval_epochs = 0\n')
    rc, _, err = cli(capsys, "run", "--config", config)
    assert rc == 2 and "eval_epochs = 0: must be in [1, 1,000,000,000], got 0" in err
    config.write_text('method = "random"\n[eval]\nepochs = 1\n')
    assert cli(capsys, "run", "--config", config)[0] == 2
    rc, _, err = cli(capsys, "run", "--config", tmp_path / "missing.toml")
    assert rc == 2 and "cannot read it" in err
    (tmp_path / "bad.toml").write_text("method = \n")
    rc, _, err = cli(capsys, "run", "--config", tmp_path / "bad.toml")
    assert rc == 2 and "is not valid TOML" in err


def test_a_sweep_reads_its_grid_from_toml(tmp_path, capsys):
    config = tmp_path / "sweep.toml"
    config.write_text('methods = ["random", "dm"]\ndatasets = ["demo"]\nipc = [1, 2]\nseeds = [0, 1]\n'
                      'budget = "smoke"\njobs = 2\nquiet = true\n')
    args = parse_command(["sweep", "--config", str(config), "--seeds", "5"])
    assert (args.methods, args.datasets, args.ipc, args.seeds, args.budget, args.jobs, args.quiet) == (
        ["random", "dm"], ["demo"], [1, 2], [5], "smoke", 2, True)
    config.write_text('method = "random"\n')  # run's key: the sweep's is methods
    rc, _, err = cli(capsys, "sweep", "--config", config)
    assert rc == 2 and "unknown key 'method'" in err and "methods" in err


def test_without_config_the_required_options_are_still_required(capsys):
    for argv, missing in ((["run"], "--method"), (["sweep", "--methods", "random"], "--datasets")):
        with pytest.raises(SystemExit) as exc:
            parse_command(argv)
        assert exc.value.code == 2 and f"the following arguments are required: {missing}" in capsys.readouterr().err
