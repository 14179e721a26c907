"""Reading request fields and images from multipart forms or JSON bodies.

Images come either as multipart file fields or as base64 strings in a JSON body (a
``data:image/...;base64,`` prefix is accepted). The declared content type of a part is ignored:
the bytes are sniffed and decoded by :func:`facegate.images.decode_image` with its limits.
"""
from __future__ import annotations

import base64
import binascii
import json

from fastapi import Request
from starlette.datastructures import UploadFile

from facegate.errors import FacegateError

MAX_FORM_FIELDS = 32
MAX_FORM_FILES = 4
MAX_TEXT_FIELD = 64 * 1024


async def read_parts(request: Request, max_file_bytes: int, max_files: int = MAX_FORM_FILES
                     ) -> tuple[dict, list[tuple[str, bytes]]]:
    """The request's text fields and its file parts in order (a name may repeat, e.g. frames).
    A JSON body gives fields only (images in it are base64 strings)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data" or ctype == "application/x-www-form-urlencoded":
        try:
            form = await request.form(max_files=max_files, max_fields=MAX_FORM_FIELDS,
                                      max_part_size=MAX_TEXT_FIELD)
        except FacegateError:
            raise
        except Exception as exc:  # malformed multipart: the parser's message names the problem
            raise FacegateError("invalid_request", f"malformed form body: {str(exc)[:200]}")
        fields: dict = {}
        files: list[tuple[str, bytes]] = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read(max_file_bytes + 1)
                if len(data) > max_file_bytes:
                    raise FacegateError("image_too_large", f"field {name!r} exceeds {max_file_bytes} bytes",
                                        limit_bytes=max_file_bytes)
                files.append((name, data))
            else:
                fields[name] = value
        return fields, files
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as exc:
            raise FacegateError("invalid_request", f"the body is not valid JSON: {str(exc)[:200]}")
        if not isinstance(body, dict):
            raise FacegateError("invalid_request", "the JSON body must be an object")
        return body, []
    raise FacegateError("invalid_request", "send multipart/form-data (image files) or application/json "
                        "(images as base64)", content_type=ctype[:100])


async def read_fields(request: Request, max_image_bytes: int) -> dict:
    """The request's fields: str/int/... values, image fields as ``bytes``."""
    fields, files = await read_parts(request, max_image_bytes)
    fields.update(files)
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
        raise FacegateError("unsupported_image", f"field {name!r} is empty")
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
    return value


def flag_field(fields: dict, name: str) -> bool:
    """A yes/no field: true for ``true``/``1``/``yes``/``on`` (any case) or a JSON ``true``/``1``."""
    value = fields.get(name)
    return value is True or (isinstance(value, (str, int)) and str(value).strip().lower() in {"1", "true", "yes", "on"})


def number_field(fields: dict, name: str, kind=int, default=None, lo=None, hi=None):
    value = fields.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, (bytes, bool)):
        raise FacegateError("invalid_request", f"field {name!r} must be a number", field=name)
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise FacegateError("invalid_request", f"field {name!r} must be a number", field=name)
    if kind is float and number != number:
        raise FacegateError("invalid_request", f"field {name!r} must be a number", field=name)
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise FacegateError("invalid_request", f"field {name!r} must be between {lo} and {hi}", field=name)
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
