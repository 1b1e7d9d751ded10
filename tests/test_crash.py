"""A writer killed with SIGKILL at random moments leaves every file at its old
or its new version, never a mix or a half; gc then reclaims the orphans and
fsck is clean."""
import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

from providers.storage import Storage

from backend import storage_toml_of


SIZE = 12 * 1024 * 1024

CHILD = textwrap.dedent("""
    import random, sys
    from providers import config
    from providers.storage import Storage
    cfg = config.load(sys.argv[1])
    st = Storage.open(cfg)
    v = st.open_account("crash", "crash-password")
    start = int(sys.argv[2])
    for k in range(start, start + 1000):
        data = random.Random(k).randbytes(%d)
        for name in ("/a.bin", "/b.bin"):
            with v.open_write(name) as w:
                for i in range(0, len(data), 65536):
                    w.write(data[i:i + 65536])
        print(k, flush=True)
""" % SIZE)


def digest(k: int) -> str:
    return hashlib.sha256(random.Random(k).randbytes(SIZE)).hexdigest()


def test_sigkill_mid_write_leaves_old_or_new(tmp_path, cfg):
    conf = tmp_path / "coffer.toml"
    conf.write_text(storage_toml_of(cfg) +
                    '[security]\nbcrypt_rounds = 4\nargon2_memory_kib = 1024\nargon2_iterations = 1\n')
    st = Storage.open(cfg)
    st.accounts.create("crash", "crash-password")
    rng = random.Random(1234)
    committed = -1
    known = {}
    for round_ in range(4):
        start = 100 * round_
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(conf), str(start)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
        time.sleep(rng.uniform(1.0, 3.5))
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate()
        done = [int(x) for x in out.split()]
        for k in range(start, (done[-1] if done else start) + 2):
            known[digest(k)] = k
        committed = max([committed] + done)
        v = st.open_account("crash", "crash-password")
        for name in ("/a.bin", "/b.bin"):
            if not v.exists(name):
                assert committed < 0 or round_ > 0, "a committed file disappeared"
                continue
            data = v.read_bytes(name)
            assert len(data) == SIZE, "a partial file is visible"
            assert hashlib.sha256(data).hexdigest() in known, "a file holds a mix of versions"
    report = st.gc(grace_seconds=0)
    assert report["orphan_blobs_removed"] >= 0
    fsck = st.fsck()
    assert fsck["damaged"] == [] and fsck["chunks_checked"] > 0
    referenced = len({n for n, _ in st.blobs.names()})
    from providers.meta import tree
    with st.db.read() as c:
        assert referenced == len(tree.all_blob_names(c)), "gc left orphan blobs behind"
    assert committed >= 0, "the writer never finished a file: kill timings too short to test anything"
