"""When to try again: exponential backoff with jitter, `Retry-After` honoured. A value, no I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """Delay before attempt n+1 after n failures: base·2ⁿ⁻¹ capped at `cap`, half of it jittered."""

    base: timedelta
    cap: timedelta

    def delay(
        self, failures: int, *, retry_after: float | None = None, rng: random.Random | None = None
    ) -> timedelta:
        exponent = min(max(failures, 1) - 1, 32)
        ceiling = min(self.cap.total_seconds(), self.base.total_seconds() * 2**exponent)
        # Equal jitter: never less than half the backoff, so a crowd of retries spreads out
        # without any of them coming back immediately.
        seconds = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
        if retry_after is not None:
            seconds = max(seconds, min(retry_after, self.cap.total_seconds()))
        return timedelta(seconds=seconds)
