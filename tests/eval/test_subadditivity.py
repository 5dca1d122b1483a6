"""Sub-additivity check: TV of product vs sequential joint (exact, truncated, sampled), the bound,
and `depmask eval subadditivity` end to end on the embedded model."""

import json
from types import SimpleNamespace

import pytest
import torch

from depmask.cli import main
from depmask.decoding.influence import denoiser_forward
from depmask.eval.subadditivity import (
    confidence_order,
    enumerated_tv,
    influence_bounds,
    measure_set,
    sampled_tv,
)
from tests.conftest import EMBEDDED, ROOT

MASK = 3  # vocabulary {0, 1, 2, mask}
P0 = torch.tensor([0.5, 0.3, 0.2, 0.0])


class Denoiser:
    """A hand-made denoiser over canvases of 3 positions, all masked at the start.

    `copy`: position 1 copies position 0 once it is set (else the marginal P0); otherwise every
    position has its own fixed distribution, whatever the others hold. `soft`: position 2 leans
    towards position 0's value (a moderate dependency, for the sampling test).
    """

    def __init__(self, copy: bool = False, soft: bool = False):
        self.copy, self.soft = copy, soft
        self.mask_id = MASK

    def __call__(self, tokens, attention_mask=None, need_hidden=False, need_attention=False):
        b, l = tokens.shape
        probs = torch.zeros(b, l, 4)
        probs[:, 0] = P0
        probs[:, 1] = torch.tensor([0.2, 0.2, 0.6, 0.0]) if not self.copy else P0
        probs[:, 2] = torch.tensor([0.4, 0.4, 0.2, 0.0])
        set0 = tokens[:, 0] != MASK
        if self.copy:
            probs[set0, 1] = torch.nn.functional.one_hot(tokens[set0, 0], 4).float()
        if self.soft:
            lean = torch.nn.functional.one_hot(tokens[set0, 0], 4).float()
            probs[set0, 2] = 0.5 * probs[set0, 2] + 0.5 * lean
        return SimpleNamespace(logits=probs.clamp_min(1e-12).log())


def _inputs(den, positions=(0, 1, 2)):
    tokens = torch.full((3,), MASK)
    pos = torch.tensor(positions)
    base = torch.log_softmax(den(tokens[None]).logits[0, pos], -1)  # [s, v]
    return denoiser_forward(den), tokens, pos, base


def test_independent_positions_tv_and_bound_are_zero():
    den = Denoiser()
    forward, tokens, pos, base = _inputs(den)
    est = enumerated_tv(forward, tokens, pos, base)
    assert est.method == "exact" and est.tv == pytest.approx(0.0, abs=1e-6) and est.err == pytest.approx(0, abs=1e-6)
    b = influence_bounds(forward, tokens, pos, base, base.argmax(-1), topk=3, mask_id=MASK)
    assert b.bound == pytest.approx(0.0, abs=1e-6) and b.bound_topk == pytest.approx(0.0, abs=1e-6)
    rec = measure_set(forward, tokens, pos, base, base.argmax(-1), mask_id=MASK)
    assert rec["holds"] and rec["ratio"] is None and rec["set_size"] == 3


def test_copy_dependency_exact_tv_matches_hand_computation():
    den = Denoiser(copy=True)
    forward, tokens, pos, base = _inputs(den, (0, 1))
    # Q(y0, y1) = P0(y0)·1[y1 = y0], P = P0 ⊗ P0: TV = Σ_y P0(y)(1 − P0(y)) = 1 − Σ P0² = 0.62
    est = enumerated_tv(forward, tokens, pos, base)
    assert est.tv == pytest.approx(0.62, abs=1e-6)
    # the other order: position 0 ignores position 1, so the joint is the product
    assert enumerated_tv(forward, tokens, pos.flip(0), base.flip(0)).tv == pytest.approx(0.0, abs=1e-6)
    b = influence_bounds(forward, tokens, pos, base, torch.tensor([0, 0]), topk=3, mask_id=MASK)
    # I[1, 0] at the candidate 0: TV(P0, δ_0) = 0.5; I[0, 1] = 0. The k = 1 bound fails here;
    # the expectation over x_0 ~ P0 is Σ_y P0(y)(1 − P0(y)) = 0.62, exactly the TV.
    assert b.bound == pytest.approx(0.5, abs=1e-6) and b.bound_topk == pytest.approx(0.62, abs=1e-6)
    assert b.bound_chain == pytest.approx(0.62, abs=1e-6)
    # the verdicts of one set: the k = 1 bound fails (0.62 > 0.5), the top-k and chain ones hold
    rec = measure_set(forward, tokens, pos, base, torch.tensor([0, 0]), topk=3, mask_id=MASK)
    assert (rec["holds"], rec["holds_topk"], rec["holds_chain"]) == (False, True, True)
    assert rec["ratio"] == pytest.approx(1.24, abs=1e-5) and rec["method"] == "exact"
    # confidence order: ties (0.5, 0.5) go to the lower index
    assert confidence_order(torch.tensor([1, 0]), torch.tensor([0.5, 0.5])).tolist() == [0, 1]
    # truncation keeps a certified interval around the exact value
    trunc = enumerated_tv(forward, tokens, pos, base, delta=0.25)
    assert trunc.method == "truncated" and trunc.lo - 1e-9 <= 0.62 <= trunc.hi + 1e-9 and trunc.err > 0


