"""The harvest command end to end in subprocesses: SIGKILL + resume, and 2-process DDP (gloo)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from depmask.data_gen.dataset import load_harvest
from depmask.data_gen.shards import completed_shards
from depmask.data_gen.verify import verify_harvest
from depmask.train.harvest_cli import harvest_parser
from tests.conftest import EMBEDDED, ROOT

SMALL = ["--harvest.model", str(EMBEDDED), "--harvest.tasks", "[sudoku4, permutation]",
         "--harvest.examples_per_task", "24", "--harvest.states_per_example", "3",
         "--harvest.batch_size", "4", "--trainer.accelerator", "cpu"]


def harvest_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "depmask.cli", "harvest", "--config", str(ROOT / "configs/harvest/tiny-tasks.yaml"),
            *SMALL, "--harvest.output", str(out), *extra]


def run(cmd, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, **kw)


def states(directory) -> dict:
    ds = load_harvest(directory)
    out = {}
    for row in ds:
        key = (row["example_id"], int(row["step"]))
        assert key not in out, f"state {key} twice"
        out[key] = row
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        for col in ("positions", "candidate", "committed", "tokens"):
            np.testing.assert_array_equal(a[k][col], b[k][col])
        for col in ("tv", "kl", "confidence", "entropy", "attention"):  # every column a head or eval reads
            np.testing.assert_allclose(np.stack(a[k][col]), np.stack(b[k][col]), atol=1e-5, rtol=1e-4, err_msg=col)
        np.testing.assert_allclose(a[k]["hidden"], b[k]["hidden"], atol=1e-2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "h"
    res = run(harvest_cmd(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "states/s" in res.stdout and "influence pairs/s" in res.stdout
    return out


@pytest.mark.slow
def test_sigkill_then_resume_gives_every_state_once(reference, tmp_path):
    out = tmp_path / "h"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(harvest_cmd(out), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(completed_shards(out)) < 3 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run: some shards written, others in flight
    proc.wait()
    shards = completed_shards(out)
    written = len(shards)
    assert 0 < written < 12, f"the kill landed outside the run ({written} shards)"
    # a shard holds one decode group: up to batch_size (4) examples, fewer at the end of a
    # (task, lengths, policy) key, so count the examples rather than assume 4 per shard
    done = sum(len(info.example_ids) for info in shards)
    assert not verify_harvest(out).ok  # incomplete, and says so
    res = run(harvest_cmd(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"{done} examples already done" in res.stdout
    report = verify_harvest(out)
    assert report.ok, report.text()
    assert_same(states(out), states(reference))


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(reference, tmp_path):
    out = tmp_path / "h"
    res = run(harvest_cmd(out, "--trainer.devices", "2", "--trainer.strategy", "ddp"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "rank 0 of 2" in res.stdout
    assert verify_harvest(out).ok
    ours = {s.name: set(s.example_ids) for s in completed_shards(out)}
    ids = [e for group in ours.values() for e in group]
    assert len(ids) == len(set(ids)) == 48  # shards are disjoint and cover every example
    assert_same(states(out), states(reference))
    # killed with one group left, fewer than the ranks: the resume on 2 ranks crashed on every
    # retry (Lightning's unpadded sampler asserts when a rank gets nothing)
    last = completed_shards(out)[-1]
    (out / "shards" / last.name).unlink()
    (out / "shards" / last.name.replace(".arrow", ".json")).unlink()
    (out / "manifest.json").unlink()
    res = run(harvest_cmd(out, "--trainer.devices", "2", "--trainer.strategy", "ddp"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert verify_harvest(out).ok
    assert_same(states(out), states(reference))


def test_verify_command_exit_codes(reference, tmp_path):
    ok = run([sys.executable, "-m", "depmask.cli", "harvest", "verify", str(reference)])
    assert ok.returncode == 0 and ok.stdout.strip().endswith("OK")
    bad = run([sys.executable, "-m", "depmask.cli", "harvest", "verify", str(tmp_path)])
    assert bad.returncode == 1 and "harvest.json: missing" in bad.stdout and "Traceback" not in bad.stderr
    # a path that is no directory is a refused argument (status 2, one line), not a damaged harvest
    none = run([sys.executable, "-m", "depmask.cli", "harvest", "verify", str(tmp_path / "none")])
    assert none.returncode == 2 and none.stderr.startswith("depmask: error: `directory` (") and not none.stdout


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "harvest").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_harvest_configs_parse(path):
    parser = harvest_parser()
    ns = parser.parse_args(["--config", str(path)])
    cfg = parser.instantiate_classes(ns).harvest
    # the embedded model, or a real model's placeholder path (set on the command line)
    assert (Path(ROOT / cfg.model).is_dir() or cfg.model.startswith("/path/to/")) and cfg.tasks


def test_a_refused_resume_leaves_the_harvest_record_alone(tmp_path):
    """`harvest.yaml` is written once the directory is known to hold this harvest: a run refused
    for asking for other data, or for a bad value, does not overwrite it or create the directory."""
    from depmask.train.harvest_cli import harvest_cli

    out = tmp_path / "h"
    tiny = ["--config", str(ROOT / "configs/harvest/tiny-tasks.yaml"), "--harvest.model", str(EMBEDDED),
            "--harvest.tasks", "[sudoku4]", "--harvest.examples_per_task", "2", "--harvest.states_per_example", "1",
            "--trainer.accelerator", "cpu", "--harvest.output", str(out)]
    harvest_cli(tiny)
    record = (out / "harvest.yaml").read_bytes()
    assert b"topk: 1" in record and str(out).encode() in record
    with pytest.raises(ValueError, match=r"belongs to a different harvest; .*config.topk: 1 → 2"):
        harvest_cli([*tiny, "--harvest.topk", "2"])
    assert (out / "harvest.yaml").read_bytes() == record
    for bad, message in [(["--harvest.capture_layers", "[99]"], r"`capture_layers` \(\[99\]\) must be non-empty indices into the 4 layers"),
                         (["--harvest.gen_length", "0"], r"`gen_length` \(0\) must be >= 1 or None"),
                         (["--harvest.num_workers", "-1"], r"`num_workers` \(-1\) must be >= 0")]:
        fresh = tmp_path / "fresh"
        with pytest.raises(ValueError, match=message):
            harvest_cli([*tiny, *bad, "--harvest.output", str(fresh)])
        assert not fresh.exists()


def test_a_spawning_strategy_is_reported_without_the_figures_its_children_kept(tmp_path, monkeypatch, capsys):
    """Under `ddp_spawn` the ranks count in child processes: the summary printed 0 states from 0
    examples in 0 forwards (the parent's untouched counters), beside a harvest of 67 states."""
    import lightning as L

    from depmask.cli import main
    from depmask.train import harvest as harvest_mod

    def trainer(strategy, devices):
        return L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False, enable_progress_bar=False)

    assert harvest_mod._ranks_ran_elsewhere(trainer("ddp_spawn", 2))
    assert harvest_mod._ranks_ran_elsewhere(trainer("ddp_fork", 2))
    assert not harvest_mod._ranks_ran_elsewhere(trainer("ddp", 2)) and not harvest_mod._ranks_ran_elsewhere(trainer("auto", 1))
    # the summary of such a run, simulated in one process
    monkeypatch.setattr(harvest_mod, "_ranks_ran_elsewhere", lambda trainer: True)
    main(["harvest", "--config", str(ROOT / "configs/harvest/tiny-tasks.yaml"), *SMALL, "--harvest.examples_per_task",
          "2", "--harvest.tasks", "[sort]", "--harvest.output", str(tmp_path / "h")])
    out = capsys.readouterr().out
    assert "the ranks ran in child processes (a spawning strategy), whose figures are not collected" in out
    assert " 0 states from " not in out and f"{tmp_path / 'h'} holds " in out and verify_harvest(tmp_path / "h").ok
