"""Property test: random sequences of operations on the VFS agree with a
simple in-memory model of files, folders, versions and trash."""
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from providers.errors import CofferError
from providers.storage import Storage

from conftest import make_config

NAMES = ["a", "Ä"]
PATHS = st.lists(st.sampled_from(NAMES), min_size=1, max_size=2).map(lambda p: "/" + "/".join(p))
CONTENT = st.binary(max_size=300) | st.sampled_from([b"", b"same", bytes(70_000)])


class Node:
    def __init__(self, parent, name, kind):
        self.parent, self.name, self.kind = parent, name, kind
        self.versions: list[tuple[int, bytes]] = []      # (creation order, content)
        self.trashed: int | None = None                  # when deleted (the top of a deleted subtree)


class VfsModel(RuleBasedStateMachine):
    """Files and folders as nodes that keep their versions; deleting marks a
    node trashed where it was, so the history at a path is that of every
    file that has lived there (see providers/history.py)."""

    def __init__(self):
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        cfg = make_config(Path(self.tmp.name), storage={"chunk_size": 65536})
        self.st = Storage.open(cfg)
        self.st.accounts.create("m", "model-password")
        self.v = self.st.open_account("m", "model-password")
        self.root = Node(None, "", "d")
        self.nodes = [self.root]
        self.clock = 0
        self.trashed = 0

    def teardown(self):
        self.st.close()
        self.tmp.cleanup()

    def tick(self):
        self.clock += 1
        return self.clock

    # -- the model's tree -------------------------------------------------------------
    def kids(self, node, live=True):
        return [n for n in self.nodes if n.parent is node and not (live and n.trashed)]

    def live(self, p):
        node = self.root
        for name in [x for x in p.split("/") if x]:
            if node.kind != "d":
                return None
            node = next((n for n in self.kids(node) if n.name == name), None)
            if node is None:
                return None
        return node

    def paths(self, kind):
        out, todo = [], [("", self.root)]
        while todo:
            path, node = todo.pop()
            for n in self.kids(node):
                out += [path + "/" + n.name] if n.kind == kind else []
                todo.append((path + "/" + n.name, n))
        return out

    def parent(self, p):
        return p.rsplit("/", 1)[0] or "/"

    def under(self, p, root):
        return p == root or p.startswith(root.rstrip("/") + "/")

    def is_dir(self, p):
        n = self.live(p)
        return n is not None and n.kind == "d"

    def expect(self, ok, fn):
        if ok:
            fn()
        else:
            with pytest.raises(CofferError):
                fn()
        return ok

    def add(self, p, kind):
        node = Node(self.live(self.parent(p)), p.rsplit("/", 1)[1], kind)
        self.nodes.append(node)
        return node

    def trash(self, node):
        node.trashed = self.tick()
        self.trashed += 1

    # -- rules --------------------------------------------------------------------------------
    @rule(p=PATHS, data=CONTENT)
    def write(self, p, data):
        ok = self.is_dir(self.parent(p)) and not self.is_dir(p)
        if self.expect(ok, lambda: self.v.write_bytes(p, data)):
            node = self.live(p) or self.add(p, "f")
            node.versions.append((self.tick(), data))

    @rule(p=PATHS)
    def mkdir(self, p):
        ok = self.is_dir(self.parent(p)) and self.live(p) is None
        if self.expect(ok, lambda: self.v.mkdir(p)):
            self.add(p, "d")

    @rule(p=PATHS)
    def delete(self, p):
        if self.expect(self.live(p) is not None, lambda: self.v.delete(p)):
            self.trash(self.live(p))

    def ok_pair(self, src, dst):
        return self.live(src) is not None and self.is_dir(self.parent(dst)) and not self.under(dst, src) \
            and not self.under(src, dst)

    @rule(src=PATHS, dst=PATHS)
    def move(self, src, dst):
        if src == dst:
            return
        if self.expect(self.ok_pair(src, dst), lambda: self.v.move(src, dst)):
            node = self.live(src)
            if self.live(dst) is not None:
                self.trash(self.live(dst))
            node.parent, node.name = self.live(self.parent(dst)), dst.rsplit("/", 1)[1]

    def _copy(self, node, parent, name, when):
        new = Node(parent, name, node.kind)
        self.nodes.append(new)
        if node.kind == "f":
            new.versions.append((when, node.versions[-1][1]))
        for k in self.kids(node):
            self._copy(k, new, k.name, when)

    @rule(src=PATHS, dst=PATHS)
    def copy(self, src, dst):
        if self.expect(self.ok_pair(src, dst), lambda: self.v.copy(src, dst)):
            s, d = self.live(src), self.live(dst)
            when = self.tick()
            if s.kind == "f" and d is not None and d.kind == "f":
                d.versions.append((when, s.versions[-1][1]))
                return
            if d is not None:
                self.trash(d)
            self._copy(s, self.live(self.parent(dst)), dst.rsplit("/", 1)[1], when)

    def history(self, p):
        """The versions of every file that has lived at p, newest first."""
        gens = [(self.root, None)]
        for name in [x for x in p.split("/") if x]:
            gens = [(n, n.trashed or gone) for g, gone in gens if g.kind == "d" for n in self.nodes
                    if n.parent is g and n.name == name]
        gens.sort(key=lambda g: (g[1] is None, g[1] or 0), reverse=True)
        files = [n for n, _ in gens if n.kind == gens[0][0].kind]
        return [data for _, data in sorted((v for n in files for v in n.versions), key=lambda v: v[0],
                                           reverse=True)]

    @precondition(lambda self: self.paths("f"))
    @rule(data=st.data())
    def read_and_versions(self, data):
        p = data.draw(st.sampled_from(sorted(self.paths("f"))))
        assert self.v.read_bytes(p) == self.live(p).versions[-1][1]
        want = self.history(p)
        assert len(self.v.versions(p)) == len(want)
        assert [self.v.read_bytes(e.path) for e in self.v.list("/.coffer/versions" + p)] == want

    @invariant()
    def listings_agree(self):
        for d in self.paths("d") + ["/"]:
            want = {n.name for n in self.kids(self.live(d))}
            assert {e.name for e in self.v.list(d)} == want, d

    @invariant()
    def trash_counts(self):
        total = sum(len(self.v.list(s.path)) > 0 for s in self.v.list("/.coffer/trash"))
        assert total == self.trashed


VfsModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
test_vfs_matches_model = VfsModel.TestCase
