"""`depmask quickstart`: the tour of the whole mission on the embedded model, with no arguments.

1. harvest — decoding states of `sudoku4` and `permutation` (train split) with their empirical
   pairwise influences (`<out>/harvest`, a normal harvest directory: `depmask harvest verify` it);
2. head — a dependency head trained on them (`<out>/head`, loadable by
   `depmask decode --policy demask --policy.head <out>/head`), with the architecture and loss of
   the shipped head's config (`configs/train/head-tiny.yaml`, its `model:` section);
3. decode — the held-out test split with one-token-per-step, `threshold`, `entropy_bound`,
   `factor`, `dilated`, `clad`, `demask` and `oracle`, each over a small knob sweep (`<out>/eval`,
   the same layout as `depmask eval decode`; re-running resumes);
then the table, the headline (the TPF each policy reaches at one-token-per-step accuracy),
`summary.json` (one row per run: task, policy, knobs, accuracy, nfe, tpf, ...) and
`frontier.png`. Each stage reuses what an earlier run left in `<out>`; `<out>/quickstart.json`
records the settings that decide the harvest and the head, and a run asking for others is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from depmask.data_gen.shards import write_atomic
from depmask.eval.headline import headline_report
from depmask.eval.plots import plot_frontier
from depmask.eval.runner import PolicySweep, check_seed, check_tasks, listed
from depmask.eval.summary import table, to_json
from depmask.paths import output_dir

# the harvest's argument names in its messages, and quickstart's for them
_NAMES = {"`examples_per_task`": "`harvest_examples`", "`--output`": "`--out_dir`", "`output`": "`out_dir`"}


def metric_text(metrics: dict) -> str:
    """The head's validation metrics on one line; an undefined one (null in its manifest) as —."""
    return ", ".join(f"{k} {'—' if v is None else f'{v:.3f}'}" for k, v in sorted(metrics.items()))


def _our_names(message: str) -> str:
    for theirs, ours in _NAMES.items():
        message = message.replace(theirs, ours)
    return message


def _shipped(relative: str, marker: str = "") -> Path:
    """A shipped file: `relative` in the working directory when it is there (`relative/marker`
    exists), else in the checkout this module belongs to."""
    here = Path(relative)
    if (here / marker if marker else here).is_file():
        return here
    return Path(__file__).resolve().parents[3] / relative


def embedded_model_path() -> Path:
    """The shipped model: `models/tiny-tasks` in the working directory, else in the checkout."""
    return _shipped("models/tiny-tasks", "config.json")


def shipped_head_config() -> Path:
    """The shipped head's training config, found like the embedded model."""
    return _shipped("configs/train/head-tiny.yaml")


def comparison_policies(head: str) -> list[PolicySweep]:
    """Today's decoders and the dependency-guided ones, each over a small sweep."""
    return [
        PolicySweep("low_confidence"),
        PolicySweep("threshold", sweep={"threshold": [0.5, 0.7, 0.9, 0.99]}),
        PolicySweep("entropy_bound", sweep={"gamma": [0.1, 0.3, 1.0]}),
        PolicySweep("factor", sweep={"factor": [0.1, 0.3, 1.0]}),
        PolicySweep("dilated", sweep={"base": [2]}),
        PolicySweep("clad", sweep={"threshold": [0.5, 0.7, 0.9]}),
        PolicySweep("demask", knobs={"head": head}, sweep={"epsilon": [0.1, 0.3, 0.6, 1.0, 3.0]}),
        PolicySweep("oracle", sweep={"epsilon": [0.3, 1.0, 3.0]}),
    ]


SETTINGS_JSON = "quickstart.json"


def check_settings(out: Path, settings: dict) -> None:
    """Refuse, naming each difference, to reuse an out_dir whose earlier run recorded other
    settings for the harvest and the head (`<out>/quickstart.json`): the stages reuse what they
    find, so a changed setting would otherwise be silently ignored. `n` and `device` only touch the
    decoding stage, which resumes item by item, and are not recorded."""
    path = out / SETTINGS_JSON
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    diffs = []
    for k, v in settings.items():
        was = old.get(k)
        if isinstance(was, dict) and isinstance(v, dict):  # the head's settings: name the keys that differ
            diffs += [f"{k}.{s}: {was.get(s)!r} → {v.get(s)!r}" for s in dict.fromkeys([*was, *v]) if was.get(s) != v.get(s)]
        elif was != v:
            diffs.append(f"{k}: {was!r} → {v!r}")
    if diffs:
        raise ValueError(f"{out} holds a quickstart run with other settings ({'; '.join(diffs)}); its harvest "
                         f"and head would be reused as they are. Give another `--out_dir`, or delete {out} "
                         "to start over")


def check_head_kwargs(head_kwargs: dict, head_config: str | None) -> None:
    """Build the head's module once on a stand-in hidden size, so a bad value of the head config
    (`pair_activation: 5`) is refused before the harvest, not after it (and before it is recorded)."""
    from depmask.train.head_module import HeadModule

    try:
        HeadModule(hidden_size=8, export_dir=None, **head_kwargs)
    except (ValueError, TypeError) as err:
        raise ValueError(f"`head_config` ({head_config or shipped_head_config()}): {err}") from None


