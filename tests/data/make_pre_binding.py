"""Make tests/data/pre_binding: a data folder written by Coffer before its
sealed values were bound to their rows (revision 0006), for
tests/test_row_binding.py. Run with that release's code on the path:

    python tests/data/make_pre_binding.py OUT_DIR   # then copy OUT_DIR/var/* here

Accounts: alice (managed) with versions, a rename, the trash, a dead
property, a lock and a folder shared with bob; bob (private, password
"bob-password-1") with a folder shared with alice; carol (private) who
never logs in again."""
import sys
from pathlib import Path

from providers import config, locks
from providers.storage import Storage

out = Path(sys.argv[1])
cfg = config.from_dict({"storage": {"data_dir": str(out / "var")},
                        "security": {"bcrypt_rounds": 4, "argon2_memory_kib": 1024, "argon2_iterations": 1,
                                     "argon2_lanes": 1}}, base_dir=str(out))
st = Storage.open(cfg)
st.accounts.create("alice", "alice-password-1", mode="managed")
st.accounts.create("bob", "bob-password-1", mode="private")
st.accounts.create("carol", "carol-password-1", mode="private")
a = st.open_account("alice", "alice-password-1")
a.mkdir("/docs")
a.write_bytes("/docs/a.txt", b"alice a, first")
a.write_bytes("/docs/a.txt", b"alice a, second")
a.write_bytes("/docs/old.txt", b"renamed later")
a.move("/docs/old.txt", "/docs/renamed.txt")
a.write_bytes("/trash-me.txt", b"in the trash")
a.delete("/trash-me.txt")
a.set_props("/docs/a.txt", {"{urn:x}colour": b"<colour xmlns='urn:x'>blue</colour>"})
a.mkdir("/team")
a.write_bytes("/team/plan.txt", b"the plan")
a.share_grant("/team", "bob", "write")
locks.LockStore(st.db).create(locks.scope_of(a.user.id, a.home), "/docs/a.txt",
                              {"scope": "exclusive", "type": "write", "depth": "0", "owner": b"<owner>alice</owner>",
                               "timeout": 7 * 86400, "principal": "alice"})
b = st.open_account("bob", "bob-password-1")
b.write_bytes("/mine.txt", b"bob's own")
b.write_bytes("/Shared/alice/team/from-bob.txt", b"bob wrote this")
b.mkdir("/out")
b.write_bytes("/out/for-alice.txt", b"bob shares this")
b.share_grant("/out", "alice", "read")
c = st.open_account("carol", "carol-password-1")
c.write_bytes("/c.txt", b"carol's")
for v in (a, b, c):
    v.close()
st.close()
