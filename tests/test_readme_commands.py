"""Every `depmask ...` command in the README's shell blocks parses: its subcommand and flags exist
(`--print_config` resolves the whole command line without running it). The commands themselves
run in the tests of their modules (quickstart, harvest, train, eval decode, decode, tasks); the
Python example runs on the embedded model."""

import re
import shlex

import pytest

from depmask.cli import main
from tests.conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("depmask "):
                    commands.append(part)
    return commands


def test_the_readme_has_commands():
    cmds = readme_commands()
    assert any(c.startswith("depmask quickstart") for c in cmds)
    assert len(cmds) >= 8


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command, capsys):
    args = shlex.split(command)[1:]
    with pytest.raises(SystemExit) as e:
        main([*args, "--print_config"])
    assert e.value.code in (0, None), capsys.readouterr().err[-2000:]


def test_the_readme_python_snippet_runs_on_the_embedded_model(capsys):
    """The README's Python example, with the LLaDA path, device and lengths swapped for the embedded
    model's (its canvas holds 64 positions), runs as written otherwise."""
    from tests.conftest import EMBEDDED

    (block,) = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    swaps = {'"path/to/LLaDA-8B-Instruct"': repr(str(EMBEDDED)), 'device="cuda"': 'device="cpu"',
             "gen_length=128": "gen_length=16", "block_length=32": "block_length=16", "steps=128": "steps=16"}
    for old, new in swaps.items():
        assert old in block, old  # the snippet still reads as this test assumes
        block = block.replace(old, new)
    exec(compile(block, "README.md", "exec"), {})
    assert "'nfe'" in capsys.readouterr().out
