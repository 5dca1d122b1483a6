"""The head scorer: a trained `DependencyHead` read in place on the block, bound to its model,
refused for another."""


import pytest
import torch

from depmask.decoding import build_policy, generate
from depmask.decoding.scorers import (
    HeadScorer,
)
from depmask.models import HFDenoiser
from depmask.predictor import DependencyHead
from tests.conftest import EMBEDDED
from tests.decoding.mock import Counting, MockDenoiser
from tests.decoding.states import random_state


def _plain_head(den):
    return DependencyHead(hidden_size=8, dim=16, layers=0, heads=2, max_distance=16,
                          base_fingerprint=den.fingerprint).eval()


class KnownHead:
    """Returns P[i, j] = 100 · pos_i + pos_j on valid pairs, and records what it was given."""

    def __init__(self):
        self.calls = []

    def predict(self, hidden, positions, valid, confidence=None, entropy=None):
        self.calls.append(dict(hidden=hidden, positions=positions, valid=valid, confidence=confidence,
                               entropy=entropy))
        p = positions.float()
        pair = valid[:, :, None] & valid[:, None, :] & ~torch.eye(valid.shape[1], dtype=torch.bool)
        return (100 * p[:, :, None] + p[:, None, :]) * pair


@pytest.mark.parametrize("seed", range(4))
def test_head_scorer_reads_the_block_in_place(seed):
    state = random_state(seed)
    head = KnownHead()
    d = HeadScorer(head).score(state)
    s, e = state.block_start, state.block_end
    call = head.calls[0]
    assert call["positions"].tolist() == [list(range(s, e))] * 4
    assert torch.equal(call["valid"], state.mask[:, s:e])  # committed columns are padding slots
    assert torch.equal(call["hidden"], state.hidden[:, s:e])
    assert torch.equal(call["confidence"], state.confidence[:, s:e])
    assert torch.equal(call["entropy"], state.entropy[:, s:e])
    assert torch.equal(HeadScorer(head).score_block(state), d[:, s:e, s:e])
    for r in range(4):
        masked = (state.mask[r].nonzero().flatten()).tolist()
        want = torch.zeros(20, 20)
        for i in masked:
            for j in masked:
                if i != j:
                    want[i, j] = 100 * i + j
        assert torch.equal(d[r], want)
        assert all(s <= i < e for i in masked)


@pytest.mark.parametrize("layers,pair_mlp,attention", [(2, True, False), (0, False, False), (1, False, False),
                                                       (0, True, True), (1, False, True)])
def test_a_real_head_predicts_the_same_in_place_as_on_gathered_slots(layers, pair_mlp, attention):
    """Reading the block in place (padding between slots) is exact: the head is equivariant to
    where its padding sits. Reference: the masked positions gathered to the front, as harvested
    (attention too: the harvest keeps the attention among the masked positions)."""
    torch.manual_seed(layers)
    state = random_state(7)
    head = DependencyHead(hidden_size=state.hidden.shape[-1], dim=16, layers=layers, heads=2,
                          max_distance=8, pair_mlp=pair_mlp, use_attention=attention).eval()
    for p in head.parameters():  # random, not the near-constant initial logits
        torch.nn.init.normal_(p, std=0.3)
    got = HeadScorer(head).score(state)
    assert (state.mask.sum(dim=1) >= 2).any()
    for r in range(4):
        masked = state.mask[r].nonzero().flatten()
        n = len(masked)
        att = state.attention[r : r + 1, masked[:, None], masked[None, :]] if attention else None
        pred = head.predict(state.hidden[r : r + 1, masked], masked[None], torch.ones(1, n, dtype=torch.bool),
                            state.confidence[r : r + 1, masked].float(), state.entropy[r : r + 1, masked].float(),
                            att)[0]
        assert torch.allclose(got[r][masked[:, None], masked[None, :]], pred, atol=1e-5)
        assert n < 2 or pred.abs().sum() > 0
        keep = torch.zeros(20, dtype=torch.bool)
        keep[masked] = True
        assert not got[r][~(keep[:, None] & keep[None, :])].any()


def test_head_scorer_without_a_head_names_the_flag():
    with pytest.raises(ValueError, match="--policy.head"):
        HeadScorer(None).score(random_state(0))
    policy = build_policy("demask")  # builds (its YAML has `head: null`) ...
    with pytest.raises(ValueError, match="--policy.head"):  # ... but refuses to decode
        generate(MockDenoiser(), [[1, 2]], policy, gen_length=4)


def _real_head(tmp_path, fingerprint):
    torch.manual_seed(0)
    head = DependencyHead(hidden_size=8, dim=16, layers=1, heads=2, max_distance=16, base_fingerprint=fingerprint)
    return str(head.save_pretrained(tmp_path / "head"))


def test_demask_decodes_with_a_real_head_checkpoint(tmp_path, prompts):
    den = Counting(MockDenoiser())
    path = _real_head(tmp_path, den.fingerprint)
    policy = build_policy("demask", head=path, epsilon=0.5)
    assert policy.head == path and policy.needs_hidden and not policy.needs_attention
    res = generate(den, prompts, policy, gen_length=16, block_length=8)
    assert not (res.generated == den.mask_id).any()
    assert all((hidden, attention) == (True, False) for _, hidden, attention in den.main)  # the loop asked for hidden states
    assert (res.nfe < 16).all()  # a budget of 0.5 lets some steps commit several positions


