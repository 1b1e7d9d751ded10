"""The connect lines `scripts/start` prints work as printed.

A fresh server is started with `scripts/start` (temp data folder, free
ports). Each printed command block (curl, rclone, OpenSSH sftp, restic) runs
in bash on a terminal of its own, and the test types only what a user types:
the account's password at its prompt (and a new restic repository password).
No certificate or host-key option is added: the printed trust steps must do.
"""
import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest

from webdav_harness import ROOT, ServeProcess, free_port, require_client, write_config

pytestmark = [pytest.mark.slow, pytest.mark.clients]


class StartScript(ServeProcess):
    def __init__(self, folder):
        self.folder = folder
        self.config = write_config(folder, free_port())      # then SFTP on too, as by default
        # SFTP on too, and accounts of the product's default mode (private)
        self.config.write_text(self.config.read_text().replace("[sftp]\nenabled = false",
                                                               f"[sftp]\nport = {free_port()}")
                               .replace('default_mode = "managed"\n', ""))
        self.log = folder / "start.log"

    def start(self):
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen([str(ROOT / "scripts" / "start"), "--config", str(self.config)],
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if "coffer: ready" in text:
                self.output = text
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("scripts/start did not become ready:\n" + self.log.read_text(errors="replace"))


def command_blocks(output: str) -> dict[str, list[str]]:
    """{client: [commands]} from the printed help: a two-space header
    `  client (...):` followed by six-space command lines."""
    blocks, current = {}, None
    for line in output.splitlines():
        m = re.match(r"  (\S[^:(]*?)\s*(\(.*\))?:$", line)
        if m:
            current = blocks.setdefault(m.group(1), [])
        elif line.startswith("      ") and current is not None:
            current.append(line.strip())
        else:
            current = None
    return blocks


def run_in_terminal(script: str, answers: list[tuple[str, str]], env: dict, typed_first: str = "",
                    again: tuple[str, str] | None = None, timeout: float = 90) -> tuple[int, str]:
    """Run `script` with bash on a new terminal, typing each answer when its
    prompt (a regex) appears, one after the other, and `again`'s answer at
    each later appearance of its prompt; returns (exit status, everything shown)."""
    answers = list(answers)
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe("bash", ["bash", "--noprofile", "--norc", "-e", "-c", script], env)
    shown, pos = b"", 0
    if typed_first:
        os.write(fd, typed_first.encode() + b"\n")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                shown += chunk
            expect = answers[0] if answers else again
            m = re.compile(expect[0]).search(shown.decode(errors="replace"), pos) if expect else None
            if m:
                time.sleep(0.3)                      # as a person would: after the prompt has settled
                os.write(fd, expect[1].encode() + b"\n")
                if answers:
                    answers.pop(0)
                pos = m.end()
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"timed out running {script!r}; it showed:\n{shown.decode(errors='replace')}")
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_printed_connect_lines_work_as_printed(tmp_path):
    for program in ("curl", "rclone", "sftp", "ssh", "restic"):
        require_client(program)
    home = tmp_path / "home"
    home.mkdir()
    with StartScript(tmp_path) as srv:
        out = srv.output
        assert "created the private account" in out       # staff-blind by default, and every line works
        password = out.split("(shown only now): ", 1)[1].split()[0]
        blocks = command_blocks(out)
        assert {"curl", "rclone", "SFTP", "restic"} <= set(blocks), out
        for block in blocks.values():               # the password is never part of a command
            assert all(password not in line for line in block)
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "TERM": "dumb", "LANG": "C.UTF-8"}
        user_prompt = r"(?i)password[^\n]*: ?$|'s password: ?"

        status, shown = run_in_terminal("\n".join(blocks["SFTP"]),
                                        [(user_prompt, password), (r"sftp> ", "mkdir from-sftp"),
                                         (r"sftp> ", "bye")], env)
        assert status == 0, shown
        assert "Are you sure you want to continue" not in shown

        status, shown = run_in_terminal("\n".join(blocks["restic"]),
                                        [(r"enter password for new repository: ?", "repo secret 1"),
                                         (r"enter password again: ?", "repo secret 1")], env,
                                        again=(r"'s password: ?", password))
        assert status == 0 and "created restic repository" in shown, shown

        status, shown = run_in_terminal("\n".join(blocks["curl"]),
                                        [(r"Enter host password for user 'admin': ?", password)], env)
        assert status == 0, shown
        assert "from-sftp" in shown and "backup" in shown and "multistatus" in shown, shown

        status, shown = run_in_terminal("\n".join(blocks["rclone"]), [], env, typed_first=password)
        assert status == 0, shown
        assert re.search(r"\bfrom-sftp\b", shown) and re.search(r"\bbackup\b", shown), shown

        # the printed browser address, trusting the printed CA: the sign-in page
        page = re.search(r"Web browser +: (\S+)", out).group(1)
        ca = re.search(r"made by this server's own CA (\S+);", out).group(1)
        got = subprocess.run(["curl", "-sS", "-L", "--cacert", ca, "-A", "Mozilla/5.0 (X11; Linux) Chrome/130.0",
                              "-H", "Accept: text/html", "-o", "-", "-w", "%{url_effective}", page],
                             capture_output=True, text=True, timeout=60)
        assert got.returncode == 0 and "/.web/login" in got.stdout and 'id="sign-in"' in got.stdout, got
