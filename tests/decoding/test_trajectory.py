"""The unmasking trajectory as text (`decoding/trajectory.py`) and `depmask decode --show_steps`."""

import json

import pytest

from depmask.cli import main
from depmask.decoding.trajectory import MASK, token_strings, trajectory_lines
from tests.conftest import EMBEDDED

SUDOKU = "<sudoku4> . 1 . . | . . . 4 | . . 3 . | 2 . . ."


def test_one_line_per_committing_forward_with_the_canvas_after_it():
    lines = trajectory_lines([2, 1, 5, 2], ["a", "bb", "c", "d"])
    assert lines == [
        f"forward 1 │ {MASK}  bb {MASK}  {MASK} │ +1",
        "forward 2 │ a  bb " + MASK + "  d │ +2",
        "forward 5 │ a  bb c  d │ +1",
    ]  # forwards 3 and 4 committed nothing (probe forwards, say): no line


def test_positions_never_committed_stay_masked_and_bad_input_is_named():
    assert trajectory_lines([1, 0], ["x", "y"]) == [f"forward 1 │ x {MASK} │ +1"]
    assert trajectory_lines([0, 0], ["x", "y"]) == []
    with pytest.raises(ValueError, match="`commit_step` has 2 positions but `tokens` has 1"):
        trajectory_lines([1, 2], ["x"])
    with pytest.raises(ValueError, match=r"must be >= 0"):
        trajectory_lines([1, -1], ["x", "y"])


def test_token_strings_without_a_tokenizer_are_the_ids():
    assert token_strings([5, 17]) == ["5", "17"]


@pytest.mark.parametrize("policy", [["threshold", "--policy.threshold", "0.9"],
                                    ["demask", "--policy.head", str(EMBEDDED.parent / "tiny-tasks-head")]])
def test_decode_shows_each_forward_of_the_trajectory(capsys, policy):
    args = ["decode", "--model", str(EMBEDDED), "--prompt", SUDOKU, "--gen_length", "16", "--policy", policy[0],
            *policy[1:]]
    main([*args, "--json_output", "true"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"][0]
    main([*args, "--show_steps", "true"])
    lines = [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("forward")]
    steps = sorted({s for s in row["commit_step"] if s > 0})
    assert len(lines) == len(steps) == len(set(steps)) and len(lines) >= 1
    assert sum(int(line.rsplit("+", 1)[1]) for line in lines) == 16  # every answer position, once
    assert lines[-1].split("│")[1].split() == row["completion"].split()  # the last canvas is the answer
    if len(lines) > 1:
        assert MASK in lines[0]


def test_the_readme_trajectory_example_is_what_decode_prints(capsys, monkeypatch):
    import re
    import shlex

    from tests.conftest import ROOT

    block = re.search(r"```\n\$ (depmask decode .*?--show_steps true)\n(.*?)```", (ROOT / "README.md").read_text(),
                      flags=re.S)
    assert block is not None, "README: the `--show_steps` example block"
    monkeypatch.chdir(ROOT)  # the command names the shipped model and head by relative paths
    command, shown = block.group(1).replace("\\\n", " "), block.group(2)
    main(shlex.split(command)[1:])
    printed = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert [line.rstrip() for line in shown.splitlines()] == printed[: len(shown.splitlines())]
