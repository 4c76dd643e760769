#!/usr/bin/env python3
"""benches/peers' report: medians of the rounds per scenario and target,
the same-run ratios with their goals (issue 16's among them), memory per
entry, and the HTTPS targets' negotiation; written to a table and to JSON.

  peers_report.py RESULTS LATENCY MEMORY TLS_SEEN OUT RUNS DURATION CONNECTIONS
"""
import json
import statistics
import sys

results, latency, memory, tls_seen, out, runs, duration, conns = sys.argv[1:9]
med = statistics.median

scenarios = {}
for line in open(results):
    scenario, t, run, rps, cpu, non2xx, lines, ops = line.rstrip("\n").split("\t")
    r = scenarios.setdefault(scenario, {}).setdefault(t, {"rps": [], "cpu_us": [], "non2xx": 0})
    r["rps"].append(float(rps))
    r["cpu_us"].append(float(cpu))
    r["non2xx"] += int(non2xx)
    if ops != "-":
        # Redis commands per request during each wrk run.
        r.setdefault("redis_ops_per_request", []).append(float(ops))
    if lines != "-":
        # GET /users lines its access log received during each wrk run.
        r.setdefault("access_lines", []).append(int(lines))
for line in open(latency):
    scenario, t, c, js = line.rstrip("\n").split("\t", 3)
    # A floor measured with latency only (redis-ping) has no wrk row.
    scenarios.setdefault(scenario, {}).setdefault(t, {}).setdefault("latency_runs_%s" % c, []).append(json.loads(js))
# Latency: the median over rounds of each percentile, and the spread of
# the rounds' p99s.
for rows in scenarios.values():
    for r in rows.values():
        for key in [k for k in r if k.startswith("latency_runs_")]:
            of = r[key]
            summary = {q: med([x[q] for x in of]) for q in ("p50_us", "p99_us", "p999_us")}
            summary["p99_us_min"] = min(x["p99_us"] for x in of)
            summary["p99_us_max"] = max(x["p99_us"] for x in of)
            # The target's own context switches per request (not a floor's).
            if all("context_switches_per_request" in x for x in of):
                summary["context_switches_per_request"] = med([x["context_switches_per_request"] for x in of])
            r[key.replace("latency_runs_", "latency_")] = summary


def ratio(rows, a, b, key):
    return med(rows[a][key]) / med(rows[b][key]) if a in rows and b in rows else None


def lat(rows, t, c, q):
    return rows[t]["latency_%s" % c][q] if t in rows else None


def lat_ratio(rows, a, b, c, q):
    return lat(rows, a, c, q) / lat(rows, b, c, q) if a in rows and b in rows else None


def lat_diff(rows, a, b, c, q):
    return lat(rows, a, c, q) - lat(rows, b, c, q) if a in rows and b in rows else None


