"""The summary's two TPF measures and the headline read from them, on hand-made per-item rows."""

import math

import pytest

from depmask.eval.headline import headline, headline_report
from depmask.eval.summary import summarize, table


def _item(nfe: int, correct: bool = True, committed: int = 16, probe: int = 0) -> dict:
    return {"correct": correct, "nfe": nfe, "probe_nfe": probe, "tpf": committed / nfe,
            "afp": committed / (nfe - probe), "kendall_tau": 0.0, "committed": committed, "seconds": 0.01}


def test_pooled_tpf_is_tokens_over_forwards_and_differs_from_the_item_mean():
    # one item in 1 forward, one in 7: per-item mean (16 + 16/7) / 2 = 9.14; pooled 32 / 8 = 4
    row = summarize("t", "p", {}, [_item(1), _item(7)])
    assert row["tpf"] == pytest.approx((16 + 16 / 7) / 2)
    assert row["tpf_pooled"] == pytest.approx(4.0) and row["decode_tpf_pooled"] == pytest.approx(4.0)
    probed = summarize("t", "oracle", {}, [_item(9, probe=7), _item(3, probe=1)])  # decode forwards 2 + 2
    assert probed["tpf_pooled"] == pytest.approx(32 / 12) and probed["decode_tpf_pooled"] == pytest.approx(8.0)
    assert math.isnan(summarize("t", "p", {}, [])["tpf_pooled"])
    assert "pooled" in table([row]).splitlines()[0]


def _rows() -> list[dict]:
    # "spiky" finishes 6 of 10 items in one forward and the rest in 8; "even" takes 2 forwards each
    def run(policy, items, **knobs):
        return summarize("sudoku4", policy, knobs, items)

    return [
        run("low_confidence", [_item(16)] * 10),
        run("spiky", [_item(1)] * 6 + [_item(8)] * 4, threshold=0.9),
        run("spiky", [_item(1)] * 8 + [_item(8, correct=False)] * 2, threshold=0.5),  # 80 %: never qualifies
        run("even", [_item(2)] * 10, epsilon=0.4),
        run("oracle", [_item(12, probe=10)] * 10, epsilon=1.0),
    ]


def test_the_two_measures_can_rank_policies_oppositely():
    per_item = {r["policy"]: r for r in headline(_rows())}
    pooled = {r["policy"]: r for r in headline(_rows(), measure="tpf_pooled")}
    # per item: spiky (0.6 × 16 + 0.4 × 2 = 10.4) beats even (8); pooled: even (160 / 20) beats spiky (160 / 38)
    assert per_item["spiky"]["tpf"] == pytest.approx(10.4) and per_item["even"]["tpf"] == pytest.approx(8.0)
    assert pooled["spiky"]["tpf"] == pytest.approx(160 / 38) and pooled["even"]["tpf"] == pytest.approx(8.0)
    assert per_item["spiky"]["knobs"] == "threshold=0.9"  # the 80 % run is outside the 1-point window
    assert pooled["even"]["nfe"] == pytest.approx(2.0) and pooled["even"]["measure"] == "tpf_pooled"
    # the oracle's probe forwards count in TPF, not in its decoding-forward TPF
    assert pooled["oracle"]["probing"] and pooled["oracle"]["tpf"] == pytest.approx(16 / 12)
    assert pooled["oracle"]["decode_tpf"] == pytest.approx(8.0)


def test_headline_report_holds_both_measures_and_bad_measures_are_named():
    rows, text = headline_report(_rows())
    assert {r["measure"] for r in rows} == {"tpf", "tpf_pooled"} and len(rows) == 2 * 4
    assert "mean over items" in text and "pooled: all tokens / all forwards" in text
    with pytest.raises(ValueError, match=r"`measure` \('nfe'\) must be one of"):
        headline(_rows(), measure="nfe")


def test_stricter_windows_admit_fewer_runs_and_name_themselves():
    rows = _rows()
    rows.append(summarize("sudoku4", "even", {"epsilon": 0.8}, [_item(1)] * 9 + [_item(1, correct=False)]))  # 90 %
    loose = {r["policy"]: r for r in headline(rows, tolerance=0.1, measure="tpf_pooled")}
    one = {r["policy"]: r for r in headline(rows, measure="tpf_pooled")}
    none = {r["policy"]: r for r in headline(rows, tolerance=0.0, measure="tpf_pooled")}
    assert loose["even"]["knobs"] == "epsilon=0.8" and loose["even"]["tpf"] == pytest.approx(16.0)
    assert one["even"]["knobs"] == "epsilon=0.4" and none["even"]["knobs"] == "epsilon=0.4"
    assert {r["tolerance"] for r in none.values()} == {0.0}
    report, text = headline_report(rows, tolerances=[0.01, 0.005, 0.0])
    assert len(report) == 3 * 2 * 4 and {r["tolerance"] for r in report} == {0.01, 0.005, 0.0}
    assert "(within 1 point)" in text and "(within 0.5 point)" in text and "(with no loss)" in text
    with pytest.raises(ValueError, match=r"accuracy window `tolerance` \(1.5\) must lie in \[0, 1\]"):
        headline(rows, tolerance=1.5)
    with pytest.raises(ValueError, match="`tolerances` is empty"):
        headline_report(rows, tolerances=[])
