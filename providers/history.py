"""History by path: which files have lived at a path, for `/.coffer/versions/`.

A path's history is that of every file that has lived at it: the one there
now and the deleted ones, until retention or a purge removes them. A deleted
node keeps its parent and its keyed name (only the top of a deleted subtree
is marked trashed), so the files that lived at a path are found by walking
names through live and deleted folders alike. A renamed or moved file takes
its history along; a file restored from the trash is the same node again.

A collaborator of a shared folder sees its deleted files only from the time
they were let in: what was deleted before was never theirs to see.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import crypto, paths
from .errors import NotFound
from .meta import tree as t
from .meta import users as uq

LIVE = 1 << 62                # sorts after every deletion time


@dataclass
class Gen:
    """One node that lived at a path, and when it left it (None while it is there)."""
    node: dict
    gone_us: int | None

    @property
    def live(self) -> bool:
        return self.gone_us is None

    @property
    def id(self) -> int:
        return self.node["id"]


def ordered(gens: list[Gen]) -> list[Gen]:
    """The live node first, then the most recently deleted."""
    return sorted(gens, key=lambda g: (LIVE if g.gone_us is None else g.gone_us, g.id), reverse=True)


def of_kind(gens: list[Gen]) -> list[Gen]:
    """The generations of the same kind as the first (a file, or a folder):
    a path that holds a folder now lists the folder, not the files deleted there."""
    return [g for g in gens if g.node["kind"] == gens[0].node["kind"]] if gens else []


class Walker:
    """Walks paths through live and deleted nodes for one principal in one transaction."""

    def __init__(self, resolver, c):
        self.res, self.c = resolver, c
        self._joined: dict[int, int] = {}

    def visible(self, node, gone_us) -> bool:
        if gone_us is None:
            return True
        dom = self.res.keys.of(self.c, node)
        if dom.permission == "owner":
            return True
        if dom.id not in self._joined:
            mem = uq.membership(self.c, dom.id, self.res.user_id)
            self._joined[dom.id] = mem["created_us"] if mem is not None else LIVE
        return gone_us >= self._joined[dom.id]

    def walk(self, parts) -> list[Gen]:
        """Every node that has lived at `parts`, live first; NotFound if none."""
        gens, rest, walked = self.res.history_start(self.c, parts)
        for i, name in enumerate(rest):
            nxt = []
            for g in gens:
                if g.node["kind"] != "d":
                    continue
                keys = self.res.keys.of(self.c, g.node).keys
                for n in t.named(self.c, g.id, crypto.name_lookup(keys, g.id, name)):
                    gone = n["trashed_us"] if n["trashed_us"] is not None else g.gone_us
                    if self.visible(n, gone):
                        nxt.append(Gen(dict(n), gone))
            if not nxt:
                raise NotFound(f"{paths.join(walked + rest[:i + 1])} does not exist, and nothing that lived "
                               "there has history left")
            gens = nxt
        return ordered(gens)

    def members(self, gens: list[Gen]) -> dict[str, list[Gen]]:
        """The names that have lived in these folders, each with its generations."""
        dirs = {g.id: g for g in gens if g.node["kind"] == "d"}
        out: dict[str, list[Gen]] = {}
        for n in t.children_any(self.c, list(dirs)):
            parent = dirs[n["parent_id"]]
            gone = n["trashed_us"] if n["trashed_us"] is not None else parent.gone_us
            if not self.visible(n, gone):
                continue
            name = crypto.decrypt_name(self.res.keys.of(self.c, parent.node).keys, n["name_enc"], n["name_lookup"])
            out.setdefault(name, []).append(Gen(dict(n), gone))
        return {name: ordered(gs) for name, gs in out.items()}

    def versions(self, gens: list[Gen]) -> list[tuple[dict, Gen]]:
        """Every kept version of these files, newest first, with the file it belongs to."""
        files = {g.id: g for g in gens if g.node["kind"] == "f"}
        if len(files) == 1:
            rows = t.versions_of(self.c, next(iter(files)))
        else:
            rows = sorted(t.versions_of_nodes(self.c, list(files)) if files else [],
                          key=lambda v: (v["created_us"], v["id"]), reverse=True)
        return [(dict(v), files[v["node_id"]]) for v in rows]