def checks_of(scenario, rows):
    """(name, value, goal) of a scenario; goal "report" or "<op> <number>"."""
    c = []
    for store, rps_goal, cpu_goal in (("proxy-memory", 1.3, 0.6), ("proxy-redis", 1.1, None)):
        if scenario in ("one-key", "zipf", "user-scope"):
            c.append(("%s req/s vs haproxy" % store, ratio(rows, store, "haproxy", "rps"), ">= %s" % rps_goal))
            c.append(("%s CPU/req vs haproxy" % store, ratio(rows, store, "haproxy", "cpu_us"),
                      "<= %s" % cpu_goal if cpu_goal and scenario == "one-key" else "report"))
        else:
            c.append(("%s req/s vs haproxy" % store, ratio(rows, store, "haproxy", "rps"), "report"))
            c.append(("%s CPU/req vs haproxy" % store, ratio(rows, store, "haproxy", "cpu_us"), "report"))
        goal = ">= 1.2" if store == "proxy-memory" and scenario in ("zipf", "user-scope") else "report"
        c.append(("%s req/s vs nginx proxy_cache" % store, ratio(rows, store, "nginx-proxy-cache", "rps"), goal))
        c.append(("%s req/s vs ceiling" % store, ratio(rows, store, "ceiling", "rps"),
                  ">= 0.85" if store == "proxy-memory" and scenario == "one-key" else "report"))
        c.append(("%s p99@%s vs haproxy" % (store, conns), lat_ratio(rows, store, "haproxy", conns, "p99_us"),
                  "<= 1.0" if scenario == "one-key" else "report"))
        c.append(("%s p99@%s vs nginx proxy_cache" % (store, conns),
                  lat_ratio(rows, store, "nginx-proxy-cache", conns, "p99_us"), "<= 1.2" if scenario == "one-key" else "report"))
    gap = lat_diff(rows, "proxy-redis", "proxy-memory", "1", "p50_us")
    c.append(("proxy-redis p50@1 minus proxy-memory p50@1 (µs)", gap, "<= 60" if scenario == "one-key" else "report"))
    floor = lat(rows, "redis-ping", "1", "p50_us")
    if gap is not None and floor is not None:
        # The Redis store confirms each hit in one round trip: the part of
        # the gap that is the proxy's own, beyond that trip.
        c.append(("redis-ping p50@1: one bare Redis round trip (µs)", floor, "report"))
        c.append(("that gap minus redis-ping p50@1: the proxy's own share (µs)", gap - floor, "report"))
    if scenario == "hit-90":
        for t in ("proxy-memory", "proxy-redis"):
            c.append(("%s p999@%s vs haproxy" % (t, conns), lat_ratio(rows, t, "haproxy", conns, "p999_us"), "report"))
    if scenario == "one-key":
        c += [
            ("proxy-redis req/s vs srcache+redis", ratio(rows, "proxy-redis", "nginx-srcache-redis", "rps"), ">= 1.5"),
            ("proxy-redis CPU/req vs srcache+redis", ratio(rows, "proxy-redis", "nginx-srcache-redis", "cpu_us"), "<= 0.67"),
            ("proxy-memory req/s vs varnish", ratio(rows, "proxy-memory", "varnish", "rps"), "report"),
            ("proxy-redis-no-l1 req/s vs srcache+redis", ratio(rows, "proxy-redis-no-l1", "nginx-srcache-redis", "rps"), ">= 1.5"),
            ("proxy-redis req/s vs proxy-redis-no-l1 (L1's effect)", ratio(rows, "proxy-redis", "proxy-redis-no-l1", "rps"), "report"),
            ("proxy-memory req/s, access log on/off", ratio(rows, "proxy-memory", "proxy-memory-nolog", "rps"), ">= 0.9"),
            ("proxy-memory CPU/req, access log on/off", ratio(rows, "proxy-memory", "proxy-memory-nolog", "cpu_us"), "report"),
            ("nginx proxy_cache req/s, access log on/off", ratio(rows, "nginx-proxy-cache", "nginx-proxy-cache-nolog", "rps"), "report"),
            ("proxy-memory-tls req/s vs nginx proxy_cache TLS", ratio(rows, "proxy-memory-tls", "nginx-proxy-cache-tls", "rps"), ">= 1.0"),
            ("proxy-memory-tls CPU/req vs nginx proxy_cache TLS", ratio(rows, "proxy-memory-tls", "nginx-proxy-cache-tls", "cpu_us"), "<= 1.0"),
            ("proxy-memory-tls CPU/req vs proxy-memory-nolog (TLS's cost)", ratio(rows, "proxy-memory-tls", "proxy-memory-nolog", "cpu_us"), "report"),
            ("proxy-redis-guard req/s vs proxy-redis-bare (limit + revocation on/off)", ratio(rows, "proxy-redis-guard", "proxy-redis-bare", "rps"), ">= 0.95"),
            ("proxy-memory-guard req/s vs proxy-memory-bare (limit + revocation on/off)", ratio(rows, "proxy-memory-guard", "proxy-memory-bare", "rps"), ">= 0.95"),
        ]
    return [x for x in c if x[1] is not None]


