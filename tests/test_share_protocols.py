"""Shared folders over the real protocols, against one `coffer serve` process
with WebDAV and SFTP: the permission matrix of owner, read and write
collaborators and a stranger on the shared folder, inside it and next to it;
what PROPFIND and `ls -l` say each may do; revocation reaching an open
session at its next request; `coffer-admin share` and `ssh … coffer share`.

Outcomes in the matrix: OK; DENIED — exactly 403 over WebDAV and
SSH_FX_PERMISSION_DENIED over SFTP; HIDDEN — the target does not exist in the
principal's own tree (a stranger, or the owner's files next to the shared
folder), so either refusal is right (404/409 or 403; no such file or
permission denied) but never success. A refused attempt changes nothing.
"""
from __future__ import annotations

import errno
import http.client
import itertools
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from urllib.parse import quote, unquote

import paramiko
import pytest
from admin_harness import ADMIN
from backend import storage_toml
from webdav_harness import CofferServer, free_port, require_client

OK, DENIED, HIDDEN = "ok", "denied", "hidden"
ACCOUNTS = {"owner": ("owner-pw-1", "managed"), "reader": ("reader-pw-22", "private"),
            "writer": ("writer-pw-333", "managed"), "stranger": ("stranger-pw-4444", "managed"),
            "keeper": ("keeper-pw-55555", "private")}
WHO = ("owner", "reader", "writer", "stranger")
S = "/Shared/owner/Projects"


class Server(CofferServer):
    """`coffer serve` with WebDAV (plain HTTP on loopback) and SFTP, and the
    accounts and shares above set up through the storage core before it starts."""

    def __init__(self, folder: Path):
        super().__init__(folder, tls=False, accounts={n: pw for n, (pw, _) in ACCOUNTS.items()})
        self.sftp_port = free_port()
        self.config.write_text(f"""
{storage_toml(self.folder)}
[security]
bcrypt_rounds = 4
argon2_memory_kib = 1024
argon2_iterations = 1
argon2_lanes = 1
credential_cache_seconds = 60

[webdav]
host = "127.0.0.1"
port = {self.port}
tls = false
allow_plain_http = true

[sftp]
host = "127.0.0.1"
port = {self.sftp_port}
""")
        self.key = None

    def create_accounts(self):
        from providers import config
        from providers.sshkeys import SSHKeys
        from providers.storage import Storage
        st = Storage.open(config.load(self.config))
        try:
            for name, (pw, mode) in ACCOUNTS.items():
                st.accounts.create(name, pw, mode=mode)
            o = st.open_account("owner", ACCOUNTS["owner"][0])
            o.makedirs("/Projects/inner")
            o.write_bytes("/Projects/plan.txt", b"plan v1")
            o.write_bytes("/Projects/plan.txt", b"plan v2")
            o.write_bytes("/Projects/inner/deep.txt", b"deep")
            o.write_bytes("/private.txt", b"owner only")
            o.share_grant("/Projects", "reader", "read")
            o.share_grant("/Projects", "writer", "write")
            k = st.open_account("keeper", ACCOUNTS["keeper"][0])
            k.makedirs("/Box")
            k.write_bytes("/Box/kept.txt", b"kept")
            if shutil.which("ssh-keygen"):
                self.key = self.folder / "owner_ed25519"
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
                SSHKeys(st.db, st.accounts).add("owner", self.key.with_suffix(".pub").read_text())
        finally:
            st.close()

    def password(self, user: str) -> str:
        return ACCOUNTS[user][0]

    def sftp(self, user: str) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
        c = paramiko.SSHClient()
        c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        c.connect("127.0.0.1", self.sftp_port, username=user, password=self.password(user),
                  look_for_keys=False, allow_agent=False, timeout=30)
        return c, c.open_sftp()

    def exec(self, user: str, command: str) -> tuple[int, str, str]:
        """Run an SSH command with a password login (paramiko)."""
        c = paramiko.SSHClient()
        c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        c.connect("127.0.0.1", self.sftp_port, username=user, password=self.password(user),
                  look_for_keys=False, allow_agent=False, timeout=30)
        try:
            _, out, err = c.exec_command(command, timeout=60)
            rc = out.channel.recv_exit_status()
            return rc, out.read().decode(), err.read().decode()
        finally:
            c.close()

    def admin(self, *args, input: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([ADMIN, "--config", str(self.config), *args], input=input, capture_output=True,
                              text=True, timeout=120)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("share-protocols")) as srv:
        yield srv


