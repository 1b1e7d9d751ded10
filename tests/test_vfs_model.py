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


class VfsModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        cfg = make_config(Path(self.tmp.name), storage={"chunk_size": 65536})
        self.st = Storage.open(cfg)
        self.st.accounts.create("m", "model-password")
        self.v = self.st.login("m", "model-password")
        self.files: dict[str, bytes] = {}
        self.history: dict[str, list[bytes]] = {}
        self.dirs: set[str] = {"/"}
        self.trashed = 0

    def teardown(self):
        self.st.close()
        self.tmp.cleanup()

    def parent(self, p):
        return p.rsplit("/", 1)[0] or "/"

    def under(self, p, root):
        return p == root or p.startswith(root.rstrip("/") + "/")

    def exists(self, p):
        return p in self.files or p in self.dirs

    def expect(self, ok, fn):
        if ok:
            fn()
        else:
            with pytest.raises(CofferError):
                fn()
        return ok

    @rule(p=PATHS, data=CONTENT)
    def write(self, p, data):
        ok = self.parent(p) in self.dirs and p not in self.dirs
        if self.expect(ok, lambda: self.v.write_bytes(p, data)):
            self.files[p] = data
            self.history.setdefault(p, []).append(data)

    @rule(p=PATHS)
    def mkdir(self, p):
        ok = self.parent(p) in self.dirs and not self.exists(p)
        if self.expect(ok, lambda: self.v.mkdir(p)):
            self.dirs.add(p)

    @rule(p=PATHS)
    def delete(self, p):
        if self.expect(self.exists(p), lambda: self.v.delete(p)):
            self._remove(p)
            self.trashed += 1

    def _remove(self, p):
        for f in [f for f in self.files if self.under(f, p)]:
            del self.files[f]
            self.history.pop(f, None)
        self.dirs -= {d for d in self.dirs if self.under(d, p)}

    def _carry(self, src, dst, move):
        files = {f: self.files[f] for f in self.files if self.under(f, src)}
        dirs = {d for d in self.dirs if self.under(d, src)}
        hist = {f: list(self.history[f]) for f in files}
        if move:
            self._remove(src)
        for f, data in files.items():
            new = dst + f[len(src):]
            self.files[new] = data
            self.history[new] = hist[f] if move else [data]
        self.dirs |= {dst + d[len(src):] for d in dirs}

    @rule(src=PATHS, dst=PATHS)
    def move(self, src, dst):
        ok = self.exists(src) and self.parent(dst) in self.dirs and not self.under(dst, src) \
            and not self.under(src, dst)
        if src == dst:
            return
        if self.expect(ok, lambda: self.v.move(src, dst)):
            if self.exists(dst):
                self._remove(dst)
                self.trashed += 1
            self._carry(src, dst, True)

    @rule(src=PATHS, dst=PATHS)
    def copy(self, src, dst):
        ok = self.exists(src) and self.parent(dst) in self.dirs and not self.under(dst, src) \
            and not self.under(src, dst)
        if self.expect(ok, lambda: self.v.copy(src, dst)):
            if src in self.files and dst in self.files:
                self.files[dst] = self.files[src]
                self.history[dst].append(self.files[src])
                return
            if self.exists(dst):
                self._remove(dst)
                self.trashed += 1
            self._carry(src, dst, False)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def read_and_versions(self, data):
        p = data.draw(st.sampled_from(sorted(self.files)))
        assert self.v.read_bytes(p) == self.files[p]
        vs = self.v.versions(p)
        assert len(vs) == len(self.history[p])
        assert [self.v.read_bytes(e.path) for e in self.v.list("/.coffer/versions" + p)] == \
            list(reversed(self.history[p]))

    @invariant()
    def listings_agree(self):
        for d in self.dirs:
            want = {x.rsplit("/", 1)[1] for x in list(self.files) + list(self.dirs)
                    if x != "/" and self.parent(x) == d}
            assert {e.name for e in self.v.list(d)} == want, d

    @invariant()
    def trash_counts(self):
        total = sum(len(self.v.list(s.path)) > 0 for s in self.v.list("/.coffer/trash"))
        assert total == self.trashed


VfsModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
test_vfs_matches_model = VfsModel.TestCase
