"""Resource limits: memory stays flat whatever the file size, a full disk is a
clear error that loses nothing."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from providers import config
from providers.errors import StorageUnavailable
from providers.storage import Storage

from backend import storage_toml
from conftest import FAST, tmpfs

CHILD = textwrap.dedent("""
    import hashlib, os, resource, sys
    from providers import config
    from providers.storage import Storage
    cfg = config.load(sys.argv[1])
    st = Storage.open(cfg)
    st.accounts.create("big", "big-password")
    v = st.open_account("big", "big-password")
    size = int(sys.argv[2])
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    with v.open_write("/big.bin") as w:
        for i in range(size >> 20):
            piece = block[i % 7:] + block[:i % 7]
            h.update(piece)
            w.write(piece)
    r = v.open_read("/big.bin")
    g = hashlib.sha256()
    while (b := r.read(1 << 20)):
        g.update(b)
    f = v.open_random("/big.bin")
    f.pwrite(size // 2, b"patched")
    f.commit()
    assert g.hexdigest() == h.hexdigest()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
""")


def test_memory_stays_flat_for_large_files(tmp_path):
    peaks = []
    for size in (64 << 20, 512 << 20):
        conf = tmp_path / f"c{size}.toml"               # a fresh store for each size
        conf.write_text(storage_toml(tmp_path / f"run{size}") + '[accounts]\ndefault_plan = "unlimited"\n'
                        "[security]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in FAST.items()))
        out = subprocess.run([sys.executable, "-c", CHILD, str(conf), str(size)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=600)
        assert out.returncode == 0, out.stderr
        peaks.append(int(out.stdout.split()[-1]))
    figures = f"peak RSS {peaks[0] / 1e6:.0f} MB for a 64 MiB file, {peaks[1] / 1e6:.0f} MB for 512 MiB"
    assert peaks[1] < peaks[0] + 40e6, f"memory grew with file size: {figures}"
    assert peaks[1] < 256e6, f"too much memory: {figures}"


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "small", "3m") as mnt:
        yield mnt


def test_disk_full_is_a_clear_error_and_keeps_the_old_version(tmp_path, small_disk):
    cfg = config.from_dict({"storage": {"data_dir": str(tmp_path / "var"), "blob_dir": str(small_disk)},
                            "security": FAST}, base_dir=str(tmp_path))
    st = Storage.open(cfg)
    st.accounts.create("full", "full-password")
    v = st.open_account("full", "full-password")
    v.write_bytes("/doc.txt", b"the old version")
    with pytest.raises(StorageUnavailable) as e:
        v.write_bytes("/doc.txt", os.urandom(8 << 20))
    assert "disk is full" in str(e.value)
    assert v.read_bytes("/doc.txt") == b"the old version"
    assert [x.name for x in v.list("/")] == ["doc.txt"]
    names = {n for n, _ in st.blobs.names()}
    assert len(names) == 1, "the failed upload left chunks behind"
    v.write_bytes("/doc.txt", b"fits again")           # space is back: writing works again
    assert v.read_bytes("/doc.txt") == b"fits again"
