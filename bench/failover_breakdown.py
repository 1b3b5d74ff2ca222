#!/usr/bin/env python3
"""Breaks kv's failover rounds into phases:

    bench/compare.sh --failover-only --no-etcd --keep DIR
    bench/failover_breakdown.py DIR

One line per round, milliseconds after the kill -9 (t0): the first survivor
log line saying the link to the killed node is down or closed (detect), the
first PreVote, the first campaign (logged after the candidate's term and vote
are synced), the first 'leader is now' (elected), the acknowledgement of the
first put sent after t0 (ack, from the writer's output), ack - elected, and
the writer's failed calls. kvd's log lines carry the millisecond."""
import sys, os, re, datetime, statistics
d = sys.argv[1]
def ts(s):
    t = datetime.datetime.strptime(s[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
    return int(t.timestamp() * 1e9)
logs = {}
for i in (1, 2, 3):
    p = os.path.join(d, f"kv-n{i}.log")
    ev = []
    if os.path.exists(p):
        for line in open(p, errors="replace"):
            m = re.match(r"(\d{4}-\d\d-\d\dT[\d:.]+)Z (.*)", line)
            if m:
                ev.append((ts(m.group(1)), m.group(2)))
    logs[i] = ev
rounds = [l.split() for l in open(os.path.join(d, "rounds.txt")) if l.startswith("kv ")]
pats = [("detect", r"link to (peer|leader) .* (is down|closed)"), ("prevote", r"PreVote for term"),
        ("campaign", r"campaigning in term"), ("elected", r"leader is now")]
print("round total_ms detect prevote campaign elected ack client_after_elected fails")
for sys_, r, t0, ms, killed in rounds:
    t0 = int(t0); killed = int(killed)
    row = {}
    for name, pat in pats:
        best = None
        for i in (1, 2, 3):
            if i == killed: continue
            for t, msg in logs[i]:
                # t0 is taken after kill(2) returned: a survivor may log the
                # closed link a few ms before it (the script descheduled)
                if t >= t0 - 100_000_000 and re.search(pat, msg):
                    if name == "detect" and f"n{killed}" not in msg and "leader" not in msg: continue
                    best = t if best is None or t < best else best
                    break
        row[name] = (best - t0) / 1e6 if best else None
    wp = os.path.join(d, f"writer-kv-{r}.txt")
    fails = 0
    for line in open(wp):
        f = line.split()
        if len(f) == 3 and int(f[0]) >= t0: fails += 1
    f = lambda v: "-" if v is None else "%.0f" % v
    ack = float(ms) if ms != "timeout" else None
    ca = ack - row["elected"] if ack is not None and row["elected"] is not None else None
    print(r, ms, *(f(row[n]) for n, _ in pats), f(ack), f(ca), fails)
