"""Benchmark the storage core against a plain file copy on the same disk.

    .venv/bin/python scripts/bench/bench_vfs.py [--size-mib 1024] [--runs 3] [--dir PATH]

For each run, side by side: write a stream of SIZE random bytes through the
VFS (encrypt, chunk, dedup-hash, version) and copy the same bytes to a plain
file; then read both back (page cache dropped first when running as root).
Each phase runs in a fresh process so its peak RSS is its own.

Each run does every phase twice in a balanced order (A B B A, starting with
either side in turn): what ran just before matters on a VM whose host
caches the disk (a plain read right after the other side's read of 1 GiB
found its file evicted there, and ran at a third of its speed). A run's
figure for a side is its total bytes over its total time; the ratio is the
median of the runs' ratios. Prints MB/s, the ratio, each side's median by
position (first or second of its pair) and peak RSS; then the stored size of
30 versions of a 64 MiB file with 1 MiB changed in place each time. Pass
--json for machine-readable output.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the checkout
BLOCK = 1024 * 1024

PHASE = r"""
import os, sys, time, resource, json
sys.path.insert(0, {root!r})
from providers import config
from providers.storage import Storage
from providers.streams import tune_malloc
tune_malloc()                     # as `coffer serve` does
kind, src, work = sys.argv[1], sys.argv[2], sys.argv[3]
B = 1024 * 1024
def store():
    cfg = config.from_dict({{"storage": {{"data_dir": work}},
                             "security": {{"bcrypt_rounds": 4, "argon2_memory_kib": 1024, "argon2_iterations": 1}},
                             "accounts": {{"default_plan": "unlimited"}}}}, base_dir=work)
    st = Storage.open(cfg)
    if not st.accounts.list():
        st.accounts.create("bench", "bench-password")
    return st.open_account("bench", "bench-password")
# A server has the store open and the session unlocked before a transfer
# starts; the clock starts at the file's open, as for the plain copy.
v = store() if kind.startswith("vfs") else None
t0 = time.perf_counter()
n = 0
if kind == "plain-write":
    with open(src, "rb") as f, open(os.path.join(work, "copy.bin"), "wb") as g:
        while (b := f.read(B)):
            g.write(b); n += len(b)
        g.flush(); os.fsync(g.fileno())
elif kind == "plain-read":
    with open(os.path.join(work, "copy.bin"), "rb") as f:
        while (b := f.read(B)):
            n += len(b)
elif kind == "vfs-write":
    with open(src, "rb") as f, v.open_write("/big.bin") as w:
        while (b := f.read(B)):
            w.write(b); n += len(b)
elif kind == "vfs-read":
    with v.open_read("/big.bin") as r:
        while (b := r.read(B)):
            n += len(b)
