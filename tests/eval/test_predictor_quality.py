"""Predictor-quality metrics on hand-made states, and `depmask eval predictor` end to end."""

import json

import numpy as np
import pytest
import torch

from depmask.cli import main
from depmask.commands.eval_predictor import eval_predictor
from depmask.data_gen import HarvestConfig
from depmask.eval.predictor_quality import (
    baseline_scores,
    flatten_pairs,
    pair_states,
    precision_at_k,
    reliability_bins,
    score_metrics,
)
from depmask.predictor import DependencyHead
from depmask.train.harvest import run_harvest
from tests.conftest import EMBEDDED, ROOT

HEAD = ROOT / "models" / "tiny-tasks-head"
CONFIG = ROOT / "configs" / "eval" / "predictor-tiny.yaml"
KEYS = {"score", "auroc", "ap", "spearman", "precision_at_k", "n_pairs", "n_positive", "n_states"}


def decaying_state(m: int = 6, start: int = 3) -> dict[str, torch.Tensor]:
    """One state whose influence decays with canvas distance: tv = 0.5 ** |i − j|."""
    pos = torch.arange(start, start + m)
    dist = (pos[:, None] - pos[None, :]).abs().float()
    tv = 0.5**dist * (1 - torch.eye(m))
    return {"positions": pos[None], "valid": torch.ones(1, m, dtype=torch.bool), "tv": tv[None],
            "attention": torch.rand(1, m, m, generator=torch.Generator().manual_seed(0)),
            "confidence": torch.linspace(0.2, 0.9, m)[None], "state": torch.tensor([0])}


def test_perfect_score_gives_auroc_1():
    batch = decaying_state()
    tv = flatten_pairs(batch["tv"], batch["valid"])
    state = pair_states(batch["state"], batch["valid"])
    out = score_metrics(tv, tv, state, positive_threshold=0.3, k=2)
    assert out["auroc"] == 1.0 and out["ap"] == 1.0 and out["spearman"] == pytest.approx(1.0)
    assert out["precision_at_k"] == 1.0
    assert out["n_pairs"] == 30 and out["n_positive"] == 10 and out["n_states"] == 1  # |i − j| = 1: 2·5 pairs


def test_distance_baseline_ranks_decaying_influence_perfectly():
    batch = decaying_state()
    scores = baseline_scores(batch)
    distance = flatten_pairs(scores["distance"], batch["valid"])
    tv = flatten_pairs(batch["tv"], batch["valid"])
    state = pair_states(batch["state"], batch["valid"])
    assert (distance <= -1).all()
    out = score_metrics(distance, tv, state, positive_threshold=0.3)
    assert out["auroc"] == 1.0 and out["spearman"] == pytest.approx(1.0)
    reverse = score_metrics(-distance, tv, state, positive_threshold=0.3)
    assert reverse["auroc"] == 0.0


def test_baselines_are_symmetric_and_directed_as_documented():
    batch = decaying_state()
    scores = baseline_scores(batch)
    att = scores["attention"][0]
    assert torch.equal(att, att.T) and (att >= batch["attention"][0]).all()
    c = batch["confidence"][0]
    assert scores["uncertainty"][0, 0, 1] == pytest.approx(float((1 - c[0]) * (1 - c[1])))
    assert scores["confidence_product"][0, 0, 1] == pytest.approx(float(c[0] * c[1]))


def test_flatten_drops_padding_and_the_diagonal():
    valid = torch.tensor([[True, True, True], [True, True, False]])
    score = torch.arange(18.0).view(2, 3, 3)
    assert flatten_pairs(score, valid).tolist() == [1, 2, 3, 5, 6, 7, 10, 12]
    assert pair_states(torch.tensor([4, 9]), valid).tolist() == [4] * 6 + [9] * 2
    with pytest.raises(ValueError, match="`score` must be"):
        flatten_pairs(score[:, :2], valid)


def test_precision_at_k():
    state = np.array([0] * 4 + [1] * 4 + [2])  # state 2 has one pair < k: left out
    score = np.array([4, 3, 2, 1, 4, 3, 2, 1, 9.0])
    positive = np.array([1, 0, 1, 0, 0, 0, 1, 1, 1], dtype=bool)
    assert precision_at_k(score, positive, state, k=2) == pytest.approx((0.5 + 0.0) / 2)
    assert precision_at_k(score, positive, state, k=1) == pytest.approx((1 + 0 + 1) / 3)
    assert precision_at_k(score, positive, state, k=5) is None
    # ties at the k-th place count by their expected share: 1 of 3 tied pairs is positive
    tied = precision_at_k(np.array([5.0, 1, 1, 1]), np.array([1, 1, 0, 0], bool), np.zeros(4), k=2)
    assert tied == pytest.approx((1 + 1 / 3) / 2)
    with pytest.raises(ValueError, match="`k`"):
        precision_at_k(score, positive, state, k=0)


