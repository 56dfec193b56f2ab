"""Roles come from an authenticated identity (the --auth user, or the start-up admin token), never from a typed
name; admin and export calls are checked per request; nothing a browser sends selects code to run; errors shown
to a browser carry no server values. Service-level, with fake workers (no model)."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.access import Access, Caller
from app.errors import AccessDenied, UserError, public_text
from app.service import FeedbackService
from app.settings import AppSettings, is_loopback
from app.ui.errors import error_text
from app.worker import ErrorLog
from tests.app.fakes import FakeTrainer, add_fake_samples, fake_service

TOKEN = "a-fixed-admin-token-for-tests-0123"


@pytest.fixture
def make_fake(prompt_file: Path, tmp_path: Path, app_db_url: str | None) -> Iterator[Callable[..., FeedbackService]]:
    built: list[FeedbackService] = []

    def make(**overrides: Any) -> FeedbackService:
        settings = AppSettings(
            model="unused", dataset=str(prompt_file), data_dir=tmp_path / "data", db=app_db_url, batch_size=2
        )
        service = fake_service(settings, **overrides)
        built.append(service)
        return service

    yield make
    for service in built:
        service.stop()


def admin_actions(service: FeedbackService, caller: Caller) -> list[Callable[[], object]]:
    return [
        lambda: service.set_paused(caller, True),
        lambda: service.set_reward_source(caller, "vader"),
        lambda: service.save_checkpoint(caller),
        lambda: service.export(caller, "jsonl"),
    ]


def test_typing_the_name_admin_gives_no_admin_rights(make_fake: Callable[..., FeedbackService]) -> None:
    service = make_fake(admin_token=TOKEN)
    typed_admin = service.login("admin")
    assert not typed_admin.is_admin
    for caller in (Caller(), Caller(admin_token="wrong-token"), Caller(username="admin")):
        for action in admin_actions(service, caller):
            with pytest.raises(AccessDenied):
                action()
    # nothing changed
    assert not service.trainer.paused.is_set()
    assert service.rewards.requested is None and service.rewards.current().spec == "human"
    trainer = service.trainer
    assert isinstance(trainer, FakeTrainer) and trainer.checkpoints == 0
    assert not service.settings.export_dir.exists() or not any(service.settings.export_dir.iterdir())


def test_the_start_up_token_makes_its_holder_admin(make_fake: Callable[..., FeedbackService]) -> None:
    service = make_fake(admin_token=TOKEN)
    caller = Caller(admin_token=TOKEN)
    assert service.login("carol", caller).is_admin
    service.set_paused(caller, True)
    assert service.trainer.paused.is_set()
    assert service.save_checkpoint(caller) == "v1", "the checkpoint's name, never its server path"
    exported = Path(service.export(caller, "jsonl"))
    assert exported.is_file() and exported.parent == service.settings.export_dir.resolve()


def test_a_random_token_is_made_when_none_is_configured() -> None:
    a, b = Access((), ("admin",)), Access((), ("admin",))
    assert a.admin_token and b.admin_token and a.admin_token != b.admin_token and len(a.admin_token) >= 24
    assert a.is_admin(Caller(admin_token=a.admin_token)) and not a.is_admin(Caller(admin_token=b.admin_token))
    assert "token" not in repr(Caller(admin_token=a.admin_token)).replace("admin_token", "")
    assert a.admin_token not in repr(Caller(admin_token=a.admin_token))


def test_with_auth_admins_are_authenticated_users_and_the_token_means_nothing() -> None:
    access = Access(("alice", "bob"), ("alice",), admin_token=TOKEN)
    assert access.admin_token is None and access.admin_link("http://127.0.0.1:7860") is None
    assert access.is_admin(Caller(username="alice"))
    assert not access.is_admin(Caller(username="bob"))
    assert not access.is_admin(Caller(username=None, admin_token=TOKEN))
    with pytest.raises(AccessDenied):
        access.require_user(Caller(), "alice")  # not logged in
    with pytest.raises(AccessDenied):
        access.require_user(Caller(username="mallory"), "alice")  # someone else's tab (forged session hash)
    access.require_user(Caller(username="alice"), "alice")


def test_a_tab_signed_in_as_someone_else_is_refused(make_fake: Callable[..., FeedbackService]) -> None:
    service = make_fake(auth=(("alice", "pw"), ("mallory", "pw2")), admins=("alice",))
    alice = service.login("alice", Caller(username="alice"))
    assert alice.is_admin
    with pytest.raises(AccessDenied):
        service.login("alice", Caller(username="mallory"))  # a typed name cannot override the login
    with pytest.raises(AccessDenied):
        service.signed_in(Caller(username="mallory"), alice)
    assert service.signed_in(Caller(username="alice"), alice) == alice


def test_the_browser_cannot_name_a_reward_source_that_runs_code(make_fake: Callable[..., FeedbackService]) -> None:
    service = make_fake(admin_token=TOKEN)
    admin = Caller(admin_token=TOKEN)
    sys.modules.pop("this", None)
    for spec in ("this:s", "os:system", "os:environ", "/etc", "length:5"):
        with pytest.raises(UserError) as refused:
            service.set_reward_source(admin, spec)
        assert "environ" not in str(refused.value) or spec == "os:environ"
    assert "this" not in sys.modules, "a refused spec imported nothing"
    assert service.rewards.requested is None
    service.set_reward_source(admin, "vader")  # one of the configured choices
    assert service.rewards.requested == "vader"
    assert service.reward_choices() == ("human", "vader", "length:40")


def test_errors_shown_to_a_browser_carry_no_server_values(tmp_path: Path) -> None:
    secret_path = str(tmp_path / "checkpoints" / "v7")
    disk_full = OSError(errno.ENOSPC, "No space left on device", secret_path)
    assert public_text(disk_full) == "OSError: No space left on device"
    assert public_text(RuntimeError("CUDA out of memory at 0x7f00 in /srv/x")) == "RuntimeError: out of memory"
    assert public_text(KeyError("postgresql://user:password@db/x")) == "KeyError"
    assert public_text(UserError("please enter a name")) == "please enter a name"
    log = ErrorLog()
    shown = str(log.record("trainer", disk_full))
    assert secret_path not in shown and "No space left on device" in shown
    text = error_text(ValueError(f"cannot open {secret_path}"))
    assert secret_path not in text and "ref" in text
    assert error_text(AccessDenied("this needs an admin")) == "Refused: this needs an admin"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        *[("127.0.0.1", True), ("127.5.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True)],
        *[("0.0.0.0", False), ("::", False), ("192.168.1.2", False), ("example.org", False), ("", False)],
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_two_tabs_of_one_rater_never_overwrite_a_rating_and_undo_never_steals(
    make_fake: Callable[..., FeedbackService],
) -> None:
    service = make_fake()
    add_fake_samples(service, 3)
    alice, bob = service.login("alice"), service.login("bob")
    tab1 = service.next_for(alice.id).assignment
    tab2 = service.next_for(alice.id).assignment  # a second tab: the same leased sample
    assert tab1 is not None and tab2 is not None and tab1.sample_id == tab2.sample_id
    service.rate(alice.id, tab1.sample_id, 1.0)
    again = service.rate(alice.id, tab2.sample_id, -1.0)  # the stale second tab
    assert again.notice is not None and "already" in again.notice
    assert [(r.rater, r.score) for r in service.recent_ratings(5)] == [("alice", 1.0)], "not overwritten"
    assert service.rate(alice.id, tab1.sample_id, 1.0).notice == "Rating saved", "a double click is harmless"

    undone = service.undo(alice.id)
    assert undone.assignment is not None and undone.assignment.sample_id == tab1.sample_id
    bobs = service.next_for(bob.id).assignment
    assert bobs is not None and bobs.sample_id != tab1.sample_id, "the undone sample is alice's again"
    service.rate(alice.id, tab1.sample_id, 0.5)
    service.undo(alice.id)
    # while alice re-thinks, her lease holds: bob is never offered the same sample
    assert service.next_for(bob.id).assignment != service.next_for(alice.id).assignment


def test_an_admin_can_give_failed_batches_another_chance(make_fake: Callable[..., FeedbackService]) -> None:
    from storage.batches import claim_next_batch, fail_batch, get_batch

    service = make_fake(admin_token=TOKEN)
    add_fake_samples(service, 2)
    alice = service.login("alice")
    for _ in range(2):
        shown = service.next_for(alice.id).assignment
        assert shown is not None
        service.rate(alice.id, shown.sample_id, 0.5)
    with service.db.session_factory.begin() as s:
        batch = claim_next_batch(s, 2, "trainer")
        assert batch is not None
        fail_batch(s, batch, "ValueError: a data error", retry=False)
    with pytest.raises(AccessDenied):
        service.requeue_failed(Caller(admin_token="nope"))
    with service.db.read_session_factory.begin() as s:
        assert get_batch(s, batch.batch_id).status == "failed"
    assert service.requeue_failed(Caller(admin_token=TOKEN)) == 1
    with service.db.read_session_factory.begin() as s:
        assert get_batch(s, batch.batch_id).status == "pending"
    assert service.requeue_failed(Caller(admin_token=TOKEN)) == 0
