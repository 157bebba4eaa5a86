"""How mediamtx turns a ``runOn...`` command string into an argument vector (Linux).

Emulates, for tests only:

* github.com/kballard/go-shellquote ``Split``: words separated by space, tab and
  newline; ``\\`` escapes the next character outside quotes (``\\`` + newline is
  removed); single quotes are literal; inside double quotes a backslash escapes only
  ``$ ` " \\`` and newline and is kept before anything else.
* variable expansion, in both orders mediamtx has used:
  ``"current"`` (internal/externalcmd/cmd_os.go): split first, then Go's
  ``os.Expand`` on every argument, looking names up in the command environment, then
  in the process environment, unknown names becoming empty;
  ``"legacy"`` (older cmd.go ``NewCmd``): ``strings.ReplaceAll(cmd, "$"+key, value)``
  for every command environment key on the whole string, then split.
"""

from __future__ import annotations

from collections.abc import Mapping

SPLIT_CHARS = " \n\t"
DOUBLE_ESCAPE_CHARS = "$`\"\n\\"


class SplitError(ValueError):
    """The command string is not valid for go-shellquote (unterminated quote or escape)."""


def shellquote_split(text: str) -> list[str]:
    """go-shellquote ``Split``."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in SPLIT_CHARS:
            i += 1
            continue
        word: list[str] = []
        while i < n and text[i] not in SPLIT_CHARS:
            char = text[i]
            if char == "'":
                end = text.find("'", i + 1)
                if end < 0:
                    raise SplitError("Unterminated single-quoted string")
                word.append(text[i + 1:end])
                i = end + 1
            elif char == '"':
                i += 1
                while True:
                    if i >= n:
                        raise SplitError("Unterminated double-quoted string")
                    char = text[i]
                    if char == '"':
                        i += 1
                        break
                    if char == "\\" and i + 1 < n and text[i + 1] in DOUBLE_ESCAPE_CHARS:
                        if text[i + 1] != "\n":
                            word.append(text[i + 1])
                        i += 2
                        continue
                    if char == "\\" and i + 1 >= n:
                        raise SplitError("Unterminated double-quoted string")
                    word.append(char)
                    i += 1
            elif char == "\\":
                if i + 1 >= n:
                    raise SplitError("Unterminated backslash-escape")
                if text[i + 1] != "\n":
                    word.append(text[i + 1])
                i += 2
            else:
                word.append(char)
                i += 1
        words.append("".join(word))
    return words


def _is_alnum(char: str) -> bool:
    return char == "_" or ("0" <= char <= "9") or ("a" <= char <= "z") or ("A" <= char <= "Z")


def _shell_name(rest: str) -> tuple[str, int]:
    """Go's ``os.getShellName``: the variable name after ``$`` and the bytes it uses."""
    special = "*#$@!?-0123456789"
    if rest[0] == "{":
        if len(rest) > 2 and rest[1] in special and rest[2] == "}":
            return rest[1:2], 3
        for index in range(1, len(rest)):
            if rest[index] == "}":
                if index == 1:
                    return "", 2
                return rest[1:index], index + 1
        return "", 1
    if rest[0] in special:
        return rest[0:1], 1
    index = 0
    while index < len(rest) and _is_alnum(rest[index]):
        index += 1
    return rest[:index], index


def go_os_expand(text: str, lookup: Mapping[str, str]) -> str:
    """Go's ``os.Expand`` with unknown names expanding to the empty string."""
    out: list[str] = []
    start = 0
    j = 0
    while j < len(text):
        if text[j] == "$" and j + 1 < len(text):
            out.append(text[start:j])
            name, width = _shell_name(text[j + 1:])
            if name == "" and width > 0:
                pass
            elif name == "":
                out.append("$")
            else:
                out.append(lookup.get(name, ""))
            j += width
            start = j + 1
        j += 1
    out.append(text[start:])
    return "".join(out)


def split_like_mediamtx(
    command: str,
    env: Mapping[str, str],
    process_env: Mapping[str, str] | None = None,
    mode: str = "current",
) -> list[str]:
    """The argv mediamtx executes for ``command`` with command environment ``env``."""
    if mode == "legacy":
        for key, value in env.items():
            command = command.replace("$" + key, value)
        return shellquote_split(command)
    if mode != "current":
        raise ValueError(f"unknown mode {mode!r}")
    lookup = dict(process_env or {})
    lookup.update(env)
    return [go_os_expand(part, lookup) for part in shellquote_split(command)]
