"""`coffer serve` with several worker processes: each serves, one killed
mid-upload is replaced while the others go on, and nothing it was writing
takes the place of the file's content."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from webdav_harness import ROOT, CofferServer


def workers_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sorted(int(c) for c in children)


def tcp_table():
    """The machine's TCP sockets, IPv4 and IPv6: (local port, remote port,
    state as the kernel writes it, inode) each."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            yield int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16), f[3], f[9]


def holder_of(workers: list[int], server_port: int, client_port: int) -> int:
    """The worker process holding the server side of a TCP connection."""
    inode = None
    for local, remote, _state, node in tcp_table():
        if local == server_port and remote == client_port:
            inode = node
    assert inode, "the connection is not in the TCP table"
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    raise AssertionError("no worker holds the connection")


def server_side_connections(server_port: int) -> int:
    """TCP connections whose server side is still open on the port (not
    the listening socket): a worker has not yet seen a closed one go."""
    return sum(1 for local, _remote, state, _node in tcp_table()
               if local == server_port and state not in ("0A", "06"))      # listening, TIME_WAIT


def wait_for(cond, seconds: float = 20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def test_every_worker_serves_and_a_killed_one_is_replaced(tmp_path):
    with CofferServer(tmp_path / "srv", tls=False, extra="[server]\nworkers = 2") as srv:
        assert "ready (2 worker processes)" in srv.output
        workers = wait_for(lambda: len(workers_of(srv.proc.pid)) == 2 and workers_of(srv.proc.pid))
        assert srv.request("PUT", "/doc.txt", b"version one")[0] == 201

        # many connections: both workers take some, all are answered
        held = [srv.connection() for _ in range(40)]
        seen = set()
        for c in held:
            status, _, body = srv.request("GET", "/doc.txt", conn=c)
            assert (status, body) == (200, b"version one")
            seen.add(holder_of(workers, srv.port, c.sock.getsockname()[1]))
        assert seen == set(workers)
        for c in held:
            c.close()
        # the workers count their open connections to share new ones: wait
        # until both have seen these go, so the burst meets equal counts
        wait_for(lambda: server_side_connections(srv.port) == 0)

        # 16 clients connecting at the same moment (a sync tool opening its
        # pool) are shared evenly by both workers, not mostly taken by the
        # first awake (before the workers compared their loads, the one
        # with fewer got 1 to 8 of them; since, 7 or 8)
        burst = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(16)]
        request = (b"GET /doc.txt HTTP/1.1\r\nHost: x\r\nAuthorization: "
                   + srv.auth()["Authorization"].encode() + b"\r\n\r\n")
        for s in burst:
            s.sendall(request)
        for s in burst:
            s.settimeout(10)
            assert s.recv(100).startswith(b"HTTP/1.1 200")
        taken = [holder_of(workers, srv.port, s.getsockname()[1]) for s in burst]
        assert min(taken.count(w) for w in workers) >= 6, taken
        for s in burst:
            s.close()

        # bob uploads slowly; the worker receiving it dies
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"PUT /doc.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 8000000\r\nAuthorization: "
                  + srv.auth()["Authorization"].encode() + b"\r\n\r\n" + b"z" * 2_000_000)
        time.sleep(0.5)
        victim = holder_of(workers, srv.port, s.getsockname()[1])
        os.kill(victim, signal.SIGKILL)
        s.settimeout(10)
        try:
            assert s.recv(100) == b""                             # the connection ends with its worker
        except ConnectionResetError:
            pass
        s.close()

        # the other worker answered throughout; a new one takes the dead one's place
        status, _, body = srv.request("GET", "/doc.txt")
        assert (status, body) == (200, b"version one")
        replaced = wait_for(lambda: (len(w := workers_of(srv.proc.pid)) == 2 and victim not in w) and w)
        assert "killed by SIGKILL" in srv.log.read_text() and "starting another" in srv.log.read_text()
        assert srv.request("PUT", "/doc.txt", b"version two")[0] == 204
        status, _, body = srv.request("GET", "/doc.txt")
        assert (status, body) == (200, b"version two")
        status, _, listing = srv.request("PROPFIND", "/.coffer/versions/doc.txt", headers={"Depth": "1"})
        assert status == 207 and listing.count(b"<d:response>") + listing.count(b"<D:response>") == 3, listing

    # stopped: the supervisor and every worker are gone
    for pid in replaced:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    out = subprocess.run([sys.executable, "-m", "scripts.admin", "--config", str(srv.config), "gc", "--grace", "0",
                          "--json"], cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["orphan_blobs_removed"] >= 1, report          # the dead upload's chunks


def stop_between_writes(pid: int, writer_files: list[Path]) -> None:
    """SIGSTOP a worker, but not while it holds the database's write lock
    (it would hold every writer up, which is not what is tested here)."""
    import fcntl
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        free = True
        for f in writer_files:
            with open(f, "rb") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(fh, fcntl.LOCK_UN)
                except BlockingIOError:
                    free = False
        if free:
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("the worker held the write lock every time")


def test_a_worker_that_stops_taking_connections_leaves_them_to_the_others(tmp_path):
    """A worker that holds more connections than another waits a moment
    before taking a new one; when the other does not take it (stuck, here
    stopped with SIGSTOP), the busier one must, at once: no new client may
    wait on a worker that does not answer."""
    with CofferServer(tmp_path / "srv", tls=False, extra="[server]\nworkers = 2") as srv:
        workers = wait_for(lambda: len(workers_of(srv.proc.pid)) == 2 and workers_of(srv.proc.pid))
        assert srv.request("PUT", "/doc.txt", b"still here")[0] == 201
        stuck = workers[1]
        stop_between_writes(stuck, list(tmp_path.rglob("*.db-writers")))
        try:
            held, slowest = [], 0.0
            for _ in range(24):                # the other worker soon holds far more than the stuck one
                started = time.monotonic()
                c = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                c.sendall(b"GET /doc.txt HTTP/1.1\r\nHost: x\r\nAuthorization: "
                          + srv.auth()["Authorization"].encode() + b"\r\n\r\n")
                answer = b""
                while not answer.endswith(b"still here"):       # the head and the body may come apart
                    piece = c.recv(4096)
                    if not piece:
                        break
                    answer += piece
                slowest = max(slowest, time.monotonic() - started)
                held.append(c)
                if holder_of(workers, srv.port, c.getsockname()[1]) == stuck:
                    raise AssertionError("a stopped worker cannot have answered")
                assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"still here"), answer
            assert slowest < 2.0, f"a new connection waited {slowest:.2f} s"   # for ever without the fallback
        finally:
            os.kill(stuck, signal.SIGCONT)
        for c in held:
            c.close()


