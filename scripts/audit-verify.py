#!/usr/bin/env python3
"""Verify a levee audit export (JSON lines) without levee.

An independent implementation of the canonical encoding in ARCHITECTURE.md
("Audit hash format"), so anyone can check a chain with their own tool, and so
the tests can prove the documentation is right.

    scripts/audit-verify.py EXPORT.jsonl [--head SHA256]

Prints "ok N entries" and exits 0, or names the first bad line and exits 1.
"""
import hashlib
import json
import sys

GENESIS = "0" * 64


def canonical(e):
    tup = ["levee-audit/1", e["seq"], e["time"], e["actor"], e["action"],
           e["target"], e["details"], e["prev_hash"]]
    return json.dumps(tup, separators=(",", ":"), ensure_ascii=False,
                      sort_keys=True).encode("utf-8")


def main(argv):
    path = argv[1]
    head = argv[argv.index("--head") + 1] if "--head" in argv else None
    prev, expected, n, last = GENESIS, 1, 0, None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            e = json.loads(line)
            if hashlib.sha256(canonical(e)).hexdigest() != e["hash"]:
                print(f"line {lineno}: hash mismatch")
                return 1
            if e["seq"] != expected or e["prev_hash"] != prev:
                print(f"line {lineno}: chain broken")
                return 1
            prev, expected, n, last = e["hash"], e["seq"] + 1, n + 1, e["hash"]
    if head is not None and last != head:
        print("chain does not end at the given head")
        return 1
    print(f"ok {n} entries")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
