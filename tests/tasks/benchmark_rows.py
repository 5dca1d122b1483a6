"""Tiny GSM8K / MATH / MBPP / HumanEval records and a JSON-lines writer, shared by the benchmark tests."""

from __future__ import annotations

import json

GSM8K_ROWS = [{"question": f"Tom has {i} apples and buys 2. How many?", "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"}
              for i in range(10)]


MATH_ROWS = [
    {"problem": "What is 1/2 + 1/4?", "solution": r"It is $\boxed{\frac34}$.", "answer": r"\frac{3}{4}",
     "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
    {"problem": "Compute 2+2.", "solution": r"$\boxed{4}$"},  # full-MATH style: no `answer`
]


MBPP_ROWS = [
    {"task_id": tid, "text": f"Write a function f{tid} that returns {tid}.", "code": f"def f{tid}():\n    return {tid}",
     "test_list": [f"assert f{tid}() == {tid}"] * 3, "test_setup_code": "", "challenge_test_list": []}
    for tid in (1, 2, 3, 4, 5, 11, 12, 13, 600, 601)
]


HUMANEVAL_ROWS = [{"task_id": "HumanEval/0", "prompt": "def f():\n    \"\"\"one\"\"\"\n",
                   "canonical_solution": "    return 1\n", "test": "def check(c):\n    assert c() == 1\n",
                   "entry_point": "f"}]


ENV_VARS = ("DEPMASK_GSM8K", "DEPMASK_MATH500", "DEPMASK_HUMANEVAL", "DEPMASK_MBPP", "DEPMASK_DATA_DIR",
            "DEPMASK_ALLOW_DOWNLOAD")


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
