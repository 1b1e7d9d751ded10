"""The storage service: configuration, metadata, blob store and keys in one
object, opened once per process. It authenticates principals and hands out
their filesystem (`Vfs`); it also runs the store-wide jobs (gc, fsck).

    st = Storage.open(cfg)
    st.accounts.create("alice", password)
    vfs = st.open_account("alice", password, client_addr="192.0.2.1", protocol="webdav")
    vfs = st.open_account("alice", how="key")      # managed accounts only: SSH keys
    vfs = st.open_account("alice", how="admin", purpose="versions")  # recorded for the holder;
                                                   # private accounts need their password
    vfs = st.open_account("alice", password, code="123456", protocol="web")   # TOTP on (providers/totp.py)
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import access, crypto, meta, rekey, reseal
from .addresses import kept_address
from .accounts import Accounts, MasterKey, User, normalize_name
from .app_passwords import AppPasswords
from .blobs import open_store
from .leases import Leases
from .small_blobs import SmallBlobs
from .errors import AuthenticationFailed, CofferError, IntegrityError, Locked, NotFound
from .meta import totp as tq
from .meta import tree as t
from .meta import users as uq
from .throttle import Throttle
from .totp import SecondFactorNeeded, SecondFactors
from .web_sessions import WebSessions
from .vfs import Vfs

log = logging.getLogger(__name__)
WRONG_LOGIN = "wrong user name or password"     # unknown, wrong, disabled and cancelled alike
ASKS_CODE = ("web",)                    # protocols whose sign-in asks for a TOTP code after the password
_IMPORTED = rekey.IMPORTED          # dedup ids of chunks moved in from another domain


class Sessions:
    """Session records: who connected, from where (as much as `[accounts]
    session_addresses` keeps), when, and how much moved. Each names the
    node and process writing it, so that a node starting again can close
    at once the records its dead processes left open."""

    def __init__(self, db, cfg):
        self.db = db
        self.policy = cfg.accounts.session_addresses
        self.node = cfg.node_name

    def start(self, user_id, protocol: str, client_addr=None) -> int:
        with self.db.write() as c:
            return self._start(c, user_id, protocol, client_addr)

    def _start(self, c, user_id, protocol: str, client_addr) -> int:
        return uq.session_start(c, user_id, protocol, kept_address(client_addr, self.policy), self.node,
                                os.getpid())

    def update(self, sid: int, bytes_in: int, bytes_out: int, requests: int) -> None:
        with self.db.write() as c:
            uq.session_end(c, sid, bytes_in, bytes_out, requests, ended=False)

    def end(self, sid: int, bytes_in: int = 0, bytes_out: int = 0, requests: int = 0) -> None:
        with self.db.write() as c:
            uq.session_end(c, sid, bytes_in, bytes_out, requests)

    def list(self, user_id=None, since_us=None, until_us=None):
        with self.db.read() as c:
            return [dict(r) for r in uq.sessions(c, user_id, since_us, until_us)]

    def start_within(self, user_id: int, protocol: str, client_addr, seen_since_us: int, per_account: int,
                     in_all: int) -> tuple[int | None, str | None]:
        """Start a record unless the account already has `per_account` open
        records of `protocol` (or there are `in_all`), counting those written
        since `seen_since_us` (their processes are alive) on every worker and
        node, in one write transaction: (record id, None) or (None,
        "account" or "server")."""
        with self.db.write() as c:
            mine, everyone = uq.live_sessions(c, user_id, protocol, seen_since_us)
            if mine >= per_account:
                return None, "account"
            if everyone >= in_all:
                return None, "server"
            return self._start(c, user_id, protocol, client_addr), None

    def cut_short_dead(self) -> int:
        """Close the open records of this node's processes that no longer
        run, at their last activity, marked as cut short; returns how many.
        Called before this process writes any record: one with its own pid
        is from an earlier process that had the same pid. Records of other
        nodes are left to the periodic job (ABANDONED_SESSION_US)."""
        with self.db.read() as c:
            pids = uq.open_session_pids(c, self.node)
        dead = {p for p in pids if p == os.getpid() or not process_runs(p)}
        if not dead:
            return 0
        with self.db.write() as c:
            return uq.cut_sessions_short(c, self.node, dead)


def process_runs(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (a zombie, dead
    but not yet waited for, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass                                 # another user's: it runs
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


@dataclass
class Damage:
    chunk_id: int
    domain_id: int
    problem: str
    files: list


def make_private(folder: Path) -> None:
    """Create the data folder readable by its owner only, and take group and
    other access away from one made before (it holds the database, with
    profiles, e-mail and session addresses, and the keys)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = folder.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("the data folder was open to other local users (mode %o): made it 0700", mode)
        folder.chmod(mode & 0o700)