secs = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"bytes": n, "seconds": secs, "peak_rss": rss}}))
"""


def drop_caches() -> None:
    if os.geteuid() == 0:
        os.sync()
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        except OSError:
            pass


def phase(kind: str, src: str, work: str) -> dict:
    code = PHASE.format(root=ROOT)
    out = subprocess.run([sys.executable, "-c", code, kind, src, work], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def dedup_case(work: str) -> dict:
    sys.path.insert(0, ROOT)
    from providers import config
    from providers.storage import Storage
    cfg = config.from_dict({"storage": {"data_dir": work},
                            "security": {"bcrypt_rounds": 4, "argon2_memory_kib": 1024, "argon2_iterations": 1},
                            "accounts": {"default_plan": "unlimited"}}, base_dir=work)
    st = Storage.open(cfg)
    st.accounts.create("dedup", "dedup-password")
    v = st.open_account("dedup", "dedup-password")
    size = 64 * BLOCK
    rng = random.Random(7)
    data = bytearray(rng.randbytes(size))
    for i in range(30):
        if i:
            off = rng.randrange(0, size - BLOCK)
            data[off:off + BLOCK] = rng.randbytes(BLOCK)
        v.write_bytes("/file.bin", bytes(data))
    versions = len(v.versions("/file.bin"))
    used = v.quota().used
    st.close()
    return {"versions": versions, "file_bytes": size, "stored_bytes": used, "ratio": used / size}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="scratch folder on the disk to measure (default: system temp)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results: dict[str, list] = {k: [] for k in ("plain-write", "vfs-write", "plain-read", "vfs-read")}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        src = os.path.join(tmp, "source.bin")
        with open(src, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(BLOCK))
        for run in range(args.runs):
            for pair in (("plain-write", "vfs-write"), ("plain-read", "vfs-read")):
                a, b = pair if run % 2 == 0 else pair[::-1]
                for position, kind in enumerate((a, b, b, a)):      # each side once first, once second
                    work = os.path.join(tmp, kind.split("-")[0])
                    os.makedirs(work, exist_ok=True)
                    if kind.endswith("write"):
                        shutil.rmtree(work)
                        os.makedirs(work)
                    drop_caches()
                    r = phase(kind, src, work)
                    r["run"], r["first"] = run, position in (0, 2)
                    results[kind].append(r)
        dedup = dedup_case(os.path.join(tmp, "dedup"))

    def rate(rs):
        return sum(r["bytes"] for r in rs) / sum(r["seconds"] for r in rs) / 1e6

    def per_run(kind):
        return [rate([r for r in results[kind] if r["run"] == run]) for run in range(args.runs)]

    def by_position(kind, first):
        return round(statistics.median(r["bytes"] / r["seconds"] / 1e6 for r in results[kind]
                                       if r["first"] == first), 1)

    summary = {}
    for op in ("write", "read"):
        plain, vfs = per_run(f"plain-{op}"), per_run(f"vfs-{op}")
        # a run's two sides share its noise, so the figure is the median of the runs' ratios
        ratios = [v / p for p, v in zip(plain, vfs)]
        summary[op] = {"plain_MBps": round(statistics.median(plain), 1),
                       "coffer_MBps": round(statistics.median(vfs), 1),
                       "ratio": round(statistics.median(ratios), 2),
                       "ratio_per_run": [round(r, 2) for r in ratios],
                       "plain_MBps_first_second": [by_position(f"plain-{op}", True),
                                                   by_position(f"plain-{op}", False)],
                       "coffer_MBps_first_second": [by_position(f"vfs-{op}", True),
                                                    by_position(f"vfs-{op}", False)],
                       "coffer_peak_rss_MB": round(max(r["peak_rss"] for r in results[f"vfs-{op}"]) / 1e6, 1)}
    summary["dedup_30_versions_64MiB"] = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in dedup.items()}
    summary["size_MiB"], summary["runs"] = args.size_mib, args.runs
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"storage core vs plain copy, {args.size_mib} MiB, median of {args.runs} runs")
        for op in ("write", "read"):
            s = summary[op]
            print(f"  {op:5}: plain {s['plain_MBps']:8.1f} MB/s   coffer {s['coffer_MBps']:8.1f} MB/s   "
                  f"ratio {s['ratio']:.2f} (runs: {', '.join(f'{r:.2f}' for r in s['ratio_per_run'])})   "
                  f"coffer peak RSS {s['coffer_peak_rss_MB']:.0f} MB")
            print(f"         by position, first / second of a pair: plain {s['plain_MBps_first_second'][0]:.0f} / "
                  f"{s['plain_MBps_first_second'][1]:.0f} MB/s, coffer {s['coffer_MBps_first_second'][0]:.0f} / "
                  f"{s['coffer_MBps_first_second'][1]:.0f} MB/s")
        d = summary["dedup_30_versions_64MiB"]
        print(f"  30 versions of a 64 MiB file, 1 MiB changed each: stored {d['stored_bytes'] / 2**20:.1f} MiB "
              f"= {d['ratio']:.2f}x the file ({d['versions']} versions kept)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
