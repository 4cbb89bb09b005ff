"""A command offers only the options it uses (issue 14): an ignored option is refused by argparse."""
import pytest

from mddbench.cli import build_parser


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
