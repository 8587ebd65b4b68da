"""Reads exports with Python's json module (a real JSON reader) and checks
their structure; prints one summary line.

    json_check.py chrome FILE   every B has its E on the same track (pid, tid), flows pair
    json_check.py jsonl FILE    every line is a JSON object with an id
"""
import json
import sys
from collections import defaultdict

kind, path = sys.argv[1], sys.argv[2]

if kind == "chrome":
    with open(path, encoding="utf-8") as f:
        trace = json.load(f)
    stacks = defaultdict(int)
    flows = defaultdict(set)
    begins = 0
    for e in trace["traceEvents"]:
        ph = e["ph"]
        track = (e.get("pid"), e.get("tid"))
        if ph == "B":
            stacks[track] += 1
            begins += 1
        elif ph == "E":
            stacks[track] -= 1
            assert stacks[track] >= 0, f"an E before its B on track {track}"
        elif ph in ("s", "f"):
            flows[e["id"]].add(ph)
    assert all(n == 0 for n in stacks.values()), f"unclosed calls: {dict(stacks)}"
    paired = sum(1 for phases in flows.values() if phases == {"s", "f"})
    print("ok", begins, paired, len(flows))
elif kind == "jsonl":
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            assert isinstance(obj, dict) and isinstance(obj["id"], int)
            n += 1
    print("ok", n)
