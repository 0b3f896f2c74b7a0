"""python -m tests.services start|status|stop [slurm|postgres|mlflow ...]: the services by hand (module doc of
tests/services/__init__.py). `start` prints the environment a client needs, e.g. to run a sweep on the
cluster: `export SLURM_CONF=...`."""

from __future__ import annotations

import argparse
import json
import sys

from tests.services import KINDS, ServiceError, ensure, state_dir, status, stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.services")
    parser.add_argument("action", choices=["start", "status", "stop"])
    parser.add_argument("kinds", nargs="*", choices=[[], *KINDS], help="default: all three")
    args = parser.parse_args(argv)
    if args.action == "status":
        print(json.dumps(status(), indent=1))
        return 0
    if args.action == "stop":
        print("stopped:", ", ".join(stop()) or "nothing")
        return 0
    code = 0
    for kind in args.kinds or list(KINDS):
        try:
            service = ensure(kind)
        except ServiceError as e:
            print(f"error: {kind}: {e}", file=sys.stderr)
            code = 1
            continue
        endpoint = service.info.get("url") or service.info.get("conf")
        print(f"{kind}: {endpoint}")
        for key, value in service.env.items():
            print(f"  export {key}={value}")
    print(f"state: {state_dir()}")
    return code


if __name__ == "__main__":
    sys.exit(main())
