"""The loop: lengths, batching, EOS options, accounting and the policy guard."""

import math

import pytest
import torch

from depmask.decoding import DecodeResult, Policy, build_policy, check_lengths, generate
from tests.decoding.mock import MockDenoiser


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"gen_length": 16, "block_length": 5, "steps": 16}, "`block_length` (5) must be >= 1 and divide `gen_length` (16)"),
        ({"gen_length": 16, "block_length": 4, "steps": 6}, "`steps` (6) must be a positive multiple of the number of blocks (4"),
        ({"gen_length": 0, "block_length": 4, "steps": 4}, "`gen_length` (0)"),
    ],
)
def test_bad_lengths_name_the_value(kw, message):
    with pytest.raises(ValueError) as err:
        check_lengths(**kw)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("name", "knobs", "message"),
    [
        ("threshold", {"threshold": 0.0}, "`threshold` (0.0) must lie in (0, 1]"),
        ("threshold", {"threshold": 1.5}, "`threshold` (1.5)"),
        ("entropy_bound", {"gamma": -1}, "`gamma` (-1)"),
        ("factor", {"factor": 0}, "`factor` (0)"),
        ("dilated", {"skip": 0}, "`skip` (0) must be an int >= 1"),  # as DUS's `dilated_unmask_levels`
        ("nope", {}, "unknown policy 'nope'"),
        ("threshold", {"tau": 0.9}, "policy 'threshold' has no knob 'tau'; its knobs: threshold"),
        ("demask", {"eps": 0.1, "floor": 0.2},
         "policy 'demask' has no knob 'eps', 'floor'; its knobs: head, epsilon, confidence_floor"),
        ("low_confidence", {"threshold": 0.9}, "policy 'low_confidence' has no knob 'threshold'; its knobs: none"),
    ],
)
def test_bad_policy_arguments(name, knobs, message):
    with pytest.raises(ValueError) as err:
        build_policy(name, **knobs)
    assert message in str(err.value)


def test_the_dependency_guided_classes_check_their_knobs_when_built_directly():
    """Built without `build_policy`: "no" switched `skip_blocked` on, a float `chunk_size` failed
    in `range` after the first forward, a string τ raised a bare comparison TypeError."""
    from depmask.decoding.policies.clad import Clad
    from depmask.decoding.policies.demask import Demask
    from depmask.decoding.policies.guided import Guided
    from depmask.decoding.policies.oracle import Oracle

    for value in ("no", "false", 1, None):
        with pytest.raises(ValueError, match=r"`skip_blocked` \(.*\) must be True or False"):
            Guided(skip_blocked=value)
    policy = Guided(skip_blocked=True)
    with pytest.raises(ValueError, match="`skip_blocked` \\('false'\\)"):
        policy.skip_blocked = "false"
    assert policy.skip_blocked is True
    for build in (lambda: Oracle(chunk_size=2.5), lambda: Guided(scorer="oracle", chunk_size="8")):
        with pytest.raises(ValueError, match=r"`chunk_size` \(.*\) must be an int >= 1"):
            build()
    with pytest.raises(ValueError, match=r"`threshold` \('0.5'\) must be a number"):
        Clad(threshold="0.5")
    for build in (Demask, Oracle):
        with pytest.raises(ValueError, match=r"`confidence_floor` \(1.5\) must lie in \[0, 1\]"):
            build(confidence_floor=1.5)
        with pytest.raises(ValueError, match=r"`confidence_floor` \(None\) must be a number"):
            build(confidence_floor=None)


def test_dilated_takes_int_base_and_skip_only_when_built_or_set():
    """`Dilated(base=2.5)` was built and `generate` died in `range` with a bare TypeError."""
    from depmask.decoding.policies.dilated import Dilated

    for knobs, name in (({"base": 2.5}, "base"), ({"skip": 2.0}, "skip")):
        with pytest.raises(ValueError, match=rf"`{name}` \({knobs[name]}\) must be an int >= 1"):
            Dilated(**knobs)
    policy = Dilated()
    with pytest.raises(ValueError, match=r"`base` \(3.0\) must be an int >= 1"):
        policy.base = 3.0
    policy.base = 3
    assert policy.base == 3


def test_prompt_with_mask_token_is_refused(mock_denoiser):
    with pytest.raises(ValueError, match="contains the mask id"):
        generate(mock_denoiser, [[1, mock_denoiser.mask_id]], build_policy("low_confidence"), gen_length=4)


@pytest.mark.parametrize("token", [-1, "vocab"])
def test_prompt_token_outside_the_vocabulary_is_named(mock_denoiser, token):
    token = mock_denoiser.vocab_size if token == "vocab" else token
    with pytest.raises(ValueError) as err:
        generate(mock_denoiser, [[1, 2], [1, token]], build_policy("low_confidence"), gen_length=4)
    assert str(err.value) == (
        f"prompt 1 has token id {token}, outside the vocabulary; "
        f"expected ids in [0, {mock_denoiser.vocab_size}) (the model's vocabulary)"
    )