# -- clients: one small interface over both protocols ---------------------------------------

class Refused(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind          # "denied" (403 / permission denied) or "absent" (404, 409 / no such file)


class Dav:
    """One principal over WebDAV on one keep-alive connection."""

    def __init__(self, server: Server, user: str):
        self.srv, self.user = server, user
        self.conn = server.connection()

    def close(self):
        self.conn.close()

    def req(self, method, path, body=None, headers=None, ok=(200, 201, 204, 207)):
        try:
            status, h, data = self.srv.request(method, quote(path), body=body, headers=headers, user=self.user,
                                               conn=self.conn)
        except (http.client.RemoteDisconnected, ConnectionError):
            # the server ends keep-alive connections idle for a minute; clients reconnect
            # (the revocation tests check that their connection stayed the same)
            self.conn.close()
            status, h, data = self.srv.request(method, quote(path), body=body, headers=headers, user=self.user,
                                               conn=self.conn)
        if status in ok:
            return h, data
        if status == 403:
            raise Refused("denied", f"{method} {path}: {status} {data[:200]!r}")
        if status in (404, 409):
            raise Refused("absent", f"{method} {path}: {status}")
        raise AssertionError(f"{method} {path} as {self.user}: unexpected {status} {data[:300]!r}")

    def dest(self, path):
        return {"Destination": f"http://127.0.0.1:{self.srv.port}{quote(path)}", "Overwrite": "F"}

    def list(self, path):
        from lxml import etree
        _, data = self.req("PROPFIND", path, b"", {"Depth": "1"})
        hrefs = [unquote(h.text) for h in etree.fromstring(data).iter("{DAV:}href")]
        return sorted(h.rstrip("/").rsplit("/", 1)[-1] for h in hrefs[1:])

    def read(self, path):
        return self.req("GET", path)[1]

    def write(self, path, data):
        self.req("PUT", path, data)

    def rename(self, src, dst):
        self.req("MOVE", src, headers=self.dest(dst))

    def copy(self, src, dst):
        self.req("COPY", src, headers=dict(self.dest(dst), Overwrite="T"))

    def delete(self, path):
        self.req("DELETE", path)

    def rmdir(self, path):
        self.req("DELETE", path)

    def mkdir(self, path):
        self.req("MKCOL", path)

    def lock(self, path):
        body = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
                b"<D:locktype><D:write/></D:locktype></D:lockinfo>")
        h, _ = self.req("LOCK", path, body, {"Timeout": "Second-60", "Depth": "0"})
        self.req("UNLOCK", path, headers={"Lock-Token": h["lock-token"]})

    def restore(self, version, path):
        self.copy(version, path)


class Sftp:
    """One principal over one SFTP session."""

    def __init__(self, server: Server, user: str):
        self.ssh, self.c = server.sftp(user)
        self.user = user

    def close(self):
        self.ssh.close()

    def call(self, what, fn, *args):
        try:
            return fn(*args)
        except IOError as e:
            if e.errno == errno.EACCES:
                raise Refused("denied", f"{what} {args}: {e}") from None
            if e.errno == errno.ENOENT:
                raise Refused("absent", f"{what} {args}: {e}") from None
            raise AssertionError(f"{what} {args} as {self.user}: unexpected {e!r}") from None

    def list(self, path):
        return sorted(self.call("listdir", self.c.listdir, path))

    def read(self, path):
        def get():
            with self.c.open(path, "rb") as f:
                return f.read()
        return self.call("read", get)

    def write(self, path, data):
        def put():
            with self.c.open(path, "wb") as f:
                f.write(data)
        self.call("write", put)

    def rename(self, src, dst):
        self.call("rename", self.c.rename, src, dst)

    def delete(self, path):
        self.call("remove", self.c.remove, path)

    def rmdir(self, path):
        self.call("rmdir", self.c.rmdir, path)

    def mkdir(self, path):
        self.call("mkdir", self.c.mkdir, path)

    def restore(self, version, path):
        """SFTP has no copy: a client restores by downloading and uploading."""
        self.write(path, self.read(version))


CLIENTS = {"webdav": Dav, "sftp": Sftp}


@pytest.fixture(scope="module")
def clients(server):
    made = {}

    def get(protocol: str, user: str):
        if (protocol, user) not in made:
            made[protocol, user] = CLIENTS[protocol](server, user)
        return made[protocol, user]
    yield get
    for c in made.values():
        c.close()


