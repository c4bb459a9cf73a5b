"""JSON and YAML that a user hands us (batch manifests, prompts files, prompts text), read within
bounds: the one loader every such reader goes through.

Plain ``yaml.safe_load``/``json.loads`` trust the text's size. A YAML "billion laughs" (anchors
whose aliases nest, ``a: &a [x, x]``, ``b: &b [*a, *a]`` ...) is a few hundred bytes that stand
for billions of values; PyYAML builds them as shared objects, but the first code that walks or
prints them (a check's message, a merge key ``<<``) expands them and grows memory without end.
So the loader bounds:

* the text: at most ``max_bytes`` (a file is never read past that);
* the values, counted as if every alias were written out: at most ``max_values``; an alias
  that refers to the value it sits in is refused outright;
* the nesting: at most ``max_depth`` levels;
* whole numbers: more than ``max_digits`` digits come back as a :class:`LongNumber`, so the
  check of that field can say which value is out of range (Python refuses to convert more than
  4300 digits at all, and ``float()`` of a 400-digit integer overflows).

YAML composition counts values as it goes, so a bomb is refused after ``max_values`` values
of work, before anything is expanded. Every refusal is a :class:`DocumentError` that names the
source, the problem and, for YAML, the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sam2_web.errors import Sam2WebError

FORMATS = ("json", "yaml")


class DocumentError(Sam2WebError, ValueError):
    """JSON/YAML text that cannot be read, or is larger, more nested or expands to more values
    than the loader allows; the message names the source and the problem."""


@dataclass(frozen=True)
class DocumentLimits:
    """What one document may hold (see the module doc).

    Attributes:
        max_bytes: size of the text in bytes.
        max_values: values (mappings, lists, keys and scalars), every alias counted as the values
            it stands for.
        max_depth: levels of nesting.
        max_digits: digits of a whole number before it is a :class:`LongNumber`.
    """

    max_bytes: int = 16 * 2**20
    max_values: int = 500_000
    max_depth: int = 64
    max_digits: int = 20


DEFAULT_LIMITS = DocumentLimits()


class LongNumber:
    """A whole number with more digits than any field takes, kept as its text.

    Its ``repr`` (``a 5000-digit number``) is what a field's check prints, so the message says
    which value is out of range without printing (or converting) thousands of digits.
    """

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    @property
    def negative(self) -> bool:
        """The number is below zero."""
        return self.text.lstrip().startswith("-")

    @property
    def digits(self) -> int:
        """How many digits it has."""
        return sum(c.isdigit() for c in self.text)

    def __repr__(self) -> str:
        return f"a {self.digits}-digit {'negative ' if self.negative else ''}number"

    __str__ = __repr__


def read_document(path: str | Path, *, fmt: Optional[str] = None, what: str = "file",
                  limits: DocumentLimits = DEFAULT_LIMITS) -> Any:
    """Read a JSON or YAML file within ``limits``.

    Args:
        path: the file.
        fmt: ``"json"`` or ``"yaml"``; None: JSON for a ``.json`` name, YAML otherwise.
        what: how messages call the file ("manifest", "prompts file").
        limits: the bounds.
    Returns:
        The decoded value (dicts, lists, str, int, float, bool, None, :class:`LongNumber`).
    Raises:
        DocumentError: the file is missing, unreadable, not UTF-8, larger than ``max_bytes``
            (read no further than that), or not a valid document within ``limits``.
    """
    path = Path(path)
    fmt = fmt or ("json" if path.suffix.lower() == ".json" else "yaml")
    try:
        with open(path, "rb") as handle:
            data = handle.read(limits.max_bytes + 1)  # a device or a FIFO is not read forever
    except FileNotFoundError:
        raise DocumentError(f"the {what} {path} does not exist") from None
    except OSError as exc:
        raise DocumentError(f"cannot read the {what} {path} ({exc.strerror or exc})") from None
    if len(data) > limits.max_bytes:
        raise DocumentError(f"the {what} {path} is larger than {_size(limits.max_bytes)}, more than a {what} "
                            "needs; split it or remove what is not needed")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"the {what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    return parse_document(text, fmt=fmt, source=str(path), limits=limits)


def parse_document(text: str, *, fmt: str, source: str = "the text", limits: DocumentLimits = DEFAULT_LIMITS) -> Any:
    """Decode JSON or YAML text within ``limits``.

    Args:
        text: the text.
        fmt: ``"json"`` or ``"yaml"`` (YAML includes JSON, but JSON is read by the JSON rules).
        source: how messages name the text (a file path, "the prompts").
        limits: the bounds.
    Returns:
        The decoded value; whole numbers longer than ``max_digits`` are :class:`LongNumber`.
    Raises:
        DocumentError: not valid JSON/YAML (with line and column), larger than ``max_bytes``,
            nested deeper than ``max_depth``, more than ``max_values`` values (aliases
            expanded), or an alias that refers to itself.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if len(text) > limits.max_bytes or (
            len(text) * 4 > limits.max_bytes and len(text.encode("utf-8", "surrogatepass")) > limits.max_bytes):
        raise DocumentError(f"{source} is larger than {_size(limits.max_bytes)}; send less")
    if fmt == "json":
        return _parse_json(text, source, limits)
    return _parse_yaml(text, source, limits)


