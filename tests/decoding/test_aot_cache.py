"""The disk cache of ahead-of-time libraries: its key, loading, recompiling what does not load, settings."""

import hashlib

import pytest
import torch

from depmask.decoding import build_policy, compiled_select, generate
from depmask.decoding.aot import AotSelect
from tests.decoding.states import assert_same, random_state, small_head


def _cache_files(directory):
    return sorted(p.name for p in directory.glob("select-*.pt2"))


def test_aot_loads_a_compiled_step_from_the_disk_cache(mock_denoiser, prompts, tmp_path, monkeypatch):
    """A second policy object with the same knobs and weights (as in a later process) loads the
    library the first one compiled, without compiling, and decodes as eager — on prompts of
    another width too (the canvas is a dynamic dimension, not part of the key)."""
    monkeypatch.setenv("DEPMASK_AOT_CACHE", str(tmp_path))
    kwargs = dict(gen_length=6, pad_id=0)
    first = build_policy("demask", head=small_head(mock_denoiser), epsilon=0.2)
    generate(mock_denoiser, prompts, first, compile_select="aot", **kwargs)
    assert len(_cache_files(tmp_path)) == 1 and compiled_select(first, "aot").loaded == 0

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled although the cache holds this step")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", no_compiling)
    second = build_policy("demask", head=small_head(mock_denoiser), epsilon=0.2)  # new objects, same weights
    for batch in (prompts, [[1, 2], [3]]):  # prompt widths 5, then 2
        assert_same(generate(mock_denoiser, batch, second, compile_select="aot", **kwargs),
              generate(mock_denoiser, batch, second, **kwargs), "demask from the cache")
    assert compiled_select(second, "aot").loaded == 1 and compiled_select(second, "aot").geometries == 1
    third = build_policy("demask", head=small_head(mock_denoiser), epsilon=0.2)
    generate(mock_denoiser, [[1, 2], [3]], third, compile_select="aot", **kwargs)  # a fresh export at width 2
    assert compiled_select(third, "aot").loaded == 1


def _key(policy, den, prompts, block=(6, 18)):
    """The cache file `AotSelect` would use for this policy's step on a 20-column canvas with
    this block (exported with a fixed canvas, not compiled)."""
    from depmask.decoding.aot import _cached_path, _Step

    state = random_state(0)
    fields = tuple(policy.state_fields)
    if "hidden" in fields:
        state.hidden = torch.randn(*state.mask.shape, den.hidden_size)
    tensors = tuple(getattr(state, f) for f in fields)
    knobs = tuple(policy.tensor_knobs())
    step = _Step(policy, fields, knobs, state.mask.shape[1] - block[0], state.mask.shape[1] - block[1])  # tails
    batch = torch.export.Dim("batch", min=1)
    values = tuple(torch.tensor(float(v), dtype=torch.float64) for v in policy.tensor_knobs().values())
    exported = torch.export.export(step, (*tensors, *values),
                                   dynamic_shapes=((*({0: batch} for _ in tensors), *({} for _ in values)),))
    l = state.mask.shape[1]
    geometry = (l - block[0], l - block[1], False,
                tuple((AotSelect._shape(f, t, False), t.dtype, t.device) for f, t in zip(fields, tensors)))
    return _cached_path(exported, geometry, tensors[0].device)


def test_the_cache_key_follows_baked_knobs_weights_and_block_bounds(mock_denoiser, prompts, tmp_path, monkeypatch):
    """Anything that changes what the library computes changes its file: a baked knob (a literal
    in the graph), the head's weights (constants), the block bounds; the same policy rebuilt keeps
    it, and so does another value of a tensor knob (ε, τ: inputs of the library)."""
    monkeypatch.setenv("DEPMASK_AOT_CACHE", str(tmp_path))
    clad = _key(build_policy("clad", threshold=0.9), mock_denoiser, prompts)
    assert clad.parent == tmp_path
    assert _key(build_policy("clad", threshold=0.9), mock_denoiser, prompts) == clad
    assert _key(build_policy("clad", threshold=0.8), mock_denoiser, prompts) == clad  # τ is an input
    assert _key(build_policy("clad", threshold=0.9), mock_denoiser, prompts, block=(6, 14)) != clad
    budget = dict(units="token", rule="budget", scorer="attention", epsilon=0.3)
    guided = _key(build_policy("guided", **budget), mock_denoiser, prompts)
    assert _key(build_policy("guided", **{**budget, "epsilon": 0.7}), mock_denoiser, prompts) == guided
    assert _key(build_policy("guided", **budget, skip_blocked=True), mock_denoiser, prompts) != guided  # baked
    edges = _key(build_policy("guided", **{**budget, "rule": "conflict"}, edge_threshold=0.1), mock_denoiser, prompts)
    assert _key(build_policy("guided", **{**budget, "rule": "conflict"}, edge_threshold=0.2), mock_denoiser,
                prompts) != edges
    head = small_head(mock_denoiser)
    demask = _key(build_policy("demask", head=head, epsilon=0.2), mock_denoiser, prompts)
    assert _key(build_policy("demask", head=small_head(mock_denoiser), epsilon=0.2), mock_denoiser, prompts) == demask
    with torch.no_grad():
        head.scorer.mlp[-1].bias += 1e-3  # one weight moves
    assert _key(build_policy("demask", head=head, epsilon=0.2), mock_denoiser, prompts) != demask


