#!/usr/bin/env python3
"""Prints the criterion medians of `cargo bench -p benches` as markdown tables, with
ours/raw ratios. Usage: python3 benches/summarize.py [criterion dir]
(default: $CARGO_TARGET_DIR/criterion, else target/criterion)."""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("CARGO_TARGET_DIR", "target"), "criterion")
rows = {}
for dirpath, _, files in os.walk(root):
    if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
        continue
    bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
    est = json.load(open(os.path.join(dirpath, "estimates.json")))
    sample = json.load(open(os.path.join(dirpath, "sample.json")))
    parts = bench["full_id"].split("/")
    if len(parts) != 3:  # e.g. eth_conversion/from_rs
        parts = [parts[0], "-", "/".join(parts[1:])]
    op, size, impl = parts
    rows[(op, size, impl)] = (
        est["median"]["point_estimate"],
        est["median"]["confidence_interval"]["lower_bound"],
        est["median"]["confidence_interval"]["upper_bound"],
        len(sample["iters"]),
        max(sample["iters"]),
    )


def fmt(ns):
    if ns >= 1e9:
        return f"{ns / 1e9:.2f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e3:.1f} µs"


ops = ["keygen", "presign", "online", "sign", "reshare"]
for (op, size, impl), v in sorted(rows.items()):
    if op not in ops:
        print(f"- {op}/{impl}: median {fmt(v[0])} (95% CI {fmt(v[1])} – {fmt(v[2])})")
sizes = ["2-of-3", "3-of-5", "7-of-10"]
for op in ops:
    present = [k for k in rows if k[0] == op]
    if not present:
        continue
    print(f"\n### {op}\n")
    print("| size | transport | median | 95% CI of median | samples × iters | ours/raw |")
    print("|---|---|---|---|---|---|")
    for size in sizes:
        raw = [v for (o, s, i), v in rows.items() if o == op and s == size and i.startswith("raw")]
        for impl in ["inmem", "libp2p", "raw", "raw-aux-info-only"]:
            v = rows.get((op, size, impl))
            if not v:
                continue
            ratio = ""
            if not impl.startswith("raw") and raw:
                ratio = f"{v[0] / raw[0][0]:.2f}"
            print(f"| {size} | {impl} | {fmt(v[0])} | {fmt(v[1])} – {fmt(v[2])} | {v[3]} × {v[4]} | {ratio} |")