def test_a_head_that_reads_attention_makes_the_loop_capture_it(prompts):
    den = Counting(MockDenoiser())
    torch.manual_seed(0)
    head = DependencyHead(hidden_size=8, dim=16, layers=0, heads=2, max_distance=16, use_attention=True,
                          base_fingerprint=den.fingerprint).eval()
    policy = build_policy("demask", head=head, epsilon=0.5)
    assert policy.needs_hidden and policy.needs_attention and "attention" in policy.state_fields
    res = generate(den, prompts, policy, gen_length=16, block_length=8)
    assert not (res.generated == den.mask_id).any()
    assert den.main and all((hidden, attention) == (True, True) for _, hidden, attention in den.main)
    assert not build_policy("demask", head=_plain_head(den)).needs_attention  # the class default stays off
    state = random_state(0)
    state.attention = None
    with pytest.raises(ValueError, match="use_attention=True"):
        HeadScorer(head).score(state)


def test_binding_moves_the_head_only_when_it_is_elsewhere(monkeypatch):
    den = MockDenoiser()
    head = _plain_head(den)
    moves = []
    monkeypatch.setattr(head, "to", lambda device: moves.append(torch.device(device)) or head)
    scorer = HeadScorer(head)
    scorer.bind(den)  # already on the model's device: no module walk
    assert moves == []
    head.to_empty(device="meta")  # the head elsewhere
    scorer.bind(den)
    assert moves == [torch.device("cpu")]


def test_a_head_for_another_model_is_refused_before_decoding(tmp_path, prompts):
    den = MockDenoiser()
    path = _real_head(tmp_path, "some-other-model@rev:abc")
    policy = build_policy("demask", head=path)
    with pytest.raises(ValueError, match="some-other-model") as err:
        generate(den, prompts, policy, gen_length=8)
    assert den.fingerprint in str(err.value)
    assert den.calls == 0, "the model ran before the head was checked"


def test_a_wrong_head_path_fails_when_the_policy_is_built(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_policy("demask", head=str(tmp_path / "nowhere"))


def test_a_copy_of_the_model_in_another_directory_keeps_its_head(tmp_path):
    """Fingerprints are `name@revision:config-weights`, the name from the directory: a head was
    refused for a bit-identical copy of its model (`tiny-copy@local:…` against `tiny-tasks@local:…`,
    the same hashes). Models are compared by their hashes; other weights are still refused."""
    import shutil

    from depmask.models import HFDenoiser
    from depmask.models.fingerprint import same_model
    from depmask.predictor import DependencyHead
    from tests.conftest import EMBEDDED, ROOT

    copy = tmp_path / "tiny-copy"
    shutil.copytree(EMBEDDED, copy)
    den = HFDenoiser.from_pretrained(copy)
    head = DependencyHead.from_pretrained(ROOT / "models" / "tiny-tasks-head", denoiser=den)  # not refused
    assert den.fingerprint != head.base_fingerprint and same_model(den.fingerprint, head.base_fingerprint)
    assert not same_model("m@local:aaa-bbb", "m@local:aaa-ccc") and same_model(None, None)


@pytest.mark.parametrize("scorer", ["attention", "oracle", "none"])
def test_a_head_given_to_another_scorer_is_refused(scorer):
    # it was dropped without a word, and a run labelled as head-scored decoded with attention
    with pytest.raises(ValueError, match=rf"`head` \(/no/such/head\) is given but `scorer` is '{scorer}'"):
        build_policy("guided", units="cluster", rule="conflict", scorer=scorer, head="/no/such/head")


def test_a_head_moved_by_a_decode_can_still_be_trained():
    # `generate` runs under inference mode and binds there: a head moved to the model's device
    # became inference tensors ("Inference tensors cannot be saved for backward")
    den = MockDenoiser()
    head = _plain_head(den)

    class OnMeta:  # the model "on an accelerator": the head (on the CPU) is moved to it
        device = torch.device("meta")
        fingerprint, hidden_size, capture_layers = den.fingerprint, den.hidden_size, None

    with torch.inference_mode():
        HeadScorer(head).bind(OnMeta())
    param = next(head.parameters())
    assert param.device == torch.device("meta") and not param.is_inference()
    loss = sum(p.sum() for p in head.parameters())
    loss.backward()  # trains (raised: inference tensors cannot be saved for backward)


def test_the_head_reads_the_models_confidence_under_the_eos_ranking_option():
    """`confidence_eos_eot_inf` zeroes EOS candidates' confidence so that confidence rules commit
    them last; the head read that zero as a feature it was never trained on (mean score of pairs
    touching an EOS 0.022 -> 0.066 with the shipped head)."""
    from depmask.decoding.loop import step_state

    den = HFDenoiser.from_pretrained(EMBEDDED)
    scorer = HeadScorer(head=str(EMBEDDED.parent / "tiny-tasks-head"))
    scorer.bind(den)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(4, den.vocab_size, (3, 24), generator=g)
    x[:, 8:] = den.mask_id
    out = den(x, need_hidden=True)
    in_block = torch.ones(3, 16, dtype=torch.bool)
    plain = step_state(out, x, in_block, 8, 24, mask_id=den.mask_id)
    eos = torch.tensor([int(plain.x0[0, 8])])  # a candidate id as "EOS": its confidence is zeroed
    option = step_state(out, x, in_block, 8, 24, mask_id=den.mask_id, eos=eos, confidence_eos_eot_inf=True)
    assert (option.confidence != plain.confidence).any()  # the ranking rule applies ...
    assert torch.equal(option.raw_confidence, plain.confidence)
    assert torch.equal(scorer.score_block(option), scorer.score_block(plain))  # ... the head's input does not change
