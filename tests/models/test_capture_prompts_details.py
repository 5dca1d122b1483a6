"""Details of attention capture and of harvest prompts that the other tests leave open.

Capture: which layer stack is found (mixed lists, nested lists of the model's depth, a depth that
is not an int), which layer indices are accepted, the explicit attention's checks, dtype, value
width, additive causal masks and CPU chunk budget, and what the SDPA wrapper passes on (scale,
causal flag) or refuses (dropout, grouped heads without `enable_gqa`), with the model's config and
the wrapper's state restored after a capture. Prompts: knob names with spaces, blank-looking lines,
empty prompts, ids compared as text, `datasets` directories, numeric ids, the block/canvas check,
seeded state choice and the keys a group shares.
"""

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from depmask.data_gen import HarvestConfig, PromptItem, build_items, group_items, parse_policy
from depmask.data_gen.prompts import check_prompt_rows, choose_steps, read_prompt_file
from depmask.models import AttentionCapture, HFDenoiser, find_layers
from depmask.models import attention_capture as ac
from depmask.models.attention_capture import explicit_attention
from tests.conftest import EMBEDDED
from tests.models.conftest import tiny_mdlm

# -- toy models whose layers call F.scaled_dot_product_attention ------------------------------


class _Attn(nn.Module):
    """`heads` query heads over `kv` key/value heads; `sdpa` goes to SDPA as keyword arguments."""

    def __init__(self, heads=4, kv=4, e=4, d=8, **sdpa):
        super().__init__()
        self.h, self.g, self.e, self.sdpa, self.fail = heads, kv, e, sdpa, False
        self.q, self.kv, self.o = nn.Linear(d, heads * e), nn.Linear(d, 2 * kv * e), nn.Linear(heads * e, d)

    def forward(self, x):
        b, l, _ = x.shape
        q = self.q(x).view(b, l, self.h, self.e).transpose(1, 2)
        k, v = self.kv(x).view(b, l, 2, self.g, self.e).permute(2, 0, 3, 1, 4)
        self.seen = (q, k)
        out = F.scaled_dot_product_attention(q, k, v, **self.sdpa)
        if self.fail:
            raise KeyError("a layer failed after its attention")
        return x + self.o(out.transpose(1, 2).reshape(b, l, -1))


class _Stack(nn.Module):
    def __init__(self, n=3, **kw):
        super().__init__()
        torch.manual_seed(0)
        self.config = SimpleNamespace(num_hidden_layers=n)
        self.layers = nn.ModuleList(_Attn(**kw) for _ in range(n))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def _x(b=2, l=5, d=8):
    return torch.randn(b, l, d, generator=torch.Generator().manual_seed(3))


# -- the layer stack and the layer indices ------------------------------------------------------


def test_a_list_of_mixed_modules_is_not_a_layer_stack():
    # a longer ModuleList of mixed blocks (e.g. an embedding pipeline) must not win over the layers
    model = nn.Module()
    model.layers = nn.ModuleList(_Attn() for _ in range(3))
    model.extras = nn.ModuleList([nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)])
    assert find_layers(model) is model.layers


def test_a_model_without_a_module_list_is_named():
    with pytest.raises(ValueError, match=r"could not find the layer stack of Sequential.*capture_layers"):
        find_layers(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))


def test_of_lists_of_the_model_s_depth_the_outermost_is_the_stack():
    # each block holds as many identical sub-modules as the model has layers
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.parts = nn.ModuleList(nn.Linear(2, 2) for _ in range(4))

    model = nn.Module()
    model.config = SimpleNamespace(num_hidden_layers=4)
    model.layers = nn.ModuleList(Block() for _ in range(4))
    assert find_layers(model) is model.layers


def test_a_layer_count_that_is_not_an_int_is_not_the_depth():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.experts = nn.ModuleList(nn.Linear(2, 2) for _ in range(8))

    model = nn.Module()
    model.config = SimpleNamespace(num_hidden_layers="4", n_layers=4)  # the string is skipped for n_layers
    model.layers = nn.ModuleList(Block() for _ in range(4))
    assert find_layers(model) is model.layers


def test_negative_indices_down_to_minus_n_are_accepted_and_empty_or_bytes_refused():
    assert AttentionCapture(tiny_mdlm(), [-4]).layers == [0]
    assert AttentionCapture(tiny_mdlm(), [-4, 0, 3, -1]).layers == [0, 3]
    with pytest.raises(ValueError, match=r"must be non-empty indices into the 4 layers"):
        AttentionCapture(tiny_mdlm(), [])
    with pytest.raises(ValueError, match=r"must be a list of layer indices"):
        AttentionCapture(tiny_mdlm(), b"\x01")  # bytes iterate as ints


