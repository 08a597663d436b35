"""``find_raw_batches`` without pymongo's per-document objects.

pymongo's raw batch cursor hands on a server batch as one buffer of concatenated
documents, but to get there it inflates the reply's cursor document, which builds a
``RawBSONDocument`` for every document of the batch only to throw them away and join
the batch array again from its raw bytes. For a backup that is half of the client CPU of
reading (0.036 s against 0.016 s for 20,000 ``orders``, measured).

:func:`find_raw_batches` returns a cursor that decodes the reply's top level and its
``cursor`` document with the batch arrays kept raw (as pymongo does for those fields),
then joins them as pymongo does: the same batches, byte for byte. It leans on pymongo
internals (``RawBatchCursor._unpack_response``, ``bson._bson_to_dict``, the raw-array
codec options), present in every pymongo 4.9+ the package allows; a reply that is not an
OP_MSG takes pymongo's own path. ``tests/mongo/test_raw_batches.py`` compares the two.

Contract: ``find_raw_batches(collection, *args, **kwargs)`` is
``collection.find_raw_batches(*args, **kwargs)``, batch for batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson import _bson_to_dict, _convert_raw_document_lists_to_streams
from bson.raw_bson import _RAW_ARRAY_BSON_OPTIONS
from pymongo.cursor import RawBatchCursor


def find_raw_batches(collection: Any, *args: Any, **kwargs: Any) -> Any:
    """A raw batch cursor over ``collection`` (see the module doc)."""
    if collection.database.client._encrypter:  # pymongo refuses that: its own error
        return collection.find_raw_batches(*args, **kwargs)
    return _LeanRawBatchCursor(collection, *args, **kwargs)


class _LeanRawBatchCursor(RawBatchCursor[Any]):
    def _unpack_response(
        self,
        response: Any,
        cursor_id: int | None,
        codec_options: Any,
        user_fields: Mapping[str, Any] | None = None,
        legacy_response: bool = False,
    ) -> list[Any]:
        payload = getattr(response, "payload_document", None)
        if legacy_response or payload is None:
            return list(
                super()._unpack_response(
                    response, cursor_id, codec_options, user_fields, legacy_response
                )
            )
        reply = dict(_bson_to_dict(payload, _RAW_ARRAY_BSON_OPTIONS).items())
        cursor = reply.get("cursor")
        if cursor is not None:
            reply["cursor"] = dict(cursor.items())  # its arrays stay raw bytes
        _convert_raw_document_lists_to_streams(reply)
        return [reply]
