#!/usr/bin/env python3
"""Judges an Autobahn|Testsuite fuzzingclient report (scripts/autobahn runs this).

    check-report.py REPORT_DIR AGENT --max-message-bytes N

Reads REPORT_DIR/index.json and, for the cases that did not pass, the per-case JSON.
Prints the counts per behaviour and every case that did not pass, and exits 1 unless:

* every case whose messages fit in N bytes is OK, NON-STRICT or INFORMATIONAL;
* every case with a bigger message (9.x only; sizes below) was closed by the server with
  1009 (message too big), whatever its behaviour: refusing it is right, and dropping the
  connection or answering with another code is not.

Exits 2 on a report that is missing, empty or holds cases other than 1-10.
"""

import argparse
import collections
import json
import os
import sys

PASSING = ("OK", "NON-STRICT", "INFORMATIONAL")
KIB, MIB = 1 << 10, 1 << 20

# The largest message of each 9.x case, from autobahntestsuite's case sources (the
# descriptions in the reports have typos: 9.2.5 says 16M, 9.3.9 says 8M; both are wrong).
# 9.1/9.2: one text/binary message per case; 9.3/9.4: a 4 MiB message in fragments of
# 64 B to 4 MiB; 9.5/9.6: a 1 MiB message written in small chops; 9.7/9.8: 1000 messages
# of at most 4 KiB.
_SIZES_9_1 = [64 * KIB, 256 * KIB, 1 * MIB, 4 * MIB, 8 * MIB, 16 * MIB]


def message_bytes(case_id):
    """The largest message (bytes) case `case_id` sends."""
    parts = [int(p) for p in case_id.split(".")]
    if parts[0] != 9:
        return 0  # cases 1-8 and 10 send at most 64 KiB (10.1.1), below any sane limit
    group, n = parts[1], parts[2]
    if group in (1, 2):
        return _SIZES_9_1[n - 1]
    if group in (3, 4):
        return 4 * MIB
    if group in (5, 6):
        return 1 * MIB
    return 4 * KIB


def case_key(case_id):
    return [int(p) for p in case_id.split(".")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report_dir")
    ap.add_argument("agent")
    ap.add_argument("--max-message-bytes", type=int, required=True,
                    help="the server's message limit: cases with bigger messages must close 1009")
    args = ap.parse_args()

    index_path = os.path.join(args.report_dir, "index.json")
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        print("autobahn: no usable report at %s: %s" % (index_path, e), file=sys.stderr)
        return 2
    cases = index.get(args.agent) or {}
    if not cases:
        print("autobahn: the report has no cases for agent %r" % args.agent, file=sys.stderr)
        return 2
    outside = sorted(c for c in cases if not 1 <= case_key(c)[0] <= 10)
    if outside:
        print("autobahn: the report has cases outside 1-10: %s" % ", ".join(outside), file=sys.stderr)
        return 2

    counts = collections.Counter(c["behavior"] for c in cases.values())
    refused = []  # oversize cases closed with 1009, as they should be
    failures = []  # (case, why)
    notes = []  # passing but not OK: NON-STRICT, INFORMATIONAL
    for case_id in sorted(cases, key=case_key):
        c = cases[case_id]
        behaviour = c["behavior"]
        oversize = message_bytes(case_id) > args.max_message_bytes
        if not oversize:
            if behaviour in PASSING:
                if behaviour != "OK":
                    notes.append("%s %s (close %s)" % (case_id, behaviour, c.get("behaviorClose")))
                continue
            failures.append((case_id, "%s, close %s, remote close code %s" % (
                behaviour, c.get("behaviorClose"), c.get("remoteCloseCode"))))
            continue
        # Bigger than the limit: the server must have closed with 1009. The per-case file
        # has what the server sent (remoteCloseCode) and whether the close was clean.
        with open(os.path.join(args.report_dir, c["reportfile"])) as f:
            detail = json.load(f)
        code = detail.get("remoteCloseCode")
        if code == 1009:
            refused.append(case_id)
        else:
            why = "remote close code %s" % code
            if detail.get("droppedByMe") is False and not detail.get("wasClean"):
                why += " (connection dropped: %s)" % detail.get("wasNotCleanReason")
            failures.append((case_id, "%s message (limit %d): expected close 1009, got %s; behaviour %s" % (
                _size(message_bytes(case_id)), args.max_message_bytes, why, behaviour)))

    total = len(cases)
    summary = ", ".join("%d %s" % (counts[b], b) for b in sorted(counts, key=lambda b: (-counts[b], b)))
    print("autobahn: %d cases: %s" % (total, summary))
    for n in notes:
        print("  passing, not OK: %s" % n)
    if refused:
        print("  bigger than %d bytes, refused with 1009 as they should be: %d (%s)" % (
            args.max_message_bytes, len(refused), _ranges(refused)))
    for case_id, why in failures:
        print("  FAILED %s: %s" % (case_id, why))
    if failures:
        print("autobahn: %d case(s) failed; report: %s" % (
            len(failures), os.path.join(args.report_dir, "index.html")), file=sys.stderr)
        return 1
    return 0


def _size(n):
    return "%d MiB" % (n // MIB) if n >= MIB else "%d KiB" % (n // KIB)


def _ranges(ids):
    """9.1.4, 9.1.5, 9.1.6, 9.2.4 -> 9.1.4-6, 9.2.4 (runs of consecutive cases)."""
    out = []
    for i in ids:
        head, _, last = i.rpartition(".")
        if out and out[-1][0] == head and out[-1][2] + 1 == int(last):
            out[-1][2] = int(last)
        else:
            out.append([head, int(last), int(last)])
    return ", ".join("%s.%d" % (h, a) if a == b else "%s.%d-%d" % (h, a, b) for h, a, b in out)


if __name__ == "__main__":
    sys.exit(main())
