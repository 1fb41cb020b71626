"""DynamoDB adapters: a key-value store with optimistic versioning, plus reusable helpers.

Items are plain dicts on the Python side: ``float`` goes to DynamoDB as a number (through
``Decimal``) and comes back as ``float`` (or ``int`` when a whole number of at most 38 digits),
``bytes`` as binary, numpy scalars as the Python value they hold. Values DynamoDB cannot hold are
refused before the call (a DataError naming the attribute), and floats too small for it stored as
0 (:mod:`..dynamo_numbers`, shared with the in-memory fake).
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import DecimalException
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError, ParamValidationError

from ensemble_trader.adapters.aws._names import physical
from ensemble_trader.adapters.aws.clients import CALL_ERRORS, attempt_seconds, error_code
from ensemble_trader.adapters.aws.clients import client as make_client
from ensemble_trader.adapters.dynamo_numbers import MAX_ITEM_BYTES, from_dynamo, item_size, to_dynamo
from ensemble_trader.domain.errors import ConcurrencyError, DataError, InfrastructureError, StoreRefusedError
from ensemble_trader.runtime.deadline import DeadlineExceededError, pause
from ensemble_trader.runtime.settings import Settings, get_settings

VERSION_ATTRIBUTE = "version"
PUT_NEW_WORKERS = 8
"""Conditional puts of :meth:`DynamoStore.put_new_items` in flight at once (the client's pool
holds 20 connections)."""

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def serialize_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A Python dict as a DynamoDB attribute map (numbers via Decimal, bytes as binary); a value
    DynamoDB cannot hold is a DataError naming its attribute (:func:`..dynamo_numbers.to_dynamo`)."""
    return _serialize_converted({name: to_dynamo(value, name) for name, value in item.items()})


def _serialize_converted(converted: Mapping[str, Any]) -> dict[str, Any]:
    """An item of :func:`..dynamo_numbers.to_dynamo` values as a DynamoDB attribute map."""
    out = {}
    for name, value in converted.items():
        try:
            out[name] = _serializer.serialize(value)
        except (TypeError, ValueError, DecimalException) as exc:  # what to_dynamo let through
            raise DataError(f"DynamoDB cannot store {name}: {type(exc).__name__}: {exc}") from exc
    return out


