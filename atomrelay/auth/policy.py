"""Who may call what: the Core spec's user levels, access classes and default access policy, and the caller."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class AccessClass(enum.Enum):
    """The Core spec's access classes (section "Access classes for service requests")."""

    PRE_AUTH = "PRE_AUTH"
    READ_SYSTEM = "READ_SYSTEM"
    READ_SYSTEM_SENSITIVE = "READ_SYSTEM_SENSITIVE"
    READ_SYSTEM_SECRET = "READ_SYSTEM_SECRET"
    WRITE_SYSTEM = "WRITE_SYSTEM"
    UNRECOVERABLE = "UNRECOVERABLE"
    READ_MEDIA = "READ_MEDIA"
    ACTUATE = "ACTUATE"


# The Core spec's "Default Access Policy Definition" table: which user levels may do what.
_POLICY: dict[AccessClass, frozenset[str]] = {
    AccessClass.PRE_AUTH: frozenset({"Administrator", "Operator", "User", "Anonymous"}),
    AccessClass.READ_SYSTEM: frozenset({"Administrator", "Operator", "User"}),
    AccessClass.READ_SYSTEM_SENSITIVE: frozenset({"Administrator", "Operator"}),
    AccessClass.READ_SYSTEM_SECRET: frozenset({"Administrator"}),
    AccessClass.WRITE_SYSTEM: frozenset({"Administrator"}),
    AccessClass.UNRECOVERABLE: frozenset({"Administrator"}),
    AccessClass.READ_MEDIA: frozenset({"Administrator", "Operator", "User"}),
    AccessClass.ACTUATE: frozenset({"Administrator", "Operator"}),
}


def allowed(level: str, access: AccessClass) -> bool:
    """Whether a user level (or "Anonymous") may call an operation of this class."""
    return level in _POLICY[access]


def levels_allowed(access: AccessClass) -> frozenset[str]:
    """The user levels (and "Anonymous") that may call an operation of this class."""
    return _POLICY[access]


@dataclass(frozen=True)
class Caller:
    """Who made the request: a user name and level, or the anonymous caller."""

    username: str | None
    level: str  # Administrator | Operator | User | Anonymous

    @property
    def anonymous(self) -> bool:
        """True when no credentials were verified."""
        return self.username is None


ANONYMOUS = Caller(None, "Anonymous")