# -- the matrix -------------------------------------------------------------------------------

_ids = itertools.count(1)


def oldest_version(cl, path):
    names = cl.list("/.coffer/versions" + path)
    assert names, f"no versions of {path}"
    return "/.coffer/versions" + path + "/" + names[0]


def op_list(cl, p, f, c):
    if f.endswith("-dir"):          # next to the shared folder: a folder of the owner's
        cl.list(f"{p}/{f}")
    else:
        assert f in cl.list(p)


def op_read(cl, p, f, c):
    assert cl.read(f"{p}/{f}").startswith(b"two")


def op_write_new(cl, p, f, c):
    cl.write(f"{p}/{c}-new.txt", b"new")


def op_overwrite(cl, p, f, c):
    cl.write(f"{p}/{f}", b"three")


def op_rename(cl, p, f, c):
    cl.rename(f"{p}/{f}", f"{p}/{c}-renamed.txt")


def op_move_out(cl, p, f, c):
    cl.rename(f"{p}/{f}", f"/{c}-out.txt")


def op_move_in(cl, p, f, c):
    cl.write(f"/{c}-mine.txt", b"mine")            # into the principal's own tree: always allowed
    cl.rename(f"/{c}-mine.txt", f"{p}/{c}-in.txt")


def op_delete(cl, p, f, c):
    cl.delete(f"{p}/{f}")


def op_mkdir(cl, p, f, c):
    cl.mkdir(f"{p}/{c}-dir-new")


def op_lock(cl, p, f, c):
    cl.lock(f"{p}/{f}")


def op_versions(cl, p, f, c):
    assert cl.read(oldest_version(cl, f"{p}/{f}")) == b"one"


def op_restore(cl, p, f, c):
    cl.restore(oldest_version(cl, f"{p}/{f}"), f"{p}/{f}")
    assert cl.read(f"{p}/{f}") == b"one"
    assert len(cl.list(f"/.coffer/versions{p}/{f}")) == 3       # what it replaced is a version too


def op_purge(cl, p, f, c):
    cl.delete(oldest_version(cl, f"{p}/{f}"))


# on the shared folder itself (p is its path, f unused)
def top_list(cl, p, f, c):
    names = cl.list(p)
    assert p != S or "plan.txt" in names


def top_versions(cl, p, f, c):
    cl.list("/.coffer/versions" + p)


def top_lock(cl, p, f, c):
    cl.lock(p)


def top_rename(cl, p, f, c):
    cl.rename(p, p + "-renamed")


def top_move_out(cl, p, f, c):
    cl.rename(p, f"/{c}-moved")


def top_delete(cl, p, f, c):
    cl.rmdir(p)


O, R, W, X = WHO
INSIDE = {      # operation: (function, {principal: outcome}); unnamed principals: DENIED, the stranger HIDDEN
    "list":      (op_list, {O: OK, R: OK, W: OK}),
    "read":      (op_read, {O: OK, R: OK, W: OK}),
    "write_new": (op_write_new, {O: OK, W: OK}),
    "overwrite": (op_overwrite, {O: OK, W: OK}),
    "rename":    (op_rename, {O: OK, W: OK}),
    "move_out":  (op_move_out, {O: OK, W: OK}),
    "move_in":   (op_move_in, {O: OK, W: OK}),
    "delete":    (op_delete, {O: OK, W: OK}),
    "mkdir":     (op_mkdir, {O: OK, W: OK}),
    "lock":      (op_lock, {O: OK, W: OK}),
    "versions":  (op_versions, {O: OK, R: OK, W: OK}),
    "restore":   (op_restore, {O: OK, W: OK}),
    "purge":     (op_purge, {O: OK}),
}
TOP = {
    "list":      (top_list, {O: OK, R: OK, W: OK}),
    "versions":  (top_versions, {O: OK, R: OK, W: OK}),
    "lock":      (top_lock, {O: OK, W: OK}),
    "rename":    (top_rename, {O: OK}),
    "move_out":  (top_move_out, {O: OK}),
    "delete":    (top_delete, {O: OK}),
}
# Next to the shared folder: the owner's own files. Collaborators reach only
# /Shared/owner/<folder>; other names there do not exist for them, and
# creating anything there is refused.
NEXT = {name: (fn, {O: OK, R: HIDDEN, W: HIDDEN}) for name, (fn, _) in INSIDE.items()}
for name in ("write_new", "overwrite", "move_in", "mkdir", "lock"):
    NEXT[name] = (NEXT[name][0], {O: OK, R: DENIED, W: DENIED})
