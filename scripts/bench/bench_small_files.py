"""Small uploads, with small files kept in the database and without.

1,000 uploads of 4 KiB over one WebDAV keep-alive connection and over one
SFTP session (paramiko), files/s, for: Coffer (one worker) as shipped,
where a file up to `[storage] small_file_bytes` goes to the database with
its version (one sync); the same with `small_file_bytes = 0`, where every
file is a blob (a new file, its folder entry and the database's log are
synced); and `rclone serve webdav`/`sftp` on a plain folder, which syncs
nothing. Medians of --rounds interleaved rounds.

    python scripts/bench/bench_small_files.py [--rounds 5] [--files 1000]

Needs rclone (apt-get install rclone).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.bench.bench_many import Coffer, Rclone, uploads_sftp, uploads_webdav  # noqa: E402


class CofferBlobsOnly(Coffer):
    """Coffer with `small_file_bytes = 0`: every file a blob."""

    def __init__(self, work: Path, workers: int):
        super().__init__(work, workers)
        self.name = f"coffer x{workers}, small_file_bytes = 0"

    def start(self) -> None:
        real = Path.write_text

        def write(path, text, *args, **kwargs):
            if path.name == "coffer.toml":
                text = text.replace("[storage]\n", "[storage]\nsmall_file_bytes = 0\n", 1)
            return real(path, text, *args, **kwargs)
        Path.write_text = write
        try:
            super().start()
        finally:
            Path.write_text = real


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--files", type=int, default=1000)
    args = p.parse_args(argv)
    if not shutil.which("rclone"):
        print("bench_small_files: rclone is not installed (apt-get install -y rclone)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="coffer-bench-small-"))
    servers = [Coffer(work / "db", 1), CofferBlobsOnly(work / "blobs", 1), Rclone(work / "rc")]
    got = {s.name: {"WebDAV": [], "SFTP": []} for s in servers}
    try:
        for s in servers:
            s.work.mkdir(parents=True)
            s.start()
        for r in range(args.rounds):
            for s in servers:
                got[s.name]["WebDAV"].append(uploads_webdav(s, args.files, f"r{r}"))
                got[s.name]["SFTP"].append(uploads_sftp(s, args.files, f"r{r}"))
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
    rclone = servers[-1].name
    print(f"{args.files} x 4 KiB uploads, files/s, medians of {args.rounds} interleaved rounds")
    print(f"{'':36}{'WebDAV':>10}{'SFTP':>10}{'WebDAV/rclone':>15}{'SFTP/rclone':>13}")
    for name, d in got.items():
        dav, sftp = statistics.median(d["WebDAV"]), statistics.median(d["SFTP"])
        print(f"{name:36}{dav:10.0f}{sftp:10.0f}{dav / statistics.median(got[rclone]['WebDAV']):15.2f}"
              f"{sftp / statistics.median(got[rclone]['SFTP']):13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
