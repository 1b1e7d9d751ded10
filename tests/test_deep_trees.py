"""Deep trees: nothing is created, moved or copied deeper than
paths.MAX_DEPTH names (a clear 409 over WebDAV, a failure with the reason
over SFTP), a tree at the limit is copied, moved and deleted quickly over
real protocols, and every walk of the core copes with a tree far deeper
than the interpreter's recursion limit (one made before the limit existed)."""
from __future__ import annotations

import io
import tarfile
import time

import pytest

from providers import errors, export, paths
from test_share_protocols import Server

pytestmark = [pytest.mark.clients]

LIMIT = paths.MAX_DEPTH
TOP = ("deep",) + ("d",) * (LIMIT - 2)          # the deepest folder: a file in it is at the limit
BOTTOM = "/" + "/".join(TOP)


class DeepServer(Server):
    def create_accounts(self):
        super().create_accounts()
        from providers import config
        from providers.storage import Storage
        st = Storage.open(config.load(self.config))
        try:
            o = st.open_account("owner", self.password("owner"))
            o.makedirs(BOTTOM)
            o.write_bytes(BOTTOM + "/f.txt", b"at the bottom")
            o.mkdir("/x")
            o.close()
        finally:
            st.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with DeepServer(tmp_path_factory.mktemp("deep")) as srv:
        yield srv


def dav(server, method, path, **headers):
    return server.request(method, path, headers=headers, user="owner")


def dest(server, path):
    return {"Destination": f"http://127.0.0.1:{server.port}{path}"}


def test_webdav_refuses_beyond_the_limit_and_handles_a_tree_at_it_quickly(server):
    status, _, body = dav(server, "PROPFIND", BOTTOM + "/", Depth="1")
    assert status == 207 and b"f.txt" in body
    assert dav(server, "MKCOL", BOTTOM + "/n/")[0] == 201                  # at the limit
    status, _, body = dav(server, "MKCOL", BOTTOM + "/n/too-deep/")
    assert status == 409 and f"{LIMIT} levels".encode() in body
    status, _, body = server.request("PUT", BOTTOM + "/n/too-deep.txt", b"x", user="owner")
    assert status == 409 and f"{LIMIT} levels".encode() in body
    started = time.monotonic()
    assert dav(server, "COPY", "/deep/", **dest(server, "/deep2/"))[0] == 201
    assert dav(server, "GET", "/deep2/" + "/".join(TOP[1:]) + "/f.txt")[2] == b"at the bottom"
    # one level deeper would pass the limit: refused with the reason, nothing made
    status, _, body = dav(server, "COPY", "/deep/", **dest(server, "/x/deep/"))
    assert status == 409 and f"{LIMIT} levels".encode() in body
    status, _, body = dav(server, "MOVE", "/deep2/", **dest(server, "/x/deep2/"))
    assert status == 409 and f"{LIMIT} levels".encode() in body
    assert dav(server, "PROPFIND", "/x/", Depth="1")[2].count(b"<D:response>") == 1
    assert dav(server, "MOVE", "/deep2/", **dest(server, "/deep3/"))[0] == 201
    assert dav(server, "COPY", "/deep3/", **dest(server, "/deep/"), Overwrite="T")[0] == 204
    assert dav(server, "DELETE", "/deep3/")[0] == 204
    assert dav(server, "GET", BOTTOM + "/f.txt")[2] == b"at the bottom"
    assert time.monotonic() - started < 20


def test_sftp_refuses_beyond_the_limit_with_the_reason(server):
    ssh, sftp = server.sftp("owner")
    try:
        sftp.mkdir(BOTTOM + "/s")
        with pytest.raises(IOError, match=f"{LIMIT} levels"):
            sftp.mkdir(BOTTOM + "/s/too-deep")
        with pytest.raises(IOError, match=f"{LIMIT} levels"):
            with sftp.open(BOTTOM + "/s/too-deep.txt", "wb") as f:
                f.write(b"x")
        with pytest.raises(IOError, match=f"{LIMIT} levels"):
            sftp.rename("/deep", "/x/deep")
        assert sftp.listdir("/x") == []
        with sftp.open(BOTTOM + "/f.txt") as f:
            assert f.read() == b"at the bottom"
    finally:
        ssh.close()


def _chain(vfs, depth: int) -> tuple:
    """A chain of `depth` folders with a file at the bottom: doubled by
    copying it under its own bottom, then topped up one folder at a time."""
    vfs.mkdir("/t")
    parts = ("t",)
    while len(parts) * 2 <= depth:
        vfs.copy("/t", "/u")
        vfs.move("/u", paths.join(parts + ("u",)))
        parts = parts + ("u",) + parts[1:]
    while len(parts) < depth:
        parts += ("v",)
        vfs.mkdir(paths.join(parts))
    vfs.write_bytes(paths.join(parts) + "/f.txt", b"bottom")
    return parts


def test_core_walks_a_tree_deeper_than_the_recursion_limit(alice, storage, monkeypatch):
    monkeypatch.setattr(paths, "MAX_DEPTH", 5000)        # a tree made before the limit existed
    deep = _chain(alice, 1100)
    assert alice.open_read(paths.join(deep) + "/f.txt").read() == b"bottom"
    alice.copy("/t", "/copy")
    assert alice.open_read(paths.join(("copy",) + deep[1:]) + "/f.txt").read() == b"bottom"
    assert len(deep) == 1100
    buf = io.BytesIO()
    export.export(storage, alice, buf)
    names = tarfile.open(fileobj=io.BytesIO(buf.getvalue())).getnames()
    assert "files" + paths.join(deep) + "/f.txt" in names
    monkeypatch.setattr(paths, "MAX_DEPTH", 256)         # with the limit, such a tree still works...
    alice.move("/copy", "/renamed")
    alice.delete("/renamed")
    assert storage.fsck("alice")["damaged"] == []
    with pytest.raises(errors.Conflict, match="256 levels"):          # ...but is not copied deeper
        alice.copy("/t", "/t2")
    alice.purge("/renamed")
    alice.delete("/t")
    trash = alice.list("/.coffer/trash")
    assert len(trash) == 1
    alice.purge("/.coffer/trash")
    assert alice.list("/") == []
