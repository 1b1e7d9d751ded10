"""Two folders of one owner with the same name, shared with one collaborator,
against a real `coffer serve` over WebDAV and SFTP: both appear under
`/Shared/<owner>/`, as `docs` and `docs (2)`, each with its own contents,
and a name once seen stays put when the other folder goes or another comes."""
from __future__ import annotations

from urllib.parse import quote, unquote

import pytest
from lxml import etree

from test_share_protocols import ACCOUNTS, Server

pytestmark = [pytest.mark.clients]


class MountServer(Server):
    """The shares of test_share_protocols (`/Shared/owner/Projects` for the
    reader), and three folders named `docs` of the owner's."""

    def create_accounts(self):
        super().create_accounts()

        def setup(o):
            for top in ("a", "b", "c"):
                o.makedirs(f"/{top}/docs")
                o.write_bytes(f"/{top}/docs/{top}.txt", f"from /{top}/docs".encode())
            o.share_grant("/a/docs", "reader", "write")       # granted first: keeps the name
            o.share_grant("/b/docs", "reader", "write")
        self.as_owner(setup)

    def as_owner(self, fn):
        from providers import config
        from providers.storage import Storage
        st = Storage.open(config.load(self.config))
        try:
            o = st.open_account("owner", ACCOUNTS["owner"][0])
            try:
                return fn(o)
            finally:
                o.close()
        finally:
            st.close()


def dav_list(srv, path):
    status, _, data = srv.request("PROPFIND", quote(path), headers={"Depth": "1"}, user="reader")
    assert status == 207, (status, data[:300])
    hrefs = [unquote(h.text) for h in etree.fromstring(data).iter("{DAV:}href")]
    return sorted(h.rstrip("/").rsplit("/", 1)[-1] for h in hrefs[1:] if not h.endswith("/Projects/"))


def dav_get(srv, path):
    status, _, data = srv.request("GET", quote(path), user="reader")
    assert status == 200, (path, status)
    return data


def test_same_named_shared_folders_are_both_reachable_and_keep_their_names(tmp_path):
    with MountServer(tmp_path) as srv:
        # WebDAV
        assert dav_list(srv, "/Shared/owner/") == ["docs", "docs (2)"]
        assert dav_list(srv, "/Shared/owner/docs/") == ["a.txt"]
        assert dav_list(srv, "/Shared/owner/docs (2)/") == ["b.txt"]
        assert dav_get(srv, "/Shared/owner/docs (2)/b.txt") == b"from /b/docs"
        assert srv.request("PUT", quote("/Shared/owner/docs (2)/new.txt"), b"reader's", user="reader")[0] == 201
        assert srv.as_owner(lambda o: o.open_read("/b/docs/new.txt").read()) == b"reader's"
        # SFTP sees the same names and contents
        ssh, sftp = srv.sftp("reader")
        try:
            assert sorted(sftp.listdir("/Shared/owner")) == ["Projects", "docs", "docs (2)"]
            with sftp.open("/Shared/owner/docs/a.txt") as f:
                assert f.read() == b"from /a/docs"
            with sftp.open("/Shared/owner/docs (2)/b.txt") as f:
                assert f.read() == b"from /b/docs"
            with sftp.open("/Shared/owner/docs (2)/sftp.txt", "wb") as f:
                f.write(b"over sftp")
        finally:
            ssh.close()
        assert srv.as_owner(lambda o: o.open_read("/b/docs/sftp.txt").read()) == b"over sftp"
        listed = srv.as_owner(lambda o: o.share_list())
        assert {s["folder"] for s in listed["shared"] if s["grantee"] == "reader"} == {"/Projects", "/a/docs", "/b/docs"}

        # the first folder goes: the second keeps its name; a third gets the free one
        srv.as_owner(lambda o: o.share_revoke("/a/docs", "reader"))
        assert dav_list(srv, "/Shared/owner/") == ["docs (2)"]
        srv.as_owner(lambda o: o.share_grant("/c/docs", "reader", "read"))
        assert dav_list(srv, "/Shared/owner/") == ["docs", "docs (2)"]
        assert dav_get(srv, "/Shared/owner/docs (2)/b.txt") == b"from /b/docs"
        assert dav_get(srv, "/Shared/owner/docs/c.txt") == b"from /c/docs"
        # the first one comes back: the names seen stay, it gets the next one
        srv.as_owner(lambda o: o.share_grant("/a/docs", "reader", "read"))
        assert dav_list(srv, "/Shared/owner/") == ["docs", "docs (2)", "docs (3)"]
        assert dav_get(srv, "/Shared/owner/docs (3)/a.txt") == b"from /a/docs"
        assert dav_get(srv, "/Shared/owner/docs/c.txt") == b"from /c/docs"
        # a folder in the owner's trash keeps its name reserved
        srv.as_owner(lambda o: o.delete("/c/docs"))
        assert dav_list(srv, "/Shared/owner/") == ["docs (2)", "docs (3)"]
        srv.as_owner(lambda o: (o.makedirs("/d/docs"), o.share_grant("/d/docs", "reader", "read")))
        assert dav_list(srv, "/Shared/owner/") == ["docs (2)", "docs (3)", "docs (4)"]


def test_mount_names_are_unique_per_owner_and_fit_a_name():
    from providers.paths import MAX_NAME_BYTES, check_name
    from providers.shares import mount_names
    long = "é" * (MAX_NAME_BYTES // 2)
    got = mount_names([(1, "ann", "docs", (1, 1)), (2, "ann", "docs", (2, 2)), (3, "bob", "docs", (3, 3)),
                       (4, "ann", "docs (2)", (0, 4)), (5, "ann", long, (5, 5)), (6, "ann", long, (6, 6))])
    assert got[4] == "docs (2)" and got[1] == "docs" and got[2] == "docs (3)" and got[3] == "docs"
    assert got[5] == long and got[6].endswith(" (2)") and check_name(got[6]) == got[6]
