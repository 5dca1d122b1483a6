"""The shared greedy selector: the budget rule against a plain-Python greedy, its ε guarantees,
the conflict rule's independent sets on hand-made graphs, and batch-row independence."""

import itertools

import pytest
import torch

from depmask.decoding.selector import (
    cluster_affinity,
    greedy_select,
    mutual_edges,
    resolve_conflicts,
    resolve_matching,
)


def random_inputs(seed: int, b: int = 6, c: int = 12, scale: float = 0.05):
    g = torch.Generator().manual_seed(seed)
    dep = torch.rand(b, c, c, generator=g, dtype=torch.float64) * scale
    conf = torch.rand(b, c, generator=g, dtype=torch.float64)
    mask = torch.rand(b, c, generator=g) < 0.75
    mask[0] = False  # a finished row
    mask[1] = True  # a full row
    return dep, conf, mask


def python_groups(conf, mask, units, threshold):
    """One row's candidate units, in visiting order (confidence; ties to the left), plain Python."""
    masked = [i for i in range(len(conf)) if mask[i]]
    if not masked:
        return []
    top = max(masked, key=lambda i: (conf[i], -i))
    cand = [i for i in masked if conf[i] >= threshold or i == top]
    if units == "token":
        groups = [[i] for i in cand]
    else:
        groups = []
        for i in cand:
            if groups and groups[-1][-1] == i - 1:
                groups[-1].append(i)
            else:
                groups.append([i])
    return sorted(groups, key=lambda grp: -max(conf[i] for i in grp))  # stable


def pair_sum(dep, positions):
    return sum(dep[i][j] for i in positions for j in positions if i != j)


def python_budget(dep, conf, mask, units, threshold, eps, skip):
    chosen = []
    for n, group in enumerate(python_groups(conf, mask, units, threshold)):
        trial = chosen + group
        if n == 0 or pair_sum(dep, trial) <= eps:
            chosen = trial
        elif not skip:
            break
    return sorted(chosen)


def commits(x: torch.Tensor) -> list[list[int]]:
    return [row.nonzero().flatten().tolist() for row in x]


@pytest.mark.parametrize("units", ["token", "cluster"])
@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.05, 0.3, 2.0])
@pytest.mark.parametrize("seed", range(4))
def test_budget_equals_a_plain_python_greedy(units, skip, eps, seed):
    dep, conf, mask = random_inputs(seed)
    threshold = 0.3 if units == "cluster" else 0.0
    got = greedy_select(dep, conf, mask, units=units, rule="budget", threshold=threshold, epsilon=eps,
                        skip_blocked=skip)
    want = [python_budget(dep[r].tolist(), conf[r].tolist(), mask[r].tolist(), units, threshold, eps, skip)
            for r in range(dep.shape[0])]
    assert commits(got) == want


@pytest.mark.parametrize("units", ["token", "cluster"])
@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_budget_with_tied_confidences_visits_the_leftmost_first(units, skip, seed):
    dep, conf, mask = random_inputs(seed, scale=0.1)
    conf = (conf * 3).round() / 3  # four levels: many ties, the closed form must break them like a stable sort
    for eps in (0.0, 0.05, 0.2, 0.6):
        got = greedy_select(dep, conf, mask, units=units, rule="budget", threshold=0.3, epsilon=eps,
                            skip_blocked=skip)
        want = [python_budget(dep[r].tolist(), conf[r].tolist(), mask[r].tolist(), units, 0.3, eps, skip)
                for r in range(dep.shape[0])]
        assert commits(got) == want, eps


@pytest.mark.parametrize("units", ["token", "cluster"])
@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_budget_is_never_exceeded_except_by_the_forced_first_unit(units, skip, seed):
    dep, conf, mask = random_inputs(seed, scale=0.2)
    for eps in (0.0, 0.01, 0.1, 0.5):
        got = greedy_select(dep, conf, mask, units=units, rule="budget", threshold=0.2, epsilon=eps,
                            skip_blocked=skip)
        for r, chosen in enumerate(commits(got)):
            first = python_groups(conf[r].tolist(), mask[r].tolist(), units, 0.2)[:1]
            if chosen and chosen != sorted(first[0]):  # more than the forced unit joined
                assert pair_sum(dep[r].tolist(), chosen) <= eps + 1e-12
            assert bool(mask[r].any()) == bool(chosen)  # a row with a mask commits


@pytest.mark.parametrize("units", ["token", "cluster"])
@pytest.mark.parametrize("seed", range(6))
def test_budget_prefix_is_monotone_in_epsilon(units, seed):
    dep, conf, mask = random_inputs(seed)
    prev = None
    for eps in (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 10.0):
        got = greedy_select(dep, conf, mask, units=units, rule="budget", threshold=0.1, epsilon=eps)
        if prev is not None:
            assert not (prev & ~got).any(), "a larger ε dropped a position"
        prev = got
    everything = greedy_select(dep, conf, mask, units=units, rule="budget", threshold=0.1, epsilon=1e9)
    assert torch.equal(prev, everything)


