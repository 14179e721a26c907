"""Schema-driven fuzzing of every operation of the live API (schemathesis), bounded for CI.

For each operation of ``/openapi.json`` schemathesis generates requests, valid and invalid
(``--mode all``), from a fixed seed (``--generation-deterministic``), and sends them with an
admin key and with a kiosk key (:mod:`.fuzz`, the runner shared with the full run). Every
answer must pass :data:`.fuzz.CHECKS`:

- ``not_a_server_error``: no 5xx (and the server's own ``/metrics`` count no 5xx either);
- ``status_code_conformance``: the status is one the document declares for the operation
  (every problem status is declared: :mod:`facegate.service.openapi`);
- ``content_type_conformance``, ``response_schema_conformance``: the body is the declared
  media type and matches the declared schema (``Problem`` for every error).

The full run (tens of thousands of cases, ~30 minutes) is ``scripts/fuzz.sh``; its figures are
in benchmarks/results/security.md. ``FACEGATE_FUZZ_EXAMPLES`` raises the examples per operation.

Kept beside it: tests/test_service_fuzz.py, which fuzzes what a schema cannot describe (image
bytes, declared sizes, content types, raw and malformed bodies).
"""
from __future__ import annotations

import json
import os

import pytest

from .conftest import start_server
from .fuzz import run_all

EXAMPLES = int(os.environ.get("FACEGATE_FUZZ_EXAMPLES", "10"))
SEED = 20261202


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # inference_queue: the fuzzer's image uploads must not meet 503 overloaded (declared, but noise)
    srv = start_server(tmp_path_factory.mktemp("schemathesis"), inference_queue=64)
    yield srv
    srv.stop()


def test_every_operation_honours_its_documented_answers(server, tmp_path):
    result, reports = run_all(server, tmp_path, examples=EXAMPLES, seed=SEED, deterministic=True)
    print(json.dumps(result, indent=1))
    tails = "\n".join(f"--- {r['role']}\n{r['output_tail']}" for r in reports if r.get("failures") or r.get("errors")
                      or r["returncode"] != 0)
    assert result["operations"] >= 20, tails
    assert result["cases"] > 0 and all(result["cases_by_role"].values()), result
    assert not result["failures_by_kind"] and not result["errors"], tails
    assert result["server_5xx"] == 0 and result["server_answers"]["internal_error"] == 0, result
    assert all(code == 0 for code in result["exit_codes"].values()), tails
    assert server.alive() and "Traceback" not in server.log(), server.log()
