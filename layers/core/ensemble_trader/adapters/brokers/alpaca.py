"""AlpacaBroker: the Broker port over alpaca-py's ``TradingClient`` (paper endpoint by default).

* Keys come from Secrets Manager (:meth:`AlpacaBroker.from_secret`; the secret is a JSON object
  with ``api_key`` and ``secret_key``, or Alpaca's own ``APCA_API_KEY_ID`` /
  ``APCA_API_SECRET_KEY`` names). The Secrets Manager client is injected, so this module does
  not import boto3.
* Keys that stop working are read again: Alpaca answers 401 (or a 403 that may refuse the keys,
  not the order) once the pair in use is revoked, and a container built before a key rotation
  would otherwise go on with the old pair until it is recycled. On such an answer a broker built
  by :meth:`AlpacaBroker.from_secret` reads the secret again, and if it now holds another pair,
  rebuilds its client with it and makes the call once more; a refusal then, or a 401 while the
  secret still holds the refused pair, raises :class:`BrokerAuthenticationError` naming the
  secret (one place for every caller: the orders, reconcile and kill_switch entries share this
  adapter). A 403 while the secret still holds the pair in use is the request's, not the keys'
  (Alpaca's ``forbidden.`` also refuses orders, e.g. over the day-trading buying power): it is
  raised as Alpaca's error, so a submit is a :class:`BrokerRejectedError`.
* Our client order id is passed through unchanged: Alpaca enforces its uniqueness, which is what
  makes a racing or repeated submit harmless (it answers 422, mapped to
  :class:`DuplicateClientOrderIdError`, and the router resolves by lookup).
* Every HTTP call has a timeout (alpaca-py's session has none by default). A submit that times
  out, loses its connection or gets a 5xx raises :class:`UnknownOutcomeError`; a 4xx is a
  definitive :class:`BrokerRejectedError`; failed reads raise :class:`BrokerUnavailableError`.
* alpaca-py retries 429 responses itself; 504 is *not* retried here (a gateway timeout is an
  unknown outcome, resolved by lookup).
* Quantities go on the wire as decimal strings of at most 9 decimals (Alpaca's limit), so a
  planned 7 × 0.1 is sent as ``0.7``, not ``0.7000000000000001``.
* Responses are read item by item with alpaca-py's models. An order this adapter cannot map in
  full — a dollar-amount (``notional``) order without a quantity placed by hand, or a status
  alpaca-py does not know — is an unknown submit outcome when it answers a submit; read by a
  lookup, a listing or a cancel it is returned with what is known and the status ``UNKNOWN``
  (:func:`_partial_report`), so reconciliation halts its symbol (one of ours: unreadable; anyone
  else's: a foreign order) and the kill switch cancels it by its Alpaca id, instead of failing
  for every symbol.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, TypeVar

import requests
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.enums import OrderStatus as AlpacaStatus
from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.models import Position as AlpacaPosition
from alpaca.trading.requests import GetOrdersRequest, MarketOrderRequest
from pydantic import TypeAdapter, ValidationError

from ensemble_trader.domain.models import Order, OrderStatus, OrderType, Side
from ensemble_trader.domain.orders import (
    BrokerAuthenticationError,
    BrokerOrder,
    BrokerPosition,
    BrokerRejectedError,
    BrokerUnavailableError,
    DuplicateClientOrderIdError,
    UnknownOutcomeError,
)

log = logging.getLogger(__name__)

_STATUS = {
    AlpacaStatus.NEW: OrderStatus.SUBMITTED,
    AlpacaStatus.ACCEPTED: OrderStatus.SUBMITTED,
    AlpacaStatus.PENDING_NEW: OrderStatus.SUBMITTED,
    AlpacaStatus.ACCEPTED_FOR_BIDDING: OrderStatus.SUBMITTED,
    AlpacaStatus.PENDING_REVIEW: OrderStatus.SUBMITTED,
    AlpacaStatus.HELD: OrderStatus.SUBMITTED,
    AlpacaStatus.CALCULATED: OrderStatus.SUBMITTED,
    AlpacaStatus.STOPPED: OrderStatus.SUBMITTED,
    AlpacaStatus.PENDING_CANCEL: OrderStatus.SUBMITTED,
    AlpacaStatus.PENDING_REPLACE: OrderStatus.SUBMITTED,
    AlpacaStatus.DONE_FOR_DAY: OrderStatus.SUBMITTED,
    AlpacaStatus.PARTIALLY_FILLED: OrderStatus.PARTIALLY_FILLED,
    AlpacaStatus.FILLED: OrderStatus.FILLED,
    AlpacaStatus.CANCELED: OrderStatus.CANCELED,
    AlpacaStatus.EXPIRED: OrderStatus.CANCELED,
    AlpacaStatus.REPLACED: OrderStatus.CANCELED,
    AlpacaStatus.REJECTED: OrderStatus.REJECTED,
    AlpacaStatus.SUSPENDED: OrderStatus.REJECTED,
}


QUANTITY_DECIMALS = 9
"""Alpaca takes quantities with at most 9 decimals."""

_TIME = TypeAdapter(datetime)


class _Unmappable(Exception):
    """An Alpaca order that cannot be mapped into a full :class:`BrokerOrder` (says why)."""


class _TimeoutSession(requests.Session):
    """A session whose requests carry a timeout unless the caller sets one."""

    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout

    def request(self, method, url, **kwargs):  # noqa: ANN001 - requests' signature
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().request(method, url, **kwargs)


_T = TypeVar("_T")

_KEYS_REFUSED = re.compile(r"forbidden|not authori[sz]ed|unauthori[sz]ed", re.IGNORECASE)
"""A 403 whose message says it may refuse the keys (Alpaca's ``forbidden.``, a gateway's HTML
page) — or the order: Alpaca says ``forbidden.`` to both, so only keys read again tell (see
:meth:`AlpacaBroker._call`); other 403s refuse the order (``insufficient buying power``, code
40310000)."""


def refuses_keys(exc: APIError) -> bool:
    """True when Alpaca's answer refuses the API keys themselves (HTTP 401 — ``{"code": 40110000,
    "message": "request is not authorized"}`` for a revoked or unknown pair — or a 403 that says
    so), not the request: only then can keys read again help."""
    status = exc.status_code
    return status == 401 or (status == 403 and bool(_KEYS_REFUSED.search(_message(exc))))


def _trading_client(api_key: str, secret_key: str, *, paper: bool, session: requests.Session) -> TradingClient:
    client = TradingClient(api_key, secret_key, paper=paper)
    # TradingClient exposes neither its retry policy nor its requests.Session; both are set on the
    # private attributes alpaca-py's RESTClient defines: one retry of a 429 after 1 s (never of a
    # 504: a gateway timeout is an unknown outcome) and a timeout on every call. A client rebuilt
    # with new keys keeps the session (its timeout and its connections).
    client._retry, client._retry_wait, client._retry_codes = 1, 1, [429]
    client._session = session
    return client


class AlpacaBroker:
    """:class:`ensemble_trader.ports.Broker` over Alpaca's trading API.

    ``keys`` (set by :meth:`from_secret`) reads the current key pair again; ``keys_source`` names
    where from (the secret), for the errors. Without it keys refused by Alpaca are not re-read.
    """

    name = "alpaca"

    page_size = 500  # Alpaca's largest page of orders

    def __init__(
        self, client: TradingClient, *, keys: Callable[[], tuple[str, str]] | None = None,
        keys_source: str = "the configured keys", paper: bool = True,
    ):
        self.client = client
        self._keys = keys
        self._keys_source = keys_source
        self._paper = paper
        self._pair: tuple[str, str] | None = None  # the keys the client uses, when read by ``keys``

    @classmethod
    def from_credentials(
        cls, api_key: str, secret_key: str, *, paper: bool = True, timeout: float = 5.0
    ) -> AlpacaBroker:
        return cls(_trading_client(api_key, secret_key, paper=paper, session=_TimeoutSession(timeout)), paper=paper)

    @classmethod
    def from_secret(
        cls, secrets_client: Any, secret_id: str, *, paper: bool = True, timeout: float = 5.0
    ) -> AlpacaBroker:
        """Read the keys from Secrets Manager (``secrets_client`` is a boto3 client); they are read
        again when Alpaca refuses them (a key rotation, see the module docstring)."""

        def keys() -> tuple[str, str]:
            return _read_keys(secrets_client, secret_id)

        pair = keys()
        broker = cls(_trading_client(*pair, paper=paper, session=_TimeoutSession(timeout)), keys=keys,
                     keys_source=f"broker secret {secret_id!r}", paper=paper)
        broker._pair = pair
        return broker

    def _call(self, what: str, call: Callable[[TradingClient], _T]) -> _T:
        """``call(self.client)``; when Alpaca refuses the keys (:func:`refuses_keys`), the keys are
        read again and, if they changed, the client is rebuilt with them and ``call`` made once
        more. Refused again, or no other keys to try: :class:`BrokerAuthenticationError` naming
        the keys' source — except a 403 with no other keys to try, which propagates unchanged:
        Alpaca answers ``forbidden.`` also to an order it refuses with good keys, and taking that
        for refused keys would leave the order PENDING and its intent failing until the DLQ; a
        submit maps it to a rejection. A 401 is refused before anything happens, so making a
        submit again is safe (and Alpaca's uniqueness of client order ids would catch a duplicate
        anyway). Any other error propagates unchanged, for the caller to map."""
        try:
            return call(self.client)
        except APIError as exc:
            if not refuses_keys(exc):
                raise
            refused = (f"Alpaca refused the API key of {self._keys_source} "
                       f"({what}: HTTP {exc.status_code}: {_message(exc)[:200]})")
            if self._keys is None:
                if exc.status_code == 403:
                    raise  # no other keys to try: a 403 may refuse the request (see below)
                raise BrokerAuthenticationError(f"{refused}; the keys cannot be read again") from exc
            try:
                pair = self._keys()
            except BrokerUnavailableError as read_error:
                raise BrokerAuthenticationError(f"{refused}, and reading them again failed: {read_error}") from exc
            if pair == self._pair:
                if exc.status_code == 403:
                    # Alpaca also answers "forbidden." to a request it refuses with keys that are
                    # fine (an order over the day-trading buying power): with no other keys to
                    # try, the 403 is the request's — the caller maps it (a submit: rejected)
                    log.warning("%s: HTTP 403 (%s) with the key pair %s still holds: taken as a "
                                "refusal of the request, not of the keys", what, _message(exc)[:200],
                                self._keys_source)
                    raise
                raise BrokerAuthenticationError(
                    f"{refused}; the secret still holds that key pair: put a valid pair in it "
                    "(revoke the old pair at Alpaca only after the new one is in the secret)"
                ) from exc
        self.client = _trading_client(*pair, paper=self._paper, session=self.client._session)
        self._pair = pair
        try:
            return call(self.client)
        except APIError as exc:
            if refuses_keys(exc):
                raise BrokerAuthenticationError(
                    f"Alpaca refused the API key of {self._keys_source} also after reading it again "
                    f"({what}: HTTP {exc.status_code}: {_message(exc)[:200]}): the secret holds a pair Alpaca "
                    "does not accept (revoked, mistyped, or paper keys for the live endpoint)"
                ) from exc
            raise

    # -- Broker port -------------------------------------------------------------------------

    def submit(self, order: Order) -> BrokerOrder:
        if order.order_type is not OrderType.MARKET:
            raise BrokerRejectedError(order.client_order_id, "only MARKET orders are routed to Alpaca")
        try:
            qty = wire_quantity(order.quantity)
        except ValueError as exc:
            raise BrokerRejectedError(order.client_order_id, str(exc)) from exc
        request = MarketOrderRequest(
            symbol=order.symbol,
            qty=order.quantity,
            side=OrderSide.BUY if order.side is Side.BUY else OrderSide.SELL,
            time_in_force=TimeInForce.DAY,
            client_order_id=order.client_order_id,
        )
        # alpaca-py's request model holds the quantity as a float and would send its float noise
        body = {**request.to_request_fields(), "qty": qty}
        try:
            placed = self._call(f"submit of {order.client_order_id}", lambda c: c.post("/orders", body))
        except APIError as exc:
            status = exc.status_code
            message = _message(exc)
            if status is None or status >= 500 or status in (408, 429):
                # a server fault, a timeout or a rate limit (alpaca-py retried it already): the
                # order may or may not be there — resolved by looking the id up, never refused
                raise UnknownOutcomeError(order.client_order_id, f"HTTP {status}: {message}") from exc
            if status == 422 and "client_order_id" in message.lower():
                raise DuplicateClientOrderIdError(order.client_order_id) from exc
            raise BrokerRejectedError(order.client_order_id, f"HTTP {status}: {message}") from exc
        except requests.RequestException as exc:
            raise UnknownOutcomeError(order.client_order_id, f"{type(exc).__name__}: {exc}") from exc
        try:
            return _report(placed)
        except _Unmappable as exc:  # accepted, in a shape we cannot read: the lookup settles it
            raise UnknownOutcomeError(order.client_order_id, f"Alpaca's answer cannot be read: {exc}") from exc

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        """The broker's order of this id; one that cannot be read in full comes as a partial
        ``UNKNOWN`` report (:func:`_partial_report`): nothing in it is applied, and reconciliation
        halts its symbol (not every symbol) until it can be read."""
        found = self._find(client_order_id)
        return None if found is None else _partial_report(found)

    def cancel(self, client_order_id: str) -> BrokerOrder | None:
        """Cancel by Alpaca's order id; an order that cannot be mapped in full (a notional one
        placed by hand, an unknown status) is canceled too and reported with what is known."""
        found = self._find(client_order_id)
        if found is None:
            return None
        current = _partial_report(found)
        if current.status.terminal:
            return current
        try:
            self._call(f"cancel of {client_order_id}", lambda c: c.cancel_order_by_id(current.broker_order_id))
        except APIError as exc:
            if exc.status_code != 422:  # 422: not cancelable any more (filled meanwhile)
                raise BrokerUnavailableError(
                    f"cancel of {client_order_id}: HTTP {exc.status_code}: {_message(exc)}"
                ) from exc
        except requests.RequestException as exc:
            raise BrokerUnavailableError(f"cancel of {client_order_id}: {type(exc).__name__}: {exc}") from exc
        after = self._find(client_order_id)
        return None if after is None else _partial_report(after)

    def list_open_orders(self) -> list[BrokerOrder]:
        """Every open order, however many: Alpaca answers at most ``page_size`` (500) per request,
        newest first, so the next page asks for orders submitted until the oldest one seen —
        ``until`` is exclusive, so it is moved on by a microsecond to keep orders that share that
        instant, and the overlap is removed by order id. An order that cannot be mapped in full is
        listed with what is known (:func:`_partial_report`)."""
        found: dict[str, dict[str, Any]] = {}
        until: datetime | None = None
        while True:
            request = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=self.page_size,
                                       direction=Sort.DESC, until=until)
            fields = request.to_request_fields()
            try:
                page = self._call("listing open orders", lambda c, fields=fields: c.get("/orders", fields))
            except (APIError, requests.RequestException) as exc:
                raise BrokerUnavailableError(f"listing open orders: {exc}") from exc
            if not isinstance(page, list) or not all(isinstance(o, dict) and "id" in o for o in page):
                raise BrokerUnavailableError(f"listing open orders: not a list of orders: {str(page)[:200]}")
            new = [o for o in page if str(o["id"]) not in found]
            found.update((str(o["id"]), o) for o in new)
            if len(page) < self.page_size:
                return [_partial_report(o) for o in found.values()]
            if not new:
                raise BrokerUnavailableError(
                    f"listing open orders: more than {self.page_size} open orders were submitted at "
                    f"{until}; they cannot be paged by submission time"
                )
            until = min(_submitted(o) for o in page) + timedelta(microseconds=1)

    def _find(self, client_order_id: str) -> dict[str, Any] | None:
        """Alpaca's order with this client order id, as sent (None: Alpaca has none)."""
        try:
            found = self._call(f"lookup of {client_order_id}", lambda c: c.get(
                "/orders:by_client_order_id", {"client_order_id": client_order_id}))
        except APIError as exc:
            if exc.status_code == 404:
                return None
            raise BrokerUnavailableError(
                f"lookup of {client_order_id}: HTTP {exc.status_code}: {_message(exc)}"
            ) from exc
        except requests.RequestException as exc:
            raise BrokerUnavailableError(f"lookup of {client_order_id}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(found, dict) or "id" not in found:
            raise BrokerUnavailableError(f"lookup of {client_order_id}: not an order: {str(found)[:200]}")
        return found

    def list_positions(self) -> list[BrokerPosition]:
        try:
            found = self._call("listing positions", lambda c: c.get_all_positions())
        except (APIError, requests.RequestException, ValidationError) as exc:
            raise BrokerUnavailableError(f"listing positions: {exc}") from exc
        return [_position(p) for p in found]


def _read_keys(secrets_client: Any, secret_id: str) -> tuple[str, str]:
    """``(api_key, secret_key)`` from the secret (a JSON object with ``api_key`` and
    ``secret_key``, or Alpaca's ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``)."""
    try:
        raw = secrets_client.get_secret_value(SecretId=secret_id)["SecretString"]
    except Exception as exc:  # botocore errors, not imported here
        raise BrokerUnavailableError(f"cannot read broker secret {secret_id!r}: {exc}") from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BrokerUnavailableError(f"broker secret {secret_id!r} is not JSON") from exc
    if not isinstance(data, dict):
        raise BrokerUnavailableError(f"broker secret {secret_id!r} is not a JSON object")
    key = data.get("api_key") or data.get("APCA_API_KEY_ID")
    secret = data.get("secret_key") or data.get("APCA_API_SECRET_KEY")
    if not key or not secret:
        raise BrokerUnavailableError(
            f"broker secret {secret_id!r} lacks api_key/secret_key (has {sorted(data)})"
        )
    return key, secret


def _message(exc: APIError) -> str:
    try:
        return str(exc.message)
    except (ValueError, KeyError, TypeError):
        return str(exc)


def wire_quantity(quantity: float) -> str:
    """``quantity`` as Alpaca takes it: a decimal string rounded to 9 places, without float noise
    or trailing zeros (``10``, ``0.7``); ValueError if nothing of it is left to send."""
    try:
        exact = Decimal(repr(float(quantity))).quantize(Decimal(1).scaleb(-QUANTITY_DECIMALS), ROUND_HALF_EVEN)
    except InvalidOperation:  # more digits than a decimal context holds (or not a number)
        exact = Decimal(0)
    if not exact > 0:
        raise ValueError(f"quantity {quantity!r} cannot be sent to Alpaca ({QUANTITY_DECIMALS} decimals)")
    return format(exact.normalize(), "f")


def _report(raw: Any) -> BrokerOrder:
    """The full report of one order as Alpaca sent it; raises :class:`_Unmappable` saying why not."""
    if not isinstance(raw, dict):
        raise _Unmappable(f"not an Alpaca order: {str(raw)[:200]}")
    try:
        o = AlpacaOrder(**raw)
    except ValidationError as exc:  # e.g. a status this alpaca-py does not know
        first = exc.errors()[0]
        raise _Unmappable(
            f"Alpaca order {raw.get('client_order_id')} cannot be read by alpaca-py: "
            f"{'.'.join(map(str, first['loc']))} = {first.get('input')!r}: {first['msg']}"
        ) from exc
    status = _STATUS.get(o.status)
    if status is None:
        raise _Unmappable(f"unknown Alpaca order status {o.status!r} of {o.client_order_id}")
    if o.qty in (None, "") or not o.symbol or o.side is None:
        raise _Unmappable(
            f"Alpaca order {o.client_order_id} has no quantity, symbol or side (a notional or "
            "multi-leg order): this adapter cannot account for it"
        )
    filled = float(o.filled_qty or 0.0)
    if status is OrderStatus.SUBMITTED and filled > 0:
        status = OrderStatus.PARTIALLY_FILLED  # e.g. pending_cancel after a partial fill
    avg = float(o.filled_avg_price) if o.filled_avg_price not in (None, "") else None
    if filled > 0 and avg is None:  # a fill cannot be booked without its price
        raise _Unmappable(
            f"Alpaca order {o.client_order_id} reports filled_qty {filled:g} with no filled_avg_price"
        )
    return BrokerOrder(
        client_order_id=o.client_order_id,
        broker_order_id=str(o.id),
        symbol=o.symbol,
        side=Side.BUY if o.side == OrderSide.BUY else Side.SELL,
        quantity=float(o.qty),
        status=status,
        filled_quantity=filled,
        average_fill_price=avg if filled > 0 else None,
        fees_paid=0.0,  # Alpaca charges no commission on equities; regulatory fees come as activities
        reject_reason=o.status.value if status in (OrderStatus.REJECTED, OrderStatus.CANCELED) else None,
        updated_at=o.updated_at or datetime.now(UTC),
    )


def _partial_report(raw: dict[str, Any]) -> BrokerOrder:
    """The full report if there is one, else what is known of the order, so that it can still be
    halted (as a foreign order of its symbol) and canceled (by its Alpaca id).

    Such a report is built without validation: its status is ``UNKNOWN`` (the router applies
    nothing from an ``UNKNOWN`` report: what Alpaca sent could not be read in full), its quantity
    NaN when Alpaca gives none (a notional order) and ``reject_reason`` says why it is partial.
    An order without a symbol or side (multi-leg) cannot be accounted to a symbol: a typed error.
    """
    try:
        return _report(raw)
    except _Unmappable as exc:
        why = str(exc)
    coid = str(raw.get("client_order_id"))
    symbol, side = raw.get("symbol"), raw.get("side")
    if not symbol or side not in (OrderSide.BUY.value, OrderSide.SELL.value):
        raise BrokerUnavailableError(f"open Alpaca order {coid} names no symbol or side: {why}")
    quantity, filled = _number(raw.get("qty")), _number(raw.get("filled_qty"))
    return BrokerOrder.model_construct(
        client_order_id=coid,
        broker_order_id=str(raw["id"]),
        symbol=symbol,
        side=Side.BUY if side == OrderSide.BUY.value else Side.SELL,
        quantity=quantity if quantity > 0 else math.nan,
        status=OrderStatus.UNKNOWN,
        filled_quantity=filled if filled > 0 else 0.0,
        reject_reason=why,
        updated_at=_time(raw.get("updated_at")) or datetime.now(UTC),
    )


def _number(value: Any) -> float:
    """A quantity Alpaca sent (a decimal string), NaN when absent or not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _time(value: Any) -> datetime | None:
    try:
        return _TIME.validate_python(value)
    except ValidationError:
        return None


def _submitted(raw: dict[str, Any]) -> datetime:
    """When an order was submitted (its creation time if Alpaca gives none): the paging key."""
    when = _time(raw.get("submitted_at")) or _time(raw.get("created_at"))
    if when is None:
        raise BrokerUnavailableError(f"listing open orders: order {raw.get('id')} has no submission time")
    return when


def _position(p: AlpacaPosition) -> BrokerPosition:
    qty = float(p.qty)
    if p.side.value == "short" and qty > 0:
        qty = -qty
    return BrokerPosition(symbol=p.symbol, quantity=qty, average_price=abs(float(p.avg_entry_price)))
