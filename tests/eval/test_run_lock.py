"""Two processes decoding into one output: a run is decoded by one process at a time (`run_lock`),
and a results file that holds an item twice counts it once (`unique_items`), one torn by a kill resumes cleanly."""

import json
import subprocess
import sys
import time

from depmask.cli import main
from depmask.eval.items import append_items, read_items, run_lock, unique_items
from tests.conftest import EMBEDDED

HOLD = """
import fcntl, sys, time
with open(sys.argv[1], "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_unique_items_keeps_the_first_row_of_each_wanted_id():
    rows = [{"id": "a", "v": 1}, {"id": "b", "v": 2}, {"id": "a", "v": 3}, {"id": "c", "v": 4}]
    assert unique_items(rows, {"a", "b"}) == [{"id": "a", "v": 1}, {"id": "b", "v": 2}]
    assert unique_items([], {"a"}) == []


def test_a_run_held_by_another_process_is_waited_for(tmp_path):
    items = tmp_path / "items" / "run.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(items.with_suffix(".lock")), "1.5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        items.parent.mkdir(parents=True, exist_ok=True)
        assert holder.stdout.readline().strip() == "held"
        waited = []
        start = time.monotonic()
        with run_lock(items, on_wait=lambda: waited.append(time.monotonic() - start)):
            entered = time.monotonic() - start
        assert len(waited) == 1 and waited[0] < 1.0 and entered >= 1.0  # told, then let in on release
        with run_lock(items, on_wait=lambda: waited.append("again")):  # free now: no wait
            pass
        assert waited[1:] == []
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_releases_the_run(tmp_path):
    items = tmp_path / "run.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(items.with_suffix(".lock")), "60"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with run_lock(items, on_wait=lambda: None):  # returns: the dead process's lock is gone
        pass


def test_a_results_file_holding_an_item_twice_counts_it_once(tmp_path):
    """What two unlocked processes used to leave behind: every row appended twice."""
    out = tmp_path / "ev"
    args = ["eval", "decode", "--model.path", str(EMBEDDED), "--tasks", "[sort]", "--n", "6", "--batch_size", "3",
            "--bootstrap", "0", "--policies", "[{name: low_confidence}]", "--output", str(out)]
    main(args)
    items = next((out / "items" / "sort").glob("*.jsonl"))
    items.write_text(items.read_text() * 2)
    assert len(read_items(items)) == 12
    main(args)
    assert [r["n"] for r in json.loads((out / "summary.json").read_text())] == [6]


def test_a_final_line_without_its_newline_is_torn_even_when_it_parses(tmp_path):
    items = tmp_path / "run.jsonl"
    append_items(items, [{"id": "a0"}, {"id": "a1"}])
    with open(items, "a") as f:
        f.write(json.dumps({"id": "a2"}))  # killed between the row's `}` and its newline
    assert [r["id"] for r in read_items(items)] == ["a0", "a1"]
    append_items(items, [{"id": f"b{i}"} for i in range(3)])  # the resume writes from a clean line
    assert [r["id"] for r in read_items(items)] == ["a0", "a1", "b0", "b1", "b2"]


def test_a_head_spelled_another_way_is_the_same_run():
    from depmask.eval.items import run_slug

    knobs = {"epsilon": 0.3, "head": "models/tiny-tasks-head"}
    assert run_slug("demask", knobs) == run_slug("demask", {**knobs, "head": "models/tiny-tasks-head/"}) \
        == run_slug("demask", {**knobs, "head": "./models/tiny-tasks-head"})
    assert run_slug("demask", knobs) != run_slug("demask", {**knobs, "head": "models/other-head"})