def test_sampled_tv_agrees_with_exact_within_three_standard_errors():
    den = Denoiser(copy=True, soft=True)
    forward, tokens, pos, base = _inputs(den)
    exact = enumerated_tv(forward, tokens, pos, base).tv
    assert 0.3 < exact < 0.9
    est = sampled_tv(forward, tokens, pos, base, samples=4000, generator=torch.Generator().manual_seed(0))
    assert est.method == "sampled" and 0 < est.err < 0.02
    assert abs(est.tv - exact) <= 3 * est.err
    # measure_set falls back to sampling when enumeration would cost too much
    rec = measure_set(forward, tokens, pos, base, base.argmax(-1), exact_max_set=0, delta=0.0, samples=64,
                      mask_id=MASK, generator=torch.Generator().manual_seed(0))
    assert rec["method"] == "sampled" and rec["support"] == 64


def test_eval_subadditivity_end_to_end(tmp_path, capsys):
    out = tmp_path / "sub"
    rows = main(["eval", "subadditivity", "--model", str(EMBEDDED), "--head", str(ROOT / "models" / "tiny-tasks-head"),
                 "--tasks", "[permutation]", "--n", "3", "--samples", "32", "--output", str(out),
                 "--policies", "[{name: threshold, knobs: {threshold: 0.5}}, {name: demask, knobs: {epsilon: 1.0}}, "
                 "{name: guided, label: attention-conflict-token, knobs: {units: token, rule: conflict, scorer: attention, "
                 "threshold: 0.5}}, {name: guided, label: attention-conflict, knobs: {units: cluster, rule: conflict, "
                 "scorer: attention, threshold: 0.5}}]"])
    del rows
    def refuse(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    summary = json.loads((out / "subadditivity.json").read_text(), parse_constant=refuse)  # standard JSON
    # a labelled crossing is named by its label and its string knobs: two `guided` runs that differ
    # only in `units` used to share one name (rows, table, and one colour in the plot)
    assert [r["policy"] for r in summary] == ["threshold", "demask", "attention-conflict-token", "attention-conflict"]
    assert summary[2]["run"] == "attention-conflict-token(units=token,rule=conflict,scorer=attention,threshold=0.5)"
    assert len({r["run"] for r in summary}) == 4
    for r in summary:
        for key in ("task", "policy", "states", "holds", "ratio", "tv", "bound"):
            assert key in r, key
    states = [json.loads(line) for line in (out / "states.jsonl").read_text().splitlines()]
    assert states and all(s["set_size"] >= 2 and 0 <= s["tv"] <= 1 for s in states)
    assert (out / "scatter.png").stat().st_size > 1000
    assert "bound holds" in capsys.readouterr().out


def test_config_parses():
    with pytest.raises(SystemExit) as exc:
        main(["eval", "subadditivity", "--config", str(ROOT / "configs" / "eval" / "subadditivity-tiny.yaml"),
              "--print_config"])
    assert exc.value.code == 0


@pytest.mark.parametrize("args,message", [(["--n", "0"], r"`n` \(0\) must be an int >= 1"),
                                          (["--batch_size", "0"], r"`batch_size` \(0\) must be an int >= 1"),
                                          (["--policies", "[{name: threshold, knobs: {tau: 0.5}}]"],
                                           r"policy sweep 'threshold', run \{'tau': 0.5\}: policy 'threshold' has no knob"),
                                          (["--head", "/nope"], r"policy sweep 'demask', run .*head checkpoint directory"),
                                          (["--tasks", "[]"], r"`tasks` is empty"),
                                          (["--policies", "[]"], r"`policies` is empty"),
                                          # accepted before, with changed results or a misnamed error
                                          (["--delta", "2"], r"`delta` \(2\.0\) must lie in \(0, 1\)"),
                                          (["--topk", "0"], r"`topk` \(0\) must be an int >= 1"),
                                          (["--samples", "1"], r"`samples` \(1\) must be an int >= 2"),
                                          (["--tasks", "[sudoku4, nosuch]"], r"unknown task 'nosuch'")])
def test_eval_subadditivity_refuses_bad_settings_before_loading(tmp_path, args, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        main(["eval", "subadditivity", "--model", str(tmp_path / "no-model"), "--output", str(tmp_path / "sub"), *args])
    assert not (tmp_path / "sub").exists()



def test_eval_subadditivity_refuses_a_topk_beyond_the_vocabulary_before_any_run(tmp_path):
    """`top_values` took min(topk, vocabulary): `--topk 1000` on the embedded model measured 29
    values and recorded 1000."""
    with pytest.raises(ValueError, match=r"`topk` \(1000\) must be at most 29: the model's vocabulary \(30\)"):
        main(["eval", "subadditivity", "--model", str(EMBEDDED), "--output", str(tmp_path / "sub"), "--topk", "1000",
              "--n", "2"])
    assert not (tmp_path / "sub").exists()


def test_eval_subadditivity_refuses_a_head_for_another_model_before_the_first_run(tmp_path):
    """A head for another model failed only when its run came, after the runs before it."""
    from depmask.models import HFDenoiser
    from depmask.predictor import DependencyHead

    den = HFDenoiser.from_pretrained(EMBEDDED)
    DependencyHead(den.hidden_size, dim=8, layers=0, heads=2, base_fingerprint="other@x:aaa-bbb").save_pretrained(
        tmp_path / "head")
    with pytest.raises(ValueError, match="does not match the denoiser"):
        main(["eval", "subadditivity", "--model", str(EMBEDDED), "--head", str(tmp_path / "head"), "--tasks",
              "[permutation]", "--n", "2", "--output", str(tmp_path / "sub"),
              "--policies", "[{name: threshold, knobs: {threshold: 0.5}}, {name: demask, knobs: {epsilon: 1.0}}]"])
    assert not (tmp_path / "sub").exists()


def test_finished_runs_are_kept_and_a_rerun_measures_only_the_rest(tmp_path, monkeypatch):
    """Every run stayed in memory until the last one finished: an interrupt kept nothing."""
    import depmask.eval.subadditivity as sub

    out = tmp_path / "sub"
    args = ["eval", "subadditivity", "--model", str(EMBEDDED), "--tasks", "[permutation]", "--n", "2",
            "--samples", "8", "--output", str(out), "--policies",
            "[{name: threshold, sweep: {threshold: [0.5, 0.7]}}]"]
    main(args)
    first = (out / "subadditivity.json").read_text(), (out / "states.jsonl").read_text()
    kept = sorted((out / "runs").glob("*.json"))
    assert len(kept) == 2
    kept[1].unlink()  # as if interrupted during the second run
    built = []
    real = sub.SetProbe
    monkeypatch.setattr(sub, "SetProbe", lambda *a, **k: built.append(1) or real(*a, **k))
    main(args)
    assert len(built) == 1  # one batch of the one run left
    assert ((out / "subadditivity.json").read_text(), (out / "states.jsonl").read_text()) == first
    built.clear()
    main([*args, "--samples", "16"])  # other settings: measured again
    assert len(built) == 2


def test_a_head_retrained_in_place_is_measured_again(tmp_path, monkeypatch):
    """The kept runs were named by the head's path alone: a head re-exported to the same directory
    got the old head's rows and states."""
    import shutil

    import torch

    import depmask.eval.subadditivity as sub
    from depmask.predictor import DependencyHead

    head_dir = tmp_path / "head"
    shutil.copytree(ROOT / "models" / "tiny-tasks-head", head_dir)
    args = ["eval", "subadditivity", "--model", str(EMBEDDED), "--head", str(head_dir), "--tasks", "[permutation]",
            "--n", "2", "--samples", "8", "--output", str(tmp_path / "sub"), "--policies",
            "[{name: demask, knobs: {epsilon: 1.0}}]"]
    main(args)
    built = []
    real = sub.SetProbe
    monkeypatch.setattr(sub, "SetProbe", lambda *a, **k: built.append(1) or real(*a, **k))
    main(args)
    assert built == []  # the same head: kept
    head = DependencyHead.from_pretrained(head_dir)
    with torch.no_grad():
        for p in head.parameters():
            p.mul_(0.5)
    head.save_pretrained(head_dir, training_manifest=head.training_manifest)
    main(args)
    assert built  # another head at the same path: measured again
