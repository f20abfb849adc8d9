"""Behaviour injection on traces: frequencies, ordering rules, and event structure."""

import math
import random
from collections import Counter

from coinfluence.tasks.bridge import Attempt, Solve, behaviour_preset, inject, restate_probability
from coinfluence.tasks.igsm import PRESETS, generate
from coinfluence.tasks.igsm.render import trace_graph
from coinfluence.tasks.bridge import random_topological_order


def _graphs(n, preset="paper", seed=0):
    cfg = PRESETS[preset]
    for i in range(n):
        rng = random.Random(f"b{seed}:{i}")
        problem = generate(rng, cfg, rng.randint(*cfg.op_id))
        parents = {j: problem.nodes[j].parents for j in problem.necessary}
        order = random_topological_order(parents, sorted(problem.necessary), rng)
        yield trace_graph(problem, order), rng


def _within(k, n, p, sigmas=4.0):
    return abs(k - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def test_exploration_frequency_matches_p_explore():
    for p in (0.2, 0.5):
        cfg = behaviour_preset("explore", p_explore=p)
        eligible = tried = 0
        for graph, rng in _graphs(300):
            _, stats = inject(graph, cfg, rng)
            eligible += stats.explore_eligible
            tried += stats.attempts + stats.early
        assert eligible > 1000
        assert _within(tried, eligible, p), (tried, eligible, p)


def test_restating_frequency_matches_its_probability_per_input_count():
    cfg = behaviour_preset("exploit")
    seen, restated = Counter(), Counter()
    for graph, rng in _graphs(500):
        events, _ = inject(graph, cfg, rng)
        for ev in events:
            if isinstance(ev, Solve) and ev.node in graph.restatable:
                k = min(graph.n_inputs[ev.node], 4)
                seen[k] += 1
                restated[k] += ev.restate
    for k in (1, 2, 3):
        assert seen[k] > 200
        assert _within(restated[k], seen[k], restate_probability(cfg, k)), (k, restated[k], seen[k])
    assert restated[4] == seen[4]


def test_exploration_rules_hold_on_every_trace():
    cfg = behaviour_preset("both", p_explore=0.6)
    for graph, rng in _graphs(300):
        events, _ = inject(graph, cfg, rng)
        solves = [e.node for e in events if isinstance(e, Solve)]
        assert sorted(solves) == sorted(graph.order) and solves[-1] == graph.order[-1]
        assert isinstance(events[0], Solve) and isinstance(events[-1], Solve)
        done, attempted = set(), set()
        for prev, ev in zip([None] + events, events):
            if isinstance(ev, Attempt):
                assert isinstance(prev, Solve), "two failed attempts in a row"
                assert ev.missing and all(m not in done for m in ev.missing)
                assert set(ev.missing) <= set(graph.parents[ev.node])
                attempted.add(ev.node)
            else:
                assert all(p in done for p in graph.parents[ev.node] if p in graph.parents and p not in graph.redundant)
                assert ev.revisit == (ev.node in attempted)
                done.add(ev.node)


def test_no_behaviours_means_plain_trace():
    for graph, rng in _graphs(50):
        events, stats = inject(graph, behaviour_preset("none"), rng)
        assert [e.node for e in events] == list(graph.order)
        assert all(isinstance(e, Solve) and not (e.restate or e.expand or e.revisit) for e in events)
        assert stats.attempts == stats.restates == 0
