"""The fenced blocks of docs/deploy-existing-airflow.md and what the tests do with each.

Each block the guide wants run is preceded by a marker comment, the last non-blank line before its
opening fence::

    <!-- e2e: settings -->                  the variables of step 0 (values replaced by the test)
    <!-- e2e: run -->                       run with bash, in order, in one "terminal"
    <!-- e2e: start NAME -->                start as a background process named NAME
    <!-- e2e: retry SECONDS -->             run until it succeeds, at most SECONDS
    <!-- e2e: after-run -->                 run once the DAG run $RUN_ID has finished
    <!-- e2e: systemd-unit FILE -->         a unit file, checked with systemd-analyze verify
    <!-- e2e: skip (why) -->                not run, and the reason says why

:func:`blocks` parses the file; :func:`problems` lists blocks the test would not know what to do
with (a ``bash`` block without a marker, an unknown marker, a marker without a block).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "deploy-existing-airflow.md"

KINDS = {"settings", "run", "start", "retry", "after-run", "systemd-unit", "skip"}
_MARKER = re.compile(r"^\s*<!--\s*e2e:\s*(?P<kind>[\w-]+)\s*(?P<arg>.*?)\s*-->\s*$")
_OPEN = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
_CLOSE = re.compile(r"^\s*```\s*$")


@dataclass(frozen=True)
class Block:
    kind: str | None  # one of KINDS, or None when no marker precedes the block
    arg: str  # start: the process name; retry: seconds; systemd-unit: the file name; skip: why
    lang: str  # the fence's language: bash, ini, ...
    text: str  # the block's lines, without the fences and the list indentation
    line: int  # 1-based line of the opening fence

    def where(self) -> str:
        return f"{GUIDE.relative_to(ROOT)}:{self.line}"


def blocks(path: Path = GUIDE) -> list[Block]:
    lines = path.read_text().splitlines()
    out: list[Block] = []
    marker: re.Match[str] | None = None
    marker_line = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        opening = _OPEN.match(line)
        if opening is None:
            if line.strip():
                if marker is not None:
                    raise ValueError(f"{path}:{marker_line}: the marker is not followed by a fenced block")
                marker, marker_line = _MARKER.match(line), i + 1
            i += 1
            continue
        start = i
        i += 1
        body = []
        while i < len(lines) and not _CLOSE.match(lines[i]):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"{path}:{start + 1}: the block opened here is never closed")
        i += 1
        out.append(Block(kind=marker["kind"] if marker else None, arg=marker["arg"] if marker else "",
                         lang=opening["lang"], text=textwrap.dedent("\n".join(body)) + "\n", line=start + 1))
        marker = None
    return out


def problems(found: list[Block]) -> list[str]:
    out = []
    for block in found:
        if block.kind is None:
            if block.lang == "bash":
                out.append(f"{block.where()}: a bash block without an <!-- e2e: ... --> marker")
        elif block.kind not in KINDS:
            out.append(f"{block.where()}: unknown marker 'e2e: {block.kind}' (known: {sorted(KINDS)})")
        elif block.kind in ("start", "retry", "systemd-unit", "skip") and not block.arg:
            out.append(f"{block.where()}: 'e2e: {block.kind}' needs an argument")
        elif block.kind == "retry" and not block.arg.isdigit():
            out.append(f"{block.where()}: 'e2e: retry' takes the seconds to keep trying, not {block.arg!r}")
        elif block.kind != "systemd-unit" and block.lang != "bash":
            out.append(f"{block.where()}: 'e2e: {block.kind}' marks a {block.lang or 'plain'} block, not bash")
    return out


def settings(block: Block) -> dict[str, str]:
    """NAME -> the documented value (as written, quotes and comments removed) of each export."""
    out = {}
    for line in block.text.splitlines():
        m = re.match(r"^export (\w+)=(.*)$", line.strip())
        if m:
            value = re.sub(r"\s+#.*$", "", m.group(2)).strip()
            out[m.group(1)] = value.strip("'\"")
    return out


def substitute_settings(block: Block, values: dict[str, str]) -> str:
    """The settings block with the value of each NAME in ``values`` replaced (shell-quoted).

    Every export whose value has no ``$`` (a documented placeholder, not derived from another
    setting) must be replaced, and every name in ``values`` must be one of the block's exports.
    """
    import shlex

    documented = settings(block)
    unknown = sorted(set(values) - set(documented))
    if unknown:
        raise ValueError(f"{block.where()}: the guide's settings have no {unknown}")
    placeholders = {name for name, value in documented.items() if "$" not in value}
    missing = sorted(placeholders - set(values))
    if missing:
        raise ValueError(f"{block.where()}: the test has no value for the settings {missing}")
    out = []
    for line in block.text.splitlines():
        m = re.match(r"^export (\w+)=", line.strip())
        if m and m.group(1) in values:
            line = f"export {m.group(1)}={shlex.quote(values[m.group(1)])}"
        out.append(line)
    return "\n".join(out) + "\n"