def test_undefined_metrics_are_none_and_bad_input_is_named():
    tv = np.array([0.0, 0.01, 0.02])
    out = score_metrics(np.array([1.0, 2.0, 3.0]), tv, np.zeros(3))
    assert out["auroc"] is None and out["ap"] is None and out["n_positive"] == 0
    assert score_metrics(np.ones(3), tv, np.zeros(3))["spearman"] is None
    with pytest.raises(ValueError, match="positive_threshold"):
        score_metrics(tv, tv, np.zeros(3), positive_threshold=0)
    with pytest.raises(ValueError, match="non-finite"):
        score_metrics(np.array([np.nan, 1, 2]), tv, np.zeros(3))
    with pytest.raises(ValueError, match="`tv` has 1 non-finite"):  # was counted as a negative
        score_metrics(np.array([1.0, 2.0, 3.0]), np.array([0.0, np.nan, 0.5]), np.zeros(3))


def test_reliability_bins():
    bins = reliability_bins(np.array([0.05, 0.05, 0.55, 1.0]), np.array([0.0, 0.1, 0.5, 0.9]), bins=2)
    assert [b["n"] for b in bins] == [2, 2]
    assert bins[0]["mean_pred"] == pytest.approx(0.05) and bins[0]["mean_tv"] == pytest.approx(0.05)
    assert bins[1]["mean_tv"] == pytest.approx(0.7)


@pytest.fixture(scope="module")
def harvest(tmp_path_factory):
    out = tmp_path_factory.mktemp("harvest") / "h"
    cfg = HarvestConfig(model=str(EMBEDDED), output=str(out), tasks=["sudoku4", "permutation"],
                        examples_per_task=10, states_per_example=2, batch_size=10)
    run_harvest(cfg, {"accelerator": "cpu"})
    return out


def test_command_end_to_end(harvest, tmp_path, capsys):
    out = tmp_path / "eval"
    rows = eval_predictor(str(harvest), head=str(HEAD), split="val", val_fraction=0.5, k=3, output=str(out))
    printed = capsys.readouterr().out
    assert [r["score"] for r in rows] == ["head", "attention", "distance", "uncertainty", "confidence_product"]
    assert json.loads((out / "predictor.json").read_text()) == rows
    for r in rows:
        assert set(r) == KEYS and r["n_pairs"] > 0 and r["score"] in printed
        for name in ("auroc", "ap", "precision_at_k"):
            assert r[name] is None or 0.0 <= r[name] <= 1.0
    assert len({(r["n_pairs"], r["n_positive"], r["n_states"]) for r in rows}) == 1  # the same pairs
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reliability = json.loads((out / "reliability.json").read_text())
    assert sum(b["n"] for b in reliability["bins"]) == rows[0]["n_pairs"]
    assert reliability["ece"] == pytest.approx(sum(b["n"] * abs(b["mean_pred"] - b["mean_tv"])
                                                   for b in reliability["bins"]) / rows[0]["n_pairs"])
    everything = eval_predictor(str(harvest), head=None, split="all", output=str(tmp_path / "all"))
    assert [r["score"] for r in everything][0] == "attention"
    assert everything[0]["n_pairs"] > rows[0]["n_pairs"]
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["head"], settings["split"], settings["k"]) == (str(HEAD), "val", 3)
    assert settings["states"] >= rows[0]["n_states"]  # every selected state; n_states: those with a pair
    # a re-run into the same directory without a head: the first run's head files went (they sat
    # beside the new baselines-only table, and no file said which run each came from)
    eval_predictor(str(harvest), head=None, split="val", val_fraction=0.5, k=3, output=str(out))
    assert sorted(p.name for p in out.iterdir()) == ["predictor.json", "settings.json"]
    assert json.loads((out / "settings.json").read_text())["head"] is None


def test_config_parses(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "predictor", "--config", str(CONFIG), "--print_config"])
    assert exit_.value.code == 0
    assert "positive_threshold: 0.1" in capsys.readouterr().out


def test_head_for_another_model_is_refused(harvest, tmp_path):
    other = DependencyHead(128, dim=16, layers=0, heads=1, base_fingerprint="another-model@x")
    other.save_pretrained(tmp_path / "other")
    fingerprint = json.loads((harvest / "harvest.json").read_text())["fingerprint"]
    with pytest.raises(ValueError, match="another-model@x") as err:
        eval_predictor(str(harvest), head=str(tmp_path / "other"), split="all", output=str(tmp_path / "o"))
    assert fingerprint in str(err.value)


