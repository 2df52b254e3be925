#!/usr/bin/env python3
"""Turns bench/run.sh's results.jsonl into the Markdown tables of BENCHMARKS.md."""

import json
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def cpu_per_10k(r):
    n = r["sat"]["requests"]
    return (r["cpu_ticks"] / r["clk_tck"]) / n * 10_000 if n else float("nan")


def errors(s):
    return s["err_connect"] + s["err_read"] + s["err_write"] + s["err_status"] + s["err_timeout"]


def ms(us):
    return f"{us / 1000:.2f}"


def main():
    rows = load(sys.argv[1])
    main_rows = [r for r in rows if "rate" in r]
    by = {r["case"]: r for r in main_rows}

    print("| case | req/s at saturation | proxy CPU busy | CPU s / 10k req | p50 ms | p99 ms "
          "| p99.9 ms | rate achieved | peak RSS MiB | errors | status lookups |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in main_rows:
        s, q = r["sat"], r["rate"]
        busy = (r["cpu_ticks"] / r["clk_tck"]) / (s["duration_us"] / 1e6)
        lookups = r.get("status_lookups", "")
        if "rate_status_lookups" in r:
            lookups = f'{r["status_lookups"]} + {r["rate_status_lookups"]}'
        print(f'| {r["case"]} | {s["rps"]:.0f} | {busy:.0%} | {cpu_per_10k(r):.3f} '
              f'| {ms(q["p50_us"])} | {ms(q["p99_us"])} | {ms(q["p999_us"])} | {q["rps"]:.0f}/s '
              f'| {r["hwm_kb"] / 1024:.1f} | {errors(s) + errors(q)} | {lookups} |')

    eg = by.get("entitygate-HS256")
    if eg:
        print()
        print("| entitygate-HS256 (all checks, warm) vs | req/s ratio | CPU/request ratio "
              "| p99 added ms | p99.9 added ms |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for other in ["nginx", "haproxy-HS256", "direct"]:
            o = by.get(other)
            if not o:
                continue
            print(f'| {other} | {eg["sat"]["rps"] / o["sat"]["rps"]:.2f} '
                  f'| {cpu_per_10k(eg) / cpu_per_10k(o):.2f} '
                  f'| {ms(eg["rate"]["p99_us"] - o["rate"]["p99_us"])} '
                  f'| {ms(eg["rate"]["p999_us"] - o["rate"]["p999_us"])} |')
        for case, other in [("entitygate-RS256", "haproxy-RS256"),
                             ("entitygate-HS256-no-token-cache", "haproxy-HS256"),
                             ("entitygate-RS256-no-token-cache", "haproxy-RS256")]:
            a, b = by.get(case), by.get(other)
            if a and b:
                print(f'| {other} (as {case}) | {a["sat"]["rps"] / b["sat"]["rps"]:.2f} '
                      f'| {cpu_per_10k(a) / cpu_per_10k(b):.2f} '
                      f'| {ms(a["rate"]["p99_us"] - b["rate"]["p99_us"])} '
                      f'| {ms(a["rate"]["p999_us"] - b["rate"]["p999_us"])} |')

    bodies = [r for r in rows if "body" in r]
    if bodies:
        print()
        print("| case | body | req/s at saturation | MiB/s of request bodies | CPU s / 10k req "
              "| peak RSS MiB | errors |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for r in bodies:
            s = r["sat"]
            print(f'| {r["case"]} | {r["body"]} ({r["body_bytes"]} B) | {s["rps"]:.0f} '
                  f'| {s["rps"] * r["body_bytes"] / 2**20:.1f} | {cpu_per_10k(r):.3f} '
                  f'| {r["hwm_kb"] / 1024:.1f} | {errors(s)} |')

    idle = [r for r in rows if "idle" in r]
    if idle:
        print()
        print("| proxy | idle keep-alive connections | RSS before MiB | RSS with them open MiB "
              "| KiB per connection | still open after hold |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for r in idle:
            c = r.get("client", {})
            opened = c.get("opened", 0)
            per = (r["rss_idle_kb"] - r["rss_before_kb"]) / opened if opened else float("nan")
            print(f'| {r["case"]} | {opened} of {r["idle"]} | {r["rss_before_kb"] / 1024:.1f} '
                  f'| {r["rss_idle_kb"] / 1024:.1f} | {per:.1f} '
                  f'| {c.get("still_open_after_hold", "?")} ({c.get("hold_secs", "?")} s) |')

    for r in rows:
        if r["case"] == "burst":
            print()
            print(f'Burst: {r["burst"]} concurrent executions for one cold user -> '
                  f'{r["status_lookups"]} status lookup(s), {r["tool_lookups"]} tool lookup(s), '
                  f'{r["executes"]} executions upstream; client saw {r["client"]}.')


if __name__ == "__main__":
    main()
