"""Problems as DAGs of quantities, built to an exact operation count.

A node is a quantity of the structure graph: an *instance* quantity ``("inst", A, B)``
("each A's B") or an *abstract* one ``("abs", A, Bs)`` ("each A's total Bs", the sum of
every instance quantity of ``A`` that the problem mentions). Each node has one operation:

    const  v = c                 copy  v = p            add  v = p + c
    mul    v = c * p             diff  v = p1 - p2      sum  v = p1 + ... + pk
    abstract  v = sum of A's instance quantities (implicit dependencies)

The operation count of a problem is ``op = Σ max(1, in_degree - 1)`` over the *necessary*
nodes (ancestors of the asked quantity), with a constant counted as one input. Values come
from the DAG, never from evaluating text.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from .world import Theme

Key = tuple[str, str, str]  # ("inst", owner, item) | ("abs", owner, plural category)

UNARY_OPS = ("copy", "add", "mul")


@dataclass
class Node:
    key: Key
    op: str
    parents: tuple[int, ...] = ()
    const: int | None = None
    value: int = 0

    @property
    def in_degree(self) -> int:
        return len(self.parents) + (self.const is not None)


@dataclass
class Problem:
    theme: str
    nodes: list[Node]  # in a topological order: parents always come first
    target: int
    necessary: frozenset[int]
    op: int
    redundant: tuple[int, ...] = field(default=())

    @property
    def answer(self) -> int:
        return self.nodes[self.target].value


@dataclass(frozen=True)
class StructureSpec:
    """How big a structure graph to sample from a theme."""

    layers: tuple[int, int]  # consecutive layers used
    items: tuple[int, int]  # items per layer
    parents: tuple[int, int]  # owners per item of the layer below


def phrase(key: Key) -> str:
    """The noun phrase of a quantity, lower case: ``each Barn's Cow``."""
    kind, owner, item = key
    return f"each {owner}'s total {item}" if kind == "abs" else f"each {owner}'s {item}"


def op_cost(node: Node) -> int:
    return max(1, node.in_degree - 1)


def op_count(nodes: list[Node], necessary) -> int:
    return sum(op_cost(nodes[i]) for i in necessary)


def ancestors(nodes: list[Node], target: int) -> frozenset[int]:
    seen, stack = {target}, [target]
    while stack:
        for p in nodes[stack.pop()].parents:
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return frozenset(seen)


def sample_structure(rng: random.Random, theme: Theme, spec: StructureSpec):
    """Instance keys (owner, item) and the next-layer category of each owner."""
    n_layers = rng.randint(min(spec.layers[0], len(theme)), min(spec.layers[1], len(theme)))
    start = rng.randint(0, len(theme) - n_layers)
    layers = theme[start : start + n_layers]
    chosen = [rng.sample(l.items, rng.randint(*spec.items)) for l in layers]
    inst: list[tuple[str, str]] = []
    category: dict[str, str] = {}
    for depth in range(n_layers - 1):
        owners, below = chosen[depth], chosen[depth + 1]
        for item in below:
            k = min(len(owners), rng.randint(*spec.parents))
            for owner in rng.sample(owners, k):
                inst.append((owner, item))
                category[owner] = layers[depth + 1].plural
    rng.shuffle(inst)
    return inst, category


def guaranteed_instances(spec: StructureSpec, theme: Theme) -> int:
    """Instance quantities every structure sampled with ``spec`` is sure to have."""
    n_layers = min(spec.layers[0], len(theme))
    return (n_layers - 1) * spec.items[0] * min(spec.parents[0], spec.items[0])


# Relative frequency of each operation when the builder is free to choose.
OP_WEIGHTS = {"const": 2.0, "copy": 0.5, "add": 1.0, "mul": 0.7, "diff": 0.8, "sum": 1.0, "abstract": 0.8}