def record_settings(out: Path, settings: dict) -> None:
    """Write `<out>/quickstart.json` once the harvest stands (a run that failed before it, e.g. on
    a bad task name, leaves no record to trip over)."""
    if not (out / SETTINGS_JSON).is_file():
        write_atomic(out / SETTINGS_JSON, (json.dumps(settings, indent=2) + "\n").encode())


def quickstart(
    model: str | None = None,
    out_dir: str = "outputs/quickstart",
    tasks: list[str] | None = None,
    harvest_examples: int = 150,
    states_per_example: int = 4,
    head_epochs: int = 20,
    head_config: str | None = None,
    n: int = 100,
    seed: int = 0,
    device: str | None = None,
) -> list[dict]:
    """Harvest → train a head → decode with every policy; table, headline, summary.json, plot.

    Args:
        model: model directory (default: the shipped `models/tiny-tasks`).
        out_dir: where every stage writes (and, when re-run, resumes from).
        tasks: tasks to harvest and decode (default: sudoku4, permutation).
        harvest_examples: train examples per task for the harvest.
        states_per_example: decoding states kept per harvested example.
        head_epochs: training epochs of the head (the harvest is small: 20 epochs are ~340 steps at the defaults).
        head_config: a `depmask train fit` YAML whose `model:` section sets the head's architecture
            and loss (default: `configs/train/head-tiny.yaml`, the shipped head's).
        n: held-out test items per task for the decoding comparison.
        seed: seeds the harvest, the head and the test-item draw.
        device: torch device for the harvest and decoding (default: cpu).
    """
    from depmask.data_gen import HarvestConfig
    from depmask.data_gen.verify import verify_harvest
    from depmask.eval.runner import run_decode_eval
    from depmask.models import HFDenoiser
    from depmask.models.hf_denoiser import check_device
    from depmask.train.harvest import run_harvest
    from depmask.train.head_fit import module_kwargs, train_head

    tasks = listed("tasks", tasks, ["sudoku4", "permutation"], "sudoku4 and permutation")
    path = Path(model).expanduser() if model else embedded_model_path()
    out = output_dir("out_dir", out_dir)
    dev = check_device(device)  # before any work, not in Lightning's accelerator setup
    trainer = {"accelerator": "cpu"} if dev.type == "cpu" else {"accelerator": "gpu", "devices": [dev.index or 0]}
    head_kwargs = module_kwargs(head_config or shipped_head_config())  # a bad file fails before any work
    check_head_kwargs(head_kwargs, head_config)  # so does a bad value in it (it used to fail after the harvest)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:  # so does a bad `n`, read only by the last stage
        raise ValueError(f"`n` ({n!r}) must be an int >= 1 (held-out test items per task)")
    if isinstance(head_epochs, bool) or not isinstance(head_epochs, int) or head_epochs < 1:
        raise ValueError(f"`head_epochs` ({head_epochs!r}) must be an int >= 1 (0 would export an untrained head)")
    check_seed("seed", seed)  # it seeds the head's training too, which refuses a negative one after the harvest
    check_tasks(tasks, None, split="test", n=n, seed=seed)  # an unknown or repeated task, before the harvest
    settings = {"model": str(path.resolve()), "tasks": tasks, "harvest_examples": harvest_examples,
                "states_per_example": states_per_example, "seed": seed, "head_epochs": head_epochs,
                "head": head_kwargs}
    if not (path / "config.json").is_file():
        raise ValueError(f"`model` ({model!r}) is not a local model directory with a config.json")
    try:
        cfg = HarvestConfig(model=str(path), output=str(out / "harvest"), tasks=tasks,
                            examples_per_task=harvest_examples, states_per_example=states_per_example, seed=seed,
                            batch_size=50)
    except ValueError as err:  # the harvest's names for this command's arguments
        raise ValueError(_our_names(str(err))) from None
    check_settings(out, settings)

    print(f"[1/3] harvest → {out / 'harvest'}")
    if not verify_harvest(cfg.output).ok or not (out / SETTINGS_JSON).is_file():
        try:  # resumes; refuses a harvest of other settings (one with no record too)
            run_harvest(cfg, trainer)
        except ValueError as err:
            raise ValueError(_our_names(str(err))) from None
    record_settings(out, settings)

    head_dir = out / "head"
    print(f"[2/3] dependency head → {head_dir}")
    if not (head_dir / "config.json").is_file():  # the export writes it last, after the weights
        _, metrics = train_head(cfg.output, head_dir, epochs=head_epochs, seed=seed, **head_kwargs)
        print("head: " + metric_text(metrics))

    print(f"[3/3] decode the test split → {out / 'eval'}")
    den = HFDenoiser.from_pretrained(path, device=dev)
    rows = run_decode_eval(den, tasks, comparison_policies(str(head_dir)), out / "eval", n=n, seed=seed,
                           batch_size=n)
    print(table(rows))
    top, text = headline_report(rows)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "summary.json", to_json(rows).encode())
    write_atomic(out / "headline.json", to_json(top).encode())
    plot_frontier(rows, out / "frontier.png")
    print(f"wrote {out / 'summary.json'}, {out / 'headline.json'} and {out / 'frontier.png'}")
    return rows