PLACES = {"inside": INSIDE, "top": TOP, "next": NEXT}
MUTATES = {"write_new", "overwrite", "rename", "move_out", "move_in", "delete", "mkdir", "restore", "purge"}

CASES = [(protocol, place, op) for protocol in ("webdav", "sftp") for place, table in PLACES.items()
         for op in table if not (protocol == "sftp" and op == "lock")]        # SFTP has no locks


def expected(place, op, who):
    outcome = PLACES[place][op][1].get(who)
    if outcome is None:
        outcome = HIDDEN if who == X else DENIED
    return outcome


def snapshot(owner, extra=()):
    """The owner's whole tree (names, sizes, times) plus the versions of the given files."""
    out = {}

    def walk(path):
        for a in owner.c.listdir_attr(path):
            p = path.rstrip("/") + "/" + a.filename
            out[p] = (a.st_size, a.st_mtime, stat.S_ISDIR(a.st_mode))
            if stat.S_ISDIR(a.st_mode):
                walk(p)
    walk("/")
    for f in extra:
        try:
            out["versions:" + f] = tuple(owner.c.listdir("/.coffer/versions" + f))
        except IOError:
            out["versions:" + f] = None
    return out


def prepare(server, owner, place, case, who):
    """Fresh things for one case, made by the owner: (owner's path, principal's path, file name)."""
    if place == "top":
        if who != O:
            return "/Projects", S, ""          # refused or harmless for them: the module's shared folder
        top = f"/{case}-T"                     # the owner may rename or delete it: a shared folder of its own
        owner.c.mkdir(top)
        rc, out, err = server.exec("owner", f"coffer share grant {top} writer write")
        assert rc == 0, err
        return top, S, ""
    base = "/Projects" if place == "inside" else ""
    name = f"{case}.txt"
    for data in (b"one", b"two"):
        with owner.c.open(f"{base}/{name}", "wb") as fh:
            fh.write(data)
    if place == "next":
        owner.c.mkdir(f"/{case}-dir")
    return base or "/", (S if place == "inside" else "/Shared/owner"), name


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("protocol,place,op", CASES)
def test_permission_matrix(server, clients, protocol, place, op, who):
    case = f"c{next(_ids)}"
    owner = clients("sftp", "owner")
    own_path, their_path, name = prepare(server, owner, place, case, who)
    if place == "next" and op == "list":
        name = f"{case}-dir"
    path = own_path if who == O else their_path
    p = "" if path == "/" else path
    fn = PLACES[place][op][0]
    files = [f"{own_path.rstrip('/')}/{name}"] if name else []
    before = snapshot(owner, files)
    want = expected(place, op, who)
    cl = clients(protocol, who)
    if want == OK:
        fn(cl, p, name, case)
        if op in MUTATES:
            assert snapshot(owner, files) != before, "an allowed change left no trace"
        return
    with pytest.raises(Refused) as e:
        fn(cl, p, name, case)
    if want == DENIED:
        assert e.value.kind == "denied", f"{protocol} {place} {op} as {who}: {e.value}"
    assert snapshot(owner, files) == before, "a refused attempt changed something"


# -- what each principal is told it may do ------------------------------------------------------

PROP_BODY = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:oc="http://owncloud.org/ns"><D:prop>'
             b"<D:current-user-privilege-set/><oc:permissions/>%s</D:prop></D:propfind>")


def privileges(server, user, path, extra=b"", conn=None):
    """{href: (privileges held, oc:permissions)} from a Depth 1 PROPFIND."""
    from lxml import etree
    status, _, data = server.request("PROPFIND", quote(path), PROP_BODY % extra, {"Depth": "1"}, user=user,
                                     conn=conn)
    assert status == 207, data
    out = {}
    for resp in etree.fromstring(data).iter("{DAV:}response"):
        href = unquote(resp.findtext("{DAV:}href")).rstrip("/") or "/"
        privs = resp.find(".//{DAV:}current-user-privilege-set")
        perms = resp.find(".//{http://owncloud.org/ns}permissions")
        out[href] = ({p[0].tag[len("{DAV:}"):] for p in privs.iter("{DAV:}privilege")},
                     perms.text or "" if perms is not None else None)
    return out


