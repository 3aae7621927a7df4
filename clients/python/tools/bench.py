#!/usr/bin/env python3
"""Cache-hit token requests through the Python client: requests per second and latency.

    clients/python/tools/bench.py --brokers tcp://127.0.0.1:5555 --integration demo:acct1 \\
        [--threads 1,4,16] [--seconds 5]

The integration must exist (scripts/run-local imports demo:acct1). Keys come from the environment
as for ferrulectl (FERRULE_CURVE_SECRET_KEY_FILE and FERRULE_BROKER_PUBLIC_KEY_FILE, or
FERRULE_ALLOW_PLAINTEXT=1). One Client is shared by all
threads, as a service would share it. Prints one line per thread count; tokens are never printed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ferrule  # noqa: E402


def run(client: ferrule.Client, integration: str, threads: int, seconds: float) -> None:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    stop = time.monotonic() + seconds

    def worker(k: int) -> None:
        mine = latencies[k]
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                client.token(integration)
            except ferrule.FerruleError:
                errors[k] += 1
                continue
            mine.append(time.perf_counter() - t)
    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    start = time.monotonic()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - start
    all_ms = sorted(x * 1000 for xs in latencies for x in xs)
    if not all_ms:
        print(f"threads {threads:3}: no successful request ({sum(errors)} errors)")
        return
    p99 = all_ms[min(len(all_ms) - 1, int(len(all_ms) * 0.99))]
    print(f"threads {threads:3}: {len(all_ms) / elapsed:8.0f} req/s   p50 {statistics.median(all_ms):6.2f} ms"
          f"   p99 {p99:6.2f} ms   errors {sum(errors)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--brokers", default=None)
    ap.add_argument("--integration", required=True)
    ap.add_argument("--threads", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    with ferrule.Client(args.brokers, timeout=10) as client:
        client.token(args.integration)            # into the worker's cache
        for n in (int(x) for x in args.threads.split(",")):
            run(client, args.integration, n, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
