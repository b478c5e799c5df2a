"""The refresh rule of docs/sdk.md as a state machine: when to fetch a
token, when to wait, which token to send.

- no token, a refused token, or the refresh time reached: fetch;
- a cell refused the token (wrong-cell signal, 401, unreachable): drop it
  (:meth:`Refresher.refused`) and fetch a new one;
- fetches that do not lead to being served are spaced by a bounded
  exponential :class:`Backoff` with jitter; one fetch after being served is
  immediate;
- a token is refreshed ``refresh_lead_ms(lifetime)`` before it expires;
  while refreshing fails, the old token is used until it expires.

Lifetimes are measured from receipt with the issuer's ``exp - iat``, never
against the device's wall clock. Time is passed in, in **milliseconds on a
monotonic clock** (:func:`monotonic_ms`), so tests drive the machine with a
fake clock.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Optional

from .claims import TokenClaims, read_claims

_M64 = (1 << 64) - 1
_MAX_ATTEMPTS = 2**32 - 1


def monotonic_ms() -> int:
    """Milliseconds on the monotonic clock: the time the state machine takes."""
    return time.monotonic_ns() // 1_000_000


class SplitMix64:
    """The seeded random source of the jitter (the same numbers in every
    cellns SDK, so backoff sequences are test vectors)."""

    def __init__(self, seed: int) -> None:
        self.state = seed & _M64

    def next(self) -> int:
        """The next 64-bit output."""
        self.state = (self.state + 0x9E3779B97F4A7C15) & _M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return z ^ (z >> 31)

    def jitter(self) -> float:
        """A double in ``[0, 1)`` from the top 53 bits of :meth:`next`."""
        return (self.next() >> 11) * 2.0**-53


@dataclass(frozen=True)
class Backoff:
    """Bounded exponential backoff with jitter: after ``n`` unproductive
    fetches the next waits ``d/2 + jitter * d/2`` (whole ms),
    ``d = min(max_ms, initial_ms * 2^(n-1))``."""

    initial_ms: int = 100
    max_ms: int = 5000

    def __post_init__(self) -> None:
        for name in ("initial_ms", "max_ms"):
            v = getattr(self, name)
            if type(v) is not int or v < 0:
                raise ValueError(f"Backoff.{name} must be a non-negative int, not {v!r}")

    def delay_ms(self, attempt: int, jitter: float) -> int:
        """The wait after ``attempt`` unproductive fetches (0: none);
        ``jitter`` in ``[0, 1]`` (clamped) picks the point in ``[d/2, d]``."""
        if attempt <= 0:
            return 0
        # A shift of 64 already exceeds any sane cap; it keeps huge attempt
        # counts from building huge integers.
        d = min(self.max_ms, self.initial_ms << min(attempt - 1, 64))
        half = d // 2
        return half + int(half * min(max(jitter, 0.0), 1.0))


def refresh_lead_ms(lifetime_s: int) -> int:
    """How long before expiry to refresh:
    ``min(max(L/5, 1 s), 60 s, L/2)``: a 15-minute token a minute early,
    a 10-second one two seconds early."""
    life = lifetime_s * 1000
    return min(max(life // 5, 1000), 60_000, life // 2)


@dataclass(frozen=True)
class CurrentToken:
    """The token a :class:`Refresher` holds."""

    #: The token, to send as ``Authorization: Bearer ...``.
    token: str
    #: Its routing claims: connect to ``claims.cell``.
    claims: TokenClaims
    #: When it was received (ms, monotonic).
    received_ms: int
    #: When to fetch the next one.
    refresh_at_ms: int
    #: When it expires (the issuer's ``exp - iat`` after receipt).
    expires_at_ms: int
    #: The fetch attempt it came from.
    attempt: int


FETCH = "fetch"
SLEEP = "sleep"
SEND = "send"


@dataclass(frozen=True)
class Action:
    """What to do next: ``kind`` is ``"fetch"`` (get a token now and report
    :meth:`Refresher.fetched` or :meth:`Refresher.fetch_failed`), ``"sleep"``
    (until ``until_ms``) or ``"send"`` (use ``current``, then report
    :meth:`Refresher.served` or :meth:`Refresher.refused`)."""

    kind: str
    until_ms: Optional[int] = None
    current: Optional[CurrentToken] = None


class Refresher:
    """The refresh rule (see the module docs). Not thread-safe: one per
    client, driven by one task, or guarded by the caller's lock."""

    def __init__(self, backoff: Optional[Backoff] = None, seed: Optional[int] = None) -> None:
        self.backoff = backoff or Backoff()
        self._rng = SplitMix64(secrets.randbits(64) if seed is None else seed)
        self._current: Optional[CurrentToken] = None
        self._unproductive = 0
        self._attempt = 0
        self._gate: Optional[int] = None

    def next(self, now_ms: int) -> Action:
        """What to do at ``now_ms``. A ``fetch`` is counted when returned."""
        c = self._current
        usable = c is not None and now_ms < c.expires_at_ms
        due = c is None or now_ms >= c.refresh_at_ms
        if due:
            if self._gate is not None and now_ms < self._gate:
                if not usable:
                    return Action(SLEEP, until_ms=self._gate)
            else:
                self._unproductive = min(self._unproductive + 1, _MAX_ATTEMPTS)
                self._attempt += 1
                delay = self.backoff.delay_ms(self._unproductive, self._rng.jitter())
                self._gate = now_ms + delay
                return Action(FETCH)
        if c is None:  # unreachable: no token means due and not usable
            return Action(SLEEP, until_ms=self._gate if self._gate is not None else now_ms)
        return Action(SEND, current=c)

    def fetched(self, now_ms: int, token: str) -> CurrentToken:
        """The auth service returned ``token``: it replaces the current one.
        An unreadable token raises :class:`~cellns_client.ClaimsError` and
        counts as a failed fetch."""
        claims = read_claims(token)
        life = claims.lifetime * 1000
        self._current = CurrentToken(
            token=token.strip(),
            claims=claims,
            received_ms=now_ms,
            refresh_at_ms=now_ms + life - refresh_lead_ms(claims.lifetime),
            expires_at_ms=now_ms + life,
            attempt=self._attempt,
        )
        return self._current

    def fetch_failed(self, now_ms: int) -> None:
        """The fetch failed: the current token, if still valid, stays in
        use; the next fetch waits for the backoff."""

    def served(self, now_ms: int) -> None:
        """A cell served a request made with the current token. When that
        token is the latest fetched, the backoff starts over."""
        if self._current is not None and self._current.attempt == self._attempt:
            self._unproductive = 0
            self._gate = None

    def refused(self, now_ms: int) -> None:
        """The cell refused the current token (wrong-cell signal, 401) or
        could not be reached: the token is dropped."""
        self._current = None

    @property
    def current(self) -> Optional[CurrentToken]:
        """The token in use, if any."""
        return self._current

    @property
    def unproductive_fetches(self) -> int:
        """Fetch attempts since a freshly fetched token was last served."""
        return self._unproductive
