"""YAML from outside the staff (an LMS export's metadata) read as hostile input: plain data, bounded work.

PyYAML's loaders compose the whole node graph recursively (a deeply nested list is a RecursionError) and
copy aliased nodes for every use (a "billion laughs" document of 7 levels took 9 s and 460 MB). This reader
builds the Python objects itself from PyYAML's event stream, with no recursion: mappings, lists and scalars
only, every scalar kept as text (``None`` for a plain null), tags ignored (never an object), and two bounds
checked while the document is read, before anything big exists: the nesting depth, and the number of nodes
the document would have with every alias expanded. An alias is kept as a reference to the object it names,
never a copy, so a document within the bounds is also cheap to walk.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = ["YamlRefused", "load_plain"]

# libyaml's parser when PyYAML was built with it (fast, and it streams); the pure-Python one otherwise.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})


class YamlRefused(ValueError):
    """The document is not plain data within the bounds; ``str(exc)`` says which bound and where."""


@dataclass
class _Open:
    """A mapping or list being read: its object, its anchor, and what it adds up to so far."""

    value: dict[str, Any] | list[Any]
    anchor: str | None
    size: int = 1  # nodes, aliases expanded
    height: int = 1  # levels below and including this one, aliases expanded
    key: Any = field(default=None)
    has_key: bool = False


def _scalar(event: yaml.ScalarEvent) -> str | None:
    plain = event.implicit[0]  # untagged and unquoted (libyaml and PyYAML disagree on ``style`` here)
    return None if plain and event.value in _NULLS else event.value


def _line(event: yaml.Event) -> int:
    return event.start_mark.line + 1 if event.start_mark is not None else 0


def load_plain(text: str, *, max_depth: int = 32, max_nodes: int = 1_000_000) -> Any:
    """The first document of ``text`` as dicts, lists, strings and ``None``.

    Raises ``YamlRefused`` for a document nested deeper than ``max_depth``, one whose aliases would expand
    to more than ``max_nodes`` nodes, an unknown alias, or a mapping key that is not a scalar; and
    ``yaml.YAMLError`` for a syntax error.
    """
    anchors: dict[str, tuple[Any, int, int]] = {}  # anchor -> (object, size, height)
    stack: list[_Open] = []
    for event in yaml.parse(text, Loader=_LOADER):
        done: tuple[Any, int, int] | None = None
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(stack) >= max_depth:
                raise YamlRefused(f"it is nested more than {max_depth} levels deep (line {_line(event)})")
            empty: dict[str, Any] | list[Any] = {} if isinstance(event, yaml.MappingStartEvent) else []
            stack.append(_Open(empty, event.anchor))
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            node = stack.pop()
            done = (node.value, node.size, node.height)
            if node.anchor is not None:
                anchors[node.anchor] = done
        elif isinstance(event, yaml.ScalarEvent):
            done = (_scalar(event), 1, 0)
            if event.anchor is not None:
                anchors[event.anchor] = done
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise YamlRefused(f"alias *{event.anchor} names no earlier anchor (line {_line(event)})")
            done = anchors[event.anchor]
        elif isinstance(event, yaml.DocumentEndEvent):
            break  # only the first document counts
        if done is None:
            continue
        if not stack:
            return done[0]
        _add(stack, done, max_depth, event)
        if sum(node.size for node in stack) > max_nodes:  # what is open holds everything read so far
            raise YamlRefused(f"its aliases expand to more than {max_nodes} nodes (line {_line(event)}); "
                              "an alias bomb?")
    return None


def _add(stack: list[_Open], done: tuple[Any, int, int], max_depth: int, event: yaml.Event) -> None:
    """Put a finished value (with its expanded size and height) into the mapping or list on top of ``stack``."""
    value, size, height = done
    if len(stack) + height > max_depth:  # an alias can carry a deep object into a deep place
        raise YamlRefused(f"it is nested more than {max_depth} levels deep (line {_line(event)})")
    parent = stack[-1]
    parent.size += size
    parent.height = max(parent.height, height + 1)
    if isinstance(parent.value, list):
        parent.value.append(value)
    elif not parent.has_key:
        if not (value is None or isinstance(value, str)):
            raise YamlRefused(f"a mapping key is not text (line {_line(event)})")
        parent.key, parent.has_key = value or "", True
    else:
        parent.value[parent.key] = value
        parent.has_key = False
