"""The isolated child that unpickles a model (``inspect_pickle`` runs it with ``python -I``).

Unpickling executes whatever the file says, so it happens here and never in the parent: with a
throw-away cwd, an environment of just PATH, capped memory and CPU time (hard limits, so the pickle
cannot lift them), and stdout reserved for the JSON contract the parent validates.
"""

from __future__ import annotations

import os
import resource
import sys

MEMORY_LIMIT = 2 * 1024**3
CPU_LIMIT_S = 60


def _limit() -> None:
    for res, value in ((resource.RLIMIT_AS, MEMORY_LIMIT), (resource.RLIMIT_CPU, CPU_LIMIT_S)):
        _, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(res, (value, value))


def main(argv: list[str]) -> int:
    from chalicelib.core.errors import ModelportError
    from chalicelib.inspect.sklearn import PROBE_CLEAN_EXIT, contract_from_estimator

    path, rel = argv
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything the pickle prints goes to stderr, never into the contract
    _limit()
    try:
        import joblib

        contract = contract_from_estimator(joblib.load(path), rel=rel, fmt="pickle")
    except ModelportError as exc:
        print(" ".join(str(exc).split()), file=sys.stderr)
        return PROBE_CLEAN_EXIT
    except BaseException as exc:  # untrusted code may raise anything, SystemExit included
        print(f"{type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    out.write(contract.model_dump_json())
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
