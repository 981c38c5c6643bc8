"""Totals of one schemathesis run, from its HAR and NDJSON reports (for scripts/schemathesis.sh).

Usage: schemathesis_totals.py NAME REPORT_DIR SECONDS

Prints the requests sent, the 5xx answers, the response schema violations and every other failed
check by name; exits 1 when there were 5xx answers or any failed check.
"""

import collections
import json
import pathlib
import sys


def main() -> int:
    name, report_dir, seconds = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
    statuses: collections.Counter[int] = collections.Counter()
    for har in report_dir.glob("har-*.json"):
        for entry in json.loads(har.read_text())["log"]["entries"]:
            statuses[entry["response"]["status"]] += 1
    failed: collections.Counter[str] = collections.Counter()
    for ndjson in report_dir.glob("ndjson-*.ndjson"):
        for line in ndjson.read_text().splitlines():
            event = json.loads(line)
            finished = event.get("ScenarioFinished")
            if not finished:
                continue
            for results in finished.get("recorder", {}).get("checks", {}).values():
                for check in results:
                    if check.get("status") == "failure":
                        failed[check["name"]] += 1
    requests = sum(statuses.values())
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    violations = failed.pop("response_schema_conformance", 0)
    spread = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
    others = ", ".join(f"{check}: {n}" for check, n in sorted(failed.items())) or "none"
    print(
        f"{name}: {requests} requests in {seconds} s, {server_errors} answered 5xx, "
        f"{violations} response schema violations; other failed checks: {others}\n"
        f"{name}: statuses {spread}"
    )
    if requests == 0:
        print(f"{name}: no request was sent", file=sys.stderr)
        return 1
    return 1 if server_errors or violations or failed else 0


if __name__ == "__main__":
    sys.exit(main())
