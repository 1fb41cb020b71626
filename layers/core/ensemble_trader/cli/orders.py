"""``ensemble-trader orders``: operate the order stage — status, kill switch, reconciliation, plot.

Works against the local stack (``ET_AWS_ENDPOINT_URL`` set, e.g. by ``ensemble-trader local
up``) or real AWS (credentials from the usual chain), with the same code the orders Lambda's
``kill_switch`` and ``reconcile`` entries run — but with the broker *this* shell's ``ET_ORDERS_*``
settings configure (the paper broker by default). ``kill-switch`` and ``reconcile`` therefore
first compare that broker with the one the stage's order router recorded in the risk state, and
refuse (exit 1, nothing changed) when they differ: see :class:`~ensemble_trader.runtime.orders.OrderRouter`.

The region is the AWS CLI's (``AWS_REGION``, ``AWS_DEFAULT_REGION``, then the profile's), so these
commands reach the stack the runbook's ``aws ...`` commands reach; each prints the stage, region
and risk-state table on stderr before it acts, and fails naming how to set a region when none is
set.
"""

from __future__ import annotations

import argparse
import json
from functools import partial


def register(sub: argparse._SubParsersAction) -> None:
    from ensemble_trader.cli import image_path

    orders = sub.add_parser("orders", help="order stage: status, kill switch, reconciliation")
    orders_sub = orders.add_subparsers(dest="orders_command", metavar="SUBCOMMAND", required=True)

    p = orders_sub.add_parser("status", help="trading state, kill switch, halts, positions, working orders")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_status)

    p = orders_sub.add_parser("kill-switch", help="turn the kill switch on (cancel working orders) or off")
    p.add_argument("state", choices=["on", "off"], help="on: reject every new order and cancel working ones; off: trade again")
    p.add_argument("--reason", required=True, help="why (stored with the flag and published)")
    p.add_argument("--reset-breaker", action="store_true",
                   help="only with 'off': also reset a latched circuit breaker (refused with 'on')")
    p.set_defaults(func=partial(_kill_switch, parser=p))

    p = orders_sub.add_parser(
        "reconcile", help="compare orders and positions with the broker now",
        description="What the scheduled reconciliation does, now: look up the orders not final and the positions "
                    "at the broker, book the fills found, retire orders that never reached it, lift halts the "
                    "broker's book explains, and print the result as JSON.")
    p.set_defaults(func=_reconcile)

    p = orders_sub.add_parser("plot", help="positions over time and rejections by reason (PNG)")
    p.add_argument("--out", type=image_path, default="orders.png", help="image file to write (default orders.png)")
    p.set_defaults(func=_plot)


def _target(command: str) -> None:
    """Say on stderr where ``command`` acts (stage, region, risk-state table; the endpoint when
    one is set, e.g. the local stack's) before it does anything there: an operator sees at once a
    command about to reach another region's stack than the runbook's ``aws ...`` commands. With no
    region set it says so; the command then fails when it builds its first client
    (:class:`~ensemble_trader.runtime.settings.RegionNotSetError`, which says how to set one)."""
    import sys

    from ensemble_trader.adapters.aws.clients import aws_region
    from ensemble_trader.runtime.settings import EnvironmentSettingError, get_settings

    settings = get_settings()
    try:
        region = aws_region(settings)
    except EnvironmentSettingError:
        region = "(none set)"
    where = f"stage {settings.stage}, region {region}, table {settings.name('risk-state')}"
    if settings.aws_endpoint_url:
        where += f", endpoint {settings.aws_endpoint_url}"
    print(f"orders {command}: {where}", file=sys.stderr)


def _status(args: argparse.Namespace) -> int:
    from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore

    _target("status")
    store = DynamoOrdersStore()
    state = store.load_risk_state()
    positions = sorted(store.list_positions(), key=lambda p: p.symbol)
    working = store.list_orders(working_only=True)
    doc = {
        "broker": state.broker or None,  # the broker the stage's order router recorded
        "trading_state": state.effective_state.value,
        "breaker": {"state": state.trading_state.value, "reason": state.state_reason,
                    "latched": state.breaker_latched},
        "kill_switch": {"active": state.kill_switch, "reason": state.kill_switch_reason,
                        "issued_at": state.kill_switch_at.isoformat() if state.kill_switch_at else None,
                        "command_id": state.kill_switch_command_id or None},
        "halted_symbols": state.halted_symbols,
        "equity": state.equity,
        "positions": {p.symbol: {"quantity": p.quantity, "average_price": p.average_price,
                                 "realized_pnl": p.realized_pnl} for p in positions},
        "working_orders": [
            {"client_order_id": o.client_order_id, "symbol": o.symbol, "side": o.side.value,
             "quantity": o.quantity, "filled": o.filled_quantity, "status": o.status.value}
            for o in working
        ],
    }
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 0
    print(f"broker         {state.broker or '(not recorded yet)'}")
    print(f"trading state  {doc['trading_state']}  (breaker {state.trading_state.value}"
          f"{': ' + state.state_reason if state.state_reason else ''})")
    print(f"kill switch    {'ON: ' + state.kill_switch_reason if state.kill_switch else 'off'}")
    switch = doc["kill_switch"]
    if switch["issued_at"] or switch["command_id"]:  # the command that set it (a hand flip may name none)
        print(f"  set by       {switch['command_id'] or '(no command id)'} at {switch['issued_at'] or '(no time)'}")
    for symbol, reason in state.halted_symbols.items():
        print(f"halted         {symbol}: {reason}")
    for p in positions:
        print(f"position       {p.symbol:<8} {p.quantity:>12,.2f} @ {p.average_price:,.4f}")
    for o in doc["working_orders"]:
        print(f"working        {o['client_order_id']} {o['side']} {o['quantity']:g} {o['symbol']} "
              f"({o['status']}, filled {o['filled']:g})")
    return 0