READ_ONLY = {"read", "read-current-user-privilege-set"}
FILE_RW = READ_ONLY | {"write", "write-properties", "write-content"}
DIR_RW = FILE_RW | {"bind", "unbind"}


def test_propfind_tells_each_principal_what_it_may_do(server):
    for who, dir_privs, file_privs in (("reader", READ_ONLY, READ_ONLY), ("writer", DIR_RW, FILE_RW)):
        shared = privileges(server, who, "/Shared/owner")
        assert shared["/Shared/owner"][0] == READ_ONLY           # nothing can be created next to the folder
        assert shared[S][0] == dir_privs                          # inside it: as granted
        assert shared[S][1] == ("RCK" if who == "writer" else "")      # its top cannot be deleted or moved
        inside = privileges(server, who, S)
        assert inside[S + "/plan.txt"][0] == file_privs
        assert inside[S + "/inner"][0] == dir_privs
        assert inside[S + "/plan.txt"][1] == ("RDNVW" if who == "writer" else "")
        assert privileges(server, who, "/")["/"][0] == DIR_RW      # their own home
    owner = privileges(server, "owner", "/")
    assert owner["/Projects"] == (DIR_RW, "RDNVCK")
    versions = privileges(server, "writer", "/.coffer/versions" + S)
    assert all(p == READ_ONLY for p, _ in versions.values())


def test_privileges_through_the_full_propfind_handler(server):
    """An account holding a lock takes wsgidav's own PROPFIND path: same answer."""
    conn = server.connection()
    try:
        body = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
                b"<D:locktype><D:write/></D:locktype></D:lockinfo>")
        status, h, _ = server.request("LOCK", quote(S + "/plan.txt"), body, {"Timeout": "Second-60"},
                                      user="writer", conn=conn)
        assert status == 200
        try:
            got = privileges(server, "writer", S, b"<D:lockdiscovery/>", conn=conn)
            assert got[S + "/plan.txt"][0] == FILE_RW
            assert got[S][0] == DIR_RW
            got = privileges(server, "reader", S, b"<D:lockdiscovery/>")
            assert got[S + "/plan.txt"][0] == READ_ONLY
        finally:
            server.request("UNLOCK", quote(S + "/plan.txt"), headers={"Lock-Token": h["lock-token"]},
                           user="writer", conn=conn)
    finally:
        conn.close()


def test_sftp_permission_bits_match(server, clients):
    for who in ("reader", "writer"):
        c = clients("sftp", who).c
        by_name = {a.filename: a for a in c.listdir_attr(S)}
        f, d = by_name["plan.txt"], by_name["inner"]
        top = c.stat(S)
        if who == "reader":
            assert f.st_mode & 0o777 == 0o444 and f.longname.startswith("-r--r--r--")
            assert d.st_mode & 0o777 == 0o555 and d.longname.startswith("dr-xr-xr-x")
            assert top.st_mode & 0o222 == 0
        else:
            assert f.st_mode & 0o200 and f.longname.startswith("-rw")
            assert d.st_mode & 0o200 and d.longname.startswith("drw")
            assert top.st_mode & 0o200
        for a in c.listdir_attr("/Shared"):                 # where shares appear: read-only
            assert a.st_mode & 0o222 == 0, a.longname
        assert c.stat("/Shared").st_mode & 0o222 == 0


# -- revocation reaches sessions that are already open --------------------------------------

def owner_folder(clients, name: str, files: dict) -> None:
    owner = clients("sftp", "owner")
    owner.c.mkdir(name)
    for fname, data in files.items():
        with owner.c.open(f"{name}/{fname}", "wb") as fh:
            fh.write(data)


def test_revocation_reaches_an_open_webdav_connection(server, clients):
    owner_folder(clients, "/RevDav", {"f.txt": b"before"})
    assert server.admin("share", "grant", "owner", "/RevDav", "writer", "write").returncode == 0
    dav = Dav(server, "writer")               # one keep-alive connection across the revocation
    try:
        base = "/Shared/owner/RevDav"
        assert dav.read(base + "/f.txt") == b"before"
        dav.write(base + "/g.txt", b"written while shared")
        sock = dav.conn.sock
        p = server.admin("share", "revoke", "owner", "/RevDav", "writer")
        assert p.returncode == 0, p.stderr
        for attempt in (lambda: dav.read(base + "/f.txt"), lambda: dav.write(base + "/h.txt", b"late"),
                        lambda: dav.list(base), lambda: dav.delete(base + "/f.txt")):
            with pytest.raises(Refused):
                attempt()
        assert dav.conn.sock is sock, "the connection was not kept open"
        assert dav.conn.sock is sock
        listed = dav.list("/Shared/owner")
        assert "RevDav" not in listed and "Projects" in listed         # other shares are untouched
    finally:
        dav.close()
    assert sorted(clients("sftp", "owner").c.listdir("/RevDav")) == ["f.txt", "g.txt"]


