"""DynamoDB persistence of the order stage: orders, positions, risk state, the paper broker's books.

Tables (logical names from :mod:`ensemble_trader.constants`):

* ``orders`` (key ``client_order_id``): one item per order, the :class:`Order` as attributes plus
  a ``working`` flag. ``create_order`` is a conditional put (``attribute_not_exists``);
  ``update_order`` is conditional on the status and filled quantity the caller read. The item
  ``client_order_id = "#working"`` holds the string set ``ids`` of the working orders, changed in
  the same transaction as the order, so listing working orders never scans the table.
* ``positions`` (key ``symbol``): the :class:`Position` plus a ``version``.
* ``risk-state`` (key ``pk = "global"``): the :class:`RiskState` as JSON in ``state``, a
  ``version`` checked on every write, and the kill switch as its own boolean attribute
  ``kill_switch`` so an operator can flip it with one ``update-item`` (with ``kill_switch_reason``,
  and ``kill_switch_at`` / ``kill_switch_command_id``: the time and id of the command that set it,
  which order the commands). A kill-switch save is conditional on the version *and* on these
  four attributes still being as read: an operator's ``update-item`` of the flag need not bump
  the version, and a command decided on the state from before it must not overwrite it
  (:class:`ConcurrencyError`: the command is decided again). The JSON also names the broker the
  stage's router trades (``broker``; absent from items written before it was recorded, read as
  none). The ``Date`` of the read's response, AWS's clock in whole seconds, is kept
  (:meth:`DynamoOrdersStore.server_time`): it stamps the operator CLI's kill-switch commands.
* ``paper-broker`` (``pk``, ``sk``): ``ORDER``/``<id>`` for every paper order, ``OPEN``/``<id>``
  (a copy) while it is working, ``POSITION``/``<symbol>`` with a ``version``; an order update and
  the position it changes are one transaction, each conditional on the version read.

A fill is one ``TransactWriteItems``: the order (condition: its status and filled quantity are
still the ones read) and the position (condition: its version is still the one read). A lost
order condition means the fill was applied already or another writer moved the order on (the
kill switch retired it; returns None, and the caller reads it again); a lost position condition
is retried. A
transaction DynamoDB cancels for a conflict with a concurrent one (every order write also touches
``#working``) is run again with backoff (``MAX_ATTEMPTS``), and the batch read of the working
orders reads unprocessed keys again, at most ``MAX_ATTEMPTS`` times — inside a Lambda invocation
only while its deadline leaves the back-off and one attempt after it (DeadlineExceededError,
:mod:`ensemble_trader.runtime.deadline`).

A failed request's error names the table(s) and the region of the client (DynamoDB's own
``ResourceNotFoundException`` names neither): ``DynamoDB get risk state (table et-prod-risk-state,
region eu-west-1): ...``. So does an attempt the client's deadline guard refused, which stays a
DeadlineExceededError (:func:`~ensemble_trader.adapters.aws.dynamodb.translate`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from pydantic import AwareDatetime, TypeAdapter

from ensemble_trader.adapters.aws._names import physical
from ensemble_trader.adapters.aws._retry import backoff_delay
from ensemble_trader.adapters.aws.clients import attempt_seconds, error_code
from ensemble_trader.adapters.aws.clients import client as make_client
from ensemble_trader.adapters.aws.dynamodb import CALL_ERRORS, deserialize_item, serialize_item, translate
from ensemble_trader.domain.errors import ConcurrencyError, InfrastructureError, StateError
from ensemble_trader.domain.models import Fill, Order, OrderStatus, Position
from ensemble_trader.domain.orders import WORKING_STATUSES, position_after_fill
from ensemble_trader.domain.risk import RiskState
from ensemble_trader.runtime.deadline import pause
from ensemble_trader.runtime.settings import Settings, get_settings

RISK_KEY = "global"
SWITCH_ATTRIBUTES = ("kill_switch", "kill_switch_reason", "kill_switch_at", "kill_switch_command_id")
"""The risk-state item's kill-switch attributes: written only by a kill-switch save, which is
conditional on them being as they were read."""
_SWITCH_TIME: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)
WORKING_INDEX = "#working"
MAX_POSITION_RETRIES = 8
MAX_ATTEMPTS = 6
"""Attempts at a transaction DynamoDB cancels for a conflict with another writer (every order
write also updates the one ``#working`` item), and at a batch read it leaves keys of unread."""
BASE_DELAY_S = 0.02


def _num(value: float) -> dict[str, str]:
    return {"N": repr(float(value))}


class _Dynamo:
    def __init__(self, dynamodb_client: Any | None, settings: Settings | None,
                 sleep: Callable[[float], None] = time.sleep):
        self._settings = settings or get_settings()
        self._client = dynamodb_client or make_client("dynamodb", self._settings)
        self._sleep = sleep

    def _backoff(self, attempt: int, what: str) -> None:
        """Exponential backoff with jitter before attempt ``attempt + 1`` of ``what``; inside an
        invocation, DeadlineExceededError instead when its deadline would not leave one attempt
        after it (:func:`~ensemble_trader.runtime.deadline.pause`)."""
        pause(backoff_delay(BASE_DELAY_S, attempt), what, then_needed_s=attempt_seconds(self._client),
              sleep=self._sleep)

    def _table(self, logical: str) -> str:
        return physical(logical, self._settings)

    @property
    def region(self) -> str:
        """The region the client sends its requests to."""
        region = getattr(getattr(self._client, "meta", None), "region_name", None)
        return region if isinstance(region, str) else str(self._settings.region)

    def _at(self, what: str, *tables: str) -> str:
        """``what`` with the table(s) and region it was done at, for an error message: a table of
        another region's stack (or none) is then seen at once (ResourceNotFoundException alone
        names neither)."""
        names = ", ".join(dict.fromkeys(tables))
        return f"{what} (table {names}, region {self.region})"

    def _call(self, what: str, fn, **kwargs) -> Any:
        try:
            return fn(**kwargs)
        except CALL_ERRORS as exc:
            tables = [kwargs["TableName"]] if "TableName" in kwargs else list(kwargs.get("RequestItems") or ())
            raise translate(exc, self._at(what, *tables)) from exc

    def _scan(self, table: str, **kwargs) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs["TableName"] = table
        while True:
            response = self._call("DynamoDB scan", self._client.scan, ConsistentRead=True, **kwargs)
            items.extend(deserialize_item(i) for i in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if not last:
                return items
            kwargs["ExclusiveStartKey"] = last

    def _query(self, table: str, pk: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ConsistentRead": True,
        }
        while True:
            response = self._call(f"DynamoDB query {pk}", self._client.query, **kwargs)
            items.extend(deserialize_item(i) for i in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if not last:
                return items
            kwargs["ExclusiveStartKey"] = last


def response_time(response: dict[str, Any]) -> datetime | None:
    """The ``Date`` header of an AWS response (AWS's clock, whole seconds, UTC); None when the
    response has none that can be read."""
    raw = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if not raw:
        return None
    try:
        at = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return at.astimezone(UTC) if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _order_item(order: Order) -> dict[str, Any]:
    item = order.model_dump(mode="json")
    item["working"] = order.status in WORKING_STATUSES
    return item


def _order_from(item: dict[str, Any]) -> Order:
    item = dict(item)
    item.pop("working", None)
    try:
        return Order.model_validate(item)
    except ValueError as exc:
        raise StateError(f"stored order {item.get('client_order_id')!r} cannot be decoded: {exc}") from exc


def _position_from(item: dict[str, Any]) -> Position:
    item = dict(item)
    item.pop("version", None)
    try:
        return Position.model_validate(item)
    except ValueError as exc:
        raise StateError(f"stored position {item.get('symbol')!r} cannot be decoded: {exc}") from exc


class DynamoOrdersStore(_Dynamo):
    """:class:`ensemble_trader.ports.OrdersStore` over the ``orders``, ``positions`` and
    ``risk-state`` tables."""

    def __init__(self, dynamodb_client: Any | None = None, *, settings: Settings | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        super().__init__(dynamodb_client, settings, sleep)
        self.orders_table = self._table("orders")
        self.positions_table = self._table("positions")
        self.risk_table = self._table("risk-state")
        # Last position and version this instance read or wrote, per symbol: a fill transaction
        # tries it first (its version condition catches any other writer) and re-reads on a miss.
        self._known: dict[str, tuple[Position | None, int]] = {}
        self.risk_state_read_at: datetime | None = None  # the Date of the last risk-state read

    # -- orders ------------------------------------------------------------------------------

    def _index_update(self, order: Order) -> dict[str, Any]:
        """The transaction item that keeps ``#working`` in step with ``order``'s status."""
        working = order.status in WORKING_STATUSES
        return {"Update": {
            "TableName": self.orders_table,
            "Key": {"client_order_id": {"S": WORKING_INDEX}},
            "UpdateExpression": ("ADD" if working else "DELETE") + " ids :id",
            "ExpressionAttributeValues": {":id": {"SS": [order.client_order_id]}},
        }}

    def _transact(self, items: list[dict[str, Any]], what: str) -> str | None:
        """Run a transaction; the code of the first failed condition (None if it committed).

        A transaction canceled only for a conflict with a concurrent one (``TransactionConflict``,
        which botocore does not retry) changed nothing and is run again, with backoff."""
        what = self._at(what, *(t["TableName"] for item in items for t in item.values()))
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                self._client.transact_write_items(TransactItems=items)
                return None
            except CALL_ERRORS as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise translate(exc, what) from exc
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                for i, code in enumerate(reasons):
                    if code == "ConditionalCheckFailed":
                        return f"condition:{i}"
                if "TransactionConflict" not in reasons or attempt == MAX_ATTEMPTS:
                    raise InfrastructureError(
                        f"{what}: transaction canceled: {reasons} (attempt {attempt})"
                    ) from exc
            self._backoff(attempt, f"{what}: transaction canceled for a conflict {attempt} time{'s' * (attempt > 1)}")
        raise AssertionError("unreachable")  # pragma: no cover

    def create_order(self, order: Order) -> bool:
        put = {"Put": {
            "TableName": self.orders_table,
            "Item": serialize_item(_order_item(order)),
            "ConditionExpression": "attribute_not_exists(client_order_id)",
        }}
        items = [put, self._index_update(order)] if order.status in WORKING_STATUSES else [put]
        return self._transact(items, f"DynamoDB create order {order.client_order_id}") is None

    def get_order(self, client_order_id: str) -> Order | None:
        response = self._call(
            f"DynamoDB get order {client_order_id}", self._client.get_item,
            TableName=self.orders_table, Key={"client_order_id": {"S": client_order_id}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return _order_from(deserialize_item(item)) if item else None

    def update_order(self, order: Order, *, expected_status: OrderStatus, expected_filled: float) -> bool:
        put = {"Put": {
            "TableName": self.orders_table,
            "Item": serialize_item(_order_item(order)),
            "ConditionExpression": "#s = :s AND filled_quantity = :f",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":s": {"S": expected_status.value}, ":f": _num(expected_filled)},
        }}
        if (expected_status in WORKING_STATUSES) == (order.status in WORKING_STATUSES):
            put = put["Put"]  # the working index does not change: a conditional put is enough
            try:
                self._client.put_item(**put)
            except CALL_ERRORS as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return False
                raise translate(exc, self._at(f"DynamoDB update order {order.client_order_id}",
                                              self.orders_table)) from exc
            return True
        failed = self._transact([put, self._index_update(order)],
                                f"DynamoDB update order {order.client_order_id}")
        return failed is None

    def list_orders(self, *, working_only: bool = False) -> list[Order]:
        if not working_only:
            return [
                _order_from(i) for i in self._scan(self.orders_table)
                if i.get("client_order_id") != WORKING_INDEX
            ]
        response = self._call(
            "DynamoDB get working index", self._client.get_item, TableName=self.orders_table,
            Key={"client_order_id": {"S": WORKING_INDEX}}, ConsistentRead=True,
        )
        ids = sorted(deserialize_item(response["Item"]).get("ids", ())) if response.get("Item") else []
        orders: list[Order] = []
        for start in range(0, len(ids), 100):
            keys = [{"client_order_id": {"S": i}} for i in ids[start:start + 100]]
            request: dict[str, Any] = {self.orders_table: {"Keys": keys, "ConsistentRead": True}}
            for attempt in range(1, MAX_ATTEMPTS + 1):
                got = self._call("DynamoDB batch get orders", self._client.batch_get_item, RequestItems=request)
                orders.extend(_order_from(deserialize_item(i)) for i in got["Responses"].get(self.orders_table, []))
                request = got.get("UnprocessedKeys") or {}
                if not request:
                    break
                if attempt == MAX_ATTEMPTS:
                    unread = len(request[self.orders_table]["Keys"])
                    raise InfrastructureError(f"{self._at('DynamoDB batch get orders', self.orders_table)}: "
                                              f"{unread} keys still unread after {MAX_ATTEMPTS} attempts (throttled)")
                self._backoff(attempt, f"{self._at('DynamoDB batch get orders', self.orders_table)}: "
                                       f"{len(request[self.orders_table]['Keys'])} keys still unread after {attempt} "
                                       f"attempt{'s' * (attempt > 1)}")
        return [o for o in orders if o.status in WORKING_STATUSES]

    def apply_fill(
        self, order: Order, fill: Fill, *, expected_status: OrderStatus, expected_filled: float
    ) -> Position | None:
        for _ in range(MAX_POSITION_RETRIES):
            known = self._known.get(fill.symbol)
            current, version = known if known is not None else self._position_with_version(fill.symbol)
            position = position_after_fill(current, fill)
            position_item = position.model_dump(mode="json")
            position_item["version"] = version + 1
            position_put: dict[str, Any] = {
                "TableName": self.positions_table,
                "Item": serialize_item(position_item),
                "ConditionExpression": "attribute_not_exists(symbol)" if version == 0 else "version = :v",
            }
            if version:
                position_put["ExpressionAttributeValues"] = {":v": {"N": str(version)}}
            items = [
                {"Put": {
                    "TableName": self.orders_table,
                    "Item": serialize_item(_order_item(order)),
                    # as update_order: the order as read, status included — a fill must not
                    # overwrite an order another writer retired meanwhile (the kill switch)
                    "ConditionExpression": "#s = :s AND filled_quantity = :f",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": {":s": {"S": expected_status.value},
                                                  ":f": _num(expected_filled)},
                }},
                {"Put": position_put},
                self._index_update(order),
            ]
            failed = self._transact(items, f"DynamoDB fill {fill.fill_id}")
            if failed is None:
                self._known[fill.symbol] = (position, version + 1)
                return position
            self._known.pop(fill.symbol, None)
            if failed == "condition:0":
                return None  # the order moved on: this fill is applied already, or it was retired
            # condition:1 — another writer changed the position: re-read and recompute
        raise ConcurrencyError(f"position {fill.symbol} kept changing while applying {fill.fill_id}")

    # -- positions ---------------------------------------------------------------------------

    def _position_with_version(self, symbol: str) -> tuple[Position | None, int]:
        response = self._call(
            f"DynamoDB get position {symbol}", self._client.get_item,
            TableName=self.positions_table, Key={"symbol": {"S": symbol}}, ConsistentRead=True,
        )
        item = response.get("Item")
        if not item:
            found: tuple[Position | None, int] = (None, 0)
        else:
            data = deserialize_item(item)
            found = (_position_from(data), int(data.get("version", 0)))
        self._known[symbol] = found
        return found

    def get_position(self, symbol: str) -> Position | None:
        return self._position_with_version(symbol)[0]

    def list_positions(self) -> list[Position]:
        return [_position_from(i) for i in self._scan(self.positions_table)]

    def put_position(self, position: Position) -> None:
        for _ in range(MAX_POSITION_RETRIES):
            _, version = self._position_with_version(position.symbol)
            item = dict(position.model_dump(mode="json"), version=version + 1)
            condition = "attribute_not_exists(symbol)" if version == 0 else "version = :v"
            kwargs: dict[str, Any] = {"ConditionExpression": condition}
            if version:
                kwargs["ExpressionAttributeValues"] = {":v": {"N": str(version)}}
            try:
                self._client.put_item(TableName=self.positions_table, Item=serialize_item(item), **kwargs)
                self._known[position.symbol] = (position, version + 1)
                return
            except CALL_ERRORS as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise translate(exc, self._at(f"DynamoDB put position {position.symbol}",
                                                  self.positions_table)) from exc
        raise ConcurrencyError(f"position {position.symbol} kept changing")

    # -- risk state --------------------------------------------------------------------------

    def server_time(self) -> datetime:
        """AWS's clock now, in whole seconds: the ``Date`` header of DynamoDB's answer to a read
        of the risk state (which this makes). The operator CLI stamps its kill-switch commands
        with it, so they are ordered on the same clock and at the same precision as the control
        events' ``time`` (whatever the operator machine's clock says); InfrastructureError when
        the answer carries no ``Date``."""
        self.load_risk_state()
        if self.risk_state_read_at is None:
            raise InfrastructureError(
                f"{self._at('DynamoDB get risk state', self.risk_table)}: the response has no readable "
                "Date header (AWS's clock)"
            )
        return self.risk_state_read_at

    def load_risk_state(self) -> RiskState:
        response = self._call(
            "DynamoDB get risk state", self._client.get_item,
            TableName=self.risk_table, Key={"pk": {"S": RISK_KEY}}, ConsistentRead=True,
        )
        self.risk_state_read_at = response_time(response)
        item = response.get("Item")
        if not item:
            state = RiskState()
            state.switch_as_stored = dict.fromkeys(SWITCH_ATTRIBUTES)
            return state
        switch = {name: item.get(name) for name in SWITCH_ATTRIBUTES}  # as stored (None: absent)
        data = deserialize_item(item)
        try:
            state = RiskState.model_validate_json(data["state"]) if "state" in data else RiskState()
        except ValueError as exc:
            raise StateError(f"stored risk state cannot be decoded: {exc}") from exc
        state.version = int(data.get("version", 0))
        state.kill_switch = bool(data.get("kill_switch", False))
        if "kill_switch_reason" in data:
            state.kill_switch_reason = str(data["kill_switch_reason"])
        if "kill_switch_at" in data:  # absent from items written before commands carried their time
            try:
                state.kill_switch_at = _SWITCH_TIME.validate_python(data["kill_switch_at"])
            except ValueError as exc:
                raise StateError(f"stored kill_switch_at {data['kill_switch_at']!r} cannot be decoded: {exc}") from exc
        if "kill_switch_command_id" in data:
            state.kill_switch_command_id = str(data["kill_switch_command_id"])
        state.switch_as_stored = switch
        return state

    def save_risk_state(self, state: RiskState, *, write_kill_switch: bool = False) -> None:
        """Conditional update of the risk-state item (``version`` must still be ``state.version``).

        The kill-switch attributes (``kill_switch``, ``kill_switch_reason``, and the time and id of
        the command that set them, ``kill_switch_at`` and ``kill_switch_command_id``) are written
        only with ``write_kill_switch`` (the kill-switch entry): an operator's direct
        ``update-item`` of the flag, which does not bump the version, is never overwritten by the
        router's routine saves. A kill-switch save is also conditional on those four attributes
        being as ``state`` was read (:attr:`RiskState.switch_as_stored`; a state not read from
        this store: the version only), so it cannot overwrite such a flip made after the read
        either: :class:`ConcurrencyError`, and the command is decided again on the flipped state.
        """
        expected = state.version
        body = state.model_copy(update={"version": expected + 1})
        sets = ["#st = :st", "#v = :nv", "#ts = :ts"]
        names = {"#st": "state", "#v": "version", "#ts": "trading_state"}
        values: dict[str, Any] = {
            ":st": {"S": body.model_dump_json()},
            ":nv": {"N": str(expected + 1)},
            ":ts": {"S": state.trading_state.value},
            ":v": {"N": str(expected)},
        }
        condition = "(attribute_not_exists(#v) OR #v = :v)" if expected == 0 else "#v = :v"
        written: dict[str, Any] = {}
        if write_kill_switch:
            written = {"kill_switch": {"BOOL": state.kill_switch}, "kill_switch_reason": {"S": state.kill_switch_reason},
                       "kill_switch_command_id": {"S": state.kill_switch_command_id}}
            if state.kill_switch_at is not None:
                written["kill_switch_at"] = {"S": state.kill_switch_at.isoformat()}
            for i, (name, value) in enumerate(written.items()):
                names[f"#k{i}"], values[f":k{i}"] = name, value
                sets.append(f"#k{i} = :k{i}")
            read = state.switch_as_stored
            if isinstance(read, dict):  # the switch must still be as read (a flip by hand keeps the version)
                for i, name in enumerate(SWITCH_ATTRIBUTES):
                    names[f"#r{i}"] = name
                    if read.get(name) is None:
                        condition += f" AND attribute_not_exists(#r{i})"
                    else:
                        values[f":r{i}"] = read[name]
                        condition += f" AND #r{i} = :r{i}"
        try:
            self._client.update_item(
                TableName=self.risk_table,
                Key={"pk": {"S": RISK_KEY}},
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except CALL_ERRORS as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise ConcurrencyError(
                    f"risk state version {expected} is stale (another writer saved first)"
                    + (", or the kill switch was changed since it was read (by hand)" if write_kill_switch else "")
                ) from exc
            raise translate(exc, self._at("DynamoDB save risk state", self.risk_table)) from exc
        state.version = expected + 1
        if write_kill_switch and isinstance(state.switch_as_stored, dict):
            state.switch_as_stored = {**state.switch_as_stored, **written}


class DynamoPaperLedger(_Dynamo):
    """The paper broker's books in the ``paper-broker`` table (see the module docstring)."""

    def __init__(self, dynamodb_client: Any | None = None, *, settings: Settings | None = None):
        super().__init__(dynamodb_client, settings)
        self.table = self._table("paper-broker")

    def get_order(self, client_order_id: str) -> dict[str, Any] | None:
        response = self._call(
            f"DynamoDB get paper order {client_order_id}", self._client.get_item,
            TableName=self.table, Key={"pk": {"S": "ORDER"}, "sk": {"S": client_order_id}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return _ledger_record(deserialize_item(item)) if item else None

    def create_order(self, record: dict[str, Any]) -> bool:
        record = dict(record, version=1)
        coid = record["client_order_id"]
        items = [
            {"Put": {
                "TableName": self.table,
                "Item": serialize_item(dict(record, pk="ORDER", sk=coid)),
                "ConditionExpression": "attribute_not_exists(sk)",
            }},
        ]
        if record["open"]:
            items.append({"Put": {"TableName": self.table,
                                  "Item": serialize_item(dict(record, pk="OPEN", sk=coid))}})
        try:
            self._client.transact_write_items(TransactItems=items)
        except CALL_ERRORS as exc:
            if error_code(exc) == "TransactionCanceledException":
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return False
            raise translate(exc, self._at(f"DynamoDB create paper order {coid}", self.table)) from exc
        return True

    def update_order(self, record: dict[str, Any], position: dict[str, Any] | None = None) -> None:
        coid = record["client_order_id"]
        expected = record["version"]
        new = dict(record, version=expected + 1)
        items: list[dict[str, Any]] = [
            {"Put": {
                "TableName": self.table,
                "Item": serialize_item(dict(new, pk="ORDER", sk=coid)),
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": {"N": str(expected)}},
            }},
        ]
        if new["open"]:
            items.append({"Put": {"TableName": self.table, "Item": serialize_item(dict(new, pk="OPEN", sk=coid))}})
        else:
            items.append({"Delete": {"TableName": self.table, "Key": {"pk": {"S": "OPEN"}, "sk": {"S": coid}}}})
        if position is not None:
            held = int(position.get("version", 0))
            put: dict[str, Any] = {
                "TableName": self.table,
                "Item": serialize_item(dict(position, version=held + 1, pk="POSITION", sk=position["symbol"])),
                # version 0: no position yet (or one written before positions were versioned)
                "ConditionExpression": "attribute_not_exists(sk) OR attribute_not_exists(version)"
                if held == 0 else "version = :pv",
            }
            if held:
                put["ExpressionAttributeValues"] = {":pv": {"N": str(held)}}
            items.append({"Put": put})
        try:
            self._client.transact_write_items(TransactItems=items)
        except CALL_ERRORS as exc:
            if error_code(exc) == "TransactionCanceledException":
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if "ConditionalCheckFailed" in reasons:
                    raise ConcurrencyError(f"paper order {coid} or its position changed meanwhile") from exc
            raise translate(exc, self._at(f"DynamoDB update paper order {coid}", self.table)) from exc

    def open_orders(self) -> list[dict[str, Any]]:
        return [_ledger_record(i) for i in self._query(self.table, "OPEN")]

    def list_positions(self) -> list[dict[str, Any]]:
        out = []
        for item in self._query(self.table, "POSITION"):
            item.pop("pk"), item.pop("sk")
            out.append(item)
        return out


def _ledger_record(item: dict[str, Any]) -> dict[str, Any]:
    record = {k: v for k, v in item.items() if k not in ("pk", "sk")}
    for key in ("quantity", "filled_quantity", "fees_paid"):
        record[key] = float(record[key])
    if record.get("average_fill_price") is not None:
        record["average_fill_price"] = float(record["average_fill_price"])
    return record