# -- explicit attention ---------------------------------------------------------------------------


def test_query_heads_that_are_not_a_multiple_of_key_heads_are_refused():
    q, k = torch.randn(1, 3, 4, 8), torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match=r"query heads \(3\) must be a multiple of key/value heads \(2\)"):
        explicit_attention(q, k, k)


def test_the_output_has_the_query_dtype_and_the_value_width():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 5, 8, generator=g), torch.randn(2, 2, 6, 8, generator=g)
    v = torch.randn(2, 2, 6, 3, generator=g)  # value head dim 3, not the query's 8
    out, probs = explicit_attention(q, k, v)
    ref = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    assert out.shape == (2, 4, 5, 3) and torch.allclose(out, ref, atol=1e-5)
    out, probs = explicit_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16 and probs.dtype == torch.float32


def test_an_additive_mask_with_is_causal_masks_the_future_too():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 2, 5, 8, generator=g) for _ in range(3))
    add = torch.randn(2, 1, 5, 5, generator=g)
    out, probs = explicit_attention(q, k, v, add, is_causal=True)
    both = add.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf"))
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=both), atol=1e-5)
    assert (probs.triu(1) == 0).all()


def test_on_a_cpu_the_cpu_budget_sets_the_chunk(monkeypatch):
    # a 1-byte CPU budget means one head per chunk: 4 matrix products for 4 heads
    monkeypatch.setattr(ac, "CHUNK_BYTES", {"cpu": 1, "other": 1 << 28})

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += func.overloadpacket in (torch.ops.aten.bmm, torch.ops.aten.mm)
            return func(*args, **(kwargs or {}))

    with Count() as count:
        explicit_attention(torch.randn(1, 4, 3, 8), torch.randn(1, 4, 6, 8), torch.randn(1, 4, 6, 8), need_output=False)
    assert count.n == 4


# -- the SDPA wrapper and the capture's state -------------------------------------------------


def test_a_captured_layer_keeps_its_scale_and_causal_flag():
    """The captured map uses the layer's own `scale` and `is_causal`, and the layer's output is
    the SDPA kernel's with them (a dropped scale changes the model's output)."""
    model = _Stack(3, scale=0.3, is_causal=True).eval()
    x = _x()
    with torch.no_grad():
        plain = model(x)
        cap = AttentionCapture(model, [1, 2])
        with cap.capturing():
            captured = model(x)
    assert torch.equal(plain, captured)
    want = []
    for i in (1, 2):
        q, k = model.layers[i].seen
        s = (q @ k.transpose(-1, -2) * 0.3).masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf"))
        want.append(s.softmax(-1).mean(1))
    assert torch.allclose(cap.result(), torch.stack(want).mean(0), atol=1e-6)


def test_attention_dropout_is_refused_during_a_capture():
    model = _Stack(2, dropout_p=0.1)
    cap = AttentionCapture(model, [1])
    with pytest.raises(RuntimeError, match=r"dropout off \(call model.eval\(\)\)"):
        with cap.capturing():
            model(_x())


def test_grouped_heads_without_enable_gqa_are_named():
    model = _Stack(2, heads=4, kv=2).eval()
    cap = AttentionCapture(model, [0])
    with pytest.raises(RuntimeError, match=r"key/value heads differ from query heads without enable_gqa"):
        with torch.no_grad(), cap.capturing():
            model(_x())


def test_a_forward_that_raised_in_a_captured_layer_does_not_spill_into_the_next_capture():
    # the failed layer never ran its forward hook; the next capture must not count layer 1 too
    model = _Stack(2).eval()
    cap = AttentionCapture(model, [0])
    model.layers[0].fail = True
    with pytest.raises(KeyError), torch.no_grad(), cap.capturing():
        model(_x())
    model.layers[0].fail = False
    with torch.no_grad(), cap.capturing():
        model(_x())
    q, k = model.layers[0].seen
    assert torch.allclose(cap.result(), (q @ k.transpose(-1, -2) * 0.5).softmax(-1).mean(1), atol=1e-6)


def test_a_model_outside_transformers_keeps_its_attention_implementation():
    model = tiny_mdlm()
    before = model.config._attn_implementation
    cap = AttentionCapture(model, [3])
    with torch.no_grad(), cap.capturing():
        model(torch.randint(0, 37, (1, 6)))
    assert model.config._attn_implementation == before
    cap.result()


