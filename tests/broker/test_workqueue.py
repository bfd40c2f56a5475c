"""The one keyed work queue (used by the syncer, the lab's controllers and kubelet, Lighthouse and Globalnet)."""

from __future__ import annotations

import threading
import time

from submariner.broker.kube.workqueue import WorkQueue, run_workers


def test_dedups_and_serialises() -> None:
    q: WorkQueue[tuple[str, str]] = WorkQueue()
    q.add(("ns", "a"))
    q.add(("ns", "a"))
    q.add(("ns", "b"))
    assert len(q) == 2
    assert q.get() == ("ns", "a")
    q.add(("ns", "a"))  # re-added while processing: comes back only after done()
    assert q.get() == ("ns", "b")
    assert q.get_batch(timeout=0.01) == []  # "a" is processing, so not handed out again yet
    q.done(("ns", "b"))
    q.done(("ns", "a"))
    assert q.get() == ("ns", "a")
    q.add_after(("ns", "c"), 0.05)
    q.done(("ns", "a"))
    assert q.get() == ("ns", "c")
    q.done(("ns", "c"))
    q.shutdown()
    assert q.get() is None
    q.add(("ns", "d"))  # ignored after shutdown
    assert len(q) == 0


def test_idle_busy_and_delayed() -> None:
    """`busy` ignores delayed re-checks (lab controllers' steady state); `idle` does not (the syncer's)."""
    q: WorkQueue[str] = WorkQueue()
    assert q.idle() and not q.busy()
    q.add_after("k", 0.05)
    assert not q.idle() and not q.busy()
    start = time.monotonic()
    assert q.get() == "k"
    assert time.monotonic() - start >= 0.04
    assert q.busy() and not q.idle()
    q.done("k")
    assert q.idle() and not q.busy()
    q.add_after("now", 0)  # no delay is a plain add
    assert q.busy()


def test_retry_backs_off_per_key_until_forget() -> None:
    q: WorkQueue[str] = WorkQueue(backoff=(0.01, 0.04))
    delays = [q.retry("a") for _ in range(4)]
    assert q.requeues("a") == 4 and q.requeues("b") == 0
    assert 0.009 <= delays[0] <= 0.011 and 0.018 <= delays[1] <= 0.022
    assert all(0.036 <= d <= 0.044 for d in delays[2:])  # capped (with +-10% jitter)
    q.forget("a")
    assert q.requeues("a") == 0
    assert q.retry("a") <= 0.011  # starts over
    assert q.get_batch(timeout=1.0) == ["a"]  # the delayed adds collapse into one


def test_never_two_workers_on_one_key() -> None:
    q: WorkQueue[int] = WorkQueue()
    lock = threading.Lock()
    running: set[int] = set()
    seen: list[int] = []
    clash = threading.Event()

    def handle(key: int) -> None:
        with lock:
            if key in running:
                clash.set()
            running.add(key)
            seen.append(key)
        time.sleep(0.002)
        with lock:
            running.discard(key)

    threads = run_workers(q, handle, 4, "test-wq")
    for _ in range(50):
        for k in range(3):
            q.add(k)
        time.sleep(0.001)
    deadline = time.monotonic() + 5
    while not q.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    q.shutdown()
    for t in threads:
        t.join(2)
    assert q.idle() and not clash.is_set()
    assert set(seen) == {0, 1, 2}
    assert len(seen) < 150  # adds while queued were collapsed
