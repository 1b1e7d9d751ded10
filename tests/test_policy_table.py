"""The policy table (providers/policy.py) walked over the real protocols: for
every operation and every kind of target, as the owner of a shared folder,
its read and its write collaborator and a stranger, over WebDAV and over
SFTP against one `coffer serve`, the answer is the table's: allowed is
success, refused is exactly 403 / SSH_FX_PERMISSION_DENIED, and a target in
a folder not shared with the principal does not exist for it (either
refusal, never success).

Each case gets targets made for it just before (a file written twice for
versions, a file deleted for the trash, one written for a snapshot), so no
case depends on what another did. Operations as clients ask for them:

  read    PROPFIND Depth 0 / stat
  create  PUT / open for writing, of a new file at a place of the kind (for
          the top folder: at `/` itself; in /.coffer: in or at the target)
  change  PROPPATCH of a dead property / setstat of the modification time
  remove  DELETE / remove of a live target; MOVE / rename of one in /.coffer
          (moving out of the trash restores, a copy: not a removal)
  purge   DELETE / remove in /.coffer; `coffer-admin purge` of a live path
  share   `ssh … coffer share grant` (SFTP's server only; WebDAV has none)
"""
from __future__ import annotations

import itertools
import stat
import time

import pytest
from lxml import etree
from test_share_protocols import DENIED, HIDDEN, OK, S, Dav, Refused, Server, Sftp

from providers import policy
from providers.policy import Op
from providers.resolve import Kind

WHO = ("owner", "reader", "writer", "stranger")
GRANT = {"owner": policy.OWNER, "reader": policy.READ, "writer": policy.WRITE}
IN_SHARE = {Kind.LIVE, Kind.MOUNT, Kind.SHARED, Kind.HISTORY, Kind.VERSION}   # as collaborators see them
NOT_OWNERS = {Kind.MOUNT, Kind.SHARED}     # only a collaborator has these (the owner sees its own folder)
UNREACHABLE = {(Op.REMOVE, Kind.TRASH), (Op.REMOVE, Kind.TRASHED)}     # moving out of the trash restores
ONLY_LIVE_PURGE = {Kind.TOP, Kind.LIVE, Kind.MOUNT, Kind.SHARED}       # DELETE of these is a removal
# What a protocol itself has no request for: HTTP answers PUT or MKCOL at `/`
# (an existing collection) with 405 before asking anyone; SFTP removes files
# (REMOVE) and empty folders (RMDIR), and the folders of /.coffer are never empty.
NO_REQUEST = {("webdav", Op.CREATE, Kind.TOP), ("webdav", Op.SHARE, None),
              *(("sftp", Op.PURGE, k) for k in (Kind.META, Kind.HISTORY, Kind.TRASH, Kind.SNAPSHOT))}
_n = itertools.count(1)


def expected(op: Op, kind: Kind, who: str) -> str:
    if who == "stranger" and kind in IN_SHARE:
        return HIDDEN
    grant = GRANT[who] if kind in IN_SHARE else policy.OWNER
    return OK if policy.allowed(op, kind, grant) else DENIED


class DavClient(Dav):
    def stat(self, path):
        self.req("PROPFIND", path, b"", {"Depth": "0"})

    def change(self, path):
        body = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:test">'
                b"<D:set><D:prop><Z:note>x</Z:note></D:prop></D:set></D:propertyupdate>")
        _, data = self.req("PROPPATCH", path, body)
        status = etree.fromstring(data).find(".//{DAV:}propstat/{DAV:}status").text
        if " 403 " in status:
            raise Refused("denied", f"PROPPATCH {path}: {status}")
        assert " 200 " in status, status

    def remove(self, path):
        self.req("DELETE", path)

    def move_away(self, path, n):
        self.rename(path, f"/moved-{n}")



class SftpClient(Sftp):
    def __init__(self, server, user):
        super().__init__(server, user)
        self.server = server

    def stat(self, path):
        self.call("stat", self.c.stat, path)

    def change(self, path):
        self.call("utime", self.c.utime, path, (1_700_000_000, 1_700_000_000))

    def remove(self, path):
        try:
            folder = stat.S_ISDIR(self.c.stat(path).st_mode)
        except IOError:
            folder = False
        if folder:
            self.call("rmdir", self.c.rmdir, path)
        else:
            self.call("remove", self.c.remove, path)

    def move_away(self, path, n):
        self.rename(path, f"/moved-{n}")

    def share(self, path):
        rc, out, err = self.server.exec(self.user, f"coffer share grant '{path}' stranger read")
        if rc == 0:
            return
        if "not shared with you" in err or "does not exist" in err:
            raise Refused("absent", err)
        assert "refused" in err.lower() or "only" in err or "permission" in err.lower(), err
        raise Refused("denied", err)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("policy-table")) as srv:
        yield srv


@pytest.fixture(scope="module")
def clients(server):
    made = {}

    def get(protocol: str, user: str):
        if (protocol, user) not in made:
            made[protocol, user] = {"webdav": DavClient, "sftp": SftpClient}[protocol](server, user)
        return made[protocol, user]
    yield get
    for c in made.values():
        c.close()


