"""Details of compiled selection that the compiling tests do not pin, checked without compiling:
the geometry key of `AotSelect` (one library per block geometry), its refresh when a policy
changes, its inputs, the disk cache's key, directory, loading and storing decisions, the probe's
error text, and `compiled_select`'s checks before it compiles."""

import hashlib
import subprocess

import pytest
import torch

from depmask.decoding import aot, aot_probe, build_policy, compiled_select
from depmask.decoding.aot import AotSelect, _cached_path, _load, _Step, _store, cache_dir
from depmask.decoding.compile import RECOMPILE_LIMIT, check_compiler
from tests.decoding.mock import MockDenoiser
from tests.decoding.states import random_state, small_head


def _recording(monkeypatch):
    """`AotSelect._compile` replaced by a stand-in that records each geometry it is asked for and
    returns a runner committing nothing (the real one builds a library: tens of seconds)."""
    geometries = []

    def fake(self, tensors, knobs, geometry):
        geometries.append(geometry)
        return lambda inputs: [torch.zeros_like(inputs[0])]

    monkeypatch.setattr(AotSelect, "_compile", fake)
    return geometries


def test_the_geometry_key_is_the_blocks_distance_from_the_canvas_end(monkeypatch):
    """One library per block geometry: the block's distances from the canvas end, not its
    columns (other prompt widths reuse it) and not the batch (rows leave it); an empty prompt
    (block at column 0) gets its own, with a fixed canvas; another dtype gets its own."""
    geometries = _recording(monkeypatch)
    step = AotSelect(build_policy("clad", threshold=0.9))  # reads mask, confidence, attention [b, l, l]
    step(random_state(0, b=4, l=20, block=(6, 18)))
    assert geometries[0][:3] == (14, 2, True)
    step(random_state(1, b=2, l=20, block=(6, 18)))  # fewer rows
    step(random_state(2, b=3, l=26, block=(12, 24)))  # a wider prompt: the block moves, the attention grows
    assert step.geometries == 1
    step(random_state(3, b=4, l=14, block=(0, 12)))  # the same distances, but no prompt column
    assert step.geometries == 2 and geometries[1][:3] == (14, 2, False)
    state = random_state(4)
    state.confidence = state.confidence.float()
    step(state)
    assert step.geometries == 3


def test_a_changed_policy_drops_its_libraries_when_fetched_again(monkeypatch):
    """`compiled_select(policy, "aot")` refreshes the step it hands out: a baked knob set since
    the last fetch drops the libraries built so far (they decided with the old value)."""
    _recording(monkeypatch)
    policy = build_policy("guided", units="token", rule="budget", scorer="attention", epsilon=0.1)
    step = compiled_select(policy, "aot")
    step(random_state(0))
    assert compiled_select(policy, "aot") is step and step.geometries == 1  # unchanged: kept
    policy.skip_blocked = True
    assert compiled_select(policy, "aot") is step and step.geometries == 0


def test_a_refresh_reads_the_policys_state_fields_again():
    """A knob can change what the step reads (`edge_threshold` drops the rows' lengths, `keys`):
    the rebuilt libraries take the fields the policy declares now."""
    head = small_head(MockDenoiser())
    policy = build_policy("guided", units="cluster", rule="conflict", scorer="head", threshold=0.5, head=head)
    step = AotSelect(policy)
    assert "keys" in step.fields
    policy.edge_threshold = 0.2
    assert step.refresh() and step.fields == tuple(policy.state_fields) and "keys" not in step.fields


def test_knob_inputs_follow_the_policys_current_values():
    """ε and τ are read from the policy at every call, as 0-d float64 tensors."""
    policy = build_policy("guided", units="token", rule="budget", scorer="attention", epsilon=0.1)
    step = AotSelect(policy)
    first = step._knob_tensors(torch.device("cpu"))
    assert [t.dtype for t in first] == [torch.float64] * 2 and float(first[0]) == 0.1
    policy.epsilon = 0.7
    assert float(step._knob_tensors(torch.device("cpu"))[0]) == 0.7


def test_inputs_are_contiguous_copies_where_two_fields_share_a_tensor():
    """`raw_confidence` left unset is the `confidence` tensor itself: the library gets a copy, so
    that no two of its inputs alias; a transposed view is made contiguous (a library reads its
    inputs by the strides it was traced with)."""
    head = small_head(MockDenoiser())
    policy = build_policy("guided", units="cluster", rule="conflict", scorer="head", threshold=0.5, head=head)
    state = random_state(0)
    state.keys = torch.full((4,), 20)
    state.hidden = torch.randn(4, 8, 20).transpose(1, 2)
    assert state.raw_confidence is state.confidence and not state.hidden.is_contiguous()
    step = AotSelect(policy)
    inputs = dict(zip(step.fields, step._inputs(state)))
    assert all(t.is_contiguous() for t in inputs.values())
    assert torch.equal(inputs["hidden"], state.hidden)
    assert torch.equal(inputs["raw_confidence"], inputs["confidence"])
    assert inputs["raw_confidence"].data_ptr() != inputs["confidence"].data_ptr()