def verdict(value, goal):
    if goal == "report":
        return ""
    op, bound = goal.split()
    ok = value >= float(bound) if op == ">=" else value <= float(bound)
    return "met" if ok else "NOT MET"


report = {"runs": int(runs), "duration_s": int(duration), "connections": int(conns), "scenarios": {}}
for scenario, rows in scenarios.items():
    print("\n== %s (medians of %s rounds; p99 spread across rounds in brackets)" % (scenario, runs))
    print("%-24s %10s %11s %8s %8s %8s %19s %9s %8s" % ("target", "req/s", "CPU µs/req", "p50@1", "p99@1",
                                                      "p50@%s" % conns, "p99@%s [min–max]" % conns, "p999@%s" % conns,
                                                      "csw/r@1"))
    for t, r in rows.items():
        if "rps" not in r:
            print("%-24s %10s %11s %8.0f %8.0f" % (t, "-", "-", r["latency_1"]["p50_us"], r["latency_1"]["p99_us"]))
            continue
        l1, ln = r["latency_1"], r["latency_" + conns]
        print("%-24s %10.0f %11.1f %8.0f %8.0f %8.0f %7.0f [%4.0f–%4.0f] %9.0f %8.2f" % (
            t, med(r["rps"]), med(r["cpu_us"]), l1["p50_us"], l1["p99_us"], ln["p50_us"], ln["p99_us"],
            ln["p99_us_min"], ln["p99_us_max"], ln["p999_us"], l1.get("context_switches_per_request", float("nan"))))
    checks = checks_of(scenario, rows)
    for name, value, goal in checks:
        print("  %-66s %8.2f   %-8s %s" % (name, value, goal if goal != "report" else "", verdict(value, goal)))
    ops = {t: med(r["redis_ops_per_request"]) for t, r in rows.items() if "redis_ops_per_request" in r}
    if ops:
        print("  Redis commands per request: " + ", ".join("%s %.3f" % kv for kv in ops.items()))
    report["scenarios"][scenario] = {"targets": rows, "ratios": {n: {"value": v, "goal": g} for n, v, g in checks}}

mem = {}
for line in open(memory):
    t, entries, pss, redis, disk = line.rstrip("\n").split("\t")
    n = int(entries)
    mem[t] = {"entries": n, "pss_bytes_per_entry": int(pss) / n, "redis_used_memory_per_entry": int(redis) / n,
              "disk_bytes_per_entry": int(disk) / n}
if mem:
    print("\n== memory: 1 KB entries stored, bytes per entry (PSS of the target's processes; Redis used_memory; files on disk)")
    goals = {("proxy-memory", "pss_bytes_per_entry"): 1536, ("proxy-redis", "redis_used_memory_per_entry"): 1638}
    for t, m in mem.items():
        notes = []
        for (gt, key), bound in goals.items():
            if gt == t:
                notes.append("%s goal <= %d: %s" % (key, bound, "met" if m[key] <= bound else "NOT MET"))
        print("  %-20s PSS %7.0f   Redis %7.0f   disk %7.0f   %s" % (
            t, m["pss_bytes_per_entry"], m["redis_used_memory_per_entry"], m["disk_bytes_per_entry"], "; ".join(notes)))
    report["memory"] = mem

tls = {}
for line in open(tls_seen):
    t, protocol, suite, group, signature, unpinned = line.rstrip("\n").split("\t")
    tls[t] = {"protocol": protocol, "suite": suite, "group": group, "signature": signature,
              "suite_unpinned_openssl_client": unpinned}
if tls:
    print("\nHTTPS targets (HTTP/1.1 keep-alive, self-signed ECDSA P-256 certificate), as the pinned clients negotiate them:")
    for t, v in tls.items():
        print("  %-22s %s %s, %s, signature %s (an unpinned OpenSSL client gets %s)" % (
            t, v["protocol"], v["suite"], v["group"], v["signature"], v["suite_unpinned_openssl_client"]))
report["tls"] = tls
json.dump(report, open(out, "w"), indent=2)
print("\nwrote %s" % out)
