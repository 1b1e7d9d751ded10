"""Many devices logging in to private accounts at the same moment, in one
server process: every login gets its answer. (Two Argon2id derivations at
once on different threads used to wait for each other for ever with the
cryptography and OpenSSL builds the server runs on, and many at once failed
with "Not enough memory": a second device's first login hung the first's.)"""
from __future__ import annotations

import threading

from providers.errors import AuthenticationFailed


def test_simultaneous_logins_to_private_accounts_all_get_their_answer(storage):
    from providers import crypto
    storage.accounts.kdf = crypto.KdfParams()          # the shipped cost (the suite's default is a cheap one)
    accounts = {"alice": "alice-password", "bob": "bob-password"}
    for name, password in accounts.items():
        storage.accounts.create(name, password, mode="private")
    results: list = []

    def log_in(name, password):
        try:
            vfs = storage.open_account(name, password, client_addr="192.0.2.7", protocol="webdav")
            results.append((name, vfs.user.name))
            vfs.close()
        except AuthenticationFailed:
            results.append((name, "refused"))

    tries = [(n, p) for n, p in accounts.items() for _ in range(6)] + [("bob", "not-bobs-password")]
    threads = [threading.Thread(target=log_in, args=t, daemon=True) for t in tries]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a login never returned"
    assert sorted(results) == sorted([(n, n) for n, _ in tries[:-1]] + [("bob", "refused")])
