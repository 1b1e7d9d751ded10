"""The metadata schema (SQLAlchemy Core). Migrations live in providers/migrations.

Times are integer microseconds since the epoch (UTC). Names, paths, property
values, lock details and content hashes are stored only encrypted; lookups go
through keyed hashes (see providers/crypto.py).
"""
from sqlalchemy import (BigInteger, Boolean, Column, ForeignKey, Index, Integer, JSON, LargeBinary,
                        MetaData, String, Table, Text, UniqueConstraint, false, text)

metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s", "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s"})

ID = BigInteger().with_variant(Integer, "sqlite")   # SQLite autoincrements INTEGER PRIMARY KEY only

users = Table(
    "users", metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("first_name", String(200), nullable=False, default=""),
    Column("last_name", String(200), nullable=False, default=""),
    Column("email", String(320), nullable=False, default=""),
    Column("status", String(16), nullable=False, default="active"),   # active | disabled | cancelled
    Column("plan", String(64), nullable=False),
    Column("quota_bytes", BigInteger, nullable=True),                 # explicit quota; NULL = the plan's
    Column("mode", String(16), nullable=False),                       # private | managed
    Column("created_us", BigInteger, nullable=False),
    Column("last_login_us", BigInteger, nullable=True),
    Column("last_seen_us", BigInteger, nullable=True),                # last session activity; outlives
                                                                      # the records (breach notices)
    Column("consent_news", Boolean, nullable=False, default=False),
    Column("consent_changed_us", BigInteger, nullable=True),
    Column("consent_how", String(32), nullable=True),                 # signup | admin | link (providers/consent.py)
    Column("erase_after_us", BigInteger, nullable=True),              # set by cancel
    Column("password_hash", LargeBinary, nullable=False),             # bcrypt, for verification
    Column("kdf_salt", LargeBinary, nullable=False),
    Column("kdf_params", JSON, nullable=False),
    Column("wrapped_user_key", LargeBinary, nullable=False),          # by password KEK or master key
    Column("recovery_wrapped_key", LargeBinary, nullable=True),       # by a one-time recovery code
    Column("public_key", LargeBinary, nullable=False),                # X25519
    Column("wrapped_private_key", LargeBinary, nullable=False),       # by the user key
    Column("settings", JSON, nullable=False, default=dict),           # retention override, exclusions
    Column("credential_gen", Integer, nullable=False, default=0),     # bumped on passwd/disable
    Column("sealing", Integer, nullable=False, default=2, server_default="1"),  # 2: its keys bound to their rows
)

