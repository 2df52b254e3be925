#!/usr/bin/env python3
"""Turns bench/run.sh's results.jsonl into the Markdown tables of BENCHMARKS.md.

Rows labelled entitygate-before-... (run.sh with EG_BEFORE) are shown in the tables like any
other and, paired with the same row of the current binary, in a "before -> after" table."""

import json
import statistics
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


BEFORE = "entitygate-before-"


def kind(r):
    """Which table a row belongs to."""
    if r.get("group") in ("h2", "tls", "steps"):
        return r["group"]
    if str(r.get("group", "")).startswith("mcp"):
        return r["group"]
    for k in ("rate", "body", "idle", "burst"):
        if k in r:
            return {"rate": "main"}.get(k, k if k != "body" else "bodies")
    return "other"


def idle_kib(r):
    opened = r.get("client", {}).get("opened", 0)
    return (r["rss_idle_kb"] - r["rss_before_kb"]) / opened if opened else float("nan")


def change(b, a, fmt, lower_is_better):
    """'b -> a (ratio)' for one figure; ratio after/before."""
    if b is None or a is None:
        return ""
    ratio = a / b if b else float("nan")
    better = (ratio < 1) if lower_is_better else (ratio > 1)
    mark = "" if abs(ratio - 1) < 0.02 else (" better" if better else " worse")
    return f"{fmt(b)} → {fmt(a)} ({ratio:.2f}x{mark})"


def f0(v):
    return f"{v:.0f}"


def f1(v):
    return f"{v:.1f}"


def f3(v):
    return f"{v:.3f}"


def before_after(rows):
    """The rows run with both binaries, before -> after, one line each. A row run several
    times (run.sh --repeat) shows the median of its rounds, and the range of req/s."""
    index = {}
    for r in rows:
        index.setdefault((kind(r), r["case"], r.get("body")), []).append(r)
    pairs = []
    for (k, case, body), b in index.items():
        if case.startswith(BEFORE):
            a = index.get((k, "entitygate-" + case[len(BEFORE):], body))
            if a:
                pairs.append((k, body, b, a))
    if not pairs:
        return
    rounds = max(max(len(b), len(a)) for _, _, b, a in pairs)
    print()
    print("Before → after (EG_BEFORE against the current binary, same run; ratio after/before"
          + (f"; median of {rounds} alternating rounds, req/s range in brackets" if rounds > 1
             else "")
          + "; HTTP/2 rows: h2load reports no percentiles, the p99 column shows its mean there)")
    print()
    print("| case | req/s | CPU s / 10k req | p99 ms | p99.9 ms | peak RSS MiB "
          "| KiB per idle connection |")
    print("| --- | --- | --- | --- | --- | --- | --- |")

    for k, body, bs, as_ in pairs:
        def cell(metric, fmt, lower_is_better, rng=False):
            b = statistics.median(metric(r) for r in bs)
            a = statistics.median(metric(r) for r in as_)
            text = change(b, a, fmt, lower_is_better)
            if rng and rounds > 1:
                def span(rs):
                    values = [metric(r) for r in rs]
                    return f"{fmt(min(values))}–{fmt(max(values))}"
                text += f" [{span(bs)} → {span(as_)}]"
            return text

        label = as_[0]["case"] + {"main": "", "bodies": f" ({body} body)", "idle": " (idle)",
                                  "h2": " (h2c)", "tls": " (TLS)"}.get(k, "")
        cells = [""] * 6
        if k in ("main", "tls", "bodies"):
            cells[0] = cell(lambda r: r["sat"]["rps"], f0, False, rng=True)
            cells[1] = cell(cpu_per_10k, f3, True)
        if k in ("main", "tls"):
            cells[2] = cell(lambda r: r["rate"]["p99_us"], ms, True)
            cells[3] = cell(lambda r: r["rate"]["p999_us"], ms, True)
        if k == "h2":
            cells[0] = cell(lambda r: r["h2"]["rps"], f0, False, rng=True)
            cells[1] = cell(h2_cpu_per_10k, f3, True)
            cells[2] = "mean " + cell(lambda r: r["h2"]["mean_us"], ms, True)
        if k != "idle":
            cells[4] = cell(lambda r: r["hwm_kb"] / 1024, f1, True)
        if k == "idle":
            cells[4] = cell(lambda r: r["rss_idle_kb"] / 1024, f1, True)
            cells[5] = cell(idle_kib, f1, True)
        print(f"| {label} | " + " | ".join(cells) + " |")


