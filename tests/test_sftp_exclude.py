"""An account holder chooses which files keep no history, over SSH
(`coffer exclude`, real OpenSSH `ssh` and `sftp` against `coffer serve`):
the pattern applies at the next write, `--drop-history` purges what
matching files kept, another account's files keep theirs, a backup app
password can read the list but not shorten history, and a bad pattern or
a missing one is answered in words with nothing changed."""
from __future__ import annotations

import json
import subprocess

import pytest

from admin_harness import Admin
from sftp_harness import SftpServer
from test_app_passwords import make_app

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path):
    with SftpServer(tmp_path / "srv") as srv:
        yield srv


def exclude(srv, *args: str, user: str = "alice") -> subprocess.CompletedProcess:
    return srv.ssh(" ".join(["coffer", "exclude", *args]), user=user)


def put_twice(srv, tmp_path, user: str, *names: str) -> None:
    """Each file uploaded with OpenSSH sftp, then overwritten."""
    for round_ in (1, 2):
        for name in names:
            (tmp_path / name).write_text(f"{user} {name} round {round_}")
        p = srv.sftp_batch("".join(f"put {tmp_path / n} /{n}\n" for n in names), user=user)
        assert p.returncode == 0, p.stderr


def versions(srv, user: str, password: str, name: str) -> int:
    st = Admin.of(srv.config).storage()
    try:
        return len(st.open_account(user, password).versions(f"/{name}"))
    finally:
        st.close()


def test_a_holder_excludes_files_from_history_and_nobody_else_is_touched(server, tmp_path):
    p = exclude(server, "list", "--json")
    assert p.returncode == 0, p.stderr
    defaults = json.loads(p.stdout)            # the server's default patterns (temporary files)
    assert "*.tmp" in defaults and "*.cache" not in defaults

    put_twice(server, tmp_path, "alice", "a.cache", "notes.txt", "old.log")
    put_twice(server, tmp_path, "bob", "b.cache")
    assert versions(server, "alice", "alice-pw-1", "a.cache") == 2

    p = exclude(server, "add", "'*.cache'")
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().split() == defaults + ["*.cache"] and b"next write" in p.stderr
    assert json.loads(exclude(server, "list", "--json").stdout) == defaults + ["*.cache"]
    assert json.loads(exclude(server, "list", "--json", user="bob").stdout) == defaults

    put_twice(server, tmp_path, "alice", "a.cache", "notes.txt")
    put_twice(server, tmp_path, "bob", "b.cache")
    assert versions(server, "alice", "alice-pw-1", "a.cache") == 1           # only the current one from now on
    assert versions(server, "alice", "alice-pw-1", "notes.txt") == 4       # other names keep theirs
    assert versions(server, "bob", "bob-pw-22", "b.cache") == 4              # so does another account

    # what matching files kept so far is purged at once on request
    p = exclude(server, "add", "'*.log'", "--drop-history")
    assert p.returncode == 0, p.stderr
    assert b"1 matching file(s), 1 old version(s) purged" in p.stderr
    assert versions(server, "alice", "alice-pw-1", "old.log") == 1

    p = exclude(server, "remove", "'*.cache'")
    assert p.returncode == 0 and p.stdout.decode().split() == defaults + ["*.log"], p.stderr
    put_twice(server, tmp_path, "alice", "a.cache")
    assert versions(server, "alice", "alice-pw-1", "a.cache") == 3           # history again


def test_bad_patterns_and_limited_app_passwords_change_nothing(server, tmp_path):
    for args, code, words in [(["add", "'docs/*.tmp'"], 1, b"no '/'"),
                              (["add", "'" + "x" * 201 + "'"], 1, b"at most 200"),
                              (["remove", "'*.nope'"], 1, b"not in the list of alice's patterns"),
                              (["add"], 2, b"usage: coffer exclude"),
                              (["drop"], 2, b"usage: coffer exclude")]:
        p = exclude(server, *args)
        assert p.returncode == code and words in p.stderr, (args, p.stderr)
    assert exclude(server, "add", "'*.bak'").returncode == 0
    assert exclude(server, "add", "'*.bak'").stderr.endswith(b"'*.bak' is already in the list\n")

    # a backup app password, logged in over SSH with it, may read but not shorten history
    secret = make_app(server.config, "alice", "nightly", scope="backup")
    cmd = ["ssh", "-p", str(server.port), *server.ssh_options("alice", password=True), "127.0.0.1"]
    env = server.askpass_env(secret)
    listed = subprocess.run(cmd + ["coffer exclude list"], capture_output=True, env=env, timeout=60)
    assert listed.returncode == 0 and listed.stdout.decode().split()[-1] == "*.bak", listed.stderr
    refused = subprocess.run(cmd + ["coffer exclude add '*'"], capture_output=True, env=env, timeout=60)
    assert refused.returncode == 1 and b"app password is backup" in refused.stderr, refused.stderr
    assert json.loads(exclude(server, "list", "--json").stdout)[-1] == "*.bak"
