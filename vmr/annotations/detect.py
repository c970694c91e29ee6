"""Guess an annotation file's format from its first bytes (the content decides, not the file name).

Rules, in order:

- CSV header with ``query_id`` and ``reference_id``                       -> ``sportsmoments``
- CSV header with ``video_id``, ``action_class``, ``start`` and ``end``    -> ``matches``
- a JSON list whose first item has ``location`` and ``groundtruth``        -> ``activitynet-vrl``
- a JSON object whose first value has ``timestamps`` and ``sentences``     -> ``activitynet-captions``
- JSON lines whose first object has ``qid``, ``vid`` and ``query``         -> ``qvhighlights``
- lines of ``VID start end##sentence``                                     -> ``charades-sta``

Anything else is an :class:`InputError` listing the formats and asking for ``--format``.
"""
from __future__ import annotations

import csv
import io
import json
import re

from vmr.errors import InputError

FORMATS = ("sportsmoments", "activitynet-vrl", "qvhighlights", "charades-sta", "activitynet-captions", "matches")
_CHARADES = re.compile(r"^\S+\s+[-+0-9.eE]+\s+[-+0-9.eE]+\s*##")


def _first_object(head: str, at: int) -> str | None:
    """The text of the first balanced ``{...}`` starting at or after index ``at`` (``None`` if ``head`` ends first)."""
    start = head.find("{", at)
    if start < 0:
        return None
    depth = 0
    in_str = esc = False
    for i in range(start, len(head)):
        c = head[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return head[start:i + 1]
    return None


def guess_format(head: str, name: str = "the file") -> str:
    """The format of a file whose first characters are ``head`` (a few KiB are enough)."""
    text = head.lstrip("\ufeff").lstrip()
    first_line = text.splitlines()[0] if text else ""
    if text.startswith("["):
        item = _first_object(text, 1)
        if item is not None:
            try:
                obj = json.loads(item)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and {"location", "groundtruth"} <= set(obj):
                return "activitynet-vrl"
    if text.startswith("{"):
        try:
            obj = json.loads(first_line)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and {"qid", "vid", "query"} <= set(obj):
            return "qvhighlights"
        m = re.match(r'\{\s*"(?:[^"\\]|\\.)*"\s*:\s*', text)
        if m:
            item = _first_object(text, m.end()) if text[m.end():m.end() + 1] == "{" else None
            try:
                obj = json.loads(item) if item else None
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and {"timestamps", "sentences"} <= set(obj):
                return "activitynet-captions"
    if _CHARADES.match(first_line):
        return "charades-sta"
    try:
        header = {h.strip() for h in next(csv.reader(io.StringIO(first_line)), [])}
    except csv.Error:
        header = set()
    if {"query_id", "reference_id"} <= header:
        return "sportsmoments"
    if {"video_id", "action_class", "start", "end"} <= header:
        return "matches"
    raise InputError(f"cannot tell the annotation format of {name} from its content; pass --format "
                     f"({'|'.join(FORMATS)})")


def guess_file_format(uri: str, nbytes: int = 65536) -> str:
    """Read the first ``nbytes`` of ``uri`` and :func:`guess_format` them."""
    from vmr import storage

    try:
        with storage.open_uri(uri, "rb") as f:
            raw = f.read(nbytes)
    except FileNotFoundError:
        raise InputError(f"not found: {uri}") from None
    except IsADirectoryError:
        raise InputError(f"{uri} is a folder, not an annotation file") from None
    return guess_format(raw.decode("utf-8", errors="ignore"), uri)
