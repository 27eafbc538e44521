"""Form input: one pydantic model per form, and one translation from what a model refuses to the messages
a person sees next to each field.

A form model (`class IdeaCreate(FormModel)`, next to the service that takes it) says what each field may
hold with the rules below: `text(...)` for typed text, `whole_number(...)` for ids and numbers,
`decimal_number(...)` for amounts such as weights, `choice(...)` for a value picked from a list, `checkbox()`
for a tick, `return_path()` for where the form goes back to, `values_in_text(...)` for several values typed in one box; a model's own validators raise `refuse(message)`. Each rule carries the sentence
shown when it is broken; a pydantic refusal that no rule words (a file sent where text belongs) gets the
model's `messages` entry or a plain sentence from `_FALLBACK`. Checks that need the database (does this
product still exist?) stay in the services, which take the validated model.

A route reads the request with `await read_form(request, Model)`: it gets the values as typed (to show
the form again as it was sent) and either the model or the messages, and re-renders the page with HTTP
422 itself; `read_values(Model, {...})` does the same for values a route already has (FastAPI form
parameters, or an API's JSON). Waiting for the body inside a route is safe: `DbSessionMiddleware` reads a
write request's whole form body before the app runs, so on SQLite (where a write request holds the only
write lock from its first statement) no request holds the lock while its client is still sending.
FastAPI's own form models (`Annotated[Model, Form()]`) are not used for this: they refuse
before the route runs, with a RequestValidationError, so nobody could show the form again.

Pure pydantic plus `app.parsing`; no web framework is imported here, so services can take these models.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, get_args, get_origin
from urllib.parse import parse_qsl

from pydantic import BaseModel, BeforeValidator, ConfigDict, TypeAdapter, ValidationError

from app.errors import FormInvalid
from app.parsing import INT32_MAX, clean_text, parse_int

if TYPE_CHECKING:
    from starlette.requests import Request

_Model = TypeVar("_Model", bound="FormModel")
_Enum = TypeVar("_Enum", bound=Enum)
_Result = TypeVar("_Result")

# For refusals that no rule of ours words (the value is not text at all, a list where one value belongs).
_FALLBACK = {
    "string_type": "Send this as text.",
    "list_type": "Choose again.",
    "missing": "This is required.",
}
_DEFAULT = "Check this field."


class FormModel(BaseModel):
    """The base of every form model: fields not declared are ignored (buttons, the CSRF token), defaults
    go through the rules too (a field left out is refused like one left empty), and a validated form does
    not change under the service that reads it."""

    model_config = ConfigDict(extra="ignore", frozen=True, validate_default=True)

    # A message for a field pydantic itself refused (not one of the rules below), by field name.
    messages: ClassVar[dict[str, str]] = {}


class Refused(ValueError):
    """What a rule or a model's own validator raises: its text is the sentence shown to the person.

    A ValueError, so pydantic collects it with the other refusals of the form (as a "value_error" that
    keeps the exception), and form_errors finds the sentence again.
    """


def refuse(message: str) -> Refused:
    """The error a model's own validator raises: `message` is shown as it is."""
    return Refused(message)


def _as_text(value: Any) -> Any:
    return clean_text(value) if isinstance(value, str) else value


TOO_LONG = "Keep it to {limit:,} characters (it has {length:,})."


def plain_message(error: Mapping[str, Any]) -> str:
    """A sentence for an error pydantic raised on its own (a route's `Form(max_length=...)`, say), in the words
    of the rules above where there is one; pydantic's text otherwise."""
    context = error.get("ctx") or {}
    if error.get("type") == "string_too_long" and isinstance(context.get("max_length"), int):
        value = error.get("input")
        length = len(value) if isinstance(value, str) else context["max_length"] + 1
        return TOO_LONG.format(limit=context["max_length"], length=length)
    return str(error.get("msg", ""))


def text(limit: int, *, required: str = "", one_line: str = "", collapse: bool = False, newlines: bool = False,
         too_long: str = TOO_LONG) -> Any:
    """Typed text: stripped (or, with `collapse`, every run of spaces made one), at most `limit` characters.

    `required` is the message when nothing was typed; `one_line` the message when a line break was;
    `too_long` the message over the limit (a format string given `limit` and `length`). With `newlines`,
    CR LF and CR line breaks (as browsers send a text area's) become LF before anything is counted.
    """

    def check(value: Any) -> Any:
        if not isinstance(value, str):
            return value  # pydantic refuses it as not text
        value = clean_text(value)
        if newlines:
            value = value.replace("\r\n", "\n").replace("\r", "\n")
        value = " ".join(value.split()) if collapse else value.strip()
        if required and not value:
            raise refuse(required)
        if one_line and "\n" in value:
            raise refuse(one_line)
        if len(value) > limit:
            raise refuse(too_long.format(limit=limit, length=len(value)))
        return value

    return BeforeValidator(check)