class Storage:
    def __init__(self, cfg, db: meta.Database, blobs, master: MasterKey):
        if not isinstance(blobs, SmallBlobs):
            blobs = SmallBlobs(blobs, db, cfg.storage.small_file_bytes)
        self.cfg, self.db, self.blobs, self.master = cfg, db, blobs, master
        self.accounts = Accounts(db, cfg, master)
        self.sessions = Sessions(db, cfg)
        self.leases = Leases(db)
        self.throttle = Throttle(db, cfg, master.subkey("throttle"))
        self.apps = AppPasswords(db, master.subkey("app-password-lookup"), self.accounts.kdf)
        self.web_sessions = WebSessions(db)
        self.totp = SecondFactors(db, master.subkey("totp-recovery-lookup"))
        self._lock = threading.Lock()

    @classmethod
    def open(cls, cfg, upgrade: bool = True) -> "Storage":
        make_private(cfg.data_dir)
        db = meta.Database(cfg.database_url)
        if upgrade:
            db.upgrade()
        return cls(cfg, db, open_store(cfg), MasterKey(cfg.master_key_file))

    def close(self) -> None:
        self.db.dispose()

    # -- principals ------------------------------------------------------------------
    def open_account(self, name: str, password: str | None = None, *, how: str = "password",
                     client_addr: str | None = None, protocol: str = "admin", purpose: str | None = None,
                     reason: str | None = None, disclosure: int | None = None, code: str | None = None,
                     key_checked: bool = False) -> Vfs:
        """The one way to open an account's filesystem, `how`:

        `password` — a login: the password is checked under the login guard.
        Raises Throttled (an AuthenticationFailed with `retry_after`) before
        any check when the guard refuses the attempt, and otherwise
        AuthenticationFailed with one message for an unknown name, a wrong
        password and an account that is not active, after the same work;
        only the audit event records which it was.

        `key` — an SSH key login (the key checked by the caller): active
        managed accounts only; a private account raises Locked.

        `admin` — the administrator's: managed accounts need nothing,
        private ones their own password (given on stdin). It is recorded
        for the account's holder to read, with its `purpose`, `reason` and
        the `disclosure` it serves; a managed account's export needs a
        reason (see providers/access.py).

        An account with TOTP on (providers/totp.py): its own password alone
        is refused, counted by the guard like a wrong one, except where the
        sign-in asks for a code (ASKS_CODE: the web pages), or after an SSH
        key checked out (`key_checked`: the key is the other factor). App
        passwords work as before. On the web, without `code` it raises
        SecondFactorNeeded holding the opened account; with one, the code
        is checked under the guard like a password (`second_factor`).

        `signin` — the code's step of such a web sign-in, on any worker:
        `password` is the value naming the sign-in the password started
        (providers/web_sessions.py `wait_for_code`); `code` is required."""
        name = normalize_name(name)
        app = None
        totp_on = False
        if how == "password":
            row, user_key, app, totp_on = self._login(name, password, client_addr, protocol, key_checked)
        elif how == "signin":
            row, user_key = self._waiting_signin(name, password)
            totp_on = True
        elif how == "key":
            row, user_key = self._by_key(name)
        elif how == "admin":
            row, user_key = self._for_admin(name, password, purpose, reason, disclosure)
        else:
            raise ValueError(f"an account is opened by password, key or admin, not {how!r}")
        vfs = Vfs(self, User.from_row(row), user_key, scope=app["scope"] if app else None,
                  app_password=app["id"] if app else None)
        if how == "admin":
            vfs.actor = "admin"             # what it does is the administrator's, in the audit record
        if vfs.user.sealing < crypto.SEALING_BOUND:
            reseal.account(vfs)
        if totp_on and protocol in ASKS_CODE and not key_checked:
            if code is None:
                raise SecondFactorNeeded(vfs)
            try:
                self.second_factor(vfs, code, client_addr, protocol)
            except BaseException:
                vfs.close()
                raise
            if how == "signin":
                self.web_sessions.code_given(password)          # each waiting sign-in is used once
        return vfs

    def _waiting_signin(self, name: str, token: str | None):
        found = self.web_sessions.waiting(token)
        if found is None or found[0]["name"] != name:
            raise NotFound("no sign-in waits for a code here: it took too long, or the password changed; "
                           "sign in again")
        row, user_key = found
        with self.db.read() as c:
            return uq.user_by_id(c, row["user_id"]), user_key

    def second_factor(self, vfs: Vfs, code: str, client_addr=None, protocol: str = "web") -> str:
        """Check a TOTP or recovery code for an account its password just
        opened, under the login guard like a password: 'code' or
        'recovery', or AuthenticationFailed (wrong, replayed or spent
        code), Throttled."""
        attempt = self.throttle.reserve(vfs.user.name, client_addr)
        try:
            how = self.totp.check(vfs.user.id, vfs.keys.user_key, code)
        except BaseException:
            self.throttle.failed(attempt)
            raise
        if how is None:
            self.throttle.failed(attempt)
            self.audit("login_failed", user_id=vfs.user.id, actor="user", client_addr=client_addr,
                       protocol=protocol, reason="second_factor")
            log.info("%s login refused from %s: wrong or used second-factor code", protocol, client_addr or "-")
            raise AuthenticationFailed("wrong or already used code")
        self.throttle.succeeded(attempt)
        if how == "recovery":
            self.audit("recovery_code_used", user_id=vfs.user.id, actor="user", client_addr=client_addr,
                       protocol=protocol, left=self.totp.recovery_left(vfs.user.id))
        return how

    def _login(self, name: str, password: str, client_addr, protocol, key_checked: bool = False):
        attempt = self.throttle.reserve(name, client_addr)
        try:
            with self.db.read() as c:
                row = uq.user_by_name(c, name)
                totp_on = row is not None and tq.enabled(c, row["id"])
            app = self.apps.find(row, password)         # an app password needs no bcrypt check
            ok = app is not None or self.accounts.verify(row, password)
        except BaseException:
            self.throttle.failed(attempt)
            raise
        # TOTP on: where no code can be asked, the password alone is refused (app passwords and keys are
        # not). Where one can be (the web pages), an app password is always refused: it is for devices, and
        # a session there may be reopened with the account's own keys by another worker, without its scope
        asks = protocol in ASKS_CODE
        second = ok and (app is not None if asks else totp_on and not key_checked and app is None)
        if not ok or row["status"] != "active" or second:
            self.throttle.failed(attempt)
            reason = ("unknown" if row is None else "password" if not ok else row["status"] if
                      row["status"] != "active" else "app_password_on_web" if asks else "second_factor_on")
            self.audit("login_failed", user_id=row["id"] if row else None, actor="user",
                       client_addr=client_addr, protocol=protocol, reason=reason)
            if reason == "second_factor_on":
                log.info("%s login refused from %s: the account has two-step sign-in on, so its password alone "
                         "is refused over %s; use an app password (or an SSH key)", protocol, client_addr or "-",
                         protocol)
            elif reason == "app_password_on_web":
                log.info("%s login refused from %s: app passwords are for devices and apps; the web pages take "
                         "the account's password (and a code with two-step sign-in on)", protocol,
                         client_addr or "-")
            else:
                log.info("%s login refused from %s: %s", protocol, client_addr or "-", reason)
            raise AuthenticationFailed(WRONG_LOGIN)
        if totp_on and app is None and not key_checked:
            self.throttle.first_step(attempt)         # the code's check trusts the pair, not the password's
        else:
            self.throttle.succeeded(attempt)
        user_key = self.apps.open(app, password) if app is not None else self.accounts.user_key(row, password)
        with self.db.write() as c:
            uq.update_user(c, row["id"], last_login_us=meta.now_us())
        return row, user_key, app, totp_on and app is None

    def _for_admin(self, name: str, password: str | None, purpose, reason, disclosure):
        with self.db.read() as c:
            row = uq.user_by_name(c, name)
            if row is None:
                raise NotFound(f"no account named {name!r}; see `coffer-admin user list`")
            detail = access.opening(c, row, purpose, reason, disclosure)
        if row["mode"] == "private":
            if password is None:
                raise Locked(f"account {row['name']!r} is private: only its own password opens its files; "
                             "give it on stdin (--password-stdin)")
            if not self.accounts.verify(row, password):
                raise AuthenticationFailed("wrong password for that account")
        user_key = self.accounts.user_key(row, password)
        with self.db.write() as c:
            access.record_opening(c, row, detail)
        return row, user_key

    def _by_key(self, name: str):
        with self.db.read() as c:
            row = uq.user_by_name(c, name)
        if row is None or row["status"] != "active":
            raise AuthenticationFailed("no such active account")
        if row["mode"] == "private":
            raise Locked(f"account {row['name']!r} is private: its files open only with its password, "
                         "a key alone cannot unlock them; log in with the password")
        return row, self.accounts.user_key(row)

    def account_generation(self, name: str) -> int | None:
        return self.accounts.generation(name)

    def audit(self, event: str, user_id=None, actor: str = "system", client_addr=None, **detail) -> None:
        """Record an event; of `client_addr` only what `[accounts]
        session_addresses` keeps."""
        with self.db.write() as c:
            uq.audit(c, event, user_id=user_id, actor=actor,
                     client_addr=kept_address(client_addr, self.cfg.accounts.session_addresses), detail=detail)

    def delete_blobs(self, names) -> None:
        """Delete the blobs of purged chunks (after the transaction that purged
        them); one that cannot be deleted now is left for gc."""
        try:
            self.blobs.delete_many(names)
        except Exception:
            log.warning("could not delete a purged chunk; gc will reclaim it")

    # -- store-wide jobs -----------------------------------------------------------------
    def gc(self, grace_seconds: int = 3600, progress=None) -> dict:
        """Reclaim what a crash or an aborted upload left: blobs no chunk refers
        to (older than the grace period, so uploads in flight are spared),
        and chunks no version refers to; then rewrite pack blobs that are at
        least half dead space (chunks purged since they were written)."""
        with self.db.write() as c:
            fixed = t.recount_refs(c)
            drop = t.zero_ref_chunks(c)
            t.delete_chunk_rows(c, [cid for cid, _ in drop])
            t.recompute_usage(c)
            live = t.live_bytes_by_blob(c)
        cutoff = time.time() - grace_seconds
        removed: set[str] = set()
        sparse = []
        for i, (name, mtime, size) in enumerate(self.blobs.entries()):
            if progress:
                progress(i)
            if name not in live:
                if mtime < cutoff:
                    self.blobs.delete(name)
                    removed.add(name)
            elif size - live[name] >= self.COMPACT_MIN_BYTES and live[name] * 2 <= size:
                sparse.append((name, size))
        for name in {name for _, name in drop} - removed - set(live):
            self.blobs.delete(name)           # the unreferenced chunks' blobs, young ones too
            removed.add(name)
        rewritten = reclaimed = 0
        for i, (name, size) in enumerate(sparse):
            if progress:
                progress(i, f"packs rewritten (of {len(sparse)})")
            kept = self._rewrite_pack(name)
            if kept is not None:
                rewritten += 1
                reclaimed += size - kept
        return {"orphan_blobs_removed": len(removed), "unreferenced_chunks": len(drop),
                "refcounts_fixed": fixed, "packs_rewritten": rewritten, "bytes_reclaimed": reclaimed}

    COMPACT_MIN_BYTES = 1024 * 1024       # dead space worth a rewrite

    def _rewrite_pack(self, name: str) -> int | None:
        """Copy the chunks still in use out of a pack blob into a new one,
        point their rows there, and delete the old blob (a reader that
        opened the file before finds the new location and goes on). Returns
        the bytes kept, or None when the blob is gone meanwhile."""
        with self.db.read() as c:
            locations = t.blob_locations(c, name)
        pack = self.blobs.open_pack()
        moves = []
        try:
            for offset, size in locations:
                moves.append((offset, *pack.append(self.blobs.get(name, offset, size))))
            pack.close()
            self.blobs.sync(pack.names)
        except BaseException as e:
            pack.discard()
            if isinstance(e, NotFound):
                return None
            raise
        # Twice: a chunk imported into another domain copies its source row's
        # location, and an import that held that row (locked) while the first
        # pass waited for it has committed by the second.
        for _ in range(2):
            with self.db.write() as c:
                for offset, new_name, new_offset in moves:
                    t.move_chunk(c, name, offset, new_name, new_offset)
        self.blobs.delete(name)
        return sum(size for _, size in locations)

    def fsck(self, user: str | None = None, password: str | None = None, progress=None) -> dict:
        """Read every chunk (of one account, or all) and check it: decrypt and
        re-hash where the keys are at hand (managed accounts, or a private one
        whose password was given), else compare the stored ciphertext with the
        hash kept in the metadata. Returns counts and the damaged files."""
        domains = {}
        with self.db.read() as c:
            rows = [uq.user_by_name(c, normalize_name(user))] if user else uq.all_users(c)
            if user and rows[0] is None:
                raise NotFound(f"no account named {normalize_name(user)!r}")
        for row in rows:
            if row["status"] == "erasing":      # keys already destroyed, data on its way out
                continue
            vfs = None
            try:
                if row["mode"] == "managed" or (password is not None and user):
                    vfs = self.open_account(row["name"], password if row["mode"] == "private" else None,
                                            how="admin", purpose="fsck")
            except CofferError:
                vfs = None
            with self.db.read() as c:
                owned = [uq.home_domain(c, row["id"])] + list(uq.owned_share_domains(c, row["id"]))
            for dom in owned:                  # the home and every folder the account shares
                domains[dom["id"]] = (row, vfs)
        checked = decrypted = 0
        damage: list[Damage] = []
        for did, (row, vfs) in domains.items():
            with self.db.read() as c:
                chunk_rows = [dict(r) for r in t.domain_chunks(c, did)]
            for r in chunk_rows:
                checked += 1
                if progress:
                    progress(checked)
                keys = None
                if vfs is not None:
                    with self.db.read() as c:
                        keys = vfs.keys.domain(c, did).keys
                problem = self._check_chunk(r, keys)
                if keys is not None and problem is None:
                    decrypted += 1
                if problem:
                    damage.append(Damage(r["id"], did, problem, self._files_of(r["id"], vfs)))
        return {"chunks_checked": checked, "chunks_decrypted": decrypted, "damaged": [
            {"account": domains[d.domain_id][0]["name"], "problem": d.problem, "files": d.files}
            for d in damage]}

    def _check_chunk(self, r, keys) -> str | None:
        try:
            stored = self.blobs.get(r["blob_name"], r["blob_offset"], r["stored_size"])
        except NotFound:
            return "missing from the blob store"
        if not crypto.stored_hash_matches(stored, r["stored_hash"]):
            return "stored bytes do not match their recorded hash (damaged or tampered with)"
        if keys is None:
            return None
        try:
            key = crypto.open_sealed(keys.wrap, bytes(r["wrapped_key"]), r["dedup_id"].encode())
            plain = crypto.decrypt_chunk(key, stored, r["plain_size"])
        except IntegrityError:
            return "does not decrypt (damaged or tampered with)"
        if not r["dedup_id"].startswith(_IMPORTED) and not crypto.chunk_id_matches(keys, plain, r["dedup_id"]):
            return "decrypts to content that does not match its id"
        return None

    def _files_of(self, chunk_id: int, vfs) -> list[str]:
        """Paths of files (current or old versions) that use a chunk, when
        the names can be decrypted; else node ids."""
        out = []
        with self.db.read() as c:
            for _vid, nid in t.chunk_users(c, chunk_id):
                if vfs is None:
                    out.append(f"node #{nid}")
                    continue
                out.append("/" + "/".join(vfs.res.owner_path(c, t.node(c, nid))))
        return sorted(set(out))