# --------------------------------------------------------------------------- JSON


def _parse_json(text: str, source: str, limits: DocumentLimits) -> Any:
    def whole(digits: str) -> Any:
        return int(digits) if len(digits.lstrip("-")) <= limits.max_digits else LongNumber(digits)

    try:
        value = json.loads(text, parse_int=whole)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise DocumentError(f"{source} is nested too deeply (at most {limits.max_depth} levels)") from None
    _check_tree(value, source, limits)
    return value


def _check_tree(value: Any, source: str, limits: DocumentLimits) -> None:
    """Depth and value count of decoded JSON (no aliases: each value is its own)."""
    count = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > limits.max_values:
            raise DocumentError(f"{source} holds more than {limits.max_values} values; split it")
        if isinstance(item, (dict, list)):
            if depth > limits.max_depth:
                raise DocumentError(f"{source} is nested too deeply (at most {limits.max_depth} levels)")
            children = item.values() if isinstance(item, dict) else item
            count += len(item) if isinstance(item, dict) else 0  # the keys
            stack.extend((child, depth + 1) for child in children)


# --------------------------------------------------------------------------- YAML


def _parse_yaml(text: str, source: str, limits: DocumentLimits) -> Any:
    import yaml

    loader = _bounded_loader_class()(text)
    loader.limits, loader.source = limits, source
    try:
        node = loader.get_single_node()
        return None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise DocumentError(f"{source} is not valid YAML: {problem}{at}") from None
    except RecursionError:
        raise DocumentError(f"{source} is nested too deeply (at most {limits.max_depth} levels)") from None
    finally:
        loader.dispose()


_LOADER: Optional[type] = None


def _bounded_loader_class() -> type:
    """A safe YAML loader whose composer counts values (aliases as what they stand for) and
    depth, and whose whole numbers past ``max_digits`` become :class:`LongNumber`."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.events import AliasEvent
    from yaml.resolver import Resolver

    try:  # libyaml parses; composing stays in Python so it can be counted
        from yaml._yaml import CParser as Parser

        parser_bases: tuple = (Parser,)
    except ImportError:
        from yaml.parser import Parser
        from yaml.reader import Reader
        from yaml.scanner import Scanner

        parser_bases = (Reader, Scanner, Parser)

    class BoundedComposer(Composer):
        limits: DocumentLimits = DEFAULT_LIMITS  # set per document by _parse_yaml
        source = "the text"

        def compose_document(self):
            self._values, self._depth, self._sizes, self._aliased = 0, 0, {}, False
            return super().compose_document()

        def compose_node(self, parent, index):
            if self.check_event(AliasEvent):
                event = self.peek_event()
                target = self.anchors.get(event.anchor)
                if target is not None and id(target) not in self._sizes:
                    raise DocumentError(f"{self.source}: the alias *{event.anchor} at line {event.start_mark.line + 1} "
                                        "refers to the value it is part of; write the value out instead")
                node = super().compose_node(parent, index)
                self._aliased = True
                self._count(self._sizes[id(node)], event.start_mark)
                return node
            event = self.peek_event()
            self._depth += 1
            if self._depth > self.limits.max_depth:
                raise DocumentError(f"{self.source} is nested too deeply at line {event.start_mark.line + 1} "
                                    f"(at most {self.limits.max_depth} levels)")
            before = self._values
            self._count(1, event.start_mark)
            node = super().compose_node(parent, index)
            self._depth -= 1
            self._sizes[id(node)] = self._values - before
            return node

        def _count(self, values: int, mark) -> None:
            self._values += values
            if self._values <= self.limits.max_values:
                return
            if self._aliased:
                raise DocumentError(
                    f"{self.source} stands for more than {self.limits.max_values} values by line {mark.line + 1} "
                    "(its aliases, *name, repeat what their anchors hold); write it with fewer aliases")
            raise DocumentError(f"{self.source} holds more than {self.limits.max_values} values; split it")

    class BoundedConstructor(SafeConstructor):
        limits: DocumentLimits = DEFAULT_LIMITS

        def construct_yaml_int(self, node):
            text = self.construct_scalar(node)
            if sum(c.isdigit() or c in "abcdefABCDEF" for c in text) > self.limits.max_digits:
                return LongNumber(text)
            return super().construct_yaml_int(node)

    BoundedConstructor.add_constructor("tag:yaml.org,2002:int", BoundedConstructor.construct_yaml_int)

    class BoundedLoader(BoundedComposer, *parser_bases, BoundedConstructor, Resolver):
        def __init__(self, stream):
            for base in parser_bases:
                base.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

        def dispose(self):
            for base in parser_bases:
                if hasattr(base, "dispose"):
                    base.dispose(self)

    _LOADER = BoundedLoader
    return _LOADER


def _size(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n} bytes"


def short_repr(value: Any) -> str:
    """A short ``repr`` for messages: a hostile value may be huge or deeply nested."""
    return _SHORT.repr(value)


def _short() -> Any:
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 3, 6, 4, 60, 60
    return short


_SHORT = _short()