def test_aot_select_refuses_a_probing_policy_by_its_own_reason():
    """The oracle probes the model; it also declares no state, but the refusal names the probe."""
    with pytest.raises(ValueError, match="'oracle' probes the model"):
        AotSelect(build_policy("oracle", epsilon=0.5))


def test_compiled_select_raises_the_recompile_limit_never_lowers_it():
    import torch._dynamo.config as dynamo

    for before, after in ((8, RECOMPILE_LIMIT), (RECOMPILE_LIMIT * 4, RECOMPILE_LIMIT * 4)):
        with dynamo.patch(recompile_limit=before):
            compiled_select(build_policy("clad", threshold=0.9), "jit")  # torch.compile is lazy: nothing built
            assert dynamo.recompile_limit == after


@pytest.mark.parametrize("mode", ["jit", "aot"])
def test_compiled_select_checks_the_compiler_before_handing_out_a_step(mode):
    """Without a working C++ compiler both modes refuse when the step is fetched (at `generate`'s
    start), not at the first compiled step."""
    import torch._inductor.config as inductor_config

    check_compiler.cache_clear()
    try:
        with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/g++")}), \
                pytest.raises(ValueError, match=r"needs a C\+\+ compiler"):
            compiled_select(build_policy("clad", threshold=0.9), mode)
    finally:
        check_compiler.cache_clear()


def _exported():
    state = random_state(0)
    policy = build_policy("clad", threshold=0.9)
    fields = tuple(policy.state_fields)
    tensors = tuple(getattr(state, f) for f in fields)
    knobs = tuple(torch.tensor(v, dtype=torch.float64) for v in policy.tensor_knobs().values())
    batch = torch.export.Dim("batch", min=1)
    step = _Step(policy, fields, tuple(policy.tensor_knobs()), 14, 2)
    exported = torch.export.export(step, (*tensors, *knobs),
                                   dynamic_shapes=((*({0: batch} for _ in tensors), *({} for _ in knobs)),))
    geometry = (14, 2, False, tuple((AotSelect._shape(f, t, False), t.dtype, t.device) for f, t in zip(fields, tensors)))
    return exported, geometry


def test_the_cache_key_follows_the_geometry_torch_and_the_cpu(tmp_path, monkeypatch):
    """The same graph for inputs of another dtype or shape, under another torch, or for a CPU with
    other features is another library (built with `-march=native`, for those inputs)."""
    monkeypatch.setenv("DEPMASK_AOT_CACHE", str(tmp_path))
    exported, geometry = _exported()
    cpu = torch.device("cpu")
    key = _cached_path(exported, geometry, cpu)
    assert key.parent == tmp_path and key.name.startswith("select-") and key.suffix == ".pt2"
    assert _cached_path(exported, geometry, cpu) == key
    fields = tuple((shape, torch.float32, device) for shape, _, device in geometry[3])
    assert _cached_path(exported, (*geometry[:3], fields), cpu) != key
    monkeypatch.setattr(aot, "_cpu_features", lambda: "another cpu")
    assert _cached_path(exported, geometry, cpu) != key
    monkeypatch.undo()
    monkeypatch.setenv("DEPMASK_AOT_CACHE", str(tmp_path))
    monkeypatch.setattr(torch, "__version__", torch.__version__ + ".other")
    assert _cached_path(exported, geometry, cpu) != key


def test_the_cache_directory_setting_in_detail(monkeypatch, tmp_path):
    """Off in any case and with spaces, "false" too; `~` expanded; an empty XDG_CACHE_HOME and
    none both fall back to ~/.cache."""
    for off in ("OFF", " off ", "false", "None"):
        monkeypatch.setenv("DEPMASK_AOT_CACHE", off)
        assert cache_dir() is None, off
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DEPMASK_AOT_CACHE", "~/libs")
    assert cache_dir() == tmp_path / "libs"
    monkeypatch.delenv("DEPMASK_AOT_CACHE")
    for xdg in ("", None):
        if xdg is None:
            monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_CACHE_HOME", xdg)
        assert cache_dir() == tmp_path / ".cache" / "depmask" / "aot"


@pytest.fixture
def loads(monkeypatch):
    """The probe and the loader replaced: records what was loaded, returns a stand-in package."""
    loaded = []
    monkeypatch.setattr(aot, "check_loads", lambda path, device_type: None)

    def load(path):
        loaded.append(path)
        return "package"

    monkeypatch.setattr(torch._inductor, "aoti_load_package", load)
    return loaded