def test_unfinished_uploads_of_an_account_count_once_in_every_worker():
    """The spool budget (SFTP writes out of order, not stored yet) is one for
    the node's workers: what one worker's spools hold leaves less for another's."""
    from providers.errors import QuotaExceeded
    from providers.streams import SharedSpoolBudget
    budget = SharedSpoolBudget()
    budget.take(7, 1000, None)

    def in_child(fn) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                fn()
                os._exit(0)
            except QuotaExceeded:
                os._exit(3)
            except BaseException:
                os._exit(1)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    assert in_child(lambda: budget.take(7, 500, 1400)) == 3      # 1,000 held elsewhere: 500 more is too much
    assert in_child(lambda: budget.take(7, 300, 1400)) == 0
    assert in_child(lambda: budget.take(8, 1400, 1400)) == 0     # another account has its own
    assert budget.held == {7: 1300, 8: 1400}
    budget.give(7, 1300)
    assert budget.held == {8: 1400}


def test_the_session_record_of_a_killed_worker_is_ended_at_its_last_write(tmp_path):
    """A worker killed outright cannot end its records: the supervisor ends
    them as soon as it has reaped the worker, at the time they were last
    written, marked cut short; records of live connections stay open. (A
    node that dies and does not come back leaves its records to the
    periodic job: tests/test_session_records.py.)"""
    import paramiko
    from sqlalchemy import select

    from providers import config
    from providers.meta.schema import session_records
    from providers.storage import Storage
    from sftp_harness import SftpServer

    with SftpServer(tmp_path / "srv", extra="\n[server]\nworkers = 2\n") as srv:
        def login():
            t = paramiko.Transport(("127.0.0.1", srv.port))
            t.connect(username="bob", password="bob-pw-22")
            paramiko.SFTPClient.from_transport(t).listdir("/")
            return t

        doomed = login()
        workers = workers_of(srv.proc.pid)
        victim = holder_of(workers, srv.port, doomed.sock.getsockname()[1])
        st = Storage.open(config.load(srv.config), upgrade=False)
        try:
            def records():
                with st.db.read() as c:
                    return {r.id: r for r in c.execute(select(session_records))}

            dead_id = max(records())
            last_write = records()[dead_id].seen_us
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: records()[dead_id].ended_us is not None)
            live = login()
            wait_for(lambda: len(records()) == 2)
            live_id = max(records())
            rows = records()
            assert rows[dead_id].ended_us == last_write and rows[dead_id].cut_short   # ended when last seen
            assert rows[live_id].ended_us is None                                  # the live one goes on
            wait_for(lambda: len(w := workers_of(srv.proc.pid)) == 2 and victim not in w)   # replaced
            live.close()
            doomed.close()
        finally:
            st.close()
