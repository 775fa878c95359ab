"""Fusion: partition the graph's nodes into kernels ("groups").

A group is one anchor (matmul, conv, pooling, reduction...) or none, plus the elementwise work
that follows it, or a chain of elementwise/injective work on its own. Groups run in list order;
joining a node to a group is allowed only if every value it reads is already available when the
group runs, so the order stays valid without any reordering.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..graph import Graph, Node
from ..ops.registry import REGISTRY, Pattern

#: elementwise epilogues longer than this stop growing (keeps kernels and compile times small)
MAX_GROUP_NODES = 12


@dataclass
class Group:
    """Nodes compiled into one kernel."""

    nodes: list[Node] = field(default_factory=list)
    anchor: Node | None = None

    @property
    def tail(self) -> Node:
        """The last node; its outputs are what the group produces for others."""
        return self.nodes[-1]

    @property
    def pattern(self) -> Pattern:
        """Most complex pattern in the group."""
        return max(REGISTRY[n.op].pattern for n in self.nodes)


def fuse(graph: Graph) -> list[Group]:
    """Greedy producer-consumer fusion in topological order."""
    consumers = graph.consumers()
    group_of: dict[str, int] = {}  # value name -> index of producing group
    groups: list[Group] = []

    def can_join(node: Node, gi: int, via: str) -> bool:
        g = groups[gi]
        if len(g.nodes) >= MAX_GROUP_NODES or via != g.tail.outputs[0] or len(g.tail.outputs) != 1:
            return False
        if len(consumers.get(via, [])) != 1 or via in graph.outputs:
            return False
        pat = REGISTRY[node.op].pattern
        if pat == Pattern.ELEMWISE:
            if g.anchor is not None and graph.values[node.outputs[0]].shape != graph.values[via].shape:
                return False
        elif pat == Pattern.INJECTIVE:
            if g.anchor is not None:
                return False
        else:
            return False
        if REGISTRY[g.tail.op].pattern == Pattern.OPAQUE:
            return False
        for other in node.inputs:
            if other and other != via and other in group_of and group_of[other] > gi:
                return False
        return True

    for node in graph.nodes:
        op = REGISTRY[node.op]
        target = None
        if op.pattern <= Pattern.INJECTIVE and len(node.outputs) == 1:
            for inp in node.inputs:
                if inp and inp in group_of and can_join(node, group_of[inp], inp):
                    target = group_of[inp]
                    break
        if target is None:
            groups.append(Group(anchor=node if op.pattern >= Pattern.ANCHOR else None))
            target = len(groups) - 1
        groups[target].nodes.append(node)
        for out in node.outputs:
            if out:
                group_of[out] = target
    return groups