def test_revocation_reaches_an_open_sftp_session(server, clients):
    owner_folder(clients, "/RevSftp", {"f.txt": b"before", "big.bin": os.urandom(300_000)})
    rc, _, err = server.exec("owner", "coffer share grant /RevSftp writer write")
    assert rc == 0, err
    ssh, c = server.sftp("writer")            # one SFTP session across the revocation
    try:
        base = "/Shared/owner/RevSftp"
        assert c.open(base + "/f.txt").read() == b"before"
        upload = c.open(base + "/upload.txt", "wb")      # handles opened while shared
        upload.write(b"half")
        download = c.open(base + "/big.bin", "rb")
        assert len(download.read(10)) == 10
        rc, _, err = server.exec("owner", "coffer share revoke /RevSftp writer")
        assert rc == 0, err
        for attempt in (lambda: c.listdir(base), lambda: c.stat(base + "/f.txt"),
                        lambda: c.open(base + "/f.txt").read(), lambda: c.mkdir(base + "/d"),
                        lambda: c.remove(base + "/f.txt")):
            with pytest.raises(IOError) as e:
                attempt()
            assert e.value.errno in (errno.ENOENT, errno.EACCES)
        download.seek(200_000)
        with pytest.raises(IOError) as e:     # the next READ on a handle opened before
            download.read(1000)
        assert e.value.errno == errno.EACCES
        with pytest.raises(IOError):          # CLOSE publishes: refused (paramiko's close() would hide it)
            c._request(paramiko.sftp.CMD_CLOSE, upload.handle)
        upload._closed = True
        assert "RevSftp" not in c.listdir("/Shared/owner")
    finally:
        ssh.close()
    assert sorted(clients("sftp", "owner").c.listdir("/RevSftp")) == ["big.bin", "f.txt"]


# -- coffer-admin share ---------------------------------------------------------------------------

def admin_fails(server, *args, input="", says=""):
    p = server.admin(*args, input=input)
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coffer-admin: share: "), p.stderr
    assert says in lines[0], lines[0]
    return lines[0]


