"""`generate(..., compile_select="aot")`: AOTInductor-compiled selection decodes exactly as eager,
compiles once per block geometry, and refuses what it cannot compile."""


import pytest
import torch

from depmask.decoding import Policy, build_policy, compiled_select, generate
from depmask.decoding.aot import AotSelect
from depmask.decoding.compile import compile_mode
from depmask.predictor import DependencyHead
from tests.decoding.states import assert_same, random_state, small_head


def test_aot_decode_equals_eager_for_clad_and_demask(mock_denoiser, prompts):
    """Both issue presets over two blocks (two geometries: two libraries each); rows finish at
    different steps, so the batch shrinks under one library. Every commit, step and NFE agrees
    with the eager decode."""
    for policy in (build_policy("clad", threshold=0.99), build_policy("demask", head=small_head(mock_denoiser), epsilon=0.2)):
        kwargs = dict(gen_length=8, block_length=4, pad_id=0)  # the next test's geometries: compiled once a session
        eager = generate(mock_denoiser, prompts, policy, **kwargs)
        aot = generate(mock_denoiser, prompts, policy, compile_select="aot", **kwargs)
        assert_same(aot, eager, policy.name)
        assert compiled_select(policy, "aot").geometries == 2, policy.name  # one per block
        assert eager.nfe.float().mean() > 2, policy.name  # more than one step per block
        again = generate(mock_denoiser, prompts, policy, compile_select="aot", **kwargs)  # reuses both
        assert_same(again, eager, policy.name)
        assert compiled_select(policy, "aot").geometries == 2, policy.name