def _refused(exc: BaseException, instead: str) -> int:
    """Print why an operator command was refused for trading another broker, and what to do."""
    import sys

    from ensemble_trader.runtime.settings import get_settings

    settings = get_settings()
    print(
        f"ensemble-trader: error: {exc}.\n"
        "Either give this shell the stage's order settings — ET_ORDERS_BROKER, ET_ORDERS_ALPACA_PAPER, "
        "ET_ORDERS_ALPACA_SECRET_NAME and ET_ORDERS_INITIAL_EQUITY as the orders functions have them "
        f"(aws lambda get-function-configuration --function-name {settings.name('orders')} "
        "--query Environment.Variables) — and run the command again, or " + instead + ".",
        file=sys.stderr,
    )
    return 1


def _kill_switch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The command is ordered among the control events (see ``KillSwitchCommand``) by AWS's
    clock in whole seconds — the ``Date`` of DynamoDB's answer when the risk state is read
    (:meth:`~ensemble_trader.runtime.orders.OrderRouter.command_time`), as EventBridge stamps the
    events' ``time`` —, never by this machine's clock: one issued before the command the risk
    state holds, or an "off" in the same second as the stored "on", is ignored, and the exit
    status is then 1 with the reason on stderr. Refused (exit 1, nothing changed) when the
    stage's router trades another broker than this shell's settings configure.
    ``--reset-breaker`` with ``on`` is a usage error (exit 2) before anything is read."""
    import sys
    import uuid

    from ensemble_trader.runtime.orders import BrokerMismatchError, build_router
    from ensemble_trader.runtime.settings import get_settings

    if args.reset_breaker and args.state == "on":
        message = ("argument --reset-breaker: only with 'off' (a latched circuit breaker is reset when the "
                   "kill switch is lifted, never while it is turned on)")
        parser.error(message)
    _target(f"kill-switch {args.state}")
    try:
        router = build_router(operator_command=f"kill switch {args.state}")
        result = router.set_kill_switch(
            args.state == "on", args.reason, reset_breaker=args.reset_breaker,
            issued_at=router.command_time(), command_id=f"cli-{uuid.uuid4()}",
        )
    except BrokerMismatchError as exc:
        settings = get_settings()
        return _refused(exc, (
            f"send the KillSwitch control event to the bus {settings.name('events')} (docs/runbook.md §1): "
            f"the stage's {settings.name('orders-kill-switch')} function applies it at the stage's broker"
        ))
    print(json.dumps(result, indent=2))
    if not result["applied"]:
        print(f"kill switch not changed: {result['ignored']}", file=sys.stderr)
        return 1
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    """Refused (exit 1, nothing changed) when the stage's router trades another broker than this
    shell's settings configure."""
    from ensemble_trader.runtime.orders import BrokerMismatchError, build_router
    from ensemble_trader.runtime.settings import get_settings

    _target("reconcile")
    try:
        report = build_router(operator_command="reconciliation").reconcile()
    except BrokerMismatchError as exc:
        settings = get_settings()
        return _refused(exc, (
            f"run the stage's own reconciliation: aws lambda invoke --function-name "
            f"{settings.name('orders-reconcile')} out.json"
        ))
    print(json.dumps(report.as_dict(), indent=2))
    return 0 if report.ok else 1


def _plot(args: argparse.Namespace) -> int:
    from collections import Counter

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore
    from ensemble_trader.domain.models import OrderStatus, Side

    _target("plot")
    orders = DynamoOrdersStore().list_orders()
    filled = sorted((o for o in orders if o.filled_quantity > 0),
                    key=lambda o: (o.decision_time or o.created_at, o.client_order_id))
    rejected = Counter(o.reject_code or "?" for o in orders if o.status is OrderStatus.REJECTED)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    for symbol in sorted({o.symbol for o in filled}):
        held, times, path = 0.0, [], []
        for o in (o for o in filled if o.symbol == symbol):
            when = o.decision_time or o.created_at
            if not times:
                times.append(when)
                path.append(0.0)  # flat before the first fill
            held += o.filled_quantity if o.side is Side.BUY else -o.filled_quantity
            times.append(when)
            path.append(held)
        left.plot(times, path, drawstyle="steps-post", marker=".", label=symbol)
    left.axhline(0.0, color="grey", linewidth=0.8)
    left.set_title("position from filled orders (by decision time)")
    left.set_ylabel("shares")
    if filled:
        left.legend()
    reasons = rejected.most_common()
    if reasons:
        right.barh([r for r, _ in reasons][::-1], [n for _, n in reasons][::-1], color="tab:red")
    else:
        right.set_axis_off()
        right.text(0.5, 0.5, "no rejected orders", ha="center", va="center")
    right.set_title(f"rejected orders by reason ({sum(rejected.values()):,})")
    fig.tight_layout()
    from ensemble_trader.marketdata import save_figure

    save_figure(fig, args.out, dpi=110)
    plt.close(fig)
    print(f"wrote {args.out}: {len(filled):,} filled orders, {sum(rejected.values()):,} rejections")
    return 0
