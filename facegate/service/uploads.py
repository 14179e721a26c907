"""Reading request fields and images from multipart forms or JSON bodies.

Images come either as multipart file fields or as base64 strings in a JSON body (a
``data:image/...;base64,`` prefix is accepted). The declared content type of a part is ignored:
the bytes are sniffed and decoded by :func:`facegate.images.decode_image` with its limits.

The parsing rules (docs/security.md, "Request parsing"), each refused with 422
``invalid_request`` unless said otherwise:

- a JSON body is RFC 8259 JSON: no ``NaN``/``Infinity``, no key twice in one object, at most
  :data:`MAX_JSON_DEPTH` levels of nesting (:func:`parse_json`, also used for the bodies of
  the model routes, see :mod:`facegate.service.middleware`);
- a text field appears once; a file field appears once, except where the route reads every
  part in order (:func:`read_parts`: liveness ``frames``); a name is a text field or a file,
  not both;
- an empty file part or an empty base64 image is "field X is empty" (422 either way: the
  field is missing a value, not an undecodable image);
- numbers are plain decimal numbers within the route's bounds (:func:`number_field`);
- text follows :func:`facegate.service.schemas.unsafe_char` (``note``: multi-line);
- multipart file parts stay in memory: they are never spooled to a temporary file (biometric
  data must not rest in clear on disk, not even briefly); the whole body is bounded by
  ``FACEGATE_MAX_REQUEST_BYTES`` (:class:`facegate.service.middleware.ServiceMiddleware`), so
  memory is too.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import sys

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from facegate.errors import FacegateError
from facegate.service.schemas import unsafe_char

# python-multipart logs a WARNING for every malformed part header a client sends: client garbage,
# already answered 422, that would let any caller fill the server's log. Its errors still show.
logging.getLogger("python_multipart").setLevel(logging.ERROR)

MAX_FORM_FIELDS = 32
MAX_FORM_FILES = 4
MAX_TEXT_FIELD = 64 * 1024
MAX_JSON_DEPTH = 32
"""Nesting of a JSON body (objects and arrays; the body itself is level 1). The API's deepest
legitimate body is a subject's ``metadata`` (8 levels, :data:`.schemas.FREE_JSON_MAX_DEPTH`)
inside the body object."""
MAX_MODEL_BODY = 256 * 1024
"""The largest JSON body of a model route (a subject's create or update: no images; its largest
legitimate body is two 16 KiB free-JSON objects and a name, even \\u-escaped well under this).
Such a body is parsed before the key check (:mod:`facegate.service.middleware`), so it is kept
small."""
MULTILINE_FIELDS = frozenset({"note"})
"""Text fields that may hold tab, LF and CR (every other text field is one line)."""


class InMemoryMultiPartParser(MultiPartParser):
    """Starlette's multipart parser with file parts that never roll over to disk.

    Starlette keeps a file part in a ``SpooledTemporaryFile`` that moves to a temporary file
    past ``spool_max_size`` (1 MB by default), in clear. Here the threshold is unreachable,
    so every part stays in memory (a ``BytesIO``); what bounds that memory is the body limit
    enforced before the parser sees a byte (``FACEGATE_MAX_REQUEST_BYTES``)."""

    spool_max_size = sys.maxsize


def _reject_constant(name: str):
    raise FacegateError("invalid_request", f"the body is not valid JSON: {name} is not a JSON number")


def _object(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise FacegateError("invalid_request", f"the JSON body repeats the key {repeated[:64]!r}",
                            field=repeated[:64])
    return out


def json_depth(value, limit: int) -> int:
    """How deep ``value`` nests (a scalar is 0, ``[]`` is 1), counted up to ``limit + 1``."""
    deepest = 0
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def parse_json(raw: bytes):
    """``raw`` as strict JSON (the rules in the module docstring), or 422 ``invalid_request``."""
    try:
        value = json.loads(raw, object_pairs_hook=_object, parse_constant=_reject_constant)
    except RecursionError:
        raise FacegateError("invalid_request", f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise FacegateError("invalid_request", f"the body is not valid JSON: {str(exc)[:200]}") from None
    if json_depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise FacegateError("invalid_request", f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")
    return value


async def _multipart(request: Request, max_files: int) -> list[tuple[str, object]]:
    parser = InMemoryMultiPartParser(request.headers, request.stream(), max_files=max_files,
                                     max_fields=MAX_FORM_FIELDS, max_part_size=MAX_TEXT_FIELD)
    form = await parser.parse()
    return form.multi_items()


async def read_parts(request: Request, max_file_bytes: int, max_files: int = MAX_FORM_FILES
                     ) -> tuple[dict, list[tuple[str, bytes]]]:
    """The request's text fields (each name once) and its file parts in order (a name may
    repeat, e.g. frames: the route decides). A JSON body gives fields only (images in it are
    base64 strings)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data" or ctype == "application/x-www-form-urlencoded":
        items: list[tuple[str, object]] = []
        try:
            if ctype == "multipart/form-data":
                items = await _multipart(request, max_files)
            else:
                form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_TEXT_FIELD)
                items = form.multi_items()
            fields: dict = {}
            files: list[tuple[str, bytes]] = []
            for name, value in items:
                if isinstance(value, UploadFile):
                    data = await value.read(max_file_bytes + 1)
                    if len(data) > max_file_bytes:
                        raise FacegateError("image_too_large", f"field {name!r} exceeds {max_file_bytes} bytes",
                                            limit_bytes=max_file_bytes)
                    if not data:
                        raise FacegateError("invalid_request", f"field {name!r} is empty", field=name)
                    files.append((name, data))
                elif name in fields:
                    raise FacegateError("invalid_request", f"field {name!r} is sent more than once", field=name)
                else:
                    fields[name] = value
        except FacegateError:
            raise
        except MultiPartException as exc:
            raise FacegateError("invalid_request", f"malformed form body: {exc.message[:200]}")
        except Exception as exc:  # malformed multipart: the parser's message names the problem
            raise FacegateError("invalid_request", f"malformed form body: {str(exc)[:200]}")
        finally:
            for _, value in items:
                if isinstance(value, UploadFile):
                    value.file.close()
        return fields, files
    if ctype == "application/json" or ctype.endswith("+json"):
        body = parse_json(await request.body())
        if not isinstance(body, dict):
            raise FacegateError("invalid_request", "the JSON body must be an object")
        return body, []
    raise FacegateError("invalid_request", "send multipart/form-data (image files) or application/json "
                        "(images as base64)", content_type=ctype[:100])


