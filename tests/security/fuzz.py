"""Schemathesis against a live ``facegate serve``, once with an admin key and once with a kiosk
key: the runner of the CI test (tests/security/test_schemathesis.py, a few examples per
operation) and of the full run (``scripts/fuzz.sh``, ~30 minutes).

Each role is one ``schemathesis run`` of the server's ``/openapi.json`` (positive and negative
data, every operation) with the checks of :data:`CHECKS`; its JSON report gives the cases and
the failures by kind. The server's own ``/metrics`` give the 5xx answers it sent
(``facegate_requests_total`` by status, ``facegate_errors_total{code="internal_error"}``), so
a 500 counts even where a check would not look.

Full run (what ``scripts/fuzz.sh`` does)::

    .venv/bin/python tests/security/fuzz.py --max-time 840 --examples 1000 --workers 2 --stateful \\
        --out benchmarks/results/fuzz.json
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
if __name__ == "__main__":      # run as a script: the test helpers are importable as in pytest
    sys.path[:0] = [str(HERE.parent.parent), str(HERE.parent)]

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance")
"""No 5xx; the status, media type and body of every answer are the ones the document declares."""
PHASES = ("examples", "coverage", "fuzzing")
ROLES = ("admin", "kiosk")


def command(url: str, key: str, report: Path, *, examples: int, seed: int, workers: int = 1,
            max_time: int | None = None, stateful: bool = False, deterministic: bool = False) -> list[str]:
    """The ``schemathesis run`` command line for one role. ``deterministic``: the same cases on
    every run (CI); otherwise the seed starts a run that keeps varying until ``max_time``."""
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
           "--header", f"X-API-Key: {key}", "--checks", ",".join(CHECKS),
           "--mode", "all", "--max-examples", str(examples), "--seed", str(seed),
           *(["--generation-deterministic"] if deterministic else ["--generation-database", "none"]),
           "--workers", str(workers),
           "--phases", ",".join(PHASES + (("stateful",) if stateful else ())),
           "--continue-on-failure", "--request-timeout", "60", "--suppress-health-check", "all",
           "--no-color", "--report", "json", "--report-json-path", str(report)]
    if max_time:
        cmd += ["--max-time", str(max_time)]
    return cmd


def run_role(url: str, key: str, role: str, workdir: Path, **options) -> dict:
    """One role's run: its JSON report plus ``role``, ``seconds`` and the end of its output."""
    report = workdir / f"schemathesis-{role}.json"
    started = time.perf_counter()
    proc = subprocess.run(command(url, key, report, **options), capture_output=True, text=True,
                          cwd=workdir, timeout=(options.get("max_time") or 0) + 1800)
    out = json.loads(report.read_text()) if report.exists() else {"exit_code": proc.returncode}
    out.update(role=role, seconds=round(time.perf_counter() - started, 1), returncode=proc.returncode,
               output_tail=(proc.stdout + proc.stderr)[-6000:])
    return out


def server_answers(url: str) -> dict:
    """Answers by status class and the ``internal_error`` count, from the server's ``/metrics``."""
    text = httpx.get(url + "/metrics", timeout=30).text
    by_class: Counter = Counter()
    for status, value in re.findall(r'^facegate_requests_total\{[^}]*status="(\d+)"[^}]*\} ([0-9.e+]+)$', text, re.M):
        by_class[f"{status[0]}xx"] += int(float(value))
    internal = re.findall(r'^facegate_errors_total\{code="internal_error"\} ([0-9.e+]+)$', text, re.M)
    return {"by_class": dict(sorted(by_class.items())), "internal_error": int(float(internal[0])) if internal else 0}


def failures_by_kind(reports: list[dict]) -> dict[str, int]:
    kinds: Counter = Counter()
    for report in reports:
        for failure in report.get("failures", []):
            kinds[f"{failure.get('code')} {failure.get('title')}"] += int(failure.get("count", 1))
    return dict(kinds)


def summary(reports: list[dict], answers: dict) -> dict:
    return {
        "cases": sum(r.get("test_cases", {}).get("generated", 0) for r in reports),
        "cases_by_role": {r["role"]: r.get("test_cases", {}).get("generated", 0) for r in reports},
        "cases_with_failures": sum(r.get("test_cases", {}).get("with_failures", 0) for r in reports),
        "failures_by_kind": failures_by_kind(reports),
        "errors": sum(len(r.get("errors", [])) for r in reports),
        "operations": max((r.get("operations", {}).get("tested", 0) for r in reports), default=0),
        "server_answers": answers,
        "server_5xx": answers["by_class"].get("5xx", 0),
        "seconds_by_role": {r["role"]: r["seconds"] for r in reports},
        "exit_codes": {r["role"]: r.get("exit_code", r["returncode"]) for r in reports},
    }


def run_all(server, workdir: Path, **options) -> tuple[dict, list[dict]]:
    reports = [run_role(server.url, server.keys[role]["key"], role, workdir, **options) for role in ROLES]
    return summary(reports, server_answers(server.url)), reports


def main(argv: list[str] | None = None) -> int:
    from security.conftest import start_server     # noqa: E402 (path set above)
    from benchmarks._common import uptime

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=1000, help="most cases per operation and phase")
    ap.add_argument("--max-time", type=int, default=840, help="seconds per role (fuzzing repeats until spent)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--stateful", action="store_true", help="also run schemathesis' stateful phase")
    ap.add_argument("--out", help="write the summary and the reports (JSON) here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="facegate-fuzz-") as tmp:
        workdir = Path(tmp)
        (workdir / "data").mkdir()
        srv = start_server(workdir / "data", inference_queue=64)
        try:
            load_before = uptime()
            result, reports = run_all(srv, workdir, examples=args.examples, seed=args.seed, workers=args.workers,
                                      max_time=args.max_time, stateful=args.stateful)
            result.update(server_alive=srv.alive(), traceback_in_log="Traceback" in srv.log(),
                          load_before=load_before, load_after=uptime(),
                          command=" ".join([".venv/bin/python tests/security/fuzz.py",
                                            *(argv if argv is not None else sys.argv[1:])]))
        finally:
            srv.stop()
    print(json.dumps(result, indent=2))
    for r in reports:
        if r.get("failures"):
            print(f"--- {r['role']}\n{r['output_tail']}", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": result, "reports": [
            {k: v for k, v in r.items() if k != "output_tail"} for r in reports]}, indent=1))
    return 0 if result["server_5xx"] == 0 and not result["failures_by_kind"] and not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
