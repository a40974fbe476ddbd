"""``python -m remote.dashboard [--host 127.0.0.1] [--port 8765] [--token …] [--monthly-budget 50]``."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

from ..core.config import data_dir
from .app import create_app
from .security import BindError, check_bind


def _budget(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount in dollars") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remote.dashboard",
                                     description="The local Pose Factory dashboard over the data dir.")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; others need --token)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port (default 8765)")
    parser.add_argument("--token", default=os.environ.get("POSEFACTORY_DASHBOARD_TOKEN"),
                        help="access token, required to bind beyond loopback (or POSEFACTORY_DASHBOARD_TOKEN)")
    parser.add_argument("--hosts", type=Path, help="ssh_hosts.yaml for Generate (default: the built-in local host)")
    parser.add_argument("--monthly-budget", type=_budget, default=os.environ.get("POSEFACTORY_MONTHLY_BUDGET_USD"),
                        help="dollars per calendar month, for 'budget left' on the Costs page")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        check_bind(args.host, args.token)
    except BindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    budget = _budget(args.monthly_budget) if isinstance(args.monthly_budget, str) else args.monthly_budget
    app = create_app(data_dir(), access_token=args.token if args.token else None, hosts_file=args.hosts,
                     monthly_budget=budget)
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    suffix = "/?token=<your token>" if args.token else "/"
    print(f"Pose Factory dashboard on http://{shown_host}:{args.port}{suffix} (data: {data_dir()})", flush=True)
    app.run(host=args.host, port=args.port, threaded=True, use_reloader=False, debug=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