class Targets:
    """Paths of each kind for one principal, made fresh for one case."""

    def __init__(self, get, who: str, n: int):
        self.get, self.who, self.n = get, who, n
        self.owner = get("webdav", "owner")

    def shared(self, path: str) -> str:
        """A path in the owner's shared folder as this principal names it."""
        return path if self.who == "owner" else S + path[len("/Projects"):]

    def live_file(self) -> str:
        path = f"/Projects/p{self.n}.txt"
        self.owner.write(path, b"one")
        self.owner.write(path, b"two")
        return path

    def own_deleted(self) -> tuple[str, str]:
        me = self.get("webdav", self.who)
        me.write(f"/gone-{self.n}.txt", b"gone")
        me.delete(f"/gone-{self.n}.txt")
        for stamp in reversed(me.list("/.coffer/trash")):
            if f"gone-{self.n}.txt" in me.list(f"/.coffer/trash/{stamp}"):
                return f"/.coffer/trash/{stamp}", f"gone-{self.n}.txt"
        raise AssertionError("the deleted file is not in the trash")

    def own_snapshot(self) -> tuple[str, str]:
        me = self.get("webdav", self.who)
        me.write(f"/snap-{self.n}.txt", b"then")
        time.sleep(0.01)
        return "/.coffer/snapshots/" + me.list("/.coffer/snapshots")[-1], f"snap-{self.n}.txt"

    def __call__(self, op: Op, kind: Kind) -> str:
        if kind is Kind.TOP:
            return "/"
        if kind is Kind.MOUNT:
            return S if op is not Op.CREATE else f"/Shared/owner/New-{self.n}"
        if kind is Kind.SHARED:
            return "/Shared/owner" if op is not Op.CREATE else f"/Shared/new-{self.n}.txt"
        if kind is Kind.META:
            return "/.coffer/versions" if op is not Op.CREATE else f"/.coffer/versions/new-{self.n}.txt"
        if kind is Kind.LIVE:
            if op is Op.SHARE:
                if self.who != "owner":
                    return S + "/inner"
                self.owner.mkdir(f"/Box-{self.n}")
                return f"/Box-{self.n}"
            if op is Op.CREATE:
                return self.shared(f"/Projects/new-{self.n}.txt")
            return self.shared(self.live_file())
        if kind in (Kind.HISTORY, Kind.VERSION):
            live = self.live_file()
            if kind is Kind.VERSION:                  # the older version: purging the current one is a conflict
                live += "/" + self.owner.list("/.coffer/versions" + live)[0]
            return "/.coffer/versions" + self.shared(live)
        if kind in (Kind.TRASH, Kind.TRASHED):
            stamp, name = self.own_deleted()
            return stamp if kind is Kind.TRASH else f"{stamp}/{name}"
        snap, name = self.own_snapshot()
        return snap if kind is Kind.SNAPSHOT else f"{snap}/{name}"


def attempt(cl, op: Op, kind: Kind, path: str, n: int) -> str:
    try:
        if op is Op.READ:
            cl.stat(path)
        elif op is Op.CREATE:
            if kind in (Kind.HISTORY, Kind.TRASH, Kind.SNAPSHOT):
                path += f"/new-{n}.txt"                 # into the folder
            cl.write(path, b"new")
        elif op is Op.CHANGE:
            cl.change(path)
        elif op is Op.REMOVE:
            if kind in policy.COFFER:
                cl.move_away(path, n)
            else:
                cl.remove(path)
        elif op is Op.PURGE:
            cl.remove(path)
        else:
            cl.share(path)
    except Refused as e:
        return DENIED if e.kind == "denied" else "absent"
    return OK


CASES = [(protocol, op, kind) for protocol in ("webdav", "sftp") for op in Op for kind in Kind
         if (op, kind) not in UNREACHABLE and not (op is Op.PURGE and kind in ONLY_LIVE_PURGE)
         and (protocol, op, kind) not in NO_REQUEST and (protocol, op, None) not in NO_REQUEST]


@pytest.mark.parametrize("protocol,op,kind", CASES,
                         ids=[f"{p}-{op.name.lower()}-{kind.name.lower()}" for p, op, kind in CASES])
def test_every_answer_is_the_tables(server, clients, protocol, op, kind):
    wrong = []
    for who in WHO:
        if who == "owner" and kind in NOT_OWNERS:
            continue
        n = next(_n)
        path = Targets(clients, who, n)(op, kind)
        want = expected(op, kind, who)
        got = attempt(clients(protocol, who), op, kind, path, n)
        if got != want and not (want == HIDDEN and got in (DENIED, "absent")):
            wrong.append(f"{who} {op.value} {path} ({kind.name}): {got}, the table says {want}")
    assert not wrong, "\n".join(wrong)


def test_the_table_has_a_row_for_every_operation_and_kind():
    assert {(op, kind) for op in Op for kind in Kind} == set(policy.TABLE)


LIVE_PURGE = sorted(ONLY_LIVE_PURGE, key=lambda k: k.name)


@pytest.mark.parametrize("kind", LIVE_PURGE, ids=[k.name.lower() for k in LIVE_PURGE])
def test_purging_a_live_path_with_coffer_admin_is_the_tables(server, clients, kind):
    """`coffer-admin purge ACCOUNT PATH` is the front-end that purges live
    paths (DELETE there is a removal): it opens the account and asks the
    same gate, so a collaborator's grant answers as over the protocols."""
    wrong = []
    for who in WHO:
        if who == "owner" and kind in NOT_OWNERS:
            continue
        path = Targets(clients, who, next(_n))(Op.PURGE, kind)
        r = server.admin("purge", who, path, "--yes", "--password-stdin", input=server.password(who) + "\n")
        if r.returncode == 0:
            got = OK
        elif "purging " + path in r.stderr:
            got = DENIED
        else:
            got = "absent"
        want = expected(Op.PURGE, kind, who)
        if got != want and not (want == HIDDEN and got in (DENIED, "absent")):
            wrong.append(f"{who} purge {path} ({kind.name}): {got} ({r.stderr.strip()}), the table says {want}")
    assert not wrong, "\n".join(wrong)