class _Lazy(Policy):
    name = "lazy"

    def select(self, state):
        return torch.zeros_like(state.mask)


class _Cheat(Policy):
    name = "cheat"

    def select(self, state):
        return torch.ones_like(state.mask)


@pytest.mark.parametrize(("policy", "message"), [(_Lazy(), "committed nothing"), (_Cheat(), "not masked")])
def test_loop_refuses_a_policy_that_breaks_the_contract(policy, message, mock_denoiser, prompts):
    with pytest.raises(RuntimeError, match=message):
        generate(mock_denoiser, prompts, policy, gen_length=4)


@pytest.mark.parametrize("name", ["low_confidence", "threshold", "entropy_bound", "dilated", "margin", "factor"])
def test_batch_rows_are_independent(name, mock_denoiser, prompts):
    policy = build_policy(name)
    batch = generate(mock_denoiser, prompts, policy, gen_length=16, block_length=8, steps=16)
    for i, p in enumerate(prompts):
        alone = generate(mock_denoiser, [p], policy, gen_length=16, block_length=8, steps=16)
        assert batch.generated[i].tolist() == alone.generated[0].tolist()
        assert batch.commit_step[i].tolist() == alone.commit_step[0].tolist()
        assert int(batch.nfe[i]) == int(alone.nfe[0])


def test_one_token_per_step_accounting(mock_denoiser, prompts):
    res = generate(mock_denoiser, prompts, build_policy("low_confidence"), gen_length=12, block_length=4, steps=12)
    assert res.nfe.tolist() == [12, 12, 12]
    assert torch.allclose(res.tpf(), torch.ones(3, dtype=torch.float64))
    for row in res.commit_step:  # each forward commits exactly one position
        assert sorted(row.tolist()) == list(range(1, 13))


def test_finished_rows_leave_the_batch(prompts):
    """Rows that finish at different steps: the model sees only the rows with masks left, so the
    rows it is given add up to the rows' own forwards."""

    class Counting(MockDenoiser):
        def __init__(self):
            super().__init__()
            self.rows = []

        def __call__(self, tokens, *args, **kwargs):
            self.rows.append(tokens.shape[0])
            return super().__call__(tokens, *args, **kwargs)

    den = Counting()
    res = generate(den, prompts, build_policy("threshold", threshold=0.9), gen_length=8)
    assert len(set(res.nfe.tolist())) > 1  # rows do finish at different steps here
    assert den.calls == len(den.rows) == res.forwards == int(res.nfe.max())
    assert sum(den.rows) == int(res.nfe.sum())  # a finished row is not decoded again


def test_logits_eos_inf_never_emits_eos(prompts):
    den = MockDenoiser()
    den.bias[den.eos_ids[0]] = 50.0  # EOS would win everywhere
    res = generate(den, prompts, build_policy("low_confidence"), gen_length=8, logits_eos_inf=True)
    assert not (res.generated == den.eos_ids[0]).any()
    plain = generate(den, prompts, build_policy("low_confidence"), gen_length=8)
    assert (plain.generated == den.eos_ids[0]).all()


def test_logits_eos_inf_leaves_the_models_logits_alone(mock_denoiser):
    """The EOS ban is applied to a copy: the oracle's baseline (`block_log_probs`) is built from the
    model's logits after `step_state`, and its probes see EOS unbanned, so banning it in place made
    every influence count p(EOS) (TV of an unchanged canvas against itself came out up to 0.1)."""
    from depmask.decoding.loop import step_state

    tokens = torch.tensor([[1, 2, mock_denoiser.mask_id, mock_denoiser.mask_id]])
    out = mock_denoiser(tokens, None)
    before = out.logits.clone()
    eos = torch.tensor(mock_denoiser.eos_ids)
    state = step_state(out, tokens, tokens[:, 2:] == mock_denoiser.mask_id, 2, 4, mask_id=mock_denoiser.mask_id,
                       eos=eos, logits_eos_inf=True)
    assert torch.equal(out.logits, before)
    assert not torch.isin(state.x0[0, 2:], eos).any()


