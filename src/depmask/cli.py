"""`depmask <command>`: the command table and the entry point.

Every command is a typed function; jsonargparse turns its signature into flags and YAML
(`--config`). Policies are given by preset name (`--policy threshold`) or class name
(`--policy Threshold`); the preset name is mapped to the class here, before parsing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from jsonargparse import CLI, DefaultHelpFormatter

from depmask.commands.decode import decode
from depmask.commands.eval_decode import eval_decode
from depmask.commands.eval_predictor import eval_predictor
from depmask.commands.eval_subadditivity import eval_subadditivity
from depmask.commands.harvest_verify import harvest_verify
from depmask.commands.mdlm_evaluate import mdlm_evaluate
from depmask.commands.quickstart import quickstart
from depmask.commands.tasks import tasks_show

COMMANDS: dict = {
    "quickstart": quickstart,
    "decode": decode,
    "tasks": {"_help": "Look at the synthetic tasks (`tasks show NAME`).", "show": tasks_show},
    # `depmask harvest --config ...` runs the harvest, below
    "harvest": {"_help": "Check a harvest directory (`harvest verify DIR`); `harvest --config` runs one.",
                "verify": harvest_verify},
    "eval": {"_help": "Evaluate decoders (`eval decode`), a dependency predictor (`eval predictor`) or the "
                      "sub-additivity bound (`eval subadditivity`).",
             "decode": eval_decode, "predictor": eval_predictor, "subadditivity": eval_subadditivity},
    # `mdlm fit|validate` go to LightningCLI, below
    "mdlm": {"_help": "Evaluate a small MDLM (`mdlm evaluate`); `mdlm fit|validate --config FILE` train or "
                      "validate one (Lightning's CLI, not listed below: `depmask mdlm fit --help`).",
             "evaluate": mdlm_evaluate},
}
LIGHTNING_SUBCOMMANDS = ("fit", "validate")
EPILOG = """\
Commands that go to Lightning's CLI (each takes --config FILE; add --help for every flag):
  depmask harvest --config FILE              harvest decoding states and their pairwise influences
  depmask train fit|validate --config FILE   train or validate a dependency head
  depmask mdlm fit|validate --config FILE    train or validate a small MDLM (the embedded model)
Shipped configs: configs/harvest/, configs/train/, configs/mdlm/, configs/eval/, configs/decode/."""


class _HelpFormatter(DefaultHelpFormatter):
    """Keeps the line breaks of descriptions and of the epilog (argparse would re-wrap them)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


def _resolve_policy(value: str) -> str:
    """A preset name as its class name; a class name, import path, inline YAML or the next flag as
    it is; anything else refused, naming the presets."""
    from depmask.decoding.policies import POLICIES

    if value in POLICIES:
        return POLICIES[value].__name__
    if value in {c.__name__ for c in POLICIES.values()} or "." in value or value.startswith(("{", "-")):
        return value
    raise ValueError(f"unknown policy {value!r}; expected a preset name, one of "
                     f"{', '.join(sorted(POLICIES))}, or a class import path")


def _policy_names(argv: list[str]) -> list[str]:
    """Rewrite `--policy threshold` / `--policy=threshold` (and `--policy.help threshold`) to the
    class name."""
    resolve = _resolve_policy
    out = list(argv)
    for i, arg in enumerate(out):
        for flag in ("--policy", "--policy.help"):
            if arg == flag and i + 1 < len(out):
                out[i + 1] = resolve(out[i + 1])
            elif arg.startswith(flag + "="):
                out[i] = f"{flag}=" + resolve(arg.split("=", 1)[1])
    return out


def _config_policy_names(argv: list[str]) -> list[str]:
    """A decode config's `policy: threshold` (or `class_path: threshold`) as the class name, as
    `--policy threshold` is: jsonargparse took only class paths there ("Expected a dot import path
    string: threshold"). A config file is handed on as a rewritten copy (removed at exit), an inline
    YAML config (`--config '{policy: clad, ...}'`) as rewritten YAML text."""
    import atexit
    import os
    import tempfile
    from pathlib import Path

    import yaml

    out = list(argv)
    for i, arg in enumerate(out):
        path = out[i + 1] if arg == "--config" and i + 1 < len(out) else arg[len("--config="):] \
            if arg.startswith("--config=") else None
        inline = False
        try:
            config = yaml.safe_load(Path(path).read_text()) if path else None
        except (OSError, yaml.YAMLError):
            try:  # not a readable file: jsonargparse also takes the config's text itself
                config, inline = yaml.safe_load(path), True
            except yaml.YAMLError:
                continue  # jsonargparse names it
        policy = config.get("policy") if isinstance(config, dict) else None
        name = policy if isinstance(policy, str) else policy.get("class_path") if isinstance(policy, dict) else None
        if not isinstance(name, str):
            continue
        try:
            cls = _resolve_policy(name)
        except ValueError as err:
            raise ValueError(f"{'the inline --config' if inline else path}: `policy`: {err}") from None
        if cls == name:
            continue
        config["policy"] = cls if isinstance(policy, str) else {**policy, "class_path": cls}
        if inline:  # YAML text again: whatever YAML read (a date, say) writes back
            copy = yaml.safe_dump(config)
        else:
            fd, copy = tempfile.mkstemp(prefix="depmask-decode-", suffix=".yaml")
            with os.fdopen(fd, "w") as f:
                yaml.safe_dump(config, f)
            atexit.register(lambda p=copy: Path(p).unlink(missing_ok=True))
        if arg == "--config":
            out[i + 1] = copy
        else:
            out[i] = f"--config={copy}"
    return out


