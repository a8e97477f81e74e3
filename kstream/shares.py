"""Work-conserving shares of one global rate: the claims protocol behind :mod:`kstream.limits`.

Pure logic (times are arguments), so it is tested on a fake clock. Every member of a service
publishes a *claim* (the calls per second it wants: ``inf`` while its callers wait, else a
little above what it uses, 0 when idle) to one partition of ``{ns}.limits``, and follows that
partition. Its share is its max-min fair part of the limit (:func:`fair_share`) given the
claims it has read. Three rules keep the sum of the shares at or below the limit without any
acknowledgement between members (``D`` = :attr:`Timing.settle`, ``G`` = :attr:`Timing.stall`):

1. **A view is used at most D seconds.** Reading one's own record back means every record
   appended before it has been read (one partition is one order). So the claims read when
   record ``k`` comes back are *fresh as of* ``sent(k)``; the share computed from them may be
   used until ``sent(k) + D``, and then only a newer view counts. A member that cannot reach
   the broker has no share after D seconds.
2. **A raised claim counts D seconds after it was acknowledged**; a lowered one at once. A
   member uses ``min`` of the claims it published since its *anchor* (its last record
   acknowledged at least D ago) and of what it wants now. Any other member's view used now is
   fresh as of less than D ago, so it holds the anchor or a later record of this member: a claim
   at least as high as the one used here, hence a share no higher (:func:`fair_share` is
   monotone). So the shares in use add up to at most the limit.
3. **A member silent for long is forgotten** (:attr:`Timing.expire` after its last record was
   read), so a killed member's claim frees up. The member itself stops first: its anchor must
   have been sent within ``D + G`` seconds, and its follower must have been reading at least G
   seconds before the anchor was sent (else a newcomer might not have read it); ``expire`` is
   at least ``D + G``.

Durations are measured on each member's own monotonic clock; no clocks are compared. The price
is latency, not rate: a member that gets work waits about D before it calls, while the others
keep the share they had until they read its claim.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from kstream.errors import ConfigError

INF = math.inf


@dataclass(frozen=True)
class Timing:
    """The protocol's periods, in seconds (see the module docstring for what each guarantees)."""

    heartbeat: float = 0.1
    """A member with a claim above 0 publishes it this often (also how soon a new claim is out)."""
    settle: float = 0.8
    """D: how long a view may be used; how long a raised claim waits after its acknowledgement.
    A round trip (publish, acknowledgement, reading back) slower than D - heartbeat leaves the
    member without a share until the next one comes back: on a loaded machine 0.5 s was too
    short (shares at 0 for a few tenths of a second, a few times a minute)."""
    stall: float = 0.7
    """G: slack for a member's own anchor (an acknowledgement may take up to G - heartbeat) and
    for a newcomer's follower (see rule 3)."""
    expire: float = 1.5
    """Others forget a member whose last record was read this long ago (at least D + G)."""

    def __post_init__(self) -> None:
        if self.expire < self.settle + self.stall:
            raise ConfigError(f"rate limit timing: expire ({self.expire}) must be at least settle + stall")


def fair_share(limit: float, own: float, others: Iterable[float]) -> float:
    """The max-min fair part of ``limit`` for a claim ``own`` beside the claims ``others``.

    Water filling: claims below the level get what they claim, the rest split what is left
    equally. Raising any other claim never raises the result (what rule 2 relies on).
    """
    claims = sorted(c for c in others if c > 0)
    left, n = limit, len(claims) + 1
    for c in claims:
        level = left / n
        if own <= level:
            return max(0.0, own)
        if c >= level:
            return min(own, level)
        left, n = left - c, n - 1
    return max(0.0, min(own, left))


@dataclass
class _Sent:
    seq: int
    claim: float
    sent: float
    acked: float | None = None


@dataclass
class _View:
    fresh: float
    """The send time of the own record whose reading back made this view."""
    claims: list[float]


@dataclass
class ClaimBook:
    """One member's side of the protocol: what it published, what it read, the share it may use."""

    member: str
    limit: float
    timing: Timing = field(default_factory=Timing)
    reading_since: float | None = None
    """When the first own record was read back: the follower surely reads from there on."""
    _own: list[_Sent] = field(default_factory=list)
    _others: dict[str, tuple[float, float]] = field(default_factory=dict)  # member -> (claim, read at)
    _views: list[_View] = field(default_factory=list)

    # -- the own records --------------------------------------------------------------------

    def sent(self, seq: int, claim: float, at: float) -> None:
        """Record ``seq`` with ``claim`` is about to be produced (``at`` is taken before)."""
        self._own.append(_Sent(seq, claim, at))
        if len(self._own) > 1000:  # nothing acknowledged for a long while: none of these can anchor
            del self._own[:500]

    def acked(self, seq: int, at: float) -> None:
        """The broker acknowledged record ``seq`` (``at`` is taken after)."""
        for rec in self._own:
            if rec.seq == seq:
                rec.acked = at

    # -- reading the partition --------------------------------------------------------------

    def received(self, member: str, seq: int, claim: float, at: float) -> None:
        """A record read from the partition, in order (``at`` is taken after it was read)."""
        if member != self.member:
            if claim > 0:
                self._others[member] = (claim, at)
            else:
                self._others.pop(member, None)
            return
        mine = next((r for r in self._own if r.seq == seq), None)
        if mine is None:
            return  # older than anything kept: nothing to learn
        if self.reading_since is None:
            self.reading_since = at
        self._views = [v for v in self._views if v.fresh > at - self.timing.settle]
        expire = self.timing.expire
        for name, (_, read_at) in list(self._others.items()):
            if at - read_at > expire:
                del self._others[name]
        self._views.append(_View(mine.sent, [c for c, _ in self._others.values()]))

    # -- the share --------------------------------------------------------------------------

    def share(self, want: float, now: float) -> float:
        """The calls per second this member may make at ``now`` while it wants ``want``."""
        use = self.usable_claim(want, now)
        if use <= 0:
            return 0.0
        horizon = now - self.timing.settle
        self._views = [v for v in self._views if v.fresh > horizon]
        return max((fair_share(self.limit, use, v.claims) for v in self._views), default=0.0)

    def usable_claim(self, want: float, now: float) -> float:
        """The claim this member may act on now (rules 2 and 3); 0 when it may not call."""
        t = self.timing
        anchor = None
        for i, rec in enumerate(self._own):
            if rec.acked is not None and rec.acked <= now - t.settle:
                anchor = i
        if anchor is None or self.reading_since is None:
            return 0.0
        del self._own[:anchor]  # nothing before the anchor matters any more
        first = self._own[0]
        if first.sent < self.reading_since + t.stall or first.sent <= now - t.settle - t.stall:
            return 0.0
        return min(want, *(r.claim for r in self._own))

    def others(self) -> int:
        """Members with a claim above 0 in the latest reading (for logs and tests)."""
        return len(self._others)