def test_admin_share_commands(server, clients):

    owner_folder(clients, "/AdminBox", {"a.txt": b"from the admin box"})
    p = server.admin("share", "grant", "owner", "/AdminBox", "keeper", "read")
    assert p.returncode == 0 and "/Shared/owner/AdminBox" in p.stdout, p.stderr
    keeper = Dav(server, "keeper")
    try:
        assert keeper.read("/Shared/owner/AdminBox/a.txt") == b"from the admin box"
        with pytest.raises(Refused) as e:
            keeper.write("/Shared/owner/AdminBox/b.txt", b"no")
        assert e.value.kind == "denied"
        listing = json.loads(server.admin("share", "list", "owner", "--json").stdout)
        assert {"folder": "/AdminBox", "grantee": "keeper", "permission": "read", "trashed": False} \
            in listing["shared"]
        assert server.admin("share", "grant", "owner", "/AdminBox", "keeper", "write", "--json").returncode == 0
        keeper.write("/Shared/owner/AdminBox/b.txt", b"now allowed")
        text = server.admin("share", "list", "owner").stdout
        assert re.search(r"/AdminBox\s+keeper\s+write", text), text

        admin_fails(server, "share", "grant", "ghost", "/AdminBox", "keeper", "read", says="no account named 'ghost'")
        admin_fails(server, "share", "grant", "owner", "/AdminBox", "ghost", "read", says="no active account")
        admin_fails(server, "share", "grant", "owner", "/AdminBox", "keeper", "admin", says="'read' or 'write'")
        admin_fails(server, "share", "grant", "owner", "/Nowhere", "keeper", "read", says="does not exist")
        admin_fails(server, "share", "grant", "owner", "/AdminBox/a.txt", "keeper", "read", says="is a file")
        admin_fails(server, "share", "revoke", "owner", "/AdminBox", "reader", says="not shared with reader")

        # a private owner: its folder keys open only with its password
        admin_fails(server, "share", "grant", "keeper", "/Box", "reader", "read", says="--password-stdin")
        admin_fails(server, "share", "list", "keeper", says="private")
        admin_fails(server, "share", "grant", "keeper", "/Box", "reader", "read", "--password-stdin",
                    input="wrong password\n", says="password")
        p = server.admin("share", "grant", "keeper", "/Box", "reader", "read", "--password-stdin",
                         input=server.password("keeper") + "\n")
        assert p.returncode == 0, p.stderr
        reader = Dav(server, "reader")
        try:
            assert reader.read("/Shared/keeper/Box/kept.txt") == b"kept"
            listing = json.loads(server.admin("share", "list", "keeper", "--json", "--password-stdin",
                                              input=server.password("keeper") + "\n").stdout)
            assert listing["shared"] == [{"folder": "/Box", "grantee": "reader", "permission": "read",
                                          "trashed": False}]
            assert listing["received"] == [{"owner": "owner", "folder": "/Shared/owner/AdminBox",
                                            "permission": "write"}]
            p = server.admin("share", "revoke", "keeper", "/Box", "reader", "--password-stdin",
                             input=server.password("keeper") + "\n")
            assert p.returncode == 0, p.stderr
            with pytest.raises(Refused):
                reader.read("/Shared/keeper/Box/kept.txt")
        finally:
            reader.close()

        assert server.admin("share", "revoke", "owner", "/AdminBox", "keeper").returncode == 0
        events = json.loads(server.admin("audit", "--user", "owner", "--json").stdout)
        actors = {(e["event"], e["actor"]) for e in events if e["event"].startswith("share_")}
        assert {("share_granted", "admin"), ("share_revoked", "admin"), ("share_granted", "user")} <= actors
        with pytest.raises(Refused):
            keeper.read("/Shared/owner/AdminBox/a.txt")
        admin_fails(server, "share", "revoke", "owner", "/AdminBox", "keeper", says="not shared with keeper")
    finally:
        keeper.close()


# -- ssh owner@host coffer share … ----------------------------------------------------------------

def openssh(server, command: str) -> subprocess.CompletedProcess:
    """The owner's own OpenSSH client, logging in with its key."""
    require_client("ssh")
    return subprocess.run(["ssh", "-p", str(server.sftp_port), "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                           "-o", "IdentitiesOnly=yes", "-o", "PreferredAuthentications=publickey",
                           "-i", str(server.key), "owner@127.0.0.1", command],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_ssh_coffer_share_commands(server, clients):

    if server.key is None:
        require_client("ssh-keygen")
    owner_folder(clients, "/SshBox", {"a.txt": b"over ssh"})
    p = openssh(server, "coffer share grant /SshBox writer write")
    assert p.returncode == 0 and "/Shared/owner/SshBox" in p.stdout, p.stderr
    writer = clients("webdav", "writer")
    writer.write("/Shared/owner/SshBox/b.txt", b"by the writer")
    assert re.search(r"/SshBox\s+writer\s+write", openssh(server, "coffer share list").stdout)
    listing = json.loads(openssh(server, "coffer share list --json").stdout)
    assert {"folder": "/SshBox", "grantee": "writer", "permission": "write", "trashed": False} in listing["shared"]

    p = openssh(server, "coffer share grant /SshBox writer admin")
    assert p.returncode == 1 and "'read' or 'write'" in p.stderr
    # whether a name is an account is not told: the same answer for a real grantee and a ghost
    real = openssh(server, "coffer share grant /SshBox writer write")
    ghost = openssh(server, "coffer share grant /SshBox ghost write")
    assert ghost.returncode == real.returncode == 0, ghost.stderr
    assert ghost.stdout.replace("ghost", "writer") == real.stdout and not ghost.stderr
    assert "ghost" not in openssh(server, "coffer share list").stdout       # nobody was given access
    p = openssh(server, "coffer share revoke /SshBox ghost")
    q = openssh(server, "coffer share revoke /SshBox reader")                 # an account without a grant here
    assert p.returncode == q.returncode == 1 and p.stderr.replace("ghost", "reader") == q.stderr, p.stderr
    p = openssh(server, "coffer share grant '/Sh Box' writer read")
    assert p.returncode == 1 and "does not exist" in p.stderr
    p = openssh(server, "coffer share")
    assert p.returncode == 2 and "usage: coffer share grant" in p.stderr
    p = openssh(server, "coffer share move /SshBox writer")
    assert p.returncode == 2
    # a collaborator cannot pass the folder on, nor change grants
    rc, _, err = server.exec("writer", "coffer share grant /Shared/owner/SshBox stranger read")
    assert rc == 1 and "your own tree" in err
    rc, _, err = server.exec("writer", "coffer share revoke /Shared/owner/SshBox writer")
    assert rc == 1
    # a private account manages its shares after a password login
    rc, out, err = server.exec("keeper", "coffer share list --json")
    assert rc == 0 and json.loads(out)["shared"] == [], err

    p = openssh(server, "coffer share revoke /SshBox writer")
    assert p.returncode == 0, p.stderr
    with pytest.raises(Refused):
        writer.write("/Shared/owner/SshBox/c.txt", b"too late")
    assert sorted(clients("sftp", "owner").c.listdir("/SshBox")) == ["a.txt", "b.txt"]


# -- WebDAV locks in a shared folder hold off everyone who reaches it ------------------------------

LOCK_BODY = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
             b"<D:locktype><D:write/></D:locktype><D:owner>%s</D:owner></D:lockinfo>")