def _prompt_texts(argv: list[str]) -> list[str]:
    """Keep a `decode --prompt TEXT` as the text: jsonargparse reads a flag's value as YAML, so
    `--prompt "- 3 1 2"` became the list ["3 1 2"] and `--prompt null` no prompt at all; the text is
    handed on as a one-item JSON list. A value written as a list (`--prompt '["a", "b"]'`) still
    gives several prompts."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--prompt" and i + 1 < len(out) and not out[i + 1].lstrip().startswith("["):
            out[i + 1] = json.dumps([out[i + 1]])
        elif arg.startswith("--prompt=") and not arg[len("--prompt="):].lstrip().startswith("["):
            out[i] = "--prompt=" + json.dumps([arg[len("--prompt="):]])
    return out


INTERRUPTED = ("depmask: interrupted (`eval decode` and `quickstart` keep every item decoded so far and a harvest "
               "its finished shards: the same command resumes from them; a fit resumes from its last checkpoint "
               "with `--ckpt_path`)")


def main(argv: Sequence[str] | None = None) -> None:
    try:
        _main(argv)
    except KeyboardInterrupt:  # a traceback of the interrupted decode or grading says nothing more
        print(INTERRUPTED, file=sys.stderr)
        raise SystemExit(130) from None
    except SystemExit as e:
        # Lightning catches Ctrl-C inside `fit` / `predict` (harvest, training, quickstart's stages),
        # shuts down and exits with status 1, as a failure would: raised while it handled the interrupt
        if e.code == 1 and isinstance(e.__context__, KeyboardInterrupt):
            print(INTERRUPTED, file=sys.stderr)
            raise SystemExit(130) from None
        raise


def _main(argv: Sequence[str] | None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["mdlm"] and len(argv) > 1 and argv[1] in LIGHTNING_SUBCOMMANDS:
        from depmask.train.cli import mdlm_cli

        mdlm_cli(argv[1:])
        return
    if argv[:1] == ["train"]:
        from depmask.train.head_cli import head_cli

        head_cli(argv[1:])
        return
    if argv[:1] == ["harvest"] and argv[1:2] != ["verify"]:
        from depmask.train.harvest_cli import harvest_cli

        harvest_cli(argv[1:])
        return
    if argv[:2] == ["tasks", "show"] and len(argv) > 2 and not argv[2].startswith("-"):
        argv = [*argv[:2], "--name", *argv[2:]]  # `depmask tasks show sudoku4 --n 3`
    if argv[:2] == ["harvest", "verify"] and len(argv) > 2 and not argv[2].startswith("-"):
        argv = [*argv[:2], "--directory", *argv[2:]]  # `depmask harvest verify DIR`
    args = _policy_names(argv)
    if args[:1] == ["decode"]:
        args = _config_policy_names(_prompt_texts(args))
    group = COMMANDS.get(args[0]) if args else None
    if isinstance(group, dict) and len(args) > 1 and args[1] in group and not args[1].startswith("_"):
        # a group's command is parsed on its own: nested in the group's parser, jsonargparse reported
        # a misspelled config key as "error: 'eval'" instead of naming it
        CLI(group[args[1]], args=args[2:], as_positional=False, prog=f"depmask {args[0]} {args[1]}",
            formatter_class=_HelpFormatter)
        return
    CLI(COMMANDS, args=args, as_positional=False, epilog=EPILOG, formatter_class=_HelpFormatter)


TRACEBACK_ENV = "DEPMASK_TRACEBACK"


def entry() -> None:
    """The `depmask` console script (and `python -m depmask.cli`): `main`, where a refused
    argument or missing file ends with its message on one line and status 2 instead of a traceback
    (`DEPMASK_TRACEBACK=1` shows it). Called as a function, `main` raises, for tests and scripts."""
    import os

    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        print(f"depmask: error: {err}\n(for the traceback, run it again with {TRACEBACK_ENV}=1)", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    entry()