ADDRESS_LIMIT = 2000  # longer than any address of this site's pages


def return_path() -> Any:
    """Where a form goes back to (`next`, `return_to`): text the route checks is a path of this site. Longer
    than any page's address, it is dropped (empty: the form goes back to its default page), never refused, so
    the rest of the form is acted on and nothing typed is lost."""

    def check(value: Any) -> Any:
        if not isinstance(value, str):
            return value  # pydantic refuses it as not text
        value = clean_text(value).strip()
        return "" if len(value) > ADDRESS_LIMIT else value

    return BeforeValidator(check)


def whole_number(message: str, *, minimum: int = 1, maximum: int = INT32_MAX, required: bool = True) -> Any:
    """An id or a count typed in ASCII digits within [minimum, maximum] (as app.parsing.parse_int reads it).

    Nothing typed is None when not `required`; anything else that is not such a number gets `message`.
    """

    def check(value: Any) -> int | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise refuse(message)
            return None
        number = parse_int(value, minimum=minimum, maximum=maximum)
        if number is None:
            raise refuse(message)
        return number

    return BeforeValidator(check)


def decimal_number(message: str, *, minimum: Decimal, maximum: Decimal, places: int, required: bool = True,
                   thousands: bool = False, suffix: str = "") -> Any:
    """A number typed with a decimal point (2, 1.5, 0.25) within [minimum, maximum] and at most `places`
    digits after the point; anything else (words, NaN, 1e3's like) gets `message`.

    Nothing typed is None when not `required`. With `thousands`, commas are read as thousands separators
    (100,000); a `suffix` people may type after the number ("%") is allowed and dropped.
    """

    def check(value: Any) -> Decimal | None:
        if isinstance(value, Decimal):
            return value
        if not isinstance(value, str):
            raise refuse(message)
        raw = clean_text(value).strip()
        if suffix:
            raw = raw.removesuffix(suffix).strip()
        if thousands:
            raw = raw.replace(",", "")
        if not raw:
            if required:
                raise refuse(message)
            return None
        if len(raw) > 40 or not re.fullmatch(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)", raw):
            raise refuse(message)
        number = Decimal(raw)
        exponent = number.as_tuple().exponent
        decimals = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        if not minimum <= number <= maximum or decimals > places:
            raise refuse(message)
        return number

    return BeforeValidator(check)


class _FromText(BeforeValidator):
    """A rule that reads several values out of one typed text (read_form keeps that text as it was typed)."""


def values_in_text(parse: Callable[[str], tuple[Any, ...]]) -> Any:
    """Several values typed in one text box (one per line, say): `parse` turns the text into them, raising
    `refuse(message)` for text it cannot read."""
    return _FromText(lambda value: parse(clean_text(value)) if isinstance(value, str) else value)


def checkbox() -> Any:
    """A checkbox: ticked when it was sent with any value (browsers send "on", or the input's value)."""
    return BeforeValidator(lambda value: bool(value))


def choice(options: type[_Enum], message: str, *, empty: Any = ...) -> Any:
    """One of an enum's values; anything else gets `message`. Nothing chosen is `empty` when one is given
    (a member, or None), else refused too."""

    def check(value: Any) -> Any:
        if isinstance(value, options):
            return value
        raw = _as_text(value)
        if raw in ("", None) and empty is not ...:
            return empty
        try:
            return options(raw)
        except ValueError:
            raise refuse(message) from None

    return BeforeValidator(check)


def form_errors(model: type[FormModel], exc: ValidationError) -> dict[str, str]:
    """The one translation: a field name to the message shown next to it, in the order of the form's
    fields (the first refusal of a field wins)."""
    errors: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        name = str(error["loc"][0]) if error["loc"] else ""
        if name in errors:
            continue
        refused = (error.get("ctx") or {}).get("error")
        if isinstance(refused, Refused):
            errors[name] = str(refused)
        else:
            errors[name] = model.messages.get(name) or _FALLBACK.get(error["type"], _DEFAULT)
    return errors