class _Builder:
    """Forward construction: nodes are added in topological order, every node but the
    target gets a child later, so every node is necessary and ``op`` is spent exactly."""

    def __init__(self, rng, inst, category, max_sum_terms):
        self.rng, self.category, self.max_sum_terms = rng, category, max_sum_terms
        self.free = list(inst)  # unused instance keys, in random order
        self.nodes: list[Node] = []
        self.dangling: list[int] = []  # nodes without a child yet
        self.closed: set[str] = set()  # owners whose abstract quantity exists
        self.by_owner: dict[str, list[int]] = {}

    def take_instance(self) -> Key | None:
        for i, (owner, item) in enumerate(self.free):
            if owner not in self.closed:
                del self.free[i]
                return ("inst", owner, item)
        return None

    def add(self, key: Key, op: str, parents=(), const=None) -> int:
        idx = len(self.nodes)
        self.nodes.append(Node(key, op, tuple(parents), const))
        self.dangling = [d for d in self.dangling if d not in parents] + [idx]
        if key[0] == "inst":
            self.by_owner.setdefault(key[1], []).append(idx)
        else:
            self.closed.add(key[1])
        return idx

    def pick_parents(self, k: int, prefer_dangling: float = 0.75) -> list[int] | None:
        if k > len(self.nodes):
            return None
        chosen: list[int] = []
        for _ in range(k):
            pool_d = [d for d in self.dangling if d not in chosen]
            pool_all = [i for i in range(len(self.nodes)) if i not in chosen]
            pool = pool_d if pool_d and self.rng.random() < prefer_dangling else pool_all
            chosen.append(self.rng.choice(pool))
        return chosen

    def propose(self):
        """A random operation with its parents and cost, or None."""
        rng = self.rng
        op = rng.choices(list(OP_WEIGHTS), weights=list(OP_WEIGHTS.values()))[0]
        if op == "const":
            return op, [], 1
        if op == "abstract":
            owners = [o for o in self.by_owner if o not in self.closed]
            if not owners:
                return None
            owner = rng.choice(owners)
            parents = list(self.by_owner[owner])
            return ("abstract", owner), parents, max(1, len(parents) - 1)
        k = 1 if op in UNARY_OPS else 2 if op == "diff" else rng.randint(2, self.max_sum_terms)
        parents = self.pick_parents(k)
        if parents is None:
            return None
        return op, parents, max(1, k - 1)

    def build(self, op_target: int, tries: int = 60) -> bool:
        spent = 0
        while True:
            r, m = op_target - spent, len(self.dangling)
            if r == max(1, m - 1):
                return self.add_target()
            for _ in range(tries):
                proposal = self.propose()
                if proposal is None:
                    continue
                op, parents, cost = proposal
                m_after = m - len(set(parents) & set(self.dangling)) + 1
                if r - cost >= max(1, m_after - 1):
                    break
            else:  # always feasible: a constant when nothing dangles, else extend a dangling node
                op, parents, cost = ("const", [], 1) if m == 0 else ("add", [self.dangling[-1]], 1)
            if isinstance(op, tuple):  # abstract quantity of an owner
                self.add(("abs", op[1], self.category[op[1]]), "abstract", parents)
            else:
                key = self.take_instance()
                if key is None:
                    return False
                self.add(key, op, parents)
            spent += cost

    def add_target(self) -> bool:
        parents = list(self.dangling)
        self.rng.shuffle(parents)
        m = len(parents)
        # The asked quantity may be an abstract one when the dangling nodes are exactly one
        # owner's instance quantities.
        owners = {self.nodes[p].key[1] for p in parents if self.nodes[p].key[0] == "inst"}
        if m >= 1 and len(owners) == 1:
            owner = owners.pop()
            if owner not in self.closed and sorted(self.by_owner[owner]) == sorted(parents) and self.rng.random() < 0.3:
                self.add(("abs", owner, self.category[owner]), "abstract", parents)
                return True
        key = self.take_instance()
        if key is None:
            return False
        if m == 0:
            op = "const"
        elif m == 1:
            op = self.rng.choice(UNARY_OPS)
        elif m == 2:
            op = self.rng.choice(("diff", "sum"))
        else:
            op = "sum"
        self.add(key, op, parents)
        return True


