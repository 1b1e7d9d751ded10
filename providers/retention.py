"""Which old versions a retention policy keeps. Pure functions, no I/O.

Staggered thinning by age, as the best peers do: every version of the last
`keep_all_minutes`, then the newest one per hour for `hourly_hours`, one per
day until `daily_days`, one per week after (until `max_age_days`), capped at
`max_versions` per file (the last hour's not counted) and at a share of the
quota for the old versions of each key domain. The current version is
always kept.
"""
from __future__ import annotations

from dataclasses import dataclass

US = 1_000_000
HOUR = 3600 * US
DAY = 24 * HOUR
WEEK = 7 * DAY


@dataclass(frozen=True)
class Policy:
    keep_all_minutes: int = 60
    hourly_hours: int = 24
    daily_days: int = 30
    weekly_after: bool = True
    max_versions: int = 100
    max_age_days: int = 365
    max_quota_share: float = 0.5
    min_age_days: int = 7
    trash_days: int = 30

    @classmethod
    def from_config(cls, r, override: dict | None = None) -> "Policy":
        values = {f: getattr(r, f) for f in cls.__dataclass_fields__}
        for k, v in (override or {}).items():
            if k in values:
                values[k] = type(values[k])(v)
        return cls(**values)


def thin(times_us: list[int], now_us: int, policy: Policy, cap: bool = True) -> set[int]:
    """Indexes of `times_us` (one file's versions, newest first; index 0 is
    the current version) that the policy keeps by age and count.

    `max_versions` counts the current version and the newest one per hour,
    day and week; the versions of the last `keep_all_minutes` do not count
    against it. So a burst of writes (a collaborator's hundred uploads) never
    pushes out older history: it costs at most an hour's worth of versions,
    which the hourly tier then thins. Without `cap` (a collaborator's write)
    nothing the age tiers keep is dropped."""
    keep = {0} if times_us else set()
    tiered: list[int] = []
    seen_buckets: set[tuple[str, int]] = set()
    for i, t in enumerate(times_us[1:], start=1):
        age = now_us - t
        if age > policy.max_age_days * DAY:
            continue
        if age <= policy.keep_all_minutes * 60 * US:
            keep.add(i)
            continue
        if age <= policy.keep_all_minutes * 60 * US + policy.hourly_hours * HOUR:
            bucket = ("h", t // HOUR)
        elif age <= policy.daily_days * DAY:
            bucket = ("d", t // DAY)
        elif policy.weekly_after:
            bucket = ("w", t // WEEK)
        else:
            continue
        if bucket not in seen_buckets:        # newest first: the first seen is the newest in its bucket
            seen_buckets.add(bucket)
            tiered.append(i)
    if cap:
        tiered = tiered[:max(0, policy.max_versions - 1)]
    return keep | set(tiered)


def over_share(old_versions: list[tuple[int, int, int]], limit: int | None, policy: Policy) -> list[int]:
    """Given the kept non-current versions of one key domain as (version id,
    created_us, stored bytes), the ids to drop (oldest first) so that they take
    at most `max_quota_share` of the quota."""
    if not limit:
        return []
    budget = int(limit * policy.max_quota_share)
    total = sum(b for _, _, b in old_versions)
    drop = []
    for vid, _, b in sorted(old_versions, key=lambda v: v[1]):
        if total <= budget:
            break
        drop.append(vid)
        total -= b
    return drop
