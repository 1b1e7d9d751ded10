"""One conformance suite for every blob store (local folder, S3), and the VFS
on S3. The S3 cases run against a real S3-compatible server whose address is
in S3_ENDPOINT (the test command starts SeaweedFS on loopback)."""
import os
import re
import uuid

import pytest

from providers import config
from providers.blobs import LocalBlobStore, S3BlobStore
from providers.errors import NotFound
from providers.storage import Storage

from conftest import FAST


def s3_env():
    if not os.environ.get("S3_ENDPOINT"):
        if os.environ.get("CI"):
            pytest.fail("S3_ENDPOINT is not set: the test command starts an S3 server; in CI this is a failure")
        pytest.skip("SKIPPED LOUDLY: no S3 server (set S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY)")
    return os.environ["S3_ENDPOINT"], os.environ["S3_ACCESS_KEY"], os.environ["S3_SECRET_KEY"]


# One bucket for every run, a fresh prefix per test: an S3 server gives each
# new bucket storage of its own (SeaweedFS: volumes), so a bucket per test
# would exhaust a small test server.
BUCKET = "coffer-tests"


def emptied(store):
    for name, _ in list(store.names()):
        store.delete(name)


@pytest.fixture(scope="module", autouse=True)
def no_stale_buckets():
    """Earlier versions of this suite made a bucket per test and left them;
    on a long-lived test server they use up its storage. Remove those."""
    if not os.environ.get("S3_ENDPOINT"):
        return
    endpoint, access, secret = s3_env()
    s3 = S3BlobStore(endpoint, BUCKET, "us-east-1", access, secret).s3
    for bucket in s3.list_buckets()["Buckets"]:
        if re.fullmatch(r"coffer-(test|vfs)-[0-9a-f]{12}", bucket["Name"]):
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
                for obj in page.get("Contents", []):
                    s3.delete_object(Bucket=bucket["Name"], Key=obj["Key"])
            s3.delete_bucket(Bucket=bucket["Name"])


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    endpoint, access, secret = s3_env()
    s3 = S3BlobStore(endpoint, BUCKET, "us-east-1", access, secret, prefix=uuid.uuid4().hex + "/")
    yield s3
    emptied(s3)


def test_conformance(store):
    name = os.urandom(16).hex()
    data = os.urandom(200_000)
    assert not store.exists(name)
    store.put(name, data)
    store.sync([name])
    assert store.exists(name)
    assert store.get(name) == data
    assert store.get(name, 1000, 500) == data[1000:1500]
    assert store.get(name, 199_990) == data[199_990:]
    assert name in {n for n, _ in store.names()}
    store.delete(name)
    store.delete(name)                      # idempotent
    assert not store.exists(name)
    with pytest.raises(NotFound):
        store.get(name)


def test_vfs_on_s3(tmp_path):
    endpoint, access, secret = s3_env()
    keyfile = tmp_path / "s3.key"
    keyfile.write_text(f"{access}:{secret}\n")
    cfg = config.from_dict({"storage": {"data_dir": str(tmp_path / "var"), "blob_backend": "s3",
                                        "s3_endpoint": endpoint, "s3_bucket": BUCKET,
                                        "s3_prefix": uuid.uuid4().hex + "/",
                                        "s3_access_key_file": str(keyfile)},
                            "security": FAST}, base_dir=str(tmp_path))
    st = Storage.open(cfg)
    try:
        run_vfs_on_s3(st, endpoint, access, secret)
    finally:
        emptied(st.blobs)


def run_vfs_on_s3(st, endpoint, access, secret):
    # another server's blobs under another prefix of the same bucket are not this one's
    neighbour = S3BlobStore(endpoint, BUCKET, "us-east-1", access, secret, prefix=uuid.uuid4().hex + "/")
    neighbour.put("0" * 32, b"not yours")
    try:
        assert list(st.blobs.names()) == []
    finally:
        emptied(neighbour)
    st.accounts.create("s3user", "s3user-password")
    v = st.open_account("s3user", "s3user-password")
    marker = b"S3PlaintextMarker"
    data = marker * 200_000
    v.write_bytes("/a.bin", data)
    with v.open_read("/a.bin") as r:
        r.seek(1_500_000)
        assert r.read(100) == data[1_500_000:1_500_100]
    for name, _ in st.blobs.names():
        assert marker not in st.blobs.get(name)
    # sequential reads fetch the next chunks ahead, in whatever piece size the client reads
    for size in (65536, 1024 * 1024):
        with v.open_read("/a.bin") as r:
            assert b"".join(iter(lambda: r.read(size), b"")) == data
    v.write_bytes("/a.bin", b"small")
    v.delete("/.coffer/versions/a.bin/" + v.list("/.coffer/versions/a.bin")[1].name)
    assert v.read_bytes("/a.bin") == b"small"
    assert len(list(st.blobs.names())) == 1
    assert st.fsck()["damaged"] == []
