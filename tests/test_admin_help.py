"""Every coffer-admin command is in its --help, through the installed entry
point; a command module that cannot be imported stops coffer-admin with the
reason instead of leaving a coffer-admin without those commands."""
from __future__ import annotations

import argparse
import subprocess
import sys

from admin_harness import ADMIN

COMMANDS = {
    "user": ["add", "list", "show", "passwd", "disable", "enable", "hold", "totp-reset", "quota", "key",
             "app-password", "set", "cancel", "reinstate", "erase", "export"],
    "user key": ["add", "list", "remove"],
    "user app-password": ["add", "list", "revoke"],
    "": ["user", "fsck", "gc", "db", "purge", "exclude", "versions", "restore", "sessions", "audit", "receipts",
         "notify", "maintenance", "disclose", "access", "share", "login", "tls"],
    "db": ["upgrade"],
    "notify": ["breach", "news"],
    "share": ["grant", "revoke", "list"],
    "login": ["show", "clear"],
    "tls": ["show"],
}


def groups(parser, prefix=()):
    """{"user key": [names], ...} as the parser has them."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out[" ".join(prefix)] = list(action.choices)
            for name, sub in action.choices.items():
                out.update(groups(sub, prefix + (name,)))
    return out


def test_every_command_is_listed_in_help():
    from scripts.admin import build_parser
    assert groups(build_parser()) == COMMANDS
    for group, names in COMMANDS.items():
        p = subprocess.run([ADMIN, *group.split(), "--help"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        listed = p.stdout.split("positional arguments:")[1]
        for name in names:
            assert f"\n    {name} " in listed or f"\n    {name}\n" in listed, (group, name, p.stdout)


def test_a_missing_command_module_is_an_error_not_a_smaller_tool():
    code = ("import sys; sys.modules['scripts.admin_tls'] = None; "   # as if the module were not installed
            "from scripts.admin import main; sys.exit(main(['--help']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "scripts.admin_tls" in p.stderr, (p.returncode, p.stdout[-300:], p.stderr[-300:])
