"""`depmask mdlm evaluate`: the embedded model's accuracy table and its model card.

For every task, decodes `n` held-out test items at temperature 0 with: one token per step
(`low_confidence`, steps = answer length), everything in a single forward (`low_confidence`,
steps = 1), and Fast-dLLM's `threshold` at τ ∈ {0.5, 0.7, 0.9}. Prints the table, writes it as
JSON (a list of rows: task, policy, knobs, accuracy, nfe, tpf, seconds, n) and, with
`write_card`, the model card (`README.md` in the model directory) with the table and the command
that produced it. It does not train.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch
from tqdm.auto import tqdm

from depmask.data_gen.shards import write_atomic
from depmask.decoding import build_policy
from depmask.eval import DEFAULT_TASKS, score_task
from depmask.eval.runner import check_tasks, listed
from depmask.paths import output_dir
from depmask.tasks import BENCHMARKS, TASKS, get_task
from depmask.tasks.adapter import check_symbols


def settings() -> list[tuple[str, str, dict, str]]:
    """(label, policy, knobs, steps rule) for each decoding setting in the table."""
    rows = [("one_per_step", "low_confidence", {}, "answer"), ("all_at_once", "low_confidence", {}, "one")]
    rows += [(f"threshold_{t}", "threshold", {"threshold": t}, "answer") for t in (0.5, 0.7, 0.9)]
    return rows


def evaluate_rows(den, tokenizer, tasks: list[str], n: int, seed: int, batch_size: int) -> list[dict]:
    rows = []
    runs = [(name, *setting) for name in tasks for setting in settings()]
    for name, label, policy_name, knobs, steps_rule in tqdm(runs, desc="mdlm evaluate", unit="run",
                                                            dynamic_ncols=True):
        task = get_task(name)
        steps = 1 if steps_rule == "one" else task.answer_length
        result = score_task(den, tokenizer, task, build_policy(policy_name, **knobs), n, seed, batch_size,
                            steps=steps)
        rows.append({"task": name, "setting": label, "policy": policy_name, **knobs, "steps": steps, **result,
                     "seed": seed})
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"| {'task':<12}| {'decoding':<16}| {'accuracy':>9} | {'NFE':>6} | {'TPF':>5} | {'seconds':>8} |",
             f"|{'-' * 13}|{'-' * 17}|{'-' * 11}|{'-' * 8}|{'-' * 7}|{'-' * 10}|"]
    for r in rows:
        lines.append(f"| {r['task']:<12}| {r['setting']:<16}| {100 * r['accuracy']:>8.1f}% | {r['nfe']:>6.2f} | "
                     f"{r['tpf']:>5.2f} | {r['seconds']:>8.2f} |")
    return "\n".join(lines)


def mdlm_evaluate(
    model: str = "models/tiny-tasks",
    tasks: list[str] = DEFAULT_TASKS,  # noqa: B006
    n: int = 500,
    seed: int = 0,
    batch_size: int = 250,
    device: str | None = None,
    out: str | None = None,
    write_card: bool = True,
) -> list[dict]:
    """Accuracy of the embedded MDLM per task and decoding setting, on held-out test items.

    Args:
        model: the model directory (default: the shipped embedded model).
        tasks: task names.
        n: test items per task.
        seed: seed of the test-item draw.
        batch_size: prompts decoded together.
        device: torch device (default: cpu).
        out: JSON path (default: `<model>/eval.json`).
        write_card: also write `<model>/README.md`, the model card.
    """
    from depmask.models import HFDenoiser

    if n < 1:
        raise ValueError(f"`n` ({n}) must be >= 1")
    if batch_size < 1:
        raise ValueError(f"`batch_size` ({batch_size}) must be >= 1")
    tasks = listed("tasks", tasks, DEFAULT_TASKS, "the four synthetic tasks")  # [] would empty the card's table
    for name in tasks:
        if name in BENCHMARKS:
            raise ValueError(f"`tasks` names {name!r}, a benchmark; `mdlm evaluate` scores the synthetic tasks the "
                             f"embedded model is trained on ({', '.join(TASKS)}); benchmarks: `depmask eval decode`")
        try:
            get_task(name)  # an unknown name fails here, before the load
        except ValueError as err:
            raise ValueError(f"`tasks`: {err}") from None
    check_tasks(tasks, None)  # so does a repeated one
    model = str(Path(model).expanduser())
    out_path = Path(out).expanduser() if out else Path(model) / "eval.json"
    try:  # a file above the table's path is named now, not after the decoding
        output_dir("out" if out else "model", out_path.parent)
    except ValueError as err:
        raise ValueError(f"{err} (the folder the table {str(out_path)!r} goes in)") from None
    if out_path.is_dir():
        raise ValueError(f"`out` ({out}) is a directory; give the JSON file to write, e.g. {out_path / 'eval.json'}")
    if out is None or write_card:
        _check_model_record(Path(model), n, tasks, seed, table=out is None)
    den = HFDenoiser.from_pretrained(model, device=device or "cpu")
    if den.tokenizer is None:
        raise ValueError(f"model {model!r} has no tokenizer; the tasks need one")
    for name in tasks:  # before any decoding: a task the tokenizer cannot write was scored 0 %, and written down
        check_symbols(name, get_task(name), den.tokenizer)
    rows = evaluate_rows(den, den.tokenizer, tasks, n, seed, batch_size)
    table = format_table(rows)
    print(table)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out_path, json.dumps(rows, indent=2).encode())  # the shipped files: never half-written
    print(f"wrote {out_path}")
    if write_card:
        card = Path(model) / "README.md"
        provenance = Path(model) / "TRAINING.md"
        extra = "\n" + provenance.read_text() if provenance.is_file() else ""
        write_atomic(card, (model_card(den, table, model, n, seed, device or "cpu", tasks) + extra).encode())
        print(f"wrote {card}")
    return rows


def _check_model_record(model: Path, n: int, tasks: list[str], seed: int = 0, table: bool = True) -> None:
    """Refuse, before decoding, to replace the model directory's own table (`eval.json`, read by
    its card) with one of other items or tasks: `--n 2` rewrote the shipped 500-item table, and
    `--seed 7` (other items; rows before 2026-11-30 record no seed: theirs was 0) did too. `table`:
    this run writes `eval.json` too (no `--out`); otherwise it would replace the card alone."""
    record = model / "eval.json"
    if not record.is_file():
        return
    try:
        rows = json.loads(record.read_text())
        had = ({r["n"] for r in rows}, list(dict.fromkeys(r["task"] for r in rows)), {r.get("seed", 0) for r in rows})
    except (ValueError, KeyError, TypeError, AttributeError):
        return  # not a table of ours: nothing to protect
    if had != ({n}, list(tasks), {seed}):
        replaced, fix = (("it and its model card", "Give `--out` a file of your own and `--write_card false`") if table
                         else ("the model card (README.md) that shows it", "Add `--write_card false`"))
        raise ValueError(
            f"{record} holds the model's table of {sorted(had[0])} items per task over {had[1]} at seed "
            f"{sorted(had[2])}; this run ({n} items over {list(tasks)} at seed {seed}) would replace {replaced}. "
            f"{fix}, or give the same `--n`, `--tasks` and `--seed` to remake the table")


def model_card(den, table: str, model: str, n: int, seed: int, device: str,
               tasks: list[str] = DEFAULT_TASKS) -> str:  # noqa: B006
    cfg = den.model.config
    # the card's command reproduces its table: name the tasks when they are not the default four
    task_flag = "" if list(tasks) == list(DEFAULT_TASKS) else f" --tasks '[{', '.join(tasks)}]'"
    params = sum(p.numel() for p in den.model.parameters())
    trained_on = _trained_tasks(Path(model))
    if trained_on is None:  # the shipped model (no `train_config.yaml`): its card as shipped
        title = "tiny-tasks: depmask's embedded masked diffusion LM"
        objective = ("four synthetic tasks with exact verifiers: `sudoku4`,\n`permutation`, `sort`, "
                     "`addition`")
    else:  # a fit of its own: the card named the embedded model's four tasks whatever it learnt
        title = f"{Path(model).name}: a masked diffusion LM trained by depmask"
        count = "four" if len(trained_on) == 4 else str(len(trained_on))
        objective = (f"{count} synthetic task{'s' if len(trained_on) > 1 else ''} with exact verifiers:\n"
                     + ", ".join(f"`{t}`" for t in trained_on))
    if (Path(model) / "train_config.yaml").is_file():  # `mdlm fit` wrote its resolved config there
        trained = ("Trained with `depmask mdlm fit`; every setting of that fit is in `train_config.yaml`\n"
                   "beside the weights.")
    else:  # the shipped model (its training notes follow the table)
        trained = ("Trained with `depmask mdlm fit --config configs/mdlm/tiny-tasks.yaml` (seed 0; the file holds every\n"
                   "setting).")
    return f"""# {title}