domains = Table(
    "domains", metadata,
    Column("id", ID, primary_key=True),
    Column("owner_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),                       # home | share
    Column("root_node_id", BigInteger, nullable=True),
    Column("used_bytes", BigInteger, nullable=False, default=0),
    Column("created_us", BigInteger, nullable=False),
    Column("key_gen", Integer, nullable=False, default=1),
    Column("sealing", Integer, nullable=False, default=2, server_default="1"),  # 2: every value bound to its row
)

domain_members = Table(
    "domain_members", metadata,
    Column("domain_id", ForeignKey("domains.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
    Column("key_gen", Integer, primary_key=True, default=1),
    Column("permission", String(8), nullable=False),                  # owner | read | write
    Column("wrapped_key", LargeBinary, nullable=True),                # by the member's user key
    Column("sealed_key", LargeBinary, nullable=True),                 # to the member's X25519 key
    Column("mount_enc", LargeBinary, nullable=True),                  # where a share appears, sealed
    Column("created_us", BigInteger, nullable=False),
)

nodes = Table(
    "nodes", metadata,
    Column("id", ID, primary_key=True),
    Column("domain_id", ForeignKey("domains.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("parent_id", BigInteger, nullable=True, index=True),
    Column("name_enc", LargeBinary, nullable=False),
    Column("name_lookup", String(40), nullable=False),
    Column("kind", String(1), nullable=False),                        # d | f
    Column("mode", Integer, nullable=True),                           # permission bits as reported
    Column("created_us", BigInteger, nullable=False),
    Column("mtime_us", BigInteger, nullable=False),
    Column("changed_us", BigInteger, nullable=False),
    Column("version_id", BigInteger, nullable=True),
    Column("size", BigInteger, nullable=False, default=0),
    Column("trashed_us", BigInteger, nullable=True),                  # set on the root of a deleted subtree
    Column("trash_path_enc", LargeBinary, nullable=True),             # its path when deleted
    Column("excluded", Boolean, nullable=False, default=False),       # keeps no history
    Index("uq_nodes_live_name", "parent_id", "name_lookup", unique=True,
          sqlite_where=text("trashed_us IS NULL"), postgresql_where=text("trashed_us IS NULL")),
    Index("ix_nodes_trash", "domain_id", "trashed_us"),
)

node_history = Table(   # where a node was before a move or rename, for snapshot views
    "node_history", metadata,
    Column("id", ID, primary_key=True),
    Column("node_id", ForeignKey("nodes.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("parent_id", BigInteger, nullable=True, index=True),
    Column("name_enc", LargeBinary, nullable=False),
    Column("name_lookup", String(40), nullable=True),                 # the name's lookup then (NULL: before binding)
    Column("until_us", BigInteger, nullable=False),
)

versions = Table(
    "versions", metadata,
    Column("id", ID, primary_key=True),
    Column("node_id", ForeignKey("nodes.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("domain_id", BigInteger, nullable=False, index=True),
    Column("size", BigInteger, nullable=False),
    Column("stored_bytes", BigInteger, nullable=False, default=0),    # new chunks it brought
    Column("created_us", BigInteger, nullable=False),
    Column("mtime_us", BigInteger, nullable=False),
    Column("author_id", BigInteger, nullable=True),
    Column("hashes_enc", LargeBinary, nullable=False),                # md5/sha1/sha256, sealed
)

chunks = Table(
    "chunks", metadata,
    Column("id", ID, primary_key=True),
    Column("domain_id", ForeignKey("domains.id", ondelete="CASCADE"), nullable=False),
    Column("dedup_id", String(64), nullable=False),
    Column("blob_name", String(64), nullable=False, index=True),
    Column("blob_offset", BigInteger, nullable=False, default=0, server_default="0"),  # in a pack
    Column("plain_size", Integer, nullable=False),
    Column("stored_size", Integer, nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("stored_hash", String(80), nullable=False),   # of the ciphertext, for fsck: blake3:<hex> (or SHA-256 hex)
    Column("refcount", Integer, nullable=False, default=0),
    Column("created_us", BigInteger, nullable=False),
    UniqueConstraint("domain_id", "dedup_id", name="uq_chunks_domain_dedup"),
)

small_blobs = Table(   # stored chunks of small files, kept in the database instead of the blob store
    "small_blobs", metadata,
    Column("name", String(64), primary_key=True),          # what chunks.blob_name holds (providers/small_blobs.py)
    Column("data", LargeBinary, nullable=False),           # the encrypted chunk, as a blob would hold it
    Column("created_us", BigInteger, nullable=False),
)

version_chunks = Table(
    "version_chunks", metadata,
    Column("version_id", ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("chunk_id", ForeignKey("chunks.id"), nullable=False, index=True),
)

dead_props = Table(   # WebDAV dead properties, encrypted like names
    "dead_props", metadata,
    Column("node_id", ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
    Column("name_lookup", String(40), primary_key=True),
    Column("name_enc", LargeBinary, nullable=False),
    Column("value_enc", LargeBinary, nullable=False),
)

leases = Table(   # who runs a periodic job now (one process among all nodes), and its timetable
    "leases", metadata,
    Column("name", String(32), primary_key=True),
    Column("holder", String(128), nullable=True),
    Column("expires", BigInteger, nullable=False, default=0),        # on the holders' clock, seconds
    Column("state", JSON, nullable=True),                           # the job's own timetable
)

locks = Table(   # WebDAV locks, shared by every server node
    "locks", metadata,
    Column("token", String(100), primary_key=True),
    Column("domain_id", ForeignKey("domains.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("user_id", BigInteger, nullable=True),
    Column("root_lookup", String(64), nullable=False, index=True),
    Column("expires_us", BigInteger, nullable=False),
    Column("data_enc", LargeBinary, nullable=False),
)

ssh_keys = Table(
    "ssh_keys", metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("fingerprint", String(100), nullable=False),
    Column("public_key", Text, nullable=False),
    Column("comment", String(200), nullable=False, default=""),
    Column("created_us", BigInteger, nullable=False),
    UniqueConstraint("user_id", "fingerprint", name="uq_ssh_keys_user_fp"),
)

app_passwords = Table(   # one per device or job: each wraps the user key under its own secret
    "app_passwords", metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("label", String(64), nullable=False),
    Column("scope", String(16), nullable=False),                      # full | read-only | backup
    Column("lookup", String(64), nullable=False, unique=True),        # keyed hash of the secret
    Column("kdf_salt", LargeBinary, nullable=False),
    Column("kdf_params", JSON, nullable=False),
    Column("wrapped_user_key", LargeBinary, nullable=False),          # by Argon2id(secret), bound to the row
    Column("created_us", BigInteger, nullable=False),
    Column("last_used_us", BigInteger, nullable=True),
    UniqueConstraint("user_id", "label", name="uq_app_passwords_user_label"),
)

change_guard = Table(   # how many existing files an account's credentials changed lately (mass-change guard)
    "change_guard", metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("window_start_us", BigInteger, nullable=False),
    Column("changes", Integer, nullable=False, default=0),           # overwrites, deletions, renames in it
    Column("checked_at", Integer, nullable=False, default=0),         # `changes` when files were last counted
    Column("hold_until_us", BigInteger, nullable=True),               # nothing of the account is dropped before
    Column("hold_from_us", BigInteger, nullable=True),                # since when it holds
)

session_records = Table(
    "session_records", metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True),
    Column("protocol", String(16), nullable=False),
    Column("client_addr", String(64), nullable=True),
    Column("started_us", BigInteger, nullable=False, index=True),
    Column("ended_us", BigInteger, nullable=True),
    Column("seen_us", BigInteger, nullable=True),                     # last written while open
    Column("bytes_in", BigInteger, nullable=False, default=0),
    Column("bytes_out", BigInteger, nullable=False, default=0),
    Column("requests", Integer, nullable=False, default=0),
    Column("node", String(128), nullable=True),                       # the node and process writing it
    Column("pid", Integer, nullable=True),
    Column("cut_short", Boolean, nullable=False, default=False, server_default=false()),  # its process died
    Index("ix_session_records_open", "node", "pid", sqlite_where=text("ended_us IS NULL"),
          postgresql_where=text("ended_us IS NULL")),
)

audit_events = Table(
    "audit_events", metadata,
    Column("id", ID, primary_key=True),
    Column("at_us", BigInteger, nullable=False, index=True),
    Column("user_id", ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True),
    Column("actor", String(64), nullable=False),                      # admin | user | system
    Column("event", String(64), nullable=False),
    Column("client_addr", String(64), nullable=True),
    Column("detail", JSON, nullable=False, default=dict),             # never personal data
)

throttle = Table(   # login guard records, shared by every server node and process
    "throttle", metadata,
    Column("key", String(64), primary_key=True),                      # keyed hash: address, account, or both
    Column("account", String(64), nullable=True, index=True),         # the account's key (erasure deletes by it)
    Column("failures", Integer, nullable=False, default=0),           # in the window, reservations included
    Column("pending", Integer, nullable=False, default=0),            # reserved attempts not yet answered
    Column("window_start_us", BigInteger, nullable=False),
    Column("blocked_until_us", BigInteger, nullable=True),            # address ban, or a pair's next guess
    Column("bans", Integer, nullable=False, default=0),               # address bans so far: each lasts longer
    Column("trusted_until_us", BigInteger, nullable=True),            # pair: a success from here until then
    Column("updated_us", BigInteger, nullable=False),
)

web_sessions = Table(   # signed-in browsers (server/web.py): only a hash of each cookie is kept
    "web_sessions", metadata,
    Column("id", ID, primary_key=True),
    Column("lookup", String(64), nullable=False, unique=True),         # SHA-256 of the cookie's value
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("credential_gen", Integer, nullable=False),                # the account's at sign-in
    Column("created_us", BigInteger, nullable=False),
    Column("used_us", BigInteger, nullable=False),                    # last request, written at most once a minute
    Column("expires_us", BigInteger, nullable=False, index=True),     # the latest it may live, however used
)

totp = Table(   # a TOTP second factor (providers/totp.py): the secret sealed with the user key
    "totp", metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("secret_enc", LargeBinary, nullable=False),                # bound to the row
    Column("created_us", BigInteger, nullable=False),
    Column("confirmed_us", BigInteger, nullable=True),                # NULL: enrolment not yet confirmed
    Column("last_step", BigInteger, nullable=True),                   # the last time step accepted (no replay)
)

totp_recovery = Table(   # single-use recovery codes of a TOTP second factor, as keyed hashes
    "totp_recovery", metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("lookup", String(64), primary_key=True),
)

web_signins = Table(   # web sign-ins whose password checked out, waiting for their TOTP code (any worker)
    "web_signins", metadata,
    Column("lookup", String(64), primary_key=True),                   # SHA-256 of the browser's cookie value
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("credential_gen", Integer, nullable=False),                # the account's when the password checked out
    Column("wrapped_key", LargeBinary, nullable=False),               # the user key, under a key from the cookie
    Column("expires_us", BigInteger, nullable=False, index=True),
)

receipts = Table(
    "receipts", metadata,
    Column("id", ID, primary_key=True),
    Column("at_us", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("body", JSON, nullable=False),
)
