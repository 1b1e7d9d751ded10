"""Shared folders over WebDAV: the grantee sees them under /Shared, read-only
grants refuse writes, read/write grants accept them, revocation is immediate."""
import re

import pytest

from webdav_harness import CofferServer

pytestmark = pytest.mark.slow


def hrefs(body: bytes) -> list[str]:
    return [h.decode() for h in re.findall(rb"<D:href>([^<]+)</D:href>", body)]


def test_shared_folder_permissions(tmp_path):
    srv = CofferServer(tmp_path, accounts={"alice": "alice-pw-1", "bob": "bob-pw-22", "carol": "carol-pw-333"})
    with srv:
        assert srv.request("MKCOL", "/Team")[0] == 201
        assert srv.request("PUT", "/Team/plan.txt", body=b"the plan")[0] == 201
        from providers import config
        from providers.storage import Storage
        st = Storage.open(config.load(srv.config))
        try:
            vfs = st.open_account("alice", "alice-pw-1")
            vfs.share_grant("/Team", "bob", "read")
            vfs.share_grant("/Team", "carol", "write")
            vfs.close()
        finally:
            st.close()
        st_, _, body = srv.request("PROPFIND", "/Shared/", headers={"Depth": "1"}, user="bob")
        assert st_ == 207 and "/Shared/alice/" in hrefs(body)
        st_, _, body = srv.request("PROPFIND", "/Shared/alice/", headers={"Depth": "1"}, user="bob")
        team = "/Shared/alice/Team/"
        assert st_ == 207 and team in hrefs(body)
        st_, _, data = srv.request("GET", team + "plan.txt", user="bob")
        assert (st_, data) == (200, b"the plan")
        st_, _, _ = srv.request("PUT", team + "plan.txt", body=b"bob was here", user="bob")
        assert st_ == 403
        st_, _, _ = srv.request("DELETE", team + "plan.txt", user="bob")
        assert st_ == 403
        # carol may write; alice sees it
        cteam = "/Shared/alice/Team/"
        assert srv.request("PUT", cteam + "notes.txt", body=b"from carol", user="carol")[0] == 201
        assert srv.request("GET", "/Team/notes.txt")[2] == b"from carol"
        assert srv.request("GET", "/Team/plan.txt")[2] == b"the plan"
        # revoke: bob loses access at once
        st = Storage.open(config.load(srv.config))
        try:
            vfs = st.open_account("alice", "alice-pw-1")
            vfs.share_revoke("/Team", "bob")
            vfs.close()
        finally:
            st.close()
        assert srv.request("GET", team + "plan.txt", user="bob")[0] in (403, 404)