def test_confidence_eos_eot_inf_commits_eos_last(prompts):
    den = MockDenoiser()
    den.bias[den.eos_ids[0]] = 4.0  # EOS likely, not everywhere
    def eos_last(res) -> list[bool]:  # per row with both kinds: every EOS committed after every other token
        out = []
        for row, steps in zip(res.generated, res.commit_step):
            eos_steps, other = steps[row == den.eos_ids[0]], steps[row != den.eos_ids[0]]
            if eos_steps.numel() and other.numel():
                out.append(bool(eos_steps.min() > other.max()))
        return out

    # EOS candidates get confidence 0: the other positions outrank them at every step where a
    # non-EOS candidate exists, so EOS comes last
    on = eos_last(generate(den, prompts, build_policy("low_confidence"), gen_length=8, confidence_eos_eot_inf=True))
    assert on and all(on)
    off = eos_last(generate(den, prompts, build_policy("low_confidence"), gen_length=8))
    assert not all(off)  # without the option some EOS is committed before other tokens (the check can fail)


@pytest.mark.parametrize("name", ["margin", "entropy", "entropy_bound", "random"])
def test_confidence_eos_eot_inf_warns_for_policies_that_do_not_rank_by_confidence(name, prompts):
    # it only zeroes confidence: for these it silently changed nothing
    den = MockDenoiser()
    with pytest.warns(UserWarning, match=rf"policy '{name}' does not rank by .* it changes nothing here"):
        generate(den, prompts, build_policy(name), gen_length=8, confidence_eos_eot_inf=True)


def test_stop_at_eos_saves_forwards_and_fills_with_eos(prompts):
    den = MockDenoiser()
    den.bias[den.eos_ids[0]] = 4.0
    full = generate(den, prompts, build_policy("low_confidence"), gen_length=16, block_length=4, steps=16)
    early = generate(den, prompts, build_policy("low_confidence"), gen_length=16, block_length=4, steps=16, stop_at_eos=True)
    eos = den.eos_ids[0]
    assert int(early.nfe.sum()) < int(full.nfe.sum())
    for row, steps in zip(early.generated, early.commit_step):
        assert not (row == den.mask_id).any()
        first = int((row == eos).nonzero()[0])
        assert (steps[:first] > 0).all()  # everything before the first EOS was decoded
        assert (row[first:][steps[first:] == 0] == eos).all()  # fills are EOS


def test_metrics_on_hand_made_records():
    def result(commit_step):
        cs = torch.tensor(commit_step)
        return DecodeResult(tokens=torch.zeros(cs.shape[0], cs.shape[1], dtype=torch.long), prompt_width=0,
                            commit_step=cs, nfe=cs.max(1).values, forwards=int(cs.max()), seconds=0.0)

    ar = result([[1, 2, 3, 4], [4, 3, 2, 1], [1, 1, 2, 2]])
    tau = ar.kendall_tau()
    assert tau[0] == pytest.approx(1.0) and tau[1] == pytest.approx(-1.0)
    # [1,1,2,2]: 4 concordant, 2 ties in x, tau-b = 4 / sqrt(6 * 4)
    assert tau[2] == pytest.approx(4 / math.sqrt(24))
    assert ar.tpf().tolist() == [1.0, 1.0, 2.0]
    gap = result([[1, 1, 5, 5]])  # forwards 2-4 committed nothing (e.g. scorer forwards)
    assert gap.tpf().item() == pytest.approx(4 / 5) and gap.afp().item() == pytest.approx(2.0)
    assert math.isnan(result([[3, 3, 3, 3]]).kendall_tau().item())


def test_a_model_that_proposes_the_mask_token_still_finishes(prompts):
    den = MockDenoiser()
    den.bias[den.mask_id] = 50.0  # the mask token would be the argmax everywhere
    res = generate(den, prompts, build_policy("threshold"), gen_length=8, block_length=4, steps=8)
    assert not (res.generated == den.mask_id).any()
    assert int(res.nfe.max()) <= 8


class _Keep(Policy):
    """Low-confidence decoding that keeps every state it is handed."""

    name = "keep"

    def __init__(self):
        self.states, self.inner = [], build_policy("low_confidence")

    def select(self, state):
        self.states.append(state)
        return self.inner.select(state)


def test_step_state_replays_the_loops_state(mock_denoiser):
    """`step_state` is how the loop builds a step's state (benchmarks replay it): on a recorded
    canvas (prompts of one length: no padding mask to replay) it gives the same statistics."""
    from depmask.decoding.loop import step_state

    keep = _Keep()
    generate(mock_denoiser, [[1, 2, 3], [4, 5, 6], [7, 8, 9]], keep, gen_length=8, block_length=4, steps=8)
    assert len(keep.states) == 8
    for st in keep.states:
        s, e = st.block_start, st.block_end
        again = step_state(mock_denoiser(st.tokens), st.tokens, st.mask[:, s:e], s, e, mask_id=mock_denoiser.mask_id)
        for field in ("mask", "x0", "confidence", "entropy", "margin"):
            assert torch.equal(getattr(again, field), getattr(st, field)), field