@pytest.mark.parametrize("seed", range(4))
def test_skipping_commits_a_superset_of_the_prefix(seed):
    dep, conf, mask = random_inputs(seed)
    for eps in (0.0, 0.05, 0.2):
        prefix = greedy_select(dep, conf, mask, epsilon=eps)
        skip = greedy_select(dep, conf, mask, epsilon=eps, skip_blocked=True)
        assert not (prefix & ~skip).any()


@pytest.mark.parametrize("units", ["token", "cluster"])
@pytest.mark.parametrize("threshold", [0.0, 0.4, 0.9])
def test_zero_dependency_and_zero_epsilon_commit_every_candidate(units, threshold):
    _, conf, mask = random_inputs(1)
    zero = torch.zeros(conf.shape[0], conf.shape[1], conf.shape[1])
    got = greedy_select(zero, conf, mask, units=units, rule="budget", threshold=threshold, epsilon=0.0)
    top = torch.zeros_like(mask)
    top[mask.any(1), conf.masked_fill(~mask, -1).argmax(1)[mask.any(1)]] = True
    assert torch.equal(got, (mask & (conf >= threshold)) | top)


def test_the_diagonal_never_counts():
    conf = torch.tensor([[0.9, 0.8, 0.7]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    dep = torch.eye(3)[None] * 100
    assert greedy_select(dep, conf, mask, epsilon=0.0).all()


@pytest.mark.parametrize("units", ["token", "cluster"])
@pytest.mark.parametrize("edges", [dict(edge_floor=0.03), dict(edge_threshold=0.04)])
@pytest.mark.parametrize("seed", range(3))
def test_the_conflict_rule_never_reads_the_diagonal(units, edges, seed):
    dep, conf, mask = random_inputs(seed)
    zeroed = dep.clone()
    zeroed.diagonal(dim1=1, dim2=2).zero_()
    loud = zeroed.clone()
    loud.diagonal(dim1=1, dim2=2).fill_(5.0)  # far above every off-diagonal entry
    kw = dict(units=units, rule="conflict", threshold=0.3, **edges)
    assert torch.equal(greedy_select(loud, conf, mask, **kw), greedy_select(zeroed, conf, mask, **kw))


def test_budget_over_clusters_counts_inner_pairs():
    conf = torch.tensor([[0.9, 0.9, 0.2, 0.8, 0.8]], dtype=torch.float64)
    mask = torch.ones(1, 5, dtype=torch.bool)
    dep = torch.zeros(1, 5, 5)
    dep[0, 3, 4] = dep[0, 4, 3] = 0.06  # inside the second cluster {3, 4}: 0.12 in all
    args = dict(units="cluster", rule="budget", threshold=0.5)
    assert commits(greedy_select(dep, conf, mask, epsilon=0.1, **args)) == [[0, 1]]
    assert commits(greedy_select(dep, conf, mask, epsilon=0.12, **args)) == [[0, 1, 3, 4]]


# --- conflict rule ----------------------------------------------------------------------------


def brute_force_mwis(edges: set[tuple[int, int]], weight: list[float]) -> float:
    best = 0.0
    for r in range(len(weight) + 1):
        for subset in itertools.combinations(range(len(weight)), r):
            if all((a, b) not in edges and (b, a) not in edges for a, b in itertools.combinations(subset, 2)):
                best = max(best, sum(weight[u] for u in subset))
    return best


def edge_tensor(k: int, edges) -> torch.Tensor:
    e = torch.zeros(1, k, k, dtype=torch.bool)
    for a, b in edges:
        e[0, a, b] = e[0, b, a] = True
    return e


def heaviest_first(weight) -> torch.Tensor:
    return torch.tensor(weight, dtype=torch.float64).argsort(descending=True, stable=True)[None]


@pytest.mark.parametrize(
    ("weight", "edges", "expected"),
    [
        ([1, 3, 1], [(0, 1), (1, 2)], [1]),  # path with a heavy middle
        ([2, 1, 1, 1], [(0, 1), (0, 2), (0, 3)], [0]),  # star: greedy keeps the centre (2 < 3 leaves)
        ([1, 2, 3], [(0, 1), (1, 2), (0, 2)], [2]),  # triangle
        ([2, 1, 3, 1, 4], [(0, 1), (2, 3)], [0, 2, 4]),  # a matching and an isolated unit
        ([1, 1, 1], [], [0, 1, 2]),  # no conflicts
    ],
)
def test_resolve_conflicts_on_hand_made_graphs(weight, edges, expected):
    k = len(weight)
    got = resolve_conflicts(edge_tensor(k, edges), heaviest_first(weight), torch.ones(1, k, dtype=torch.bool))
    assert got[0].nonzero().flatten().tolist() == expected
    chosen = set(expected)
    assert not any(a in chosen and b in chosen for a, b in edges)  # independent
    assert all(u in chosen or any({u, v} in ({a, b} for a, b in edges) for v in chosen) for u in range(k))  # maximal


@pytest.mark.parametrize("seed", range(20))
def test_on_a_matching_the_closed_form_is_the_maximum_weight_independent_set(seed):
    g = torch.Generator().manual_seed(seed)
    k = 7
    weight = torch.randint(1, 5, (k,), generator=g).tolist()
    perm = torch.randperm(k, generator=g).tolist()
    n_edges = int(torch.randint(0, k // 2 + 1, (1,), generator=g))
    edges = [(perm[2 * i], perm[2 * i + 1]) for i in range(n_edges)]
    partner = torch.arange(k)[None].clone()
    has_edge = torch.zeros(1, k, dtype=torch.bool)
    for a, b in edges:
        partner[0, a], partner[0, b] = b, a
        has_edge[0, a] = has_edge[0, b] = True
    order = heaviest_first(weight)
    valid = torch.ones(1, k, dtype=torch.bool)
    closed = resolve_matching(partner, has_edge, torch.tensor(weight, dtype=torch.float64)[None], valid)
    greedy = resolve_conflicts(edge_tensor(k, edges), order, valid)
    assert torch.equal(closed, greedy)
    got = sum(w for w, keep in zip(weight, closed[0].tolist()) if keep)
    assert got == brute_force_mwis(set(edges), weight)


def test_cluster_affinity_by_hand():
    sym = torch.tensor([[0.0, 0.1, 0.4, 0.2],
                        [0.1, 0.0, 0.6, 0.0],
                        [0.4, 0.6, 0.0, 0.3],
                        [0.2, 0.0, 0.3, 0.0]], dtype=torch.float64)[None]
    member = torch.tensor([[[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]], dtype=torch.bool)  # {0,1} {2} {3}
    w = cluster_affinity(sym, member)[0]
    # a={0,1}, b={2}: rows 0, 1 → means 0.4, 0.6 → 0.6; b={3}: 0.2, 0.0 → 0.2
    # a={2}, b={0,1}: mean(0.4, 0.6) = 0.5 → symmetrised max(0.6, 0.5) = 0.6
    assert w[0, 1].item() == pytest.approx(0.6) and w[1, 0].item() == pytest.approx(0.6)
    assert w[0, 2].item() == pytest.approx(0.2) and w[1, 2].item() == pytest.approx(0.3)


def test_mutual_edges_by_hand():
    valid = torch.ones(1, 3, dtype=torch.bool)
    w = torch.tensor([[[0.0, 0.5, 0.1], [0.5, 0.0, 0.2], [0.1, 0.2, 0.0]]], dtype=torch.float64)
    partner, has = mutual_edges(w, valid, 10.0)  # the floor only matters with <= 2 units
    assert has.tolist() == [[True, True, False]] and partner[0, :2].tolist() == [1, 0]
    two = torch.tensor([[True, True, False]])
    assert mutual_edges(w, two, 0.4)[1].tolist() == [[True, True, False]]
    assert mutual_edges(w, two, 0.6)[1].tolist() == [[False, False, False]]
    one = torch.tensor([[True, False, False]])
    assert not mutual_edges(w, one, 0.0)[1].any()


def test_conflict_rule_with_no_dependency_commits_every_candidate():
    _, conf, mask = random_inputs(2)
    zero = torch.zeros(conf.shape[0], conf.shape[1], conf.shape[1])
    got = greedy_select(zero, conf, mask, units="cluster", rule="conflict", threshold=0.3, edge_floor=0.05)
    want = greedy_select(zero, conf, mask, units="cluster", rule="budget", threshold=0.3, epsilon=0.0)
    assert torch.equal(got, want)


def test_conflict_rule_needs_a_floor_or_threshold():
    dep, conf, mask = random_inputs(0)
    with pytest.raises(ValueError, match="edge_floor"):
        greedy_select(dep, conf, mask, rule="conflict")
    with pytest.raises(ValueError, match="`rule` \\('both'\\)"):
        greedy_select(dep, conf, mask, rule="both")


@pytest.mark.parametrize(
    "kw",
    [dict(units="token", rule="budget", epsilon=0.05), dict(units="cluster", rule="budget", epsilon=0.05),
     dict(units="token", rule="budget", epsilon=0.05, skip_blocked=True),
     dict(units="cluster", rule="conflict", edge_floor=0.03), dict(units="token", rule="conflict", edge_floor=0.03),
     dict(units="cluster", rule="conflict", edge_threshold=0.04)],
)
def test_batch_rows_are_independent(kw):
    dep, conf, mask = random_inputs(3)
    batch = greedy_select(dep, conf, mask, threshold=0.2, **kw)
    for r in range(dep.shape[0]):
        alone = greedy_select(dep[r : r + 1], conf[r : r + 1], mask[r : r + 1], threshold=0.2, **kw)
        assert torch.equal(alone[0], batch[r])
