#!/usr/bin/env python3
"""Creates COUNT keys on a running Gatehouse through its admin API.

Used by bench/run.sh --keys N. Each worker process holds one keep-alive
connection and sends POST /tyk/keys/create; every answer must be 200.
Progress goes to stderr every 30 seconds. Exits 3 when TIMEOUT seconds
pass before all keys exist (the caller treats that as a failure), 1 on
any other error.
"""

import argparse
import http.client
import json
import multiprocessing as mp
import signal
import sys
import time


def body(api_id, quota):
    session = {
        "rate": 1000000,
        "per": 1,
        "org_id": "1",
        "access_rights": {api_id: {"api_id": api_id, "versions": ["Default"]}},
    }
    session.update(quota)
    return json.dumps(session).encode()


def worker(args, quota, count, done, deadline, failed):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    payload = body(args.api_id, quota)
    headers = {
        "x-tyk-authorization": args.secret,
        "Content-Type": "application/json",
    }
    conn = None
    made = 0
    try:
        while made < count:
            if failed.value:
                return
            if time.monotonic() > deadline:
                return
            if conn is None:
                conn = http.client.HTTPConnection(args.host, args.port, timeout=30)
            try:
                conn.request("POST", "/tyk/keys/create", body=payload, headers=headers)
                res = conn.getresponse()
                text = res.read()
            except (OSError, http.client.HTTPException) as e:
                # One reconnect per failure; a dead gateway fails again at once.
                conn.close()
                conn = None
                sys.stderr.write(f"preload: connection error ({e}); reconnecting\n")
                time.sleep(0.2)
                continue
            if res.status != 200:
                sys.stderr.write(
                    f"preload: key create answered {res.status}: {text[:200]!r}\n"
                )
                failed.value = 1
                return
            made += 1
            if made % 256 == 0:
                with done.get_lock():
                    done.value += 256
        with done.get_lock():
            done.value += made % 256
    finally:
        if conn is not None:
            conn.close()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--api-id", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--quota-json", default='{"quota_max": -1}',
                   help="quota fields merged into every session")
    args = p.parse_args()
    quota = json.loads(args.quota_json)

    procs = max(1, min(args.procs, args.count))
    share = [args.count // procs + (1 if i < args.count % procs else 0) for i in range(procs)]
    done = mp.Value("q", 0)
    failed = mp.Value("i", 0)
    start = time.monotonic()
    deadline = start + args.timeout
    workers = [
        mp.Process(target=worker, args=(args, quota, n, done, deadline, failed))
        for n in share
    ]
    for w in workers:
        w.start()

    def stop(signum, _frame):
        for w in workers:
            if w.is_alive():
                w.terminate()
        for w in workers:
            w.join()
        sys.stderr.write(f"preload: stopped by signal {signum}\n")
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    last = start
    while any(w.is_alive() for w in workers):
        time.sleep(0.5)
        now = time.monotonic()
        if now - last >= 30:
            last = now
            n = done.value
            rate = n / (now - start)
            eta = (args.count - n) / rate if rate > 0 else float("inf")
            sys.stderr.write(
                f"preload: {n}/{args.count} keys, {rate:,.0f}/s, ~{eta:,.0f} s left\n"
            )
    for w in workers:
        w.join()
    took = time.monotonic() - start
    n = done.value
    if failed.value:
        sys.stderr.write("preload: failed (see above)\n")
        return 1
    if n < args.count:
        if time.monotonic() > deadline:
            sys.stderr.write(
                f"preload: timed out after {took:.0f} s with {n}/{args.count} keys "
                f"(raise --keys-timeout)\n"
            )
            return 3
        sys.stderr.write(f"preload: only {n}/{args.count} keys were created\n")
        return 1
    sys.stderr.write(f"preload: {n} keys in {took:.1f} s ({n / took:,.0f}/s)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