A LLaDA-shaped bidirectional transformer (pre-norm, RoPE, SwiGLU, no causal mask) trained by depmask
with the masked-diffusion objective on {objective}. {params:,} parameters: {cfg.num_hidden_layers} layers, hidden
{cfg.hidden_size}, {cfg.num_attention_heads} heads, SwiGLU {cfg.intermediate_size}, vocabulary {cfg.vocab_size}.
Fingerprint: `{den.fingerprint}`.

{trained} Loads with `HFDenoiser.from_pretrained("{model}")` after `import depmask`, or with plain
transformers: `AutoModel.from_pretrained("{model}", trust_remote_code=True)`.

## Accuracy (held-out test split, {n} items per task, seed {seed}, temperature 0, {device})

Measured with `depmask mdlm evaluate --model {model} --n {n} --seed {seed}{task_flag}` (torch
{torch.__version__}, Python {platform.python_version()}). `one_per_step`: `low_confidence` with
steps = answer length; `all_at_once`: the whole answer in one forward; `threshold_τ`: Fast-dLLM's
threshold rule. TPF = answer tokens per forward, pooled over the items (answer length / mean NFE:
`eval decode`'s `tpf_pooled`, not its per-item mean `tpf`).

{table}
"""


def _trained_tasks(model: Path) -> list[str] | None:
    """The tasks the fit beside the weights trained on (`train_config.yaml`'s `data.tasks`), or None."""
    import yaml

    try:
        tasks = yaml.safe_load((model / "train_config.yaml").read_text())["data"]["tasks"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return [str(t) for t in tasks] if isinstance(tasks, list) and tasks else None