def _add_redundant(b: _Builder, count: int) -> list[int]:
    """Quantities the question states but the answer does not need."""
    added = []
    for _ in range(count):
        key = b.take_instance()
        if key is None:
            break
        op = b.rng.choices(["const", "copy", "add", "mul", "diff", "sum"], weights=[2, 0.5, 1, 0.7, 0.8, 1])[0]
        k = {"const": 0, "diff": 2, "sum": 2}.get(op, 1)
        parents = b.pick_parents(k, prefer_dangling=0.0) if k else []
        if parents is None:
            op, parents = "const", []
        b.nodes.append(Node(key, op, tuple(parents)))
        added.append(len(b.nodes) - 1)
    return added


def assign_values(rng: random.Random, nodes: list[Node], max_value: int, const_range=(0, 9), tries: int = 30) -> bool:
    """Draw constants and compute every value in topological order; all |value| < max_value."""
    lo, hi = const_range
    for _ in range(tries):
        for node in nodes:
            vals = [nodes[p].value for p in node.parents]
            if node.op == "const":
                node.const = rng.randint(lo, hi)
                node.value = node.const
            elif node.op == "copy":
                node.value = vals[0]
            elif node.op == "add":
                node.const = rng.randint(max(lo, 1), hi)
                node.value = vals[0] + node.const
            elif node.op == "mul":
                node.const = rng.randint(max(lo, 2), hi)
                node.value = vals[0] * node.const
            elif node.op == "diff":
                # Counts stay non-negative: the larger operand comes first.
                if vals[0] < vals[1]:
                    node.parents = node.parents[::-1]
                node.value = abs(vals[0] - vals[1])
            else:  # sum, abstract
                node.value = sum(vals)
        if all(abs(n.value) < max_value for n in nodes):
            return True
    return False


def stated_constants(nodes: list[Node]) -> set[int]:
    """The constants a question states (every number in its text)."""
    return {n.const for n in nodes if n.op != "abstract" and n.const is not None}


def canonical_key(problem: Problem) -> str:
    """A hash of the necessary DAG (quantities, operations, constants), independent of
    node order, sentence order and wording: two problems with the same key are the same
    problem for the purpose of keeping splits disjoint."""
    memo: dict[int, str] = {}

    def canon(i: int) -> str:
        if i not in memo:
            n = problem.nodes[i]
            parts = [canon(p) for p in n.parents]
            if n.op in ("sum", "abstract"):
                parts.sort()
            memo[i] = f"{n.key}|{n.op}|{n.const}|({','.join(parts)})"
        return memo[i]

    return hashlib.sha1(canon(problem.target).encode()).hexdigest()[:20]


def build_problem(
    rng: random.Random,
    themes: dict[str, Theme],
    spec: StructureSpec,
    op: int,
    n_redundant: int,
    max_value: int,
    max_sum_terms: int = 3,
    attempts: int = 500,
    *,
    const_range: tuple[int, int] = (0, 9),
    answer_not_stated: bool = False,
) -> Problem:
    """A problem with exactly ``op`` operations; with ``answer_not_stated`` its answer is never a
    number the question states, so copying a number from the question cannot score."""
    for _ in range(attempts):
        theme_name = rng.choice(sorted(themes))
        inst, category = sample_structure(rng, themes[theme_name], spec)
        b = _Builder(rng, inst, category, max_sum_terms)
        if not b.build(op):
            continue
        target = len(b.nodes) - 1
        redundant = _add_redundant(b, n_redundant)
        if not assign_values(rng, b.nodes, max_value, const_range):
            continue
        if answer_not_stated and b.nodes[target].value in stated_constants(b.nodes):
            continue
        necessary = ancestors(b.nodes, target)
        assert op_count(b.nodes, necessary) == op and len(necessary) == target + 1
        return Problem(theme_name, b.nodes, target, necessary, op, tuple(redundant))
    raise RuntimeError(f"could not build a problem with op={op}; the world is too small for it")