@pytest.mark.parametrize(("name", "knobs", "message"), [
    ("threshold", {"threshold": "abc"}, "policy 'threshold': knob `threshold` ('abc') must be a number"),
    ("threshold", {"threshold": True}, "policy 'threshold': knob `threshold` (True) must be a number"),
    ("dilated", {"base": 2.5}, "policy 'dilated': knob `base` (2.5) must be an int"),
    ("guided", {"skip_blocked": 1}, "policy 'guided': knob `skip_blocked` (1) must be true or false"),
    ("guided", {"edge_threshold": "0.2"}, "policy 'guided': knob `edge_threshold` ('0.2') must be a number or None"),
])
def test_a_knob_of_the_wrong_type_is_named(name, knobs, message):
    """A string from a `name:knob=value` spec or a config used to fail inside the range check as
    "'<' not supported between instances of 'int' and 'str'"."""
    with pytest.raises(ValueError) as err:
        build_policy(name, **knobs)
    assert str(err.value) == message
    assert build_policy("threshold", threshold=1).threshold == 1  # an int is a number
    assert build_policy("guided", edge_threshold=None).edge_threshold is None
    import numpy as np

    assert build_policy("dilated", base=np.int64(2)).base == 2  # NumPy scalars from a Python-built sweep


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"prompts": [1, 2, 3]}, TypeError, r"flat list of token ids; give one sequence per row"),
    ({"prompts": [[4.7, 5.2]]}, TypeError, r"prompt 0 holds torch.float32 values; token ids are ints"),
    ({"temperature": float("nan")}, ValueError, r"`temperature` \(nan\) must be a finite number >= 0"),
    ({"temperature": float("inf")}, ValueError, r"`temperature` \(inf\) must be a finite number"),
    ({"pad_id": 999}, ValueError, r"`pad_id` \(999\) must be a token id \(an int\) in \[0, 13\)"),
    ({"gen_length": 16.0}, TypeError, r"`gen_length` \(16.0\) must be an int"),
    # a raw TypeError from a comparison, True decoded as T = 1, "no" read as true
    ({"temperature": None}, ValueError, r"`temperature` \(None\) must be a finite number >= 0"),
    ({"temperature": "0.5"}, ValueError, r"`temperature` \('0.5'\) must be a finite number >= 0"),
    ({"temperature": True}, ValueError, r"`temperature` \(True\) must be a finite number >= 0"),
    ({"stop_at_eos": "no"}, TypeError, r"`stop_at_eos` \('no'\) must be True or False"),
    ({"logits_eos_inf": 1}, TypeError, r"`logits_eos_inf` \(1\) must be True or False"),
])
def test_bad_generate_arguments_are_named(mock_denoiser, kwargs, error, message):
    """These used to decode silently (a flat list as one-token prompts, floats truncated, NaN
    temperature as padding) or fail deep inside torch (an out-of-vocabulary pad id)."""
    kwargs = {"prompts": [[1, 2]], "gen_length": 8, **kwargs}
    with pytest.raises(error, match=message):
        generate(mock_denoiser, kwargs.pop("prompts"), build_policy("low_confidence"), **kwargs)


def test_a_numpy_pad_id_is_a_token_id(mock_denoiser):
    import numpy as np

    a = generate(mock_denoiser, [[1, 2]], build_policy("low_confidence"), gen_length=8, pad_id=np.int64(0))
    b = generate(mock_denoiser, [[1, 2]], build_policy("low_confidence"), gen_length=8, pad_id=0)
    assert torch.equal(a.tokens, b.tokens)


def test_prompts_of_the_wrong_shape_or_kind_are_named(mock_denoiser):
    import numpy as np

    policy = build_policy("low_confidence")
    two = [[1, 2, 3], [4, 5]]
    cases = [
        ([two], r"prompt 0 has shape \(2, 3\)|prompt 0 .* is not a sequence"),  # a batch nested once more
        ([torch.tensor([[1, 2, 3], [4, 5, 6]])], r"prompt 0 has shape \(2, 3\)"),  # merged into one prompt before
        ([np.int64(3), np.int64(4)], r"flat list of token ids"),  # N one-token prompts before
        (list(torch.tensor([3, 4])), r"flat list of token ids"),
        (["<sort> 3 1 2"], r"prompt 0 is text .* tokenize it first"),
        ([[1, 2], None], r"prompt 1 \(NoneType\) is not a sequence of token ids"),
    ]
    for prompts, message in cases:
        with pytest.raises(TypeError, match=message):
            generate(mock_denoiser, prompts, policy, gen_length=4)
    with pytest.raises(TypeError, match=r"`generator` must be a torch.Generator or None, got int"):
        generate(mock_denoiser, two, build_policy("random"), gen_length=4, generator=0)
    one = generate(mock_denoiser, [torch.tensor([[1, 2, 3]])], policy, gen_length=4)  # [1, l] rows still work
    assert one.prompt_width == 3
