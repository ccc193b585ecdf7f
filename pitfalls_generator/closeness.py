"""How close a candidate object is to a fact's true objects: the easy/hard measure.

The published easy and hard RoundEdit splits are believed to differ in how
semantically close the intermediate object is to the true objects. We measure
closeness as the number of hops between the candidate and the nearest true
object in the knowledge graph, with edges taken in both directions and the
case's subject left out (so the path cannot go through the fact itself):

* hard: a candidate at the smallest distance (in geography: a country that
  borders one of the true neighbours, a language that is co-official with a
  true language somewhere);
* easy: a candidate at the largest distance, or not connected at all.

The measure needs nothing but the graph, so it applies to a user's graph too.
"""

from __future__ import annotations

from collections import deque

from pitfalls_generator.graph import KnowledgeGraph

UNREACHABLE = 10**6
SUMMARY = ("intermediate object of a round case: hard = a candidate at the fewest hops from the nearest true object, "
           "easy = at the most hops (or unconnected); hops in the graph with edges both ways, the subject left out; "
           "each record's closeness_hops holds the distance")


def hops_to_nearest(graph: KnowledgeGraph, sources: set[str], avoid: str, max_hops: int = 8) -> dict[str, int]:
    """Breadth-first distances from the nearest of ``sources`` to every entity within ``max_hops``."""
    distance = {s: 0 for s in sources}
    queue = deque(sources)
    while queue:
        node = queue.popleft()
        if distance[node] >= max_hops:
            continue
        for nxt in sorted(graph.neighbours(node)):
            if nxt != avoid and nxt not in distance:
                distance[nxt] = distance[node] + 1
                queue.append(nxt)
    return distance


def closeness_distances(graph: KnowledgeGraph, candidates: list[str], true_objects: set[str], subject: str) -> dict[str, int]:
    """Each candidate's hop distance to the nearest true object (``UNREACHABLE`` if none within reach)."""
    distance = hops_to_nearest(graph, true_objects, avoid=subject)
    return {c: distance.get(c, UNREACHABLE) for c in candidates}