def h2_cpu_per_10k(r):
    n = r["h2"]["requests"]
    return (r["cpu_ticks"] / r["clk_tck"]) / n * 10_000 if n else float("nan")


def main_table(rows):
    print("| case | req/s at saturation | proxy CPU busy | CPU s / 10k req | p50 ms | p99 ms "
          "| p99.9 ms | rate achieved | peak RSS MiB | errors | status lookups |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        s, q = r["sat"], r["rate"]
        busy = (r["cpu_ticks"] / r["clk_tck"]) / (s["duration_us"] / 1e6)
        lookups = r.get("status_lookups", "")
        if "rate_status_lookups" in r:
            lookups = f'{r["status_lookups"]} + {r["rate_status_lookups"]}'
        print(f'| {r["case"]} | {s["rps"]:.0f} | {busy:.0%} | {cpu_per_10k(r):.3f} '
              f'| {ms(q["p50_us"])} | {ms(q["p99_us"])} | {ms(q["p999_us"])} | {q["rps"]:.0f}/s '
              f'| {r["hwm_kb"] / 1024:.1f} | {errors(s) + errors(q)} | {lookups} |')


def ratio_line(label, a, b):
    return (f'| {label} | {a["sat"]["rps"] / b["sat"]["rps"]:.2f} '
            f'| {cpu_per_10k(a) / cpu_per_10k(b):.2f} '
            f'| {ms(a["rate"]["p99_us"] - b["rate"]["p99_us"])} '
            f'| {ms(a["rate"]["p999_us"] - b["rate"]["p999_us"])} |')


def ratios(by, eg_case, others, pairs=(), title=None):
    """eg_case against each of others, then each (case, other) of pairs; nothing if no pair."""
    lines = []
    eg = by.get(eg_case)
    if eg:
        lines += [ratio_line(o, eg, by[o]) for o in others if o in by]
    lines += [ratio_line(f"{o} (as {c})", by[c], by[o]) for c, o in pairs if c in by and o in by]
    if not lines:
        return
    print()
    print(f"| {title or eg_case + ' vs'} | req/s ratio | CPU/request ratio | p99 added ms "
          "| p99.9 added ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for line in lines:
        print(line)


def ceiling(by, rows):
    """Issue 32's REST targets: entitygate (warm HS256, every check) divided by the minimal
    hyper proxy (what the checks cost) beside nginx (what the stack costs), cold against warm,
    and idle HTTP/2 memory. Printed when the run has the rows."""
    eg = by.get("entitygate-HS256")
    lines = []
    for other, target in (("minimal-hyper", 0.85), ("nginx", 0.6)):
        o = by.get(other)
        if eg and o:
            lines.append(f'| entitygate / {other} | {eg["sat"]["rps"] / o["sat"]["rps"]:.2f} '
                         f'| {cpu_per_10k(eg) / cpu_per_10k(o):.2f} '
                         f'| {ms(eg["rate"]["p99_us"] - o["rate"]["p99_us"])} '
                         f'| req/s ≥ {target}× |')
    cold = by.get("entitygate-HS256-cold")
    if eg and cold:
        lines.append(f'| entitygate cold / warm | {cold["sat"]["rps"] / eg["sat"]["rps"]:.2f} '
                     f'| {cpu_per_10k(cold) / cpu_per_10k(eg):.2f} '
                     f'| {ms(cold["rate"]["p99_us"] - eg["rate"]["p99_us"])} | req/s ≥ 0.6× |')
    direct = by.get("direct")
    for case in ("entitygate-HS256", "minimal-hyper"):
        r = by.get(case)
        if r and direct:
            lines.append(f'| {case} / direct | {r["sat"]["rps"] / direct["sat"]["rps"]:.2f} '
                         f'| {cpu_per_10k(r) / cpu_per_10k(direct):.2f} '
                         f'| {ms(r["rate"]["p99_us"] - direct["rate"]["p99_us"])} '
                         f'| p99 added ≤ 0.5 ms |')
    idle = {r["case"]: r for r in rows if kind(r) == "idle"}
    for case in ("entitygate-HS256-h2", "minimal-hyper-h2"):
        r = idle.get(case)
        if r:
            lines.append(f'| {case} idle | | | | {idle_kib(r):.1f} KiB per connection '
                         f'(target ≤ 12) |')
    if not lines:
        return
    print()
    print("Issue 32 targets (REST): entitygate-HS256 is warm, every check on; minimal-hyper is "
          "examples/bench_minimal_proxy.rs (the same server settings and upstream client, no "
          "checks).")
    print()
    print("| ratio | req/s | CPU/request | p99 added ms | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    for line in lines:
        print(line)
STEPS = "entitygate-HS256-steps-"


def steps_tables(rows):
    """The decision steps' A/B (run.sh group steps): every variant's rows, then each variant
    against "none" on the medians of its rounds (one round without --repeat)."""
    if not rows:
        return
    print()
    print("Decision steps (bench/steps): the warm HS256 rows once per variant, back to back"
          " (argument constraints, approvals, the tool lock; `-unused`: configured for other"
          " tools only).")
    print()
    main_table(rows)
    by = {}
    for r in rows:
        by.setdefault(r["steps"], []).append(r)
    base = by.get("none")
    if not base:
        return
    rounds = max(len(v) for v in by.values())

    def med(rs, metric):
        return statistics.median(metric(r) for r in rs)

    def rps(r):
        return r["sat"]["rps"]

    def p99(r):
        return r["rate"]["p99_us"]

    print()
    print("| variant vs none" + (f" (median of {rounds} rounds)" if rounds > 1 else "")
          + " | req/s ratio | CPU/request ratio | p99 added ms | req/s range |")
    print("| --- | ---: | ---: | ---: | --- |")
    for variant, rs in by.items():
        if variant == "none":
            continue
        values = [rps(r) for r in rs]
        print(f"| {variant} | {med(rs, rps) / med(base, rps):.2f} "
              f"| {med(rs, cpu_per_10k) / med(base, cpu_per_10k):.2f} "
              f"| {ms(med(rs, p99) - med(base, p99))} "
              f"| {min(values):.0f}–{max(values):.0f} |")
def mcp_cpu_ms_per(r, key="mcp_sat"):
    """CPU milliseconds of the target per call (or per new session) at saturation."""
    n = r[key].get("calls", 0)
    return (r["cpu_ticks"] / r["clk_tck"]) / n * 1000 if n else float("nan")


def med(rs, f):
    """The median of f over a row's rounds, with its range when there are several."""
    vals = [v for v in (f(r) for r in rs) if v == v]
    if not vals:
        return float("nan"), ""
    m = statistics.median(vals)
    return m, (f" [{min(vals):.3g}–{max(vals):.3g}]" if len(vals) > 1 else "")


def mcp_tables(rows):
    """The MCP table of issue 32: every target, JSON and SSE answers, from one run."""
    calls = [r for r in rows if kind(r) == "mcp"]
    if not calls:
        return
    rounds = {}
    order = []
    for r in calls:
        key = (r["target"], r.get("answer", ""))
        if key not in rounds:
            order.append(key)
        rounds.setdefault(key, []).append(r)
    n = max(len(v) for v in rounds.values())
    rate = next((r["mcp_rate"].get("rate") for r in calls if "mcp_rate" in r), None)
    print()
    print(f"MCP tools/call (JSON-RPC over Streamable HTTP, HTTP/1.1 keep-alive): saturation, "
          f"then {rate:.0f} calls/s open-loop; added = the target's percentile minus the "
          f"upstream's (direct) at the same rate and answer mode"
          + (f"; median of {n} rounds, range in brackets" if n > 1 else "") + ".")
    print()
    print("| target | answer | calls/s | proxy CPU busy | CPU ms / call | p50 ms | p99 ms "
          "| p99.9 ms | p50 added | p99 added | p99.9 added | rate achieved | peak RSS MiB "
          "| errors |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: | ---: |")
    direct = {a: rs for (t, a), rs in rounds.items() if t == "direct"}
    for key in order:
        rs = rounds[key]
        target, answer = key
        if "not_measured" in rs[0]:
            print(f"| {target} | | not measured: {rs[0]['not_measured']} "
                  "| | | | | | | | | | | |")
            continue
        cells = []
        rps, rng = med(rs, lambda r: r["mcp_sat"].get("rps", float("nan")))
        cells.append(f"{rps:.0f}{rng}")
        busy, _ = med(rs, lambda r: (r["cpu_ticks"] / r["clk_tck"]) / r["sat_secs"])
        cells.append(f"{busy:.0%}")
        cpu, rng = med(rs, mcp_cpu_ms_per)
        cells.append(f"{cpu:.3f}{rng}")
        # A target that could not keep the rate has no latency at that rate.
        kept = all(r["mcp_rate"].get("missed", 0) <= 0.01 * max(r["mcp_rate"].get("due", 1), 1)
                   for r in rs)
        for p in ("p50_ms", "p99_ms", "p999_ms"):
            v, rng = med(rs, lambda r, p=p: r["mcp_rate"].get(p, float("nan")))
            cells.append(f"{v:.3f}{rng}" if kept else "rate not kept")
        for p in ("p50_ms", "p99_ms", "p999_ms"):
            d = direct.get(answer)
            if not kept:
                cells.append("—")
            elif d and target != "direct":
                v, _ = med(rs, lambda r, p=p: r["mcp_rate"].get(p, float("nan")))
                base, _ = med(d, lambda r, p=p: r["mcp_rate"].get(p, float("nan")))
                cells.append(f"{v - base:.3f}")
            else:
                cells.append("")
        ach, _ = med(rs, lambda r: r["mcp_rate"].get("rps", float("nan")))
        cells.append(f"{ach:.0f}/s")
        hwm, _ = med(rs, lambda r: r["hwm_kb"] / 1024)
        cells.append(f"{hwm:.1f}")
        errs = sum(max(r["mcp_sat"].get("errors", 0), 0) + max(r["mcp_rate"].get("errors", 0), 0)
                   for r in rs)
        cells.append(str(errs))
        print(f"| {target} | {answer} | " + " | ".join(cells) + " |")

    own = [(key, r) for key in order for r in rounds[key] if r.get("mcp_rate_own")]
    if own:
        print()
        print(f"Targets that could not keep {rate:.0f} calls/s, at half the calls/s they reached "
              f"at saturation (a rate they keep; absolute latency, no direct run at that rate):")
        print()
        print("| target | answer | rate | rate achieved | p50 ms | p99 ms | p99.9 ms | errors |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for (target, answer), r in own:
            q = r["mcp_rate_own"]
            print(f'| {target} | {answer} | {q.get("rate", float("nan")):.0f}/s '
                  f'| {q.get("rps", float("nan")):.1f}/s | {q.get("p50_ms", float("nan")):.3f} '
                  f'| {q.get("p99_ms", float("nan")):.3f} | {q.get("p999_ms", float("nan")):.3f} '
                  f'| {max(q.get("errors", 0), 0)} |')

    sess = {r["target"]: r for r in rows if kind(r) == "mcp-sessions"}
    held = {}
    for r in rows:
        if kind(r) == "mcp-hold":
            held[(r["target"], r["hold"])] = r

    def per_kib(r):
        if not r:
            return float("nan"), ""
        opened = r.get("client", {}).get("opened", 0)
        if not opened:
            return float("nan"), f"0 of {r['count']}"
        return (r["rss_held_kb"] - r["rss_before_kb"]) / opened, f"{opened} of {r['count']}"

    targets = [t for t, _ in order if (t, "json") in rounds and "not_measured" not in rounds[(t, "json")][0]]
    seen = []
    for t in targets:
        has = t in sess or (t, "sessions") in held or (t, "streams") in held
        if has and t not in seen:
            seen.append(t)
    if sess or held:
        srate = next((r["mcp_rate"].get("rate") for r in sess.values()), 0)
        print()
        print(f"New sessions (initialize + notifications/initialized, JSON answers): back to "
              f"back, then {srate:.0f} sessions/s for the latency; memory: RSS with the "
              f"sessions (or idle GET event streams, one connection each) open, minus before, "
              f"per session (stream).")
        print()
        print("| target | new sessions/s | CPU ms / session | p50 ms / session | p99 ms / session "
              "| KiB per held session | sessions held | KiB per idle stream | streams held |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for t in seen:
            s_ = sess.get(t)
            cells = ["", "", "", ""]
            if s_:
                q = s_["mcp_rate"]
                kept = q.get("missed", 0) <= 0.01 * max(q.get("due", 1), 1)
                cells = [f'{s_["mcp_sat"].get("rps", 0):.0f}', f"{mcp_cpu_ms_per(s_):.3f}",
                         f'{q.get("p50_ms", float("nan")):.3f}' if kept else "rate not kept",
                         f'{q.get("p99_ms", float("nan")):.3f}' if kept else "rate not kept"]
            ks, ns = per_kib(held.get((t, "sessions")))
            kt, nt = per_kib(held.get((t, "streams")))
            print(f"| {t} | " + " | ".join(cells) + f" | {ks:.1f} | {ns} | {kt:.1f} | {nt} |")

    agw = {a: rs for (t, a), rs in rounds.items()
           if t == "agentgateway" and "not_measured" not in rs[0]}
    if agw:
        print()
        print("| vs agentgateway (same answer mode) | calls/s ratio | CPU/call ratio "
              "| p99 added, ms (target − agentgateway) | CPU/session ratio "
              "| KiB/session ratio | KiB/stream ratio |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for (t, a), rs in rounds.items():
            if t in ("agentgateway", "direct") or a not in agw or "not_measured" in rs[0]:
                continue
            g = agw[a]
            r1, _ = med(rs, lambda r: r["mcp_sat"].get("rps", float("nan")))
            r2, _ = med(g, lambda r: r["mcp_sat"].get("rps", float("nan")))
            c1, _ = med(rs, mcp_cpu_ms_per)
            c2, _ = med(g, mcp_cpu_ms_per)
            def p99(rows_):
                if any(r["mcp_rate"].get("missed", 0) > 0.01 * max(r["mcp_rate"].get("due", 1), 1)
                       for r in rows_):
                    return float("nan")
                return med(rows_, lambda r: r["mcp_rate"].get("p99_ms", float("nan")))[0]
            p1, p2 = p99(rs), p99(g)
            extra = ["", "", ""]
            if a == "json":
                if t in sess and "agentgateway" in sess:
                    extra[0] = f'{mcp_cpu_ms_per(sess[t]) / mcp_cpu_ms_per(sess["agentgateway"]):.2f}'
                for i, what in ((1, "sessions"), (2, "streams")):
                    x, _ = per_kib(held.get((t, what)))
                    y, _ = per_kib(held.get(("agentgateway", what)))
                    if x == x and y == y and y > 0:
                        extra[i] = f"{x / y:.2f}"
            print(f"| {t} ({a}) | {r1 / r2:.2f} | {c1 / c2:.2f} | {p1 - p2:.3f} | "
                  + " | ".join(extra) + " |")


def main():
    rows = load(sys.argv[1])
    main_rows = [r for r in rows if kind(r) == "main"]
    by = {r["case"]: r for r in main_rows}

    if main_rows:
        main_table(main_rows)

    ratios(by, "entitygate-HS256", ["nginx", "haproxy-HS256", "direct"],
           [("entitygate-RS256", "haproxy-RS256"),
            ("entitygate-HS256-no-token-cache", "haproxy-HS256"),
            ("entitygate-RS256-no-token-cache", "haproxy-RS256")],
           title="entitygate-HS256 (all checks, warm) vs")

    ceiling(by, rows)

    bodies = [r for r in rows if kind(r) == "bodies"]
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

    idle = [r for r in rows if kind(r) == "idle"]
    if idle:
        print()
        print("| proxy | protocol | idle keep-alive connections | RSS before MiB "
              "| RSS with them open MiB | KiB per connection | still open after hold |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for r in idle:
            c = r.get("client", {})
            opened = c.get("opened", 0)
            per = idle_kib(r)
            print(f'| {r["case"]} | {c.get("protocol", "http/1.1")} | {opened} of {r["idle"]} '
                  f'| {r["rss_before_kb"] / 1024:.1f} '
                  f'| {r["rss_idle_kb"] / 1024:.1f} | {per:.1f} '
                  f'| {c.get("still_open_after_hold", "?")} ({c.get("hold_secs", "?")} s) |')

    h2 = [r for r in rows if kind(r) == "h2"]
    if h2:
        print()
        print("HTTP/2 (h2c, prior knowledge) at saturation, h2load: latency is h2load's "
              "min/mean/sd/max of the request time (it reports no percentiles).")
        print()
        print("| case | req/s | proxy CPU busy | CPU s / 10k req | mean ms | sd ms | max ms "
              "| peak RSS MiB | failed | non-2xx | upstream over HTTP/2 |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in h2:
            d = r["h2"]
            busy = (r["cpu_ticks"] / r["clk_tck"]) / (d["duration_us"] / 1e6)
            non2xx = d["status"]["3xx"] + d["status"]["4xx"] + d["status"]["5xx"]
            print(f'| {r["case"]} | {d["rps"]:.0f} | {busy:.0%} | {h2_cpu_per_10k(r):.3f} '
                  f'| {ms(d["mean_us"])} | {ms(d["sd_us"])} | {ms(d["max_us"])} '
                  f'| {r["hwm_kb"] / 1024:.1f} | {d["failed"] + d["errored"] + d["timeout"]} '
                  f'| {non2xx} | {r.get("upstream_http2_requests", "")} |')
        h2by = {r["case"]: r for r in h2}
        eg = h2by.get("entitygate-HS256-h2")
        if eg:
            for other in ["nginx-h2", "haproxy-HS256-h2", "direct-h2"]:
                o = h2by.get(other)
                if o and o["h2"]["rps"]:
                    print(f'\nentitygate-HS256-h2 vs {other}: req/s '
                          f'{eg["h2"]["rps"] / o["h2"]["rps"]:.2f}x, CPU/request '
                          f'{h2_cpu_per_10k(eg) / h2_cpu_per_10k(o):.2f}x', end="")
            print()

    tls = [r for r in rows if kind(r) == "tls"]
    if tls:
        print()
        print("TLS on both sides (wrk over HTTPS to the proxy, the proxy over HTTPS to the "
              "upstream):")
        print()
        main_table(tls)
        tby = {r["case"]: r for r in tls}
        print()
        print("| case | upstream requests over HTTP/2 |")
        print("| --- | ---: |")
        for r in tls:
            print(f'| {r["case"]} | {r.get("upstream_http2_requests", "")} |')
        ratios(tby, "entitygate-HS256-tls", ["nginx-tls", "haproxy-HS256-tls", "direct-tls"])

    steps_tables([r for r in rows if kind(r) == "steps"])
    mcp_tables(rows)

    before_after(rows)

    for r in rows:
        if r["case"] == "burst":
            print()
            print(f'Burst: {r["burst"]} concurrent executions for one cold user -> '
                  f'{r["status_lookups"]} status lookup(s), {r["tool_lookups"]} tool lookup(s), '
                  f'{r["executes"]} executions upstream; client saw {r["client"]}.')


if __name__ == "__main__":
    main()