class _Transposed:
    """The same outputs as `inner`, its hidden states held as a transposed buffer (a view of
    other strides), as a denoiser may return them."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        if out.hidden is not None:
            out.hidden = out.hidden.transpose(1, 2).contiguous().transpose(1, 2)
        return out


def test_a_library_reads_inputs_of_any_layout(mock_denoiser, prompts):
    """A library reads its inputs by the strides it was traced with, unchecked: a step traced on
    contiguous hidden states read a transposed view as another matrix (every row decoded
    differently). Its inputs are made contiguous first."""
    policy = build_policy("demask", head=small_head(mock_denoiser), epsilon=0.2)
    kwargs = dict(gen_length=8, block_length=4, pad_id=0)  # the first test's geometries
    eager = generate(mock_denoiser, prompts, policy, **kwargs)
    assert_same(generate(mock_denoiser, prompts, policy, compile_select="aot", **kwargs), eager, "contiguous")
    transposed = _Transposed(mock_denoiser)
    assert_same(generate(transposed, prompts, policy, **kwargs), eager, "eager, transposed")
    assert_same(generate(transposed, prompts, policy, compile_select="aot", **kwargs), eager, "aot, transposed")
    assert compiled_select(policy, "aot").geometries == 2  # the same libraries read both


def test_aot_compiled_on_a_single_row_serves_wider_batches(mock_denoiser, prompts):
    """A library first compiled on a one-row step (traced on two rows, so the batch stays
    dynamic) still decodes a three-row batch."""
    policy = build_policy("clad", threshold=0.9)
    one = generate(mock_denoiser, prompts[:1], policy, gen_length=6, pad_id=0, compile_select="aot")
    assert_same(one, generate(mock_denoiser, prompts[:1], policy, gen_length=6, pad_id=0), "one row")
    three = [prompts[0], [4, 5, 6], [7, 8, 9]]  # same prompt width: the same geometry
    assert_same(generate(mock_denoiser, three, policy, gen_length=6, pad_id=0, compile_select="aot"),
          generate(mock_denoiser, three, policy, gen_length=6, pad_id=0), "three rows")
    assert compiled_select(policy, "aot").geometries == 1


def test_one_library_serves_every_prompt_width(mock_denoiser):
    """The block's bounds are compiled as distances from the end of the canvas, whose length is a
    dynamic dimension: batches of other prompt widths (so other block positions and canvas
    lengths) reuse the library of each block and decode as eager."""
    for policy in (build_policy("clad", threshold=0.9), build_policy("demask", head=small_head(mock_denoiser), epsilon=0.3)):
        kwargs = dict(gen_length=8, block_length=4, pad_id=0)  # the previous test's geometries
        for batch in ([[1, 2, 3], [4, 5]], [[1]], [[6, 7, 8, 9, 1, 2, 3], [4, 5, 6]]):  # widths 3, 1, 7
            assert_same(generate(mock_denoiser, batch, policy, compile_select="aot", **kwargs),
                  generate(mock_denoiser, batch, policy, **kwargs), f"{policy.name}, width {max(map(len, batch))}")
        assert compiled_select(policy, "aot").geometries == 2, policy.name  # one per block, not per width


def test_empty_prompts_get_a_library_with_a_fixed_canvas(mock_denoiser):
    """With no prompt column the block starts at 0, outside the dynamic canvas's range (at least
    one column before the block): that batch gets a library of its own, and decodes as eager."""
    policy = build_policy("clad", threshold=0.9)
    for batch in ([[], []], [[1, 2]]):
        assert_same(generate(mock_denoiser, batch, policy, gen_length=6, pad_id=0, compile_select="aot"),
              generate(mock_denoiser, batch, policy, gen_length=6, pad_id=0), f"width {max(map(len, batch))}")
    assert compiled_select(policy, "aot").geometries == 2


def test_aot_refuses_policies_it_cannot_compile(mock_denoiser, prompts):
    with pytest.raises(ValueError, match="'threshold' does not declare the state it reads.*compile_select='jit'"):
        generate(mock_denoiser, prompts, build_policy("threshold", threshold=0.9), gen_length=4, compile_select="aot")
    with pytest.raises(ValueError, match="'oracle' probes the model"):
        compiled_select(build_policy("oracle", epsilon=0.5), "aot")
    with pytest.raises(TypeError, match="must be a depmask Policy"):
        AotSelect(lambda state: state.mask)
    with pytest.raises(ValueError, match=r"`compile_select` \('fast'\) must be"):
        generate(mock_denoiser, prompts, build_policy("clad"), gen_length=4, compile_select="fast")
    with pytest.raises(ValueError, match=r"`mode` \('none'\) must be one of"):
        compiled_select(build_policy("clad"), "none")
    assert [compile_mode(v) for v in (False, None, "none", True, "jit", "aot")] == [None, None, None, "jit", "jit", "aot"]


class _NoAttention(Policy):
    """Declares the attention but is decoded without capturing it."""

    name = "no_attention"
    state_fields = ("mask", "attention")

    def select(self, state):
        return state.mask


def test_aot_names_a_declared_field_the_step_lacks(mock_denoiser, prompts):
    with pytest.raises(ValueError, match=r"'no_attention' reads state fields \['attention'\]"):
        generate(mock_denoiser, prompts, _NoAttention(), gen_length=4, compile_select="aot")


def test_compiled_select_keeps_one_function_per_policy_and_mode():
    a, b = build_policy("clad"), build_policy("clad")
    assert compiled_select(a, "aot") is compiled_select(a, "aot")
    assert compiled_select(a, "aot") is not compiled_select(b, "aot")
    assert compiled_select(a, "aot") is not compiled_select(a, "jit")
    assert "_compiled_select" not in a.knobs()


@pytest.mark.parametrize("knobs", [
    {"units": "token", "rule": "budget", "scorer": "attention", "epsilon": 0.3, "skip_blocked": True},
    {"units": "cluster", "rule": "conflict", "scorer": "head", "threshold": 0.5, "edge_threshold": 0.2},
    {"units": "cluster", "rule": "conflict", "scorer": "head", "threshold": 0.5},
], ids=["attention-budget-skip", "head-conflict-graph", "head-conflict-floor"])
def test_aot_compiles_the_crossings_with_loops(mock_denoiser, prompts, knobs):
    """Crossings whose selection loops over units (skipping, a general conflict graph) export too."""
    if knobs["scorer"] == "head":
        knobs = {**knobs, "head": small_head(mock_denoiser)}
    policy = build_policy("guided", **knobs)
    # CLAD's matching reads each row's unpadded length for its floor when no attention is captured
    assert ("keys" in policy.state_fields) == (knobs["rule"] == "conflict" and "edge_threshold" not in knobs)
    kwargs = dict(gen_length=8, pad_id=0)
    assert_same(generate(mock_denoiser, prompts, policy, compile_select="aot", **kwargs),
          generate(mock_denoiser, prompts, policy, **kwargs), str(knobs))


def test_aot_compiles_a_head_that_reads_attention(mock_denoiser, prompts):
    """`use_attention`: the attention joins the state fields the library takes, and decodes as eager."""
    torch.manual_seed(0)
    head = DependencyHead(hidden_size=mock_denoiser.hidden_size, dim=16, layers=0, heads=2, max_distance=16,
                          use_attention=True, base_fingerprint=mock_denoiser.fingerprint).eval()
    policy = build_policy("demask", head=head, epsilon=0.3)
    assert "attention" in compiled_select(policy, "aot").fields
    kwargs = dict(gen_length=8, pad_id=0)
    assert_same(generate(mock_denoiser, prompts, policy, compile_select="aot", **kwargs),
          generate(mock_denoiser, prompts, policy, **kwargs), "demask reading attention")


def test_aot_compiles_a_head_with_the_set_context(mock_denoiser, prompts):
    """`set_context`: the pooled summary of the masked slots (a masked mean over the block's
    columns, whose count changes every step) exports with a dynamic batch and decodes as eager."""
    torch.manual_seed(0)
    head = DependencyHead(hidden_size=mock_denoiser.hidden_size, dim=16, layers=0, heads=2, max_distance=16,
                          pair_product=False, pair_activation="relu", set_context=True,
                          base_fingerprint=mock_denoiser.fingerprint).eval()
    policy = build_policy("demask", head=head, epsilon=0.3)
    kwargs = dict(gen_length=8, pad_id=0)
    eager = generate(mock_denoiser, prompts, policy, **kwargs)
    assert_same(generate(mock_denoiser, prompts, policy, compile_select="aot", **kwargs), eager, "demask with set_context")
    assert eager.nfe.float().mean() > 1


def test_aot_compiles_a_head_with_the_two_hop_refinement(mock_denoiser, prompts):
    """`pair_refine`: three batched matmuls over the pair probabilities; decodes as eager."""
    torch.manual_seed(0)
    head = DependencyHead(hidden_size=mock_denoiser.hidden_size, dim=16, layers=0, heads=2, max_distance=16,
                          pair_product=False, pair_activation="relu", pair_refine=True,
                          base_fingerprint=mock_denoiser.fingerprint).eval()
    torch.nn.init.normal_(head.refine.mlp[-1].weight, std=0.5)
    policy = build_policy("demask", head=head, epsilon=0.3)
    kwargs = dict(gen_length=8, pad_id=0)
    eager = generate(mock_denoiser, prompts, policy, **kwargs)
    assert_same(generate(mock_denoiser, prompts, policy, compile_select="aot", **kwargs), eager, "demask with pair_refine")
    assert eager.nfe.float().mean() > 1


def test_a_tensor_knob_on_the_edge_decides_as_the_float_does():
    """ε exactly equal to a prefix's cost: the compiled step, fed ε as a float64 tensor, commits
    what eager `select` does with the Python float. Every pairwise dependency is 1/8 (exact in
    binary), so the first t + 1 positions cost t(t + 1)/8 exactly: 1.5 for four positions."""

    state = random_state(3)

    def flat(st, candidates=None):  # [b, c, c] float32, all 1/8: a stand-in scorer
        c = st.confidence[:, st.block_start:st.block_end]
        return (c[:, :, None] * c[:, None, :] * 0 + 0.125).float()

    for value, fits in ((1.5, 4), (1.4999999999999998, 3), (1.5000000000000002, 4)):
        policy = build_policy("guided", units="token", rule="budget", scorer="attention", epsilon=value)
        policy._scorer.score_block = flat
        eager = policy.select(state)
        assert int(eager[1].sum()) == fits, value  # row 1: the whole block masked
        assert torch.equal(compiled_select(policy, "aot")(state), eager), value
        assert torch.equal(policy.select_with(state, epsilon=torch.tensor(value, dtype=torch.float64)), eager)


def test_a_policy_changed_after_compiling_is_compiled_again(mock_denoiser, prompts):
    """The libraries bake in the non-tensor knobs and the head's weights; changing either after the
    first decode used to leave the old libraries deciding (NFE [8, 8, 7] against eager [3, 4, 3]
    after a `load_state_dict`). `compiled_select` now notices and builds them again."""
    plain = build_policy("guided", units="token", rule="budget", scorer="attention", epsilon=0.1)
    step = AotSelect(plain)
    assert not step.refresh()
    plain.skip_blocked = True
    assert step.refresh() and not step.refresh()  # noticed once
    head = small_head(mock_denoiser)
    policy = build_policy("demask", head=head, epsilon=0.3)
    kwargs = dict(gen_length=8, pad_id=0)
    assert_same(generate(mock_denoiser, prompts, policy, compile_select="aot", **kwargs),
          generate(mock_denoiser, prompts, policy, **kwargs), "before")
    torch.manual_seed(1)
    other = DependencyHead(hidden_size=mock_denoiser.hidden_size, dim=16, layers=1, heads=2, max_distance=16,
                           base_fingerprint=mock_denoiser.fingerprint)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(3)
    head.load_state_dict(other.state_dict())
    assert_same(generate(mock_denoiser, prompts, policy, compile_select="aot", **kwargs),
          generate(mock_denoiser, prompts, policy, **kwargs), "after load_state_dict")


def test_weight_changes_that_keep_the_version_counter_are_noticed(mock_denoiser):
    """Writes through `.data` and `vector_to_parameters` leave `Tensor._version` as it was, and the
    stamp read it: the old libraries kept deciding (NFE [4, 4, 4] against eager [3, 4, 3])."""
    head = small_head(mock_denoiser)
    step = AotSelect(build_policy("demask", head=head, epsilon=0.3))
    assert not step.refresh()
    next(head.parameters()).data.mul_(3)
    assert step.refresh() and not step.refresh()
    vector = torch.nn.utils.parameters_to_vector(head.parameters())
    torch.nn.utils.vector_to_parameters(vector * 0.5, head.parameters())
    assert step.refresh() and not step.refresh()
    head.double()
    assert step.refresh() and not step.refresh()


def test_a_head_made_under_inference_mode_decodes_ahead_of_time_as_eager(mock_denoiser, prompts):
    """Inference tensors have no version counter: reading it raised `RuntimeError: Inference tensors
    do not track version counter` (a head moved to the model's device inside `generate`, which runs
    under inference mode, is one)."""
    with torch.inference_mode():
        head = small_head(mock_denoiser)
        policy = build_policy("demask", head=head, epsilon=0.3)
    assert next(head.parameters()).is_inference()
    kwargs = dict(gen_length=8, pad_id=0)
    assert_same(generate(mock_denoiser, prompts, policy, compile_select="aot", **kwargs),
          generate(mock_denoiser, prompts, policy, **kwargs), "inference-mode head")