def test_an_eager_loaded_native_model_is_captured_and_stays_eager(tiny_bert_dir):
    from transformers import AutoModelForMaskedLM

    den = HFDenoiser.from_pretrained(tiny_bert_dir, mask_id=4, capture_layers=[2], attn_implementation="eager")
    ref_model = AutoModelForMaskedLM.from_pretrained(tiny_bert_dir, attn_implementation="eager").eval()
    x = torch.randint(5, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    got = den(x, need_attention=True).attention
    want = ref_model(input_ids=x, output_attentions=True).attentions[2].float().mean(1)
    assert (got - want).abs().max() < 1e-5
    assert den.model.config._attn_implementation == "eager"


# -- prompts ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(EMBEDDED, trust_remote_code=True)


def test_knob_names_and_values_are_stripped_for_numbers_and_for_text():
    assert parse_policy("threshold: threshold =0.7") == ("threshold", {"threshold": 0.7})
    assert parse_policy("demask: head =runs/h") == ("demask", {"head": "runs/h"})
    # a text value kept its spaces (a head path ' runs/h') where a number lost them
    assert parse_policy("demask:head= runs/h , threshold= 0.7") == ("demask", {"head": "runs/h", "threshold": 0.7})


def test_a_line_of_only_spaces_is_skipped_and_still_counted(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "3 1"}\n   \n\t\n{"prompt": "2 2"}\n')
    assert [r["prompt"] for r in read_prompt_file(str(path))] == ["3 1", "2 2"]
    path.write_text('{"prompt": "3 1"}\n   \n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"line 3: `prompt` must be a non-empty string"):
        read_prompt_file(str(path))


def test_an_empty_prompt_is_refused():
    with pytest.raises(ValueError, match=r"row 1: `prompt` must be a non-empty string, got ''"):
        check_prompt_rows("p.jsonl", [{"prompt": ""}])


def test_ids_are_compared_as_text_whichever_comes_first():
    # "1" then 1 (the other order is covered elsewhere): both are example id "1"
    with pytest.raises(ValueError, match=r"row 1 and row 2 have the same id 1"):
        check_prompt_rows("p.jsonl", [{"id": "1", "prompt": "x"}, {"id": 1, "prompt": "y"}])


def test_a_datasets_directory_is_one_split_with_rows_numbered_from_one(tmp_path):
    import datasets

    rows = [{"id": "a", "prompt": "3 1"}, {"id": "b", "prompt": "2 2"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    assert read_prompt_file(str(tmp_path / "one")) == rows
    datasets.Dataset.from_list([rows[0], {"id": "b", "prompt": ""}]).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"row 2: `prompt` must be a non-empty string"):
        read_prompt_file(str(tmp_path / "bad"))
    split = datasets.Dataset.from_list(rows)
    datasets.DatasetDict(train=split, test=split).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(ValueError, match=r"is a dataset with splits \['test', 'train'\]; give one split's directory"):
        read_prompt_file(str(tmp_path / "dict"))


def test_a_numeric_id_becomes_a_text_example_id(tmp_path, tok):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": 7, "prompt": "3 1"}) + "\n")
    (item,) = build_items(HarvestConfig(prompts_file=str(path), gen_length=8), tok)
    assert item.example_id == "7"


def test_build_items_refuses_a_block_that_does_not_divide_the_canvas(tmp_path, tok):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "3 1"}) + "\n")
    with pytest.raises(ValueError, match=r"`block_length` \(8\) must divide `gen_length` \(12\)"):
        build_items(HarvestConfig(prompts_file=str(path), gen_length=12, block_length=8), tok)


def test_the_seed_changes_which_states_are_kept():
    ids = [f"x{i}" for i in range(5)]
    assert [choose_steps(0, i, 20, 3) for i in ids] != [choose_steps(1, i, 20, 3) for i in ids]
    assert [choose_steps(1, i, 20, 3) for i in ids] == [choose_steps(1, i, 20, 3) for i in ids]


def test_a_group_shares_its_canvas_and_its_block():
    # the group decodes on its first item's gen_length and block_length
    items = [PromptItem("a", "t", [1], "p", 8, 8), PromptItem("b", "t", [1], "p", 8, 4),
             PromptItem("c", "t", [1], "p", 16, 8), PromptItem("d", "t", [1], "p", 8, 8)]
    assert [[it.example_id for it in g] for g in group_items(items, 4)] == [["a", "d"], ["b"], ["c"]]