def test_a_cached_library_that_does_not_load_is_compiled_again(mock_denoiser, prompts, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPMASK_AOT_CACHE", str(tmp_path))
    policy = build_policy("clad", threshold=0.9)
    kwargs = dict(gen_length=6, pad_id=0)
    generate(mock_denoiser, prompts, policy, compile_select="aot", **kwargs)
    [name] = _cache_files(tmp_path)
    library, digest = tmp_path / name, tmp_path / f"{name}.sha256"
    stored = library.read_bytes()
    assert digest.read_text().strip() == hashlib.sha256(stored).hexdigest()
    # edited in place, its length kept (a library whose weights were rewritten loaded and decided wrongly)
    library.write_bytes(stored[:-64] + bytes(64))
    again = build_policy("clad", threshold=0.9)
    with pytest.warns(UserWarning, match="not the library that was stored.*compiling it again"):
        out = generate(mock_denoiser, prompts, again, compile_select="aot", **kwargs)
    assert_same(out, generate(mock_denoiser, prompts, again, **kwargs), "recompiled")
    assert compiled_select(again, "aot").loaded == 0 and library.stat().st_size > 100  # replaced
    # one that matches its digest but is no package (truncated by a crash, or foreign)
    library.write_bytes(b"not a package")
    digest.write_text(hashlib.sha256(b"not a package").hexdigest())
    fourth = build_policy("clad", threshold=0.9)
    with pytest.warns(UserWarning, match="did not load.*compiling it again"):
        generate(mock_denoiser, prompts, fourth, compile_select="aot", **kwargs)
    third = build_policy("clad", threshold=0.9)
    generate(mock_denoiser, prompts, third, compile_select="aot", **kwargs)
    assert compiled_select(third, "aot").loaded == 1


def test_the_cache_directory_setting(monkeypatch, tmp_path):
    from depmask.decoding.aot import cache_dir

    for off in ("off", "0", "", "none"):
        monkeypatch.setenv("DEPMASK_AOT_CACHE", off)
        assert cache_dir() is None
    monkeypatch.setenv("DEPMASK_AOT_CACHE", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    monkeypatch.delenv("DEPMASK_AOT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "depmask" / "aot"


def test_caching_off_writes_nothing(mock_denoiser, prompts, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPMASK_AOT_CACHE", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # where the default would have gone
    monkeypatch.setenv("HOME", str(tmp_path))
    policy = build_policy("clad", threshold=0.7)
    generate(mock_denoiser, prompts, policy, gen_length=6, pad_id=0, compile_select="aot")
    assert compiled_select(policy, "aot").geometries == 1 and not list(tmp_path.rglob("*.pt2"))


def test_one_library_serves_every_epsilon_and_tau(mock_denoiser, prompts, tmp_path, monkeypatch):
    """ε and τ are inputs of the library (`Policy.tensor_knobs`): a sweep compiles once, and each
    of its values decodes as eager; a knob changed on the policy object is read at the next call.
    (The two-block geometries of the tests above: the session's cache may already hold them.)"""
    from depmask.decoding.aot import cache_dir

    kwargs = dict(gen_length=8, block_length=4, pad_id=0)
    head = small_head(mock_denoiser)
    compile_once = torch._inductor.aoti_compile_and_package

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled again for another knob value")

    for name, knob, values in (("demask", "epsilon", (0.05, 0.3, 2.0)), ("clad", "threshold", (0.5, 0.9, 1.0))):
        extra = {"head": head} if name == "demask" else {}
        monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", compile_once)
        first = build_policy(name, **extra, **{knob: values[0]})
        assert_same(generate(mock_denoiser, prompts, first, compile_select="aot", **kwargs),
              generate(mock_denoiser, prompts, first, **kwargs), f"{name} {values[0]}")
        assert compiled_select(first, "aot").geometries == 2  # compiled here, or loaded from the session's cache
        cached = _cache_files(cache_dir())
        monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", no_compiling)
        outcomes = set()
        for value in values[1:]:
            policy = build_policy(name, **extra, **{knob: value})
            eager = generate(mock_denoiser, prompts, policy, **kwargs)
            assert_same(generate(mock_denoiser, prompts, policy, compile_select="aot", **kwargs), eager, f"{name} {value}")
            assert compiled_select(policy, "aot").loaded == 2, (name, value)  # the first one's two libraries
            outcomes.add(tuple(eager.nfe.tolist()))
        assert len(outcomes) == 2, name  # the values decode differently: the knob reaches the library
        assert _cache_files(cache_dir()) == cached, name  # no library was added for a value
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", compile_once)
    kwargs = dict(gen_length=8, pad_id=0)
    # the "attention-budget-skip" crossing's step (compiled once a session)
    policy = build_policy("guided", units="token", rule="budget", scorer="attention", epsilon=0.05, skip_blocked=True)
    generate(mock_denoiser, prompts, policy, compile_select="aot", **kwargs)
    policy.epsilon = 5.0  # mutated in place: the next call passes the new value
    assert_same(generate(mock_denoiser, prompts, policy, compile_select="aot", **kwargs),
          generate(mock_denoiser, prompts, policy, **kwargs), "mutated epsilon")
    assert compiled_select(policy, "aot").geometries == 1


def test_the_cpu_key_reads_x86_and_arm_feature_lists():
    """ARM's /proc/cpuinfo names them `Features`: two ARM CPUs of one vector ISA shared a key,
    and a library built for the newer one would crash the older one."""
    from depmask.decoding.aot import features_digest

    x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"
    older_arm = "processor\t: 0\nFeatures\t: fp asimd\n"
    digests = {features_digest(x86), features_digest(arm), features_digest(older_arm)}
    assert len(digests) == 3 and "" not in digests and features_digest("model name : x\n") == ""