def deserialize_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB attribute map as a Python dict (:func:`..dynamo_numbers.from_dynamo`: a whole
    number of at most 38 digits as int, any other as float; binary as bytes)."""
    return {k: from_dynamo(_deserializer.deserialize(v)) for k, v in item.items()}


def _key_names(table: str, settings: Settings | None = None) -> tuple[str, ...]:
    """The key attributes of a table of ``constants.TABLES`` named logically (or, given the
    settings, by its physical name in this stage); ``()`` for any other table."""
    from ensemble_trader import constants

    for spec in constants.TABLES:
        if table == spec.logical or (settings is not None and table == settings.name(spec.logical)):
            return spec.key_names
    return ()


def translate(exc: Exception, what: str) -> Exception:
    """A botocore error as the domain's exception: ConcurrencyError for a lost condition,
    StoreRefusedError (a DataError) for a request DynamoDB refuses as invalid
    (``ValidationException``: an item over 400 KB, an empty key, an empty set — or a condition or
    expression the code got wrong; sent again it would be refused again, so it is not worth a
    retry, and the message names the table and DynamoDB's reason), InfrastructureError for
    anything else (throttling, a network error: retrying may help).

    A :class:`~ensemble_trader.runtime.deadline.DeadlineExceededError` (the client's deadline
    guard refused an attempt or a retry: ``DynamoDB PutItem (attempt not started)``) stays one,
    with the same ``left_s``, ``needed_s``, ``needed_for``, ``failing`` and ``attempt_started``,
    its message led by ``what`` like the call's other errors (the table, the key or expected
    version). ``exc`` is one of :data:`~ensemble_trader.adapters.aws.clients.CALL_ERRORS`."""
    if isinstance(exc, DeadlineExceededError):
        return exc.led_by(what)
    if error_code(exc) == "ConditionalCheckFailedException":
        return ConcurrencyError(f"{what}: condition failed (another writer got there first)")
    if error_code(exc) == "ValidationException" or isinstance(exc, ParamValidationError):
        return StoreRefusedError(f"{what}: refused by DynamoDB, not retried: {type(exc).__name__}: {exc}")
    return InfrastructureError(f"{what}: {type(exc).__name__}: {exc}")


def _version_condition(expected_version: int, must_be_absent: Sequence[str]) -> dict[str, Any]:
    """The condition of a put with ``expected_version``: the stored ``version`` equals it — or, for
    0, no item is stored. "No item" is ``attribute_not_exists`` of the key, for a table whose key
    is known; else of every attribute of the item written (the stored item, if any, has the same
    key attributes, so one of them exists). An item stored without a version is not absent."""
    names = {"#v": VERSION_ATTRIBUTE}
    condition = "#v = :v"
    if expected_version == 0:
        absent = []
        for i, attribute in enumerate(must_be_absent):
            names[f"#a{i}"] = attribute
            absent.append(f"attribute_not_exists(#a{i})")
        condition = f"({' AND '.join(absent)}) OR #v = :v"
    return {
        "ConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": {":v": {"N": str(expected_version)}},
    }


class DynamoKeyValueStore:
    """:class:`ensemble_trader.ports.KeyValueStore` over DynamoDB.

    ``table`` may be a logical name from ``constants.TABLES`` (qualified with the stage) or a
    physical one. With ``expected_version`` the put is conditional: it succeeds only if the
    stored item's ``version`` equals it, or the item does not exist and it is 0 (an item stored
    without a ``version`` is not overwritten); otherwise :class:`ConcurrencyError`. The caller
    sets the new ``version`` in ``item``. What DynamoDB refuses for good — a value it cannot hold
    (:mod:`..dynamo_numbers`, checked before the call), an item over 400 KB, an empty key — is a
    :class:`DataError`; what may pass on a retry an :class:`InfrastructureError` — an attempt the
    invocation's deadline refused stays a DeadlineExceededError (an InfrastructureError too), its
    message naming the table like the call's other errors (:func:`translate`).
    """

    def __init__(self, dynamodb_client: Any | None = None, *, settings: Settings | None = None):
        self._settings = settings or get_settings()
        self._client = dynamodb_client or make_client("dynamodb", self._settings)

    @property
    def client(self) -> Any:
        return self._client

    def table_name(self, table: str) -> str:
        return physical(table, self._settings)

    def get_item(self, table: str, key: Mapping[str, Any], *, consistent: bool = True) -> dict[str, Any] | None:
        name = self.table_name(table)
        try:
            response = self._client.get_item(
                TableName=name, Key=serialize_item(key), ConsistentRead=consistent
            )
        except CALL_ERRORS as exc:
            raise translate(exc, f"DynamoDB get_item {name} {dict(key)}") from exc
        found = response.get("Item")
        return deserialize_item(found) if found is not None else None

    def put_item(
        self, table: str, item: Mapping[str, Any], *, expected_version: int | None = None
    ) -> None:
        name = self.table_name(table)
        try:
            kwargs: dict[str, Any] = {"TableName": name, "Item": serialize_item(item)}
        except DataError as exc:
            raise DataError(f"DynamoDB put_item {name}: {exc}") from exc
        if expected_version is not None:
            kwargs.update(_version_condition(expected_version, _key_names(table, self._settings) or tuple(item)))
        try:
            self._client.put_item(**kwargs)
        except CALL_ERRORS as exc:
            raise translate(
                exc, f"DynamoDB put_item {name} (expected version {expected_version})"
            ) from exc

    def put_items(self, table: str, items: Sequence[Mapping[str, Any]], *, max_attempts: int = 5) -> None:
        """Unconditional puts in ``BatchWriteItem`` calls of 25, retrying unprocessed items (with
        no back-off the invocation's deadline could not hold: DeadlineExceededError).

        For append-style rows (regime history) where one ``PutItem`` per row would
        dominate the handler's time. For a logical table of ``constants.TABLES``, rows with the
        same key collapse to the last one (DynamoDB rejects a batch that repeats a key).
        """
        name = self.table_name(table)
        rows = [dict(i) for i in items]
        keys = _key_names(table, self._settings)
        if keys:
            rows = list({tuple(r.get(k) for k in keys): r for r in rows}.values())
        try:  # every row checked before the first call: a refused row leaves nothing written
            requests = [{"PutRequest": {"Item": serialize_item(r)}} for r in rows]
        except DataError as exc:
            raise DataError(f"DynamoDB batch_write_item {name}: {exc}") from exc
        for start in range(0, len(requests), 25):
            pending = requests[start : start + 25]
            for attempt in range(1, max_attempts + 1):
                try:
                    response = self._client.batch_write_item(RequestItems={name: pending})
                except CALL_ERRORS as exc:
                    raise translate(exc, f"DynamoDB batch_write_item {name}") from exc
                pending = response.get("UnprocessedItems", {}).get(name, [])
                if not pending:
                    break
                if attempt < max_attempts:
                    pause(0.05 * 2 ** (attempt - 1), f"DynamoDB batch_write_item {name}: {len(pending)} items "
                          f"still unprocessed after {attempt} attempt{'s' * (attempt > 1)}",
                          then_needed_s=attempt_seconds(self._client), failing=pending)
            else:
                raise InfrastructureError(
                    f"DynamoDB batch_write_item {name}: {len(pending)} items still unprocessed after "
                    f"{max_attempts} attempts"
                )

    def put_new_items(
        self, table: str, items: Sequence[Mapping[str, Any]], *, unless_same: str | None = None
    ) -> list[dict[str, Any] | None]:
        """First writer wins: each row is put only if no row with its key is stored — with
        ``unless_same``, no row with its key *and* the same value of that attribute (a stored row
        with another value is replaced). Returns, per row in order, None when it was written, or
        the stored row that kept its place: a row refused by the condition is not an error.

        ``BatchWriteItem`` cannot carry a condition, so every row is a conditional ``PutItem``
        (``attribute_not_exists`` of the partition key) returning the stored item when its
        condition fails, up to :data:`PUT_NEW_WORKERS` at a time on the thread-safe client. Not
        ``TransactWriteItems``: the rows need no all-or-nothing, a transaction costs twice the
        write units, and moto's copies the whole table for every row it holds (a local replay of
        thousands of bars timed out). Every row is checked before the first call (a value
        DynamoDB cannot hold, or a row over its 400 KB limit, is a DataError naming it and nothing
        is written); a row repeated in ``items`` is written once, the first time (the later ones
        get it back as stored). Should a put fail, the others still run to their end and the
        first failure is raised. The puts keep to the invocation's deadline like any call of
        this thread (each runs in a copy of its context).
        """
        name = self.table_name(table)
        keys = _key_names(table, self._settings)
        if not keys:
            raise ValueError(f"put_new_items needs a table of constants.TABLES (its key), not {table!r}")
        first: dict[tuple, int] = {}
        requests: dict[int, dict[str, Any]] = {}  # position -> PutItem request
        try:
            for position, item in enumerate(items):
                converted = {a: to_dynamo(v, a) for a, v in item.items()}
                key = tuple(converted.get(k) for k in keys)
                if key in first:
                    continue
                if (size := item_size(converted)) > MAX_ITEM_BYTES:
                    raise DataError(f"row {position} ({dict(zip(keys, key, strict=True))}) is {size:,} bytes, "
                                    f"over DynamoDB's {MAX_ITEM_BYTES:,}")
                first[key] = position
                requests[position] = self._put_if_new(name, keys[0], _serialize_converted(converted), unless_same)
        except DataError as exc:
            raise DataError(f"DynamoDB put {name}: {exc}") from exc
        stored: dict[int, dict[str, Any]] = {}
        what = f"DynamoDB put new items {name}"
        if len(requests) <= 1:
            for position, put in requests.items():
                self._put_new(position, put, keys, stored, what)
        else:
            with ThreadPoolExecutor(max_workers=min(PUT_NEW_WORKERS, len(requests))) as pool:
                # each put runs in a copy of this thread's context: the invocation's deadline holds there too
                futures = [pool.submit(contextvars.copy_context().run, self._put_new, p, put, keys, stored, what)
                           for p, put in requests.items()]
            for future in futures:  # every put has ended (the pool was joined): the first failure
                future.result()
        out: list[dict[str, Any] | None] = []
        for position, item in enumerate(items):
            if position in requests:
                out.append(stored.get(position))
            else:  # a repeat of an earlier row: what is stored under its key now
                earlier = first[tuple(to_dynamo(item.get(k), k) for k in keys)]
                out.append(stored.get(earlier, deserialize_item(requests[earlier]["Item"])))
        return out

    @staticmethod
    def _put_if_new(name: str, partition_key: str, item: dict[str, Any], unless_same: str | None) -> dict[str, Any]:
        """The conditional ``PutItem`` request of :meth:`put_new_items`."""
        put: dict[str, Any] = {
            "TableName": name,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(#k)",
            "ExpressionAttributeNames": {"#k": partition_key},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if unless_same is not None and unless_same in item:
            put["ConditionExpression"] += " OR #s <> :s"
            put["ExpressionAttributeNames"]["#s"] = unless_same
            put["ExpressionAttributeValues"] = {":s": item[unless_same]}
        return put

    def _put_new(
        self, position: int, put: dict[str, Any], keys: Sequence[str], stored: dict[int, dict[str, Any]], what: str
    ) -> None:
        try:
            self._client.put_item(**put)
        except CALL_ERRORS as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise translate(exc, what) from exc
            found = exc.response.get("Item") if isinstance(exc, ClientError) else None
            if not found:  # DynamoDB returns it (ALL_OLD); should it not, it is read
                key = {k: put["Item"][k] for k in keys}
                try:
                    found = self._client.get_item(TableName=put["TableName"], Key=key, ConsistentRead=True).get("Item")
                except CALL_ERRORS as read_exc:
                    raise translate(read_exc, what) from read_exc
            if not found:  # the stored row went (TTL) between the condition and the read
                raise InfrastructureError(f"{what}: the condition failed but no row is stored now") from exc
            stored[position] = deserialize_item(found)

    def get_versions(
        self, table: str, keys: Sequence[Mapping[str, Any]], *, max_attempts: int = 5
    ) -> list[int]:
        """The ``version`` of each key's item (0 when absent): consistent ``BatchGetItem`` calls of
        100 keys that fetch only the key and the version, retrying unprocessed keys."""
        name = self.table_name(table)
        names = list(keys[0]) if keys else []
        projection = {f"#k{i}": n for i, n in enumerate(names)} | {"#v": VERSION_ATTRIBUTE}
        found: dict[tuple, int] = {}
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {
                "Keys": [serialize_item(k) for k in keys[start : start + 100]],
                "ConsistentRead": True,
                "ProjectionExpression": ", ".join(projection),
                "ExpressionAttributeNames": projection,
            }
            for attempt in range(1, max_attempts + 1):
                try:
                    response = self._client.batch_get_item(RequestItems={name: request})
                except CALL_ERRORS as exc:
                    raise translate(exc, f"DynamoDB batch_get_item {name}") from exc
                for raw in response.get("Responses", {}).get(name, []):
                    item = deserialize_item(raw)
                    found[tuple(item[n] for n in names)] = int(item.get(VERSION_ATTRIBUTE, 0))
                unprocessed = response.get("UnprocessedKeys", {}).get(name)
                if not unprocessed:
                    break
                request = dict(request, Keys=unprocessed["Keys"])
                if attempt < max_attempts:
                    pause(0.05 * 2 ** (attempt - 1), f"DynamoDB batch_get_item {name}: {len(request['Keys'])} keys "
                          f"still unprocessed after {attempt} attempt{'s' * (attempt > 1)}",
                          then_needed_s=attempt_seconds(self._client), failing=request["Keys"])
            else:
                raise InfrastructureError(
                    f"DynamoDB batch_get_item {name}: keys still unprocessed after {max_attempts} attempts"
                )
        return [found.get(tuple(k[n] for n in names), 0) for k in keys]

    def delete_item(self, table: str, key: Mapping[str, Any]) -> None:
        name = self.table_name(table)
        try:
            self._client.delete_item(TableName=name, Key=serialize_item(key))
        except CALL_ERRORS as exc:
            raise translate(exc, f"DynamoDB delete_item {name}") from exc

    def query(self, table: str, partition_key: str, value: Any, *, limit: int | None = None,
              newest_first: bool = False) -> list[dict[str, Any]]:
        """Every item whose partition key ``partition_key`` equals ``value`` (paginated)."""
        name = self.table_name(table)
        kwargs: dict[str, Any] = {
            "TableName": name,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": partition_key},
            "ExpressionAttributeValues": {":pk": _serializer.serialize(to_dynamo(value, partition_key))},
            "ScanIndexForward": not newest_first,
        }
        items: list[dict[str, Any]] = []
        try:
            while True:
                if limit is not None:
                    kwargs["Limit"] = limit - len(items)
                response = self._client.query(**kwargs)
                items.extend(deserialize_item(i) for i in response.get("Items", []))
                last = response.get("LastEvaluatedKey")
                if not last or (limit is not None and len(items) >= limit):
                    return items
                kwargs["ExclusiveStartKey"] = last
        except CALL_ERRORS as exc:
            raise translate(exc, f"DynamoDB query {name}") from exc