def dav_lock(server, user, path, depth="0"):
    status, h, data = server.request("LOCK", quote(path), LOCK_BODY % user.encode(),
                                     {"Timeout": "Second-120", "Depth": depth}, user=user)
    return status, h.get("lock-token", "")


def dav_unlock(server, user, path, token):
    status, _, _ = server.request("UNLOCK", quote(path), headers={"Lock-Token": token}, user=user)
    assert status == 204, f"UNLOCK {path} as {user}: {status}"


def test_locks_in_a_shared_folder_are_seen_by_owner_and_collaborators(server):
    case = f"lk{next(_ids)}"
    mine, theirs = f"/Projects/{case}.txt", f"{S}/{case}.txt"
    assert server.request("PUT", quote(mine), b"v1", user="owner")[0] == 201
    status, token = dav_lock(server, "writer", theirs)
    assert status == 200 and token
    try:
        # the owner is held off, and sees the collaborator's lock at the owner's own path
        assert server.request("PUT", quote(mine), b"owner's", user="owner")[0] == 423
        assert dav_lock(server, "owner", mine)[0] == 423
        status, _, data = server.request("PROPFIND", quote(mine), b'<?xml version="1.0"?><D:propfind '
                                         b'xmlns:D="DAV:"><D:prop><D:lockdiscovery/></D:prop></D:propfind>',
                                         {"Depth": "0"}, user="owner")
        assert status == 207 and token.strip("<>").encode() in data
        assert f"{mine}</D:href>".encode() in data.replace(b"%20", b" ")      # the lock root, as the owner names it
        assert server.request("UNLOCK", quote(mine), headers={"Lock-Token": token}, user="owner")[0] == 403
        # the lock holder writes with its token; a token is no use to someone who cannot reach the folder
        assert server.request("PUT", quote(theirs), b"writer's", {"If": f"({token})"}, user="writer")[0] in (200, 204)
        assert server.request("UNLOCK", "/x.txt", headers={"Lock-Token": token}, user="stranger")[0] != 204
        # a lock over the owner's whole tree conflicts with the lock inside the shared folder
        status, top = dav_lock(server, "owner", "/", depth="infinity")
        if status == 200:
            dav_unlock(server, "owner", "/", top)
        assert status == 423, "locking the owner's whole tree ignored a collaborator's lock inside it"
    finally:
        dav_unlock(server, "writer", theirs, token)
    assert server.request("PUT", quote(mine), b"owner's", user="owner")[0] in (200, 204)
    # and the other way round: the owner's depth-infinity lock on the shared folder holds off collaborators
    status, token = dav_lock(server, "owner", "/Projects", depth="infinity")
    assert status == 200
    try:
        assert server.request("PUT", quote(theirs), b"writer's again", user="writer")[0] == 423
        assert server.request("PUT", quote(f"{S}/{case}-new.txt"), b"new", user="writer")[0] == 423
    finally:
        dav_unlock(server, "owner", "/Projects", token)
    assert server.request("PUT", quote(theirs), b"writer's again", user="writer")[0] in (200, 204)
    assert server.request("GET", quote(mine), user="owner")[2] == b"writer's again"
