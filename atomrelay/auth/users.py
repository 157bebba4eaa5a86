"""ONVIF users: the fixed ones from the config file plus those created over ONVIF.

Users created with CreateUsers are saved in ``state_dir/users.json`` (atomically, mode
0600 by StateStore) and survive restarts. Their passwords are stored in plain text on
purpose: WS-Security UsernameToken digests and HTTP Digest both need the clear
password to verify a request, so a hash would be useless. The file's 0600 mode is the
protection, the same as for the config file that holds the fixed users' passwords.

Config users are "fixed users" in the Core spec's sense: they are always listed, and
DeleteUsers/SetUser refuse to touch them (``ter:FixedUser``), so the owner can never be
locked out over the network. The faults are exactly those Core lists for CreateUsers,
DeleteUsers and SetUser; every operation changes all users or none.
"""

from __future__ import annotations

import builtins
from typing import Sequence

from twisted.logger import Logger

from atomrelay.config import User
from atomrelay.state import StateError, StateStore
from atomrelay.xml.soap import receiver_fault, sender_fault

STATE_NAME = "users"
LEVELS = ("Administrator", "Operator", "User")
MAX_USERS = 32
MAX_USERNAME_LENGTH = 64
MAX_PASSWORD_LENGTH = 64
"""Core recommends supporting at least 28 bytes; the digest math has no upper limit."""


class UserStore:
    """Looks users up for authentication and applies the ONVIF user management operations."""

    log = Logger()

    def __init__(self, config_users: Sequence[User], store: StateStore) -> None:
        self._store = store
        self._lock = store.change_lock()
        """One change at a time: each is checked against the state the previous one saved."""
        self._fixed: dict[str, User] = {user.username: user for user in config_users}
        self._shadowed: dict[str, User] = {}
        """Saved users the config file defines now (the config wins): saved again with every change, so they are
        back if the config drops its user of that name."""
        self._created: dict[str, User] = self._load()
        self._all: dict[str, User] = {}
        self._reindex()

    def _load(self) -> dict[str, User]:
        saved = self._store.load(STATE_NAME, {})
        entries = saved.get("users", []) if isinstance(saved, dict) else []
        created: dict[str, User] = {}
        for entry in entries if isinstance(entries, list) else []:
            try:
                user = User(str(entry["username"]), str(entry["password"]), str(entry["role"]))
            except (KeyError, TypeError):
                self.log.warn("ignoring a malformed saved ONVIF user entry")
                continue
            if user.role not in LEVELS or not user.username:
                self.log.warn("ignoring saved ONVIF user {username}: invalid level", username=user.username)
            elif user.username in self._fixed:
                self.log.warn(
                    "saved ONVIF user {username} is now defined in the config file; the config wins",
                    username=user.username,
                )
                self._shadowed[user.username] = user
            else:
                created[user.username] = user
        return created

    def _reindex(self) -> None:
        self._all = {**self._created, **self._fixed}

    def lookup(self, username: str) -> User | None:
        """The user called ``username`` (config or created), or None."""
        return self._all.get(username)

    def list(self) -> builtins.list[User]:
        """Every user: config users first, then created ones in creation order."""
        return [*self._fixed.values(), *self._created.values()]

    async def create(self, users: Sequence[User]) -> None:
        """CreateUsers: add all of ``users`` or, raising SoapFault, none of them."""
        async with self._lock:
            names: set[str] = set()
            for user in users:
                if user.username in self._all or user.username in names:
                    raise sender_fault(
                        "OperationProhibited", "UsernameClash", reason=f"user {user.username!r} already exists"
                    )
                names.add(user.username)
                _check_username(user.username)
                _check_level(user.role)
                if not user.password:
                    raise sender_fault("OperationProhibited", "Password", reason="the password is too weak (empty)")
                _check_password_length(user.password)
            if len(self._all) + len(users) > MAX_USERS:
                raise receiver_fault("Action", "TooManyUsers", reason=f"at most {MAX_USERS} users are supported")
            created = dict(self._created)
            created.update((user.username, user) for user in users)
            await self._commit(created)
            self.log.info("ONVIF users created: {usernames}", usernames=", ".join(u.username for u in users))

    async def delete(self, usernames: Sequence[str]) -> None:
        """DeleteUsers: remove all of ``usernames`` or, raising SoapFault, none of them."""
        async with self._lock:
            for username in usernames:
                if username in self._fixed:
                    raise sender_fault(
                        "InvalidArgVal", "FixedUser", reason=f"user {username!r} is defined in the config file"
                    )
                if username not in self._created:
                    raise sender_fault("InvalidArgVal", "UsernameMissing", reason=f"no user {username!r}")
            created = {name: user for name, user in self._created.items() if name not in usernames}
            await self._commit(created)
            self.log.info("ONVIF users deleted: {usernames}", usernames=", ".join(usernames))

    async def set(self, users: Sequence[User]) -> None:
        """SetUser: update password and level of all of ``users`` or, raising SoapFault, none.

        An empty password means "clear the password", which the relay cannot accept
        (``ter:PasswordTooWeak``, as Core specifies).
        """
        async with self._lock:
            for user in users:
                if user.username in self._fixed:
                    raise sender_fault(
                        "InvalidArgVal", "FixedUser", reason=f"user {user.username!r} is defined in the config file"
                    )
                if user.username not in self._created:
                    raise sender_fault("InvalidArgVal", "UsernameMissing", reason=f"no user {user.username!r}")
                _check_level(user.role)
                if not user.password:
                    raise sender_fault("OperationProhibited", "PasswordTooWeak", reason="the password cannot be empty")
                _check_password_length(user.password)
            created = dict(self._created)
            created.update((user.username, user) for user in users)
            await self._commit(created)
            self.log.info("ONVIF users changed: {usernames}", usernames=", ".join(u.username for u in users))

    async def _commit(self, created: dict[str, User]) -> None:
        document = {
            "users": [
                {"username": user.username, "password": user.password, "role": user.role}
                for user in [*created.values(), *self._shadowed.values()]
            ]
        }
        try:
            await self._store.commit(STATE_NAME, document, lambda: self._use(created))
        except StateError as exc:
            self.log.error("cannot save the ONVIF users: {error}", error=str(exc))
            raise receiver_fault("Action", reason="the users could not be saved on the relay") from exc

    def _use(self, created: dict[str, User]) -> None:
        self._created = created
        self._reindex()


def _check_username(username: str) -> None:
    if not username:
        raise sender_fault("OperationProhibited", "UsernameTooShort", reason="the username is empty")
    if len(username) > MAX_USERNAME_LENGTH:
        raise sender_fault(
            "OperationProhibited",
            "UsernameTooLong",
            reason=f"the username is longer than {MAX_USERNAME_LENGTH} characters",
        )


def _check_password_length(password: str) -> None:
    if len(password) > MAX_PASSWORD_LENGTH:
        raise sender_fault(
            "OperationProhibited",
            "PasswordTooLong",
            reason=f"the password is longer than {MAX_PASSWORD_LENGTH} characters",
        )


def _check_level(level: str) -> None:
    if level == "Anonymous":
        raise sender_fault("OperationProhibited", "AnonymousNotAllowed", reason="user level Anonymous is not allowed")
    if level not in LEVELS:
        # "Extended" needs user roles, which the relay does not implement.
        raise sender_fault("InvalidArgVal", "InvalidUserRole", reason=f"user level {level!r} is not supported")