def test_a_stored_library_loads_back(tmp_path, loads):
    """`_store` writes the package and then its SHA-256 beside it (a line, as `_load` reads it),
    atomically, leaving no partial file; `_load` takes it back."""
    package = tmp_path / "built.pt2"
    package.write_bytes(b"library bytes")
    cached = tmp_path / "cache" / "select-abc.pt2"
    _store(package, cached)
    assert sorted(p.name for p in cached.parent.iterdir()) == ["select-abc.pt2", "select-abc.pt2.sha256"]
    assert cached.read_bytes() == b"library bytes"
    assert (cached.parent / "select-abc.pt2.sha256").read_text() == hashlib.sha256(b"library bytes").hexdigest() + "\n"
    assert _load(cached, "cpu") == "package" and loads == [str(cached)]


def test_a_library_without_its_digest_or_with_another_is_not_loaded(tmp_path, loads):
    """No `.sha256` beside it (a library being stored, or from before the check): compiled again,
    quietly. Bytes that are not the digest's: a warning, and compiled again. Neither is loaded."""
    library = tmp_path / "select-abc.pt2"
    assert _load(library, "cpu") is None
    library.write_bytes(b"library bytes")
    assert _load(library, "cpu") is None
    (tmp_path / "select-abc.pt2.sha256").write_text(hashlib.sha256(b"other bytes").hexdigest() + "\n")
    with pytest.warns(UserWarning, match="not the library that was stored"):
        assert _load(library, "cpu") is None
    assert loads == []


def test_a_library_that_fails_to_load_is_compiled_again_but_a_crashing_probe_stops(tmp_path, monkeypatch, loads):
    library = tmp_path / "select-abc.pt2"
    library.write_bytes(b"library bytes")
    (tmp_path / "select-abc.pt2.sha256").write_text(hashlib.sha256(b"library bytes").hexdigest())

    def broken(path):
        raise RuntimeError("not a package")

    monkeypatch.setattr(torch._inductor, "aoti_load_package", broken)
    with pytest.warns(UserWarning, match=r"did not load \(RuntimeError: not a package\); compiling it again"):
        assert _load(library, "cpu") is None

    def crashes(path, device_type):
        raise RuntimeError("killed a test process with SIGSEGV")

    monkeypatch.setattr(aot, "check_loads", crashes)
    with pytest.raises(RuntimeError, match="SIGSEGV"):
        _load(library, "cpu")


def test_a_cache_that_cannot_be_written_is_skipped_with_a_warning(tmp_path):
    package = tmp_path / "built.pt2"
    package.write_bytes(b"library bytes")
    (tmp_path / "file").write_text("")
    with pytest.warns(UserWarning, match=r"could not write the compiled selection .*DEPMASK_AOT_CACHE=off"):
        _store(package, tmp_path / "file" / "select-abc.pt2")  # its folder is a file


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(aot_probe, "_LOADED", set())


def test_the_probe_quotes_the_last_lines_of_the_child(fresh, monkeypatch, tmp_path):
    monkeypatch.setattr(aot_probe, "_CHILD", "import os, signal, sys\nfor i in range(8): print(f'line {i}', "
                                             "file=sys.stderr)\nsys.stderr.flush(); os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(RuntimeError, match="SIGSEGV") as err:
        aot_probe.check_loads(tmp_path / "a.pt2", "cpu")
    assert all(f"line {i}" in str(err.value) for i in range(3, 8)) and "line 2" not in str(err.value)


def test_the_probe_names_a_signal_without_a_name_by_its_number(fresh, monkeypatch, tmp_path):
    def run(args, **kwargs):
        return subprocess.CompletedProcess(args, -200, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(RuntimeError, match=r"\(AOTInductor, cpu\) killed a test process with signal 200, so"):
        aot_probe.check_loads(tmp_path / "a.pt2", "cpu")
    assert aot_probe._LOADED == set()


def test_the_exported_module_selects_as_the_policy_on_its_block():
    """`_Step` (what is exported) rebuilds the block from its distances to the canvas end: run
    eagerly, it commits exactly what `select` does, here with masked, confident columns just
    outside the block, which must stay uncommitted."""
    state = random_state(5, block=(6, 14))
    state.mask[:, 4:18] = True
    state.confidence[:, [5, 14]] = 0.9999
    for policy in (build_policy("clad", threshold=0.5), build_policy("guided", units="token", rule="budget",
                                                                      scorer="attention", epsilon=0.3)):
        fields, knobs = tuple(policy.state_fields), policy.tensor_knobs()
        step = _Step(policy, fields, tuple(knobs), 20 - 6, 20 - 14)
        values = (torch.tensor(v, dtype=torch.float64) for v in knobs.values())
        out = step(*(getattr(state, f) for f in fields), *values)
        assert torch.equal(out, policy.select(state)), policy.name
        assert not out[:, :6].any() and not out[:, 14:].any() and out[:, 6:14].any(), policy.name
