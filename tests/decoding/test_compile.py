"""`generate(..., compile_select=True)`: the same decode as eager, and clear refusals."""

import pytest
import torch

from depmask.decoding import build_policy, compile_mode_for, compiled_select, generate
from depmask.predictor import DependencyHead


def _head(den):
    torch.manual_seed(0)
    return DependencyHead(hidden_size=den.hidden_size, dim=16, layers=1, heads=2, max_distance=16,
                          base_fingerprint=den.fingerprint).eval()


def test_compiled_decode_equals_eager_for_clad_and_demask(mock_denoiser, prompts):
    """Both issue presets, two blocks, several steps per block; under `clad` rows finish at
    different steps (NFE 8, 7, 11), so the batch shrinks (the dynamic recompile). Every commit,
    step and NFE agree with the eager decode."""
    from torch._dynamo.utils import counters

    for policy in (build_policy("clad", threshold=0.99), build_policy("demask", head=_head(mock_denoiser), epsilon=0.2)):
        kwargs = dict(gen_length=12, block_length=6, pad_id=0)
        eager = generate(mock_denoiser, prompts, policy, **kwargs)
        graphs = counters["stats"]["unique_graphs"]
        compiled = generate(mock_denoiser, prompts, policy, compile_select=True, **kwargs)
        assert counters["stats"]["unique_graphs"] > graphs, policy.name  # compiled, not the eager step twice
        assert torch.equal(compiled.tokens, eager.tokens), policy.name
        assert torch.equal(compiled.commit_step, eager.commit_step), policy.name
        assert torch.equal(compiled.nfe, eager.nfe), policy.name
        assert eager.nfe.float().mean() > 2, policy.name  # more than one step per block


def test_compiled_select_is_cached_per_policy_object():
    a, b = build_policy("threshold", threshold=0.9), build_policy("threshold", threshold=0.9)
    assert compiled_select(a) is compiled_select(a)
    assert compiled_select(a) is not compiled_select(b)


def test_compile_refuses_a_probing_policy_and_a_non_policy(mock_denoiser, prompts):
    with pytest.raises(ValueError, match="'oracle' probes the model"):
        generate(mock_denoiser, prompts, build_policy("oracle", epsilon=0.5), gen_length=4, compile_select=True)
    with pytest.raises(TypeError, match="must be a depmask Policy"):
        compiled_select(lambda state: state.mask)


def test_compile_mode_for_keeps_what_a_policy_cannot_compile_eager():
    """The mode a runner that applies one setting to every policy uses: the asked mode where the
    policy's step compiles, eager (None) for the oracle and, with `aot`, for policies that declare
    no `state_fields`."""
    threshold, oracle = build_policy("threshold", threshold=0.9), build_policy("oracle", epsilon=0.5)
    clad = build_policy("clad", threshold=0.9)
    probing_guided = build_policy("guided", scorer="oracle", rule="budget", epsilon=0.5)
    assert [compile_mode_for(clad, m) for m in (False, None, "none", True, "jit", "aot")] == \
        [None, None, None, "jit", "jit", "aot"]
    assert compile_mode_for(threshold, "jit") == "jit" and compile_mode_for(threshold, "aot") is None
    assert compile_mode_for(oracle, "jit") is None and compile_mode_for(probing_guided, "aot") is None
    with pytest.raises(ValueError, match=r"`compile_select` \('fast'\) must be"):
        compile_mode_for(clad, "fast")
    with pytest.raises(TypeError, match="must be a depmask Policy"):
        compile_mode_for("clad", "jit")


def test_compiling_without_a_cpp_compiler_is_refused_by_name():
    """It failed at the first step, after the model had loaded, in a hundred-line traceback."""
    import torch._inductor.config as inductor_config

    from depmask.decoding.compile import check_compiler

    check_compiler.cache_clear()
    try:  # `config.patch`, not monkeypatch: its undo deleted the option ("cpp.cxx does not exist" after)
        with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/g++")}), \
                pytest.raises(ValueError, match=r"`compile_select` needs a C\+\+ compiler .*InvalidCxxCompiler"):
            check_compiler()
    finally:
        check_compiler.cache_clear()
    check_compiler()  # the real compiler again


def test_an_eval_whose_runs_all_stay_eager_needs_no_compiler(tmp_path):
    """`--compile_select aot` on a sweep of the oracle alone compiles nothing (it probes the model):
    it was refused for want of a compiler it would not use."""
    import torch._inductor.config as inductor_config

    from depmask.cli import main
    from depmask.decoding.compile import check_compiler
    from tests.conftest import EMBEDDED

    check_compiler.cache_clear()
    args = ["eval", "decode", "--model.path", str(EMBEDDED), "--tasks", "[sort]", "--n", "1", "--bootstrap", "0",
            "--output", str(tmp_path / "ev"), "--compile_select", "aot"]
    try:
        with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/g++")}):
            main([*args, "--policies", "[{name: oracle}]"])
            with pytest.raises(ValueError, match=r"needs a C\+\+ compiler"):
                main([*args, "--policies", "[{name: clad}]"])
    finally:
        check_compiler.cache_clear()
