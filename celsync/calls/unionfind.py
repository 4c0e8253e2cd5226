"""Disjoint sets over channel ids, with whole components removable once a call is closed.

Path halving and union by size keep ``find`` near O(1); each root remembers its members so a
closed call's ids can be forgotten and memory stays proportional to the open calls.
"""

from __future__ import annotations


class UnionFind:
    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._members: dict[str, list[str]] = {}  # root -> every id in its set

    def __contains__(self, item: str) -> bool:
        return item in self._parent

    def __len__(self) -> int:
        return len(self._parent)

    def add(self, item: str) -> str:
        if item not in self._parent:
            self._parent[item] = item
            self._members[item] = [item]
        return self.find(item)

    def find(self, item: str) -> str:
        parent = self._parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, a: str, b: str) -> str:
        """Join the sets of ``a`` and ``b``; returns the surviving root."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if len(self._members[ra]) < len(self._members[rb]):
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._members[ra].extend(self._members.pop(rb))
        return ra

    def members(self, root: str) -> list[str]:
        return self._members[root]

    def remove_set(self, root: str) -> None:
        for item in self._members.pop(root):
            del self._parent[item]