def test_bad_split_is_named(harvest, tmp_path):
    with pytest.raises(ValueError, match="`split` \\('test'\\)"):
        eval_predictor(str(harvest), split="test", output=str(tmp_path / "o"))


def test_confident_pairs_get_their_own_rows(harvest, tmp_path):
    """`confident`: the same scores again on the pairs whose two positions are both confident."""
    rows = eval_predictor(str(harvest), head=None, split="all", confident=0.5, output=str(tmp_path / "c"))
    names = [r["score"] for r in rows]
    assert names[len(names) // 2:] == [f"{n} | c ≥ 0.5" for n in names[:len(names) // 2]]
    everything, confident = rows[0], rows[len(rows) // 2]
    assert 0 < confident["n_pairs"] < everything["n_pairs"]
    assert confident["n_positive"] <= everything["n_positive"]
    with pytest.raises(ValueError, match="`confident` \\(1.5\\)"):
        eval_predictor(str(harvest), head=None, split="all", confident=1.5, output=str(tmp_path / "o"))


def test_eval_predictor_writes_the_decisions(harvest, tmp_path, capsys):
    out = tmp_path / "d"
    eval_predictor(str(harvest), head=str(HEAD), split="all", decisions=[0.5], output=str(out))
    rows = json.loads((out / "decisions.json").read_text())
    assert [r["rule"] for r in rows] == ["oracle", "head", "threshold"]
    assert rows[0]["exceed"] == 0.0 and all(r["mean_length"] >= 1 for r in rows)
    assert "exceed ε" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"`decisions` \(\[-1\]\)"):
        eval_predictor(str(harvest), head=str(HEAD), split="all", decisions=[-1], output=str(out))


def test_decisions_must_be_finite(harvest, tmp_path):
    # +inf "committed" every padded slot and NaN made decisions.json non-standard JSON
    with pytest.raises(ValueError, match=r"`decisions` \(\[nan, inf\]\) must be finite"):
        eval_predictor(str(harvest), head=str(HEAD), split="all", decisions=[float("nan"), float("inf")],
                       output=str(tmp_path / "d"))


def test_the_trained_on_this_harvest_warning_does_not_depend_on_the_working_directory(harvest, tmp_path,
                                                                                      monkeypatch, capsys):
    # the manifest holds the harvest path as the training command gave it (often relative): read
    # from another directory, the path matched nothing and training states were scored as held out
    import shutil

    from depmask.data_gen.dataset import harvest_digest, harvest_info

    head = tmp_path / "head"
    shutil.copytree(HEAD, head)
    config = json.loads((head / "config.json").read_text())
    info = harvest_info(harvest)
    config["training_manifest"].update(harvest="h", harvest_sha256=harvest_digest(info))
    (head / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)  # "h" is not the harvest from here
    eval_predictor(str(harvest), head=str(head), split="all", output=str(tmp_path / "out"))
    assert "`--split all` includes its training states" in capsys.readouterr().out
    config["training_manifest"]["harvest_sha256"] = "0" * 64  # another harvest: no warning
    (head / "config.json").write_text(json.dumps(config))
    eval_predictor(str(harvest), head=str(head), split="all", output=str(tmp_path / "out2"))
    assert "includes its training states" not in capsys.readouterr().out


def test_attention_baseline_is_the_larger_of_the_two_directions():
    """The symmetrised attention summed A and Aᵀ instead of taking max(A, Aᵀ), as documented."""
    att = torch.tensor([[[0.0, 0.2, 0.1], [0.7, 0.0, 0.3], [0.4, 0.3, 0.0]]])  # [b, m, m]
    batch = {"attention": att, "positions": torch.arange(3)[None], "confidence": torch.full((1, 3), 0.5)}
    expected = torch.tensor([[0.0, 0.7, 0.4], [0.7, 0.0, 0.3], [0.4, 0.3, 0.0]])
    assert torch.equal(baseline_scores(batch)["attention"][0], expected)


def test_a_pair_whose_tv_equals_the_threshold_is_a_positive():
    """Positives are TV ≥ `positive_threshold` (docs); a strict `>` dropped pairs exactly at it."""
    tv = np.array([1.0, 1.0, 0.5, 0.25, 0.0])
    state = np.zeros(5, dtype=int)
    assert score_metrics(tv, tv, state, positive_threshold=1.0)["n_positive"] == 2
    out = score_metrics(tv, tv, state, positive_threshold=0.5, k=3)
    assert out["n_positive"] == 3 and out["auroc"] == 1.0 and out["precision_at_k"] == 1.0
