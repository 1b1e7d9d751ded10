"""Every PROPFIND answers the same live properties, whichever path serves it.

Most PROPFINDs (Depth 0 or 1, allprop or named properties) are answered by
server/webdav_propfind.py; one with an `If:` header, or an allprop from an
account holding locks, by wsgidav's own handler over server/webdav.py. A
client must not see a file's type, size, checksums or permissions change with
the way it asked: here a real `coffer serve` is asked each way, for files of
several types, folders, a shared folder and the read-only /.coffer tree.
"""
from __future__ import annotations

from urllib.parse import unquote

import pytest
from lxml import etree

from webdav_harness import CofferServer

DAV, OC = "{DAV:}", "{http://owncloud.org/ns}"
DEAD = "{urn:example:tags}color"
FAVORITE = "{http://owncloud.org/ns}favorite"      # a dead property in ownCloud's namespace
NAMED = [DAV + n for n in ("resourcetype", "creationdate", "getcontentlength", "getcontenttype",
                           "quota-used-bytes", "quota-available-bytes", "getlastmodified", "displayname",
                           "getetag", "supportedlock", "lockdiscovery", "current-user-privilege-set")] + \
        [OC + "checksums", OC + "permissions", DEAD, FAVORITE]
ALWAYS = 'If: (Not <DAV:no-lock>)'            # a condition that holds: wsgidav's handler serves the request
FILES = {"/a.yaml": b"k: v\n", "/b.txt": b"text\n", "/c.tar.gz": b"\x1f\x8b", "/d.JPG": b"\xff\xd8",
         "/noext": b"x", "/docs/e.json": b"{}", "/docs/f.mp4": b"", "/g.webm": b"w" * 10}


def propfind_body(names: list[str] | None) -> bytes:
    if names is None:
        return b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
    props = "".join(f'<x:{n.partition("}")[2]} xmlns:x="{n[1:].partition("}")[0]}"/>' for n in names)
    return f'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>{props}</D:prop></D:propfind>'.encode()


def shape(el) -> tuple:
    """An element as (tag, text, children): the same whatever the prefixes."""
    return el.tag, (el.text or "").strip(), tuple(sorted(shape(c) for c in el))


def answer(server, path: str, depth: str, names, *, wsgidav: bool, user: str = "alice") -> dict:
    headers = {"Depth": depth, "Content-Type": "application/xml"}
    if wsgidav:
        headers["If"] = ALWAYS.partition(": ")[2]
    status, _, body = server.request("PROPFIND", path, body=propfind_body(names), headers=headers, user=user)
    assert status == 207, body
    out = {}
    for resp in etree.fromstring(body).iter(DAV + "response"):
        href = unquote(resp.findtext(DAV + "href")).rstrip("/") or "/"
        props = {}
        for ps in resp.iter(DAV + "propstat"):
            code = ps.findtext(DAV + "status").split()[1]
            for prop in ps.find(DAV + "prop"):
                props[prop.tag] = (code, shape(prop))
        out[href] = props
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with CofferServer(tmp_path_factory.mktemp("propfind"), tls=False, quotas={"bob": 10 ** 9}) as srv:
        for path, data in FILES.items():
            folder = path.rpartition("/")[0]
            if folder:
                srv.request("MKCOL", folder)
            headers = {"OC-Checksum": "SHA1:" + __import__("hashlib").sha1(data).hexdigest()} \
                if path == "/a.yaml" else {}
            assert srv.request("PUT", path, body=data, headers=headers)[0] in (201, 204)
        srv.request("PUT", "/a.yaml", body=b"k: w\n")            # a version under /.coffer
        patch = ('<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:t="urn:example:tags" '
                 'xmlns:oc="http://owncloud.org/ns"><D:set><D:prop><t:color>red</t:color><oc:favorite>1'
                 '</oc:favorite></D:prop></D:set></D:propertyupdate>').encode()
        assert srv.request("PROPPATCH", "/b.txt", body=patch, headers={"Content-Type": "application/xml"})[0] == 207
        yield srv


@pytest.mark.parametrize("names", [None, NAMED], ids=["allprop", "named"])
@pytest.mark.parametrize("path", ["/", "/docs", "/.coffer/versions/a.yaml"])
def test_both_handlers_answer_the_same(server, path, names):
    for depth in ("0", "1"):
        fast = answer(server, path, depth, names, wsgidav=False)
        reference = answer(server, path, depth, names, wsgidav=True)
        assert fast.keys() == reference.keys()
        for href in fast:
            assert fast[href] == reference[href], (depth, href)


@pytest.mark.parametrize("names", [None, NAMED], ids=["allprop", "named"])
def test_a_listing_and_a_single_entry_agree(server, names):
    for folder in ("/", "/docs"):
        listing = answer(server, folder, "1", names, wsgidav=False)
        for href, props in listing.items():
            for wsgidav in (False, True):
                assert answer(server, href, "0", names, wsgidav=wsgidav)[href] == props, (href, wsgidav)


def test_content_types_by_name(server):
    want = {"/a.yaml": "application/yaml", "/b.txt": "text/plain", "/d.JPG": "image/jpeg",
            "/noext": "application/octet-stream", "/g.webm": "video/webm", "/c.tar.gz": "application/gzip"}
    for wsgidav in (False, True):
        got = answer(server, "/", "1", [DAV + "getcontenttype"], wsgidav=wsgidav)
        assert {p: got[p][DAV + "getcontenttype"][1][1] for p in want} == want
        checks = answer(server, "/a.yaml", "0", [OC + "checksums"], wsgidav=wsgidav)["/a.yaml"]
        assert checks[OC + "checksums"][0] == "200"
