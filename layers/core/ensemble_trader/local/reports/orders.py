"""The orders stage's section of the demo summary: orders, fills, rejections by reason, positions.

Reads what the orders λ left in the local stack — the ``orders``, ``positions`` and
``risk-state`` tables, the paper broker's books, ``orders-dlq`` — and the consumers' own
statistics (route latency including the DynamoDB round trips of the local stack).
"""

from __future__ import annotations

from collections import Counter

from ensemble_trader.local.reports import rejected_lines
from ensemble_trader.local.stack import LocalStack


def summarize(stack: LocalStack) -> str:
    from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore, DynamoPaperLedger
    from ensemble_trader.adapters.brokers.paper import PaperBroker
    from ensemble_trader.domain.models import OrderStatus
    from ensemble_trader.runtime import orders as orders_runtime
    from ensemble_trader.runtime.clock import SystemClock

    store = DynamoOrdersStore(settings=stack.settings)
    orders = store.list_orders()
    positions = sorted(store.list_positions(), key=lambda p: p.symbol)
    state = store.load_risk_state()
    paper = PaperBroker(DynamoPaperLedger(settings=stack.settings), SystemClock())
    broker_positions = {p.symbol: p.quantity for p in paper.list_positions()}
    statuses = Counter(o.status.value for o in orders)
    rejected = Counter(o.reject_code or "?" for o in orders if o.status is OrderStatus.REJECTED)
    filled_qty = sum(o.filled_quantity for o in orders)
    fees = sum(o.fees_paid for o in orders)
    _, dead_letters = rejected_lines(stack, "orders-dlq", label="dead letters")
    stats = orders_runtime.ROUTE_STATS
    with_orders = len({o.intent_id for o in orders})
    equity = orders_runtime.OrdersSettings().initial_equity + sum(
        p.realized_pnl - p.fees_paid
        + p.quantity * ((state.marks[p.symbol].price if p.symbol in state.marks else p.average_price)
                        - p.average_price)
        for p in positions
    )

    lines = [
        "orders λ  (order-intents → risk engine → paper broker)",
        f"  intents routed    {stats.intents:>8,}  in this process: {with_orders:,} led to orders, "
        f"{stats.intents - with_orders:,} needed none (plus {stats.dead_lettered:,} dead-lettered)",
        f"  orders            {len(orders):>8,}  "
        + (", ".join(f"{k} {v:,}" for k, v in statuses.most_common()) or "none"),
        f"  filled            {filled_qty:>12,.0f} shares, fees {fees:,.2f}",
        f"  rejected orders   {sum(rejected.values()):>8,}  by reason: "
        + (", ".join(f"{k} {v:,}" for k, v in rejected.most_common()) or "none"),
        *dead_letters,
        f"  trading state     {state.effective_state.value}"
        + (f" ({state.state_reason})" if state.state_reason else "")
        + (f"; kill switch ON: {state.kill_switch_reason}" if state.kill_switch else "")
        + (f"; halted symbols: {state.halted_symbols}" if state.halted_symbols else ""),
        f"  equity            {equity:>14,.2f}  (paper account, marked at the last prices)",
        "  final positions   (ours | paper broker)",
    ]
    for p in positions:
        mark = state.marks.get(p.symbol)
        lines.append(
            f"    {p.symbol:<6} {p.quantity:>10,.0f} @ {p.average_price:>10,.2f} | broker "
            f"{broker_positions.get(p.symbol, 0.0):>10,.0f}   realised {p.realized_pnl:>12,.2f}, "
            f"fees {p.fees_paid:>9,.2f}, last {mark.price if mark else float('nan'):,.2f}"
        )
    if not positions:
        lines.append("    none")
    latency = stats.percentiles()
    if latency:
        lines.append(
            f"  route latency     p50 {latency['p50'] / 1e3:.1f} ms, p99 {latency['p99'] / 1e3:.1f} ms per "
            "intent (risk + broker + DynamoDB on the local stack; in process: `ensemble-trader bench`)"
        )
    return "\n".join(lines)