async def read_fields(request: Request, max_image_bytes: int) -> dict:
    """The request's fields: str/int/... values, image fields as ``bytes``."""
    fields, files = await read_parts(request, max_image_bytes)
    for name, data in files:
        if name in fields:
            raise FacegateError("invalid_request", f"field {name!r} is sent more than once", field=name)
        fields[name] = data
    return fields


def image_field(fields: dict, name: str, max_image_bytes: int, required: bool = True) -> bytes | None:
    """The bytes of image field ``name``: a file part, or a base64 string."""
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise FacegateError("invalid_request", f"field {name!r} (an image) is required", field=name)
        return None
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("data:"):
            head, _, text = text.partition(",")
            if ";base64" not in head:
                raise FacegateError("invalid_request", f"field {name!r}: only base64 data URLs are accepted")
        if len(text) > max_image_bytes * 4 // 3 + 8:
            raise FacegateError("image_too_large", f"field {name!r} exceeds {max_image_bytes} bytes",
                                limit_bytes=max_image_bytes)
        try:
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise FacegateError("invalid_request", f"field {name!r} is neither a file nor valid base64", field=name)
    else:
        raise FacegateError("invalid_request", f"field {name!r} must be an image file or a base64 string",
                            field=name)
    if not data:
        raise FacegateError("invalid_request", f"field {name!r} is empty", field=name)
    return data


def text_field(fields: dict, name: str, required: bool = False, max_len: int = 256) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise FacegateError("invalid_request", f"field {name!r} is required", field=name)
        return None
    if isinstance(value, bytes):
        raise FacegateError("invalid_request", f"field {name!r} must be text, not a file", field=name)
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise FacegateError("invalid_request", f"field {name!r} must be a string", field=name)
    value = str(value)
    if len(value) > max_len:
        raise FacegateError("invalid_request", f"field {name!r} is longer than {max_len}", field=name)
    if bad := unsafe_char(value, multiline=name in MULTILINE_FIELDS):
        raise FacegateError("invalid_request", f"field {name!r} contains the control or bidi character {bad}",
                            field=name)
    return value


def flag_field(fields: dict, name: str) -> bool:
    """A yes/no field: true for ``true``/``1``/``yes``/``on`` (any case) or a JSON ``true``/``1``."""
    value = fields.get(name)
    return value is True or (isinstance(value, (str, int)) and str(value).strip().lower() in {"1", "true", "yes", "on"})


_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][+-]?[0-9]{1,3})?")


def number_field(fields: dict, name: str, kind=int, default=None, lo=None, hi=None):
    """A number field within ``[lo, hi]``. Accepted: a JSON number (an integer where ``kind``
    is int: ``5.0`` is refused), or text that is a plain ASCII decimal (at most 18 digits for an
    integer; a float as digits with an optional fraction and exponent). Refused with 422:
    anything else, NaN and infinities (as text or after overflow), booleans, files."""
    value = fields.get(name)
    if value is None or value == "":
        return default
    wanted = ("an integer" if kind is int else "a number") + (f" between {lo} and {hi}" if lo is not None else "")
    bad = FacegateError("invalid_request", f"field {name!r} must be {wanted}", field=name)
    if isinstance(value, str):
        text = value.strip()
        if not (_INTEGER if kind is int else _DECIMAL).fullmatch(text):
            raise bad
        number = kind(text)
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float)):
        raise bad
    else:
        try:
            number = kind(value)
        except OverflowError:
            raise bad from None
    if kind is float and not math.isfinite(number):
        raise bad
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise bad
    return number


def openapi_body(images: tuple[str, ...], fields: dict[str, dict], required: tuple[str, ...]) -> dict:
    """``openapi_extra`` documenting a body that is multipart (files) or JSON (base64)."""
    def schema(binary: bool) -> dict:
        props = {name: {"type": "string", "format": "binary" if binary else "byte"} for name in images}
        props.update(fields)
        return {"type": "object", "properties": props, "required": list(required)}

    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": schema(True)},
        "application/json": {"schema": schema(False)},
    }}}