def validate_form(model: type[_Model], values: Mapping[str, Any]) -> _Model:
    """The model, or FormInvalid with the messages (for callers that have the values already)."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise FormInvalid(form_errors(model, exc)) from None


@dataclass
class Submitted(Generic[_Model]):
    """A form as it came in: `typed` holds what was sent, as text (lists for fields that take several
    values), to show the form again; `data` is the validated model, or None and `errors` says why (then
    `partial` holds the fields that passed their own rules, the others at their defaults)."""

    typed: dict[str, Any]
    data: _Model | None = None
    errors: dict[str, str] = field(default_factory=dict)
    partial: _Model | None = None

    def valid(self) -> _Model:
        """The model, or FormInvalid carrying the messages."""
        if self.data is None:
            raise FormInvalid(self.errors)
        return self.data

    def resolve(self, check: Callable[[_Model], _Result]) -> _Result:
        """`check` (a service's database checks, which raise FormInvalid) on the validated model; on a
        refused form, run on the fields that passed anyway, so the person reads every message at once,
        in the order of the form's fields."""
        if self.data is not None:
            return check(self.data)
        assert self.partial is not None
        try:
            check(self.partial)
        except FormInvalid as exc:
            order = list(type(self.partial).model_fields)
            merged = {**exc.errors, **self.errors}
            raise FormInvalid(dict(sorted(merged.items(), key=lambda e: _position(order, e[0])))) from None
        raise FormInvalid(self.errors)


def _position(order: list[str], name: str) -> int:
    return order.index(name) if name in order else len(order)


@lru_cache(maxsize=256)
def _field_adapter(model: type[FormModel], name: str) -> TypeAdapter[Any]:
    return TypeAdapter(model.model_fields[name].rebuild_annotation())


def _partial(model: type[_Model], typed: Mapping[str, Any], errors: Mapping[str, str]) -> _Model:
    """The model with each field that passes its own rules (cross-field rules aside), the rest at defaults."""
    values: dict[str, Any] = {}
    for name in model.model_fields:
        if name in errors or name not in typed:
            continue
        try:
            values[name] = _field_adapter(model, name).validate_python(typed[name])
        except ValidationError:
            continue
    return model.model_construct(**values)


def _takes_several(annotation: Any, metadata: list[Any]) -> bool:
    if any(isinstance(m, _FromText) for m in metadata):
        return False
    while get_origin(annotation) is not None and get_origin(annotation) not in (list, tuple):
        args = get_args(annotation)  # Annotated[...] and Optional[...] wrap the type
        annotation = args[0] if args else None
    return get_origin(annotation) in (list, tuple)


@lru_cache(maxsize=256)
def _fields(model: type[FormModel]) -> tuple[tuple[str, str, bool], ...]:
    """Each field's name, its name in the form and whether it takes several values: once per model."""
    return tuple((name, info.alias or name, _takes_several(info.annotation, info.metadata))
                 for name, info in model.model_fields.items())


def typed_values(model: type[FormModel], submitted: Any) -> dict[str, Any]:
    """The model's fields as sent in a form (starlette FormData, or anything with get and getlist)."""
    typed: dict[str, Any] = {}
    for name, key, several in _fields(model):
        if several:
            typed[name] = [clean_text(v) for v in submitted.getlist(key) if isinstance(v, str)]
        else:
            value = submitted.get(key)
            typed[name] = clean_text(value) if isinstance(value, str) else ""
    return typed


async def read_form(request: Request, model: type[_Model]) -> Submitted[_Model]:
    """The request's form read into `model`: the values as typed, and the model or the messages."""
    return read_values(model, typed_values(model, await submitted_form(request)))


_URLENCODED = "application/x-www-form-urlencoded"


async def submitted_form(request: Request) -> Any:
    """The request's form. A urlencoded one (every form of the portal but the logo's upload, and app.js's votes) is
    split by the standard library's `parse_qsl`, which gives the very pairs Starlette's parser gives (tests/test_forms.py
    compares them) for a fraction of its CPU: that one runs python-multipart's parser byte by byte, 0.1 ms of a vote.
    Anything else, and a body Starlette already read, is Starlette's."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == _URLENCODED:
        try:
            body = await request.body()
        except RuntimeError:  # the stream was read as a form already (verify_csrf): that form is kept
            return await request.form()
        try:
            return _Pairs(parse_urlencoded(body))
        except ValueError:  # more fields than Starlette takes: it answers that (400)
            pass
    return await request.form()


class _Pairs:
    """A form's pairs read as Starlette's FormData reads them: `get` the last value of a name, `getlist` all."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs
        self._last = dict(pairs)

    def get(self, key: str, default: Any = None) -> Any:
        return self._last.get(key, default)

    def getlist(self, key: str) -> list[str]:
        return [value for name, value in self._pairs if name == key]


def parse_urlencoded(body: bytes) -> list[tuple[str, str]]:
    """A urlencoded body's pairs as Starlette's FormParser makes them (each name and value percent-decoded as UTF-8
    from bytes read as Latin-1, '+' a space, a pair without '=' an empty value, empty pairs skipped); ValueError beyond
    1,000 fields."""
    return parse_qsl(body.decode("latin-1"), keep_blank_values=True, max_num_fields=1000)


def read_values(model: type[_Model], typed: dict[str, Any]) -> Submitted[_Model]:
    """Values a caller already has (an API body's, a script's) read into `model` as `read_form` reads a form:
    the model or the messages, refusing nothing yet (`Submitted.valid()` does, when the caller is ready)."""
    try:
        return Submitted(typed=typed, data=model.model_validate(typed))
    except ValidationError as exc:
        errors = form_errors(model, exc)
        return Submitted(typed=typed, errors=errors, partial=_partial(model, typed, errors))
