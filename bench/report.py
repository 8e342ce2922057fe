#!/usr/bin/env python3
"""Helpers for bench/run.sh.

  report.py parse WRK_OUTPUT
      prints one tab-separated line: requests elapsed_s non2xx socket_errors
      p50_us p99_us (wrk's "Requests/sec" is not used: it counts error
      responses as throughput).

  report.py table RESULTS_TSV CLK_TCK
      prints one table per concurrency: medians over rounds, and ratios of
      those medians against the nginx proxy; the TLS variant's (tls) against
      the nginx TLS proxy (nginx-tls) of the same run instead, and the
      unpinned gateway's (allcores) against the unpinned nginx (nginx-all). The redis
      variant's cpu_ticks are its gateway's plus redis-server's (run.sh).

RESULTS_TSV columns: conns round variant requests elapsed_s non2xx
socket_errors p50_us p99_us cpu_ticks other_ticks
"""

import re
import statistics
import sys

UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
VARIANTS = [
    "direct", "nginx", "keyless", "keyed", "redis", "messy", "policy", "basic", "jwths", "jwtrs", "real",
    "nginx-tls", "tls", "nginx-all", "allcores",
]
# The baseline each variant's ratios are taken against; a baseline gets none.
BASELINE = {v: "nginx" for v in VARIANTS}
BASELINE["tls"] = "nginx-tls"  # issue 11: https against https, same certificate
BASELINE["allcores"] = "nginx-all"  # issue 13: neither pinned, both on every cpu
BASELINE["nginx"] = BASELINE["nginx-tls"] = BASELINE["nginx-all"] = None
NAMES = {
    "direct": "direct upstream",
    "nginx": "nginx proxy",
    "keyless": "gatehouse keyless",
    "keyed": "gatehouse keyed",
    "redis": "gatehouse redis",  # issue 12: keyed, store and counters in Redis
    "messy": "gatehouse messy",
    "policy": "gatehouse policy",
    "basic": "gatehouse basic",
    "jwths": "gatehouse jwt-hs",
    "jwtrs": "gatehouse jwt-rs",
    "real": "gatehouse realistic",
    "nginx-tls": "nginx tls proxy",
    "tls": "gatehouse tls",
    "nginx-all": "nginx all-cores",
    "allcores": "gatehouse all-cores",
}


def to_us(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unknown duration {text!r}")
    return float(m.group(1)) * UNITS_US[m.group(2)]


def parse(path):
    text = open(path).read()
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+(?:us|ms|s|m|h)),", text, re.M)
    if not m:
        sys.exit(f"report.py: no request count in wrk output {path}:\n{text}")
    requests, elapsed = int(m.group(1)), to_us(m.group(2)) / 1e6
    pct = dict(re.findall(r"^\s*(50|99)%\s+(\S+)\s*$", text, re.M))
    if "50" not in pct or "99" not in pct:
        sys.exit(f"report.py: no latency distribution in {path} (wrk --latency?)")
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    non2xx = int(m.group(1)) if m else 0
    m = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    sock = sum(int(x) for x in m.groups()) if m else 0
    print(
        f"{requests}\t{elapsed:.3f}\t{non2xx}\t{sock}\t"
        f"{to_us(pct['50']):.1f}\t{to_us(pct['99']):.1f}"
    )


def fmt_lat(us):
    if us < 1000:
        return f"{us:.0f}us"
    if us < 1e6:
        return f"{us / 1e3:.2f}ms"
    return f"{us / 1e6:.2f}s"


def ratio(a, b):
    return f"{a / b:.2f}x" if b else "-"


def table(path, clk_tck):
    tick_us = 1e6 / clk_tck
    runs = {}
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if len(f) != 11 or f[0] == "conns":
            continue
        c, rnd, var = int(f[0]), int(f[1]), f[2]
        req, el, n2, se = int(f[3]), float(f[4]), int(f[5]), int(f[6])
        p50, p99, ticks, other = float(f[7]), float(f[8]), int(f[9]), int(f[10])
        runs.setdefault(c, {}).setdefault(var, []).append(
            {
                "ok_rps": (req - n2) / el if el > 0 else 0.0,
                "p50": p50,
                "p99": p99,
                "cpu": ticks * tick_us / req if req else float("nan"),
                "req": req,
                "non2xx": n2,
                "sock": se,
                "other": other * 100 / (el * clk_tck) if el > 0 else 0.0,
            }
        )
    for c in sorted(runs):
        by = runs[c]
        rounds = max(len(v) for v in by.values())
        print()
        print(
            f"c={c}: medians of {rounds} round(s); ratios = gatehouse (or direct) "
            f"median / nginx proxy median"
        )
        hdr = (
            f"{'variant':<20} {'ok req/s':>10} {'spread':>7} {'p50':>8} {'p99':>8} "
            f"{'CPU us/req':>10} {'errors':>7} {'req/s x':>8} {'p99 x':>6} {'CPU x':>6} {'other CPU':>9}"
        )
        if "tls" in by:
            print("  (gatehouse tls: ratios against nginx tls proxy, both over https)")
        if "allcores" in by:
            print("  (gatehouse all-cores: ratios against nginx all-cores, neither pinned)")
        print(hdr)
        print("-" * len(hdr))
        med = {}
        for v in VARIANTS:
            if v not in by:
                continue
            rs = by[v]
            med[v] = {
                k: statistics.median(r[k] for r in rs)
                for k in ("ok_rps", "p50", "p99", "cpu", "other")
            }
        warnings = []
        for v in VARIANTS:
            if v not in med:
                continue
            m, rs = med[v], by[v]
            rps = [r["ok_rps"] for r in rs]
            spread = (max(rps) - min(rps)) / m["ok_rps"] * 100 if m["ok_rps"] else 0
            errors = sum(r["non2xx"] + r["sock"] for r in rs)
            base = med.get(BASELINE[v]) if BASELINE[v] else None
            if base:
                rx = ratio(m["ok_rps"], base["ok_rps"])
                px = ratio(m["p99"], base["p99"])
                cx = ratio(m["cpu"], base["cpu"])
            else:
                rx = px = cx = ""
            print(
                f"{NAMES[v]:<20} {m['ok_rps']:>10,.0f} {spread:>6.1f}% {fmt_lat(m['p50']):>8} "
                f"{fmt_lat(m['p99']):>8} {m['cpu']:>10.2f} {errors:>7} {rx:>8} {px:>6} {cx:>6} "
                f"{m['other']:>8.1f}%"
            )
            if errors:
                total = sum(r["req"] for r in rs)
                warnings.append(
                    f"  !! {NAMES[v]}: {sum(r['non2xx'] for r in rs)} non-2xx/3xx responses and "
                    f"{sum(r['sock'] for r in rs)} socket errors in {total} requests "
                    f"(ok req/s excludes non-2xx/3xx; latencies include them)"
                )
            noisy = [r["other"] for r in rs if r["other"] > 10]
            if noisy:
                warnings.append(
                    f"  !! {NAMES[v]}: {len(noisy)} of {len(rs)} run(s) shared the machine with "
                    f"other work (up to {max(noisy):.0f}% of a cpu): those numbers are disturbed"
                )
        for w in warnings:
            print(w)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "parse":
        parse(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "table":
        table(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
