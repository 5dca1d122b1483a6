"""`PolicyStamp`: the per-decode check of what an AOT library baked in keeps byte views of the
head's tensors between calls; a write to those tensors must still be seen, in every way a user
can make it, and a check with nothing changed must not rebuild."""

import torch

from depmask.decoding import build_policy
from depmask.decoding.stamp import PolicyStamp
from depmask.predictor import DependencyHead


def _policy():
    torch.manual_seed(0)
    head = DependencyHead(hidden_size=24, dim=16, layers=1, heads=2, max_distance=16).eval()
    return head, build_policy("demask", head=head, epsilon=0.3)


def test_in_place_writes_are_seen_through_the_kept_views():
    head, policy = _policy()
    stamp = PolicyStamp()
    first = stamp(policy)
    assert stamp(policy) == first == stamp(policy)  # views kept: nothing changed, nothing seen
    weight = next(head.parameters())
    weight.data.view(-1)[5] += 1.0  # in place through `.data`: no version bump, same address
    changed = stamp(policy)
    assert changed != first
    weight.data.view(-1)[5] -= 1.0
    assert stamp(policy) == first  # the bytes, not an address or a counter


def test_a_replaced_tensor_is_read_from_its_new_memory():
    head, policy = _policy()
    stamp = PolicyStamp()
    first = stamp(policy)
    weight = next(head.parameters())
    weight.data = weight.data.clone()  # same values at a new address: the same stamp
    assert stamp(policy) == first
    weight.data = weight.data * 2
    assert stamp(policy) != first
    head.double()
    assert stamp(policy)[2] != first[2]  # dtypes are described


def test_non_contiguous_and_buffer_writes_are_seen():
    """A non-contiguous tensor's bytes come from a copy, which must be made again at every check
    (a kept copy would miss the write)."""
    head, policy = _policy()
    head.register_buffer("table", torch.arange(12.0).reshape(3, 4).t())  # non-contiguous
    stamp = PolicyStamp()
    first = stamp(policy)
    assert stamp(policy) == first
    head.table[1, 2] = -1.0
    assert stamp(policy) != first


def test_modes_and_knobs_are_stamped():
    head, policy = _policy()
    stamp = PolicyStamp()
    first = stamp(policy)
    head.train()
    assert stamp(policy) != first
    head.eval()
    assert stamp(policy) == first
    policy._guided.skip_blocked = True  # a baked-in knob of the policy's `Guided`
    assert stamp(policy) != first
    policy.epsilon = 0.9  # a library input, not baked in
    policy._guided.skip_blocked = False
    assert stamp(policy) == first


def test_views_of_tensors_no_longer_held_are_let_go():
    head, policy = _policy()
    stamp = PolicyStamp()
    stamp(policy)
    held = len(stamp._views)
    head.double()  # every parameter moves to new memory
    stamp(policy)
    assert len(stamp._views) == held


def test_a_head_held_inside_another_object_is_stamped():
    """`load_head` takes any object with `.predict`: a head wrapped so sat four levels down
    (`Demask → _guided → _scorer → wrapper → head`), below the walk, and its changed weights kept
    deciding through the old library. Lists of heads (an ensemble) are walked too."""

    class Wrapper:
        def __init__(self, heads):
            self.heads = heads

        def predict(self, *args, **kwargs):
            return self.heads[0].predict(*args, **kwargs)

    head, _ = _policy()
    policy = build_policy("demask", head=Wrapper([head]), epsilon=0.3)
    stamp = PolicyStamp()
    first = stamp(policy)
    with torch.no_grad():
        next(head.parameters()).mul_(-3)
    assert stamp(policy) != first


def test_demasks_confidence_floor_is_no_baked_knob():
    """The floor is forwarded to τ, an input of the library like ε: changing it must not rebuild
    the libraries (it did, a recompile per value with the disk cache off)."""
    _, policy = _policy()
    stamp = PolicyStamp()
    first = stamp(policy)
    policy.confidence_floor = 0.5
    policy.epsilon = 0.7
    assert stamp(policy) == first


def test_the_walk_finds_heads_behind_slots_partials_and_closures_and_skips_a_denoiser():
    """A head kept in `__slots__`, a `functools.partial` or a closure was not found (its changed
    weights kept deciding); a denoiser a custom head keeps from its check was stamped whole (on a
    GPU, the model copied to the host at every decode)."""
    import functools

    from depmask.decoding.stamp import modules_of

    head, _ = _policy()

    class Slotted:
        __slots__ = ("head",)

        def __init__(self, h):
            self.head = h

    def make_closure(h):
        return lambda *a: h.predict(*a)

    class Denoiser:
        mask_id, fingerprint = 3, "m@local:1"

        def __init__(self):
            self.model = torch.nn.Linear(4, 4)

    for holder in (Slotted(head), functools.partial(print, head), make_closure(head)):
        assert any(m is head for m in modules_of({"wrapper": holder})), type(holder).__name__
    found = modules_of({"head": head, "checked_against": Denoiser()})
    assert [type(m).__name__ for m in found] == ["DependencyHead"]
