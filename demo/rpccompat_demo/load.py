"""Continuous client load, counted call by call."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any


def expect(ok: bool, method_name: str, got: Any) -> None:
    if not ok:
        raise AssertionError(f"{method_name} answered wrongly: {got!r}")


class CountingClient:
    """Wraps an RPC client; counts calls and times each one.

    A failure keeps its cause and when the call was in flight (wall clock),
    so a harness can tell whether an injected fault explains it; every call
    keeps its start and duration, for latency per phase of an upgrade.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.calls = 0
        self.failures: list[dict[str, Any]] = []
        self.timings: list[tuple[float, float]] = []

    @property
    def failed_calls(self) -> int:
        return len(self.failures)

    def can_send(self, method: str, arg: str | None = None) -> bool:
        return self._client.can_send(method, arg)

    def call(self, context: Any, method: str, **kwargs: Any) -> Any:
        with self._lock:
            self.calls += 1
        started, clock = time.time(), time.monotonic()
        try:
            result = self._client.call(context, method, **kwargs)
        except Exception as e:
            self.record_failure(f"{method}: {type(e).__name__}: {e}", started)
            raise
        with self._lock:
            self.timings.append((started, time.monotonic() - clock))
        return result

    def record_failure(self, cause: str, started: float | None = None) -> None:
        """``started`` is when the failed call was sent (default: now)."""
        ended = time.time()
        failure = {"cause": cause, "started": started or ended, "ended": ended}
        with self._lock:
            self.failures.append(failure)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": self.calls,
                "failed_calls": len(self.failures),
                "failures": list(self.failures),
            }


class Ledger:
    """What each volume a client wrote must look like at the end.

    A write is recorded only once its call returned; while a write is in
    flight the row is marked unsure (a call that failed may or may not have
    happened), and unsure rows are left out of the final check.
    """

    UNSURE = "unsure"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, Any] = {}

    def writing(self, volume_id: str) -> None:
        self._set(volume_id, self.UNSURE)

    def wrote(self, volume_id: str, **values: Any) -> None:
        self._set(volume_id, values)

    def deleted(self, volume_id: str) -> None:
        self._set(volume_id, None)

    def _set(self, volume_id: str, value: Any) -> None:
        with self._lock:
            self._rows[volume_id] = value

    def expected(self) -> dict[str, dict[str, Any] | None]:
        """Each sure row's values, or None for a row that must be gone."""
        with self._lock:
            return {k: v for k, v in self._rows.items() if v != self.UNSURE}


class Load:
    """Threads calling ``exercise(client, context, rng, ledger)`` until stopped."""

    def __init__(
        self,
        client: Any,
        exercise: Callable[[Any, dict, random.Random, Ledger], int],
        *,
        threads: int = 2,
        seed: int = 0,
        max_calls: int | None = None,
    ) -> None:
        self.client = CountingClient(client)
        self.ledger = Ledger()
        self._exercise = exercise
        self._stop = threading.Event()
        self._max_calls = max_calls
        self._threads = [
            threading.Thread(target=self._run, args=(seed + i,), daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            if self._max_calls is not None and self.client.calls >= self._max_calls:
                return
            try:
                context = {"request_id": f"req-{seed}"}
                self._exercise(self.client, context, rng, self.ledger)
            except AssertionError as e:
                self.client.record_failure(str(e))
            except Exception:
                pass  # counted by CountingClient

    @property
    def finished(self) -> bool:
        """All threads are done (they reached ``max_calls``)."""
        return not any(thread.is_alive() for thread in self._threads)

    def stop(self) -> dict[str, Any]:
        """Stop calling; the counters, each call's timing and the sure rows."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return {
            **self.client.stats(),
            "timings": self.client.timings,
            "rows": self.ledger.expected(),
        }
