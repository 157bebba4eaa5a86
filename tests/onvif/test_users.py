"""UserStore: config users are fixed, created users persist, every change is all-or-nothing."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from atomrelay.auth.users import MAX_PASSWORD_LENGTH, MAX_USERNAME_LENGTH, MAX_USERS, UserStore
from atomrelay.config import User
from atomrelay.state import StateStore
from atomrelay.xml.soap import SoapFault
from tests.helpers import settled

ADMIN = User("admin", "secret", "Administrator")


def make_store(tmp_path: Path, *config_users: User) -> UserStore:
    return UserStore(config_users or (ADMIN,), StateStore(tmp_path))


def fault_of(call: object) -> SoapFault:
    assert callable(call)
    with pytest.raises(SoapFault) as info:
        settled(call())
    return info.value


def test_lookup_finds_config_users(tmp_path: Path) -> None:
    """A config user is found by name with its password and role; unknown names are None."""
    users = make_store(tmp_path)
    assert users.lookup("admin") == ADMIN
    assert users.lookup("nobody") is None


def test_created_users_survive_a_restart(tmp_path: Path) -> None:
    """Users created over ONVIF are saved in state_dir and found by a new UserStore."""
    settled(make_store(tmp_path).create([User("viewer", "pw1", "User"), User("op", "pw2", "Operator")]))
    again = make_store(tmp_path)
    assert again.lookup("viewer") == User("viewer", "pw1", "User")
    assert [u.username for u in again.list()] == ["admin", "viewer", "op"]
    assert settled(again.delete(["viewer"])) is None


def test_state_file_is_private_and_holds_only_created_users(tmp_path: Path) -> None:
    """users.json is mode 0600 and never contains the config users (their password lives in the config)."""
    settled(make_store(tmp_path).create([User("viewer", "pw1", "User")]))
    path = tmp_path / "users.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved == {"users": [{"username": "viewer", "password": "pw1", "role": "User"}]}


def test_config_users_cannot_be_deleted_or_changed(tmp_path: Path) -> None:
    """DeleteUsers and SetUser on a config user fail with ter:FixedUser."""
    users = make_store(tmp_path)
    assert fault_of(lambda: users.delete(["admin"])).subcodes == ("InvalidArgVal", "FixedUser")
    assert fault_of(lambda: users.set([User("admin", "new", "User")])).subcodes == ("InvalidArgVal", "FixedUser")
    assert users.lookup("admin") == ADMIN


def test_config_wins_over_a_saved_user_of_the_same_name(tmp_path: Path) -> None:
    """A saved user later defined in the config is the config user (fixed, config password)."""
    settled(make_store(tmp_path).create([User("ops", "old", "User")]))
    users = make_store(tmp_path, ADMIN, User("ops", "fromconfig", "Operator"))
    assert users.lookup("ops") == User("ops", "fromconfig", "Operator")
    assert fault_of(lambda: users.delete(["ops"])).subcodes == ("InvalidArgVal", "FixedUser")
    assert [u.username for u in users.list()] == ["admin", "ops"]


def test_a_saved_user_the_config_shadows_for_a_while_comes_back(tmp_path: Path) -> None:
    """Changes made while the config defines a saved user's name keep the saved user on the disk: once the config
    no longer defines it, the saved user (its own password and level) is back."""
    settled(make_store(tmp_path).create([User("ops", "old", "User")]))
    shadowing = make_store(tmp_path, ADMIN, User("ops", "fromconfig", "Operator"))
    settled(shadowing.create([User("viewer", "pw1", "User")]))
    again = make_store(tmp_path)
    assert again.lookup("ops") == User("ops", "old", "User")
    assert [u.username for u in again.list()] == ["admin", "viewer", "ops"]


@pytest.mark.parametrize(
    ("user", "subcodes"),
    [
        (User("admin", "pw", "User"), ("OperationProhibited", "UsernameClash")),
        (User("", "pw", "User"), ("OperationProhibited", "UsernameTooShort")),
        (User("x" * (MAX_USERNAME_LENGTH + 1), "pw", "User"), ("OperationProhibited", "UsernameTooLong")),
        (User("new", "", "User"), ("OperationProhibited", "Password")),
        (User("new", "p" * (MAX_PASSWORD_LENGTH + 1), "User"), ("OperationProhibited", "PasswordTooLong")),
        (User("new", "pw", "Anonymous"), ("OperationProhibited", "AnonymousNotAllowed")),
        (User("new", "pw", "Extended"), ("InvalidArgVal", "InvalidUserRole")),
    ],
)
def test_create_faults_are_the_ones_core_lists(tmp_path: Path, user: User, subcodes: tuple[str, ...]) -> None:
    """CreateUsers answers each invalid user with the Sender subcode Core specifies for it."""
    fault = fault_of(lambda: make_store(tmp_path).create([user]))
    assert (fault.code, fault.subcodes) == ("Sender", subcodes)


def test_create_is_all_or_nothing(tmp_path: Path) -> None:
    """A bad user in a CreateUsers batch (here a duplicate inside the batch) creates none of them."""
    users = make_store(tmp_path)
    fault = fault_of(lambda: users.create([User("a", "pw", "User"), User("b", "pw", "User"), User("a", "x", "User")]))
    assert fault.subcodes == ("OperationProhibited", "UsernameClash")
    assert users.lookup("a") is None and users.lookup("b") is None
    assert not (tmp_path / "users.json").exists()


def test_too_many_users_is_a_receiver_fault(tmp_path: Path) -> None:
    """Going over MAX_USERS is env:Receiver ter:Action ter:TooManyUsers and adds nobody."""
    users = make_store(tmp_path)
    batch = [User(f"u{i}", "pw", "User") for i in range(MAX_USERS)]
    fault = fault_of(lambda: users.create(batch))
    assert (fault.code, fault.subcodes) == ("Receiver", ("Action", "TooManyUsers"))
    assert len(users.list()) == 1


def test_delete_removes_created_users_and_persists(tmp_path: Path) -> None:
    """DeleteUsers removes the user now and after a restart."""
    users = make_store(tmp_path)
    settled(users.create([User("viewer", "pw", "User")]))
    settled(users.delete(["viewer"]))
    assert users.lookup("viewer") is None
    assert make_store(tmp_path).lookup("viewer") is None


def test_delete_of_an_unknown_user_deletes_nothing(tmp_path: Path) -> None:
    """DeleteUsers with one unknown name fails with ter:UsernameMissing and keeps the others."""
    users = make_store(tmp_path)
    settled(users.create([User("viewer", "pw", "User")]))
    assert fault_of(lambda: users.delete(["viewer", "ghost"])).subcodes == ("InvalidArgVal", "UsernameMissing")
    assert users.lookup("viewer") is not None


def test_set_user_changes_password_and_level(tmp_path: Path) -> None:
    """SetUser replaces password and level of a created user, persistently."""
    users = make_store(tmp_path)
    settled(users.create([User("viewer", "pw", "User")]))
    settled(users.set([User("viewer", "better", "Operator")]))
    assert make_store(tmp_path).lookup("viewer") == User("viewer", "better", "Operator")


@pytest.mark.parametrize(
    ("user", "subcodes"),
    [
        (User("ghost", "pw", "User"), ("InvalidArgVal", "UsernameMissing")),
        (User("viewer", "", "User"), ("OperationProhibited", "PasswordTooWeak")),
        (User("viewer", "p" * (MAX_PASSWORD_LENGTH + 1), "User"), ("OperationProhibited", "PasswordTooLong")),
        (User("viewer", "pw", "Anonymous"), ("OperationProhibited", "AnonymousNotAllowed")),
    ],
)
def test_set_user_faults_are_the_ones_core_lists(tmp_path: Path, user: User, subcodes: tuple[str, ...]) -> None:
    """SetUser answers each invalid change with the subcode Core specifies and changes nothing."""
    users = make_store(tmp_path)
    settled(users.create([User("viewer", "pw", "User")]))
    assert fault_of(lambda: users.set([user])).subcodes == subcodes
    assert users.lookup("viewer") == User("viewer", "pw", "User")


def test_unwritable_state_is_a_receiver_fault_and_changes_nothing(tmp_path: Path) -> None:
    """When users.json cannot be written, CreateUsers fails with ter:Action and the user does not exist."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    users = UserStore((ADMIN,), StateStore(blocker))
    fault = fault_of(lambda: users.create([User("viewer", "pw", "User")]))
    assert (fault.code, fault.subcodes) == ("Receiver", ("Action",))
    assert users.lookup("viewer") is None


def test_malformed_saved_entries_are_skipped(tmp_path: Path) -> None:
    """A hand-edited users.json with bad entries still loads the good ones."""
    (tmp_path / "users.json").write_text(
        json.dumps({"users": [{"username": "ok", "password": "pw", "role": "User"}, {"username": "x"},
                              {"username": "bad", "password": "pw", "role": "Anonymous"}]})
    )
    users = make_store(tmp_path)
    assert [u.username for u in users.list()] == ["admin", "ok"]
