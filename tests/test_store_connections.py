"""On PostgreSQL each store call borrows a connection from a bounded pool (mascot.store.connections): threads that
are done hold none, a connection the server closed is replaced, and a call that finds none free says so."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from playhouse.pool import _PooledPostgresqlDatabase

from mascot.store.connections import BUSY, UNREACHABLE, lent_connection
from mascot.store.faults import StoreUnavailable
from mascot.store.migrations import _lock_for_migration
from mascot.store.pool import RecheckingPool
from mascot.store.schema import POSTGRES_LIMITS, open_database
from mascot.store.store import MascotStore
from tests.support.store import POSTGRES_URL, fresh_postgres_schema, owner, save

needs_postgres = pytest.mark.skipif(not POSTGRES_URL, reason="MASCOT_TEST_POSTGRES_URL is not set")
SILENT_PATIENCE_S = 60  # generous: the connect timeout is 10 s; only a call that waits for good takes this long


@pytest.fixture
def named_url() -> Iterator[tuple[str, str]]:
    """A fresh schema's URL whose connections carry a name of their own, so the server can count them; the name."""
    assert POSTGRES_URL
    name = f"mascot_pool_{uuid.uuid4().hex[:12]}"
    for url in fresh_postgres_schema(POSTGRES_URL):
        yield f"{url}&application_name={name}", name


def as_admin(sql: str, *parameters: object) -> list[tuple[Any, ...]]:
    """`sql`'s rows, run on a connection of its own (autocommit), outside every store's pool."""
    assert POSTGRES_URL
    admin = psycopg2.connect(POSTGRES_URL)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql, parameters)
            return list(cursor.fetchall())
    finally:
        admin.close()


def server_connections(name: str) -> list[int]:
    """The server's processes of the connections named `name`."""
    return [pid for (pid,) in as_admin("SELECT pid FROM pg_stat_activity WHERE application_name = %s", name)]


@needs_postgres
def test_threads_that_are_done_with_the_store_hold_no_connection(named_url: tuple[str, str], tmp_path: Path) -> None:
    """As Gradio's handler threads and the worker's savers do: many threads each save and list, then live on. The
    server sees at most the pool's connections (each thread kept its own before: 12 here)."""
    url, name = named_url
    store = MascotStore(url, tmp_path / "images", database_connections=3)
    threads = 12
    done_with_the_store, live_on = threading.Barrier(threads + 1), threading.Event()

    def use_the_store(index: int) -> int:
        who = owner(f"browser {index}")
        save(store, who, f"otter number {index}")
        listed = len(store.history(who))
        done_with_the_store.wait(timeout=60)
        live_on.wait(timeout=60)  # still alive: a connection of its own would still be open
        return listed

    try:
        with ThreadPoolExecutor(threads) as pool:
            listed = [pool.submit(use_the_store, index) for index in range(threads)]
            done_with_the_store.wait(timeout=60)
            open_while_alive = len(server_connections(name))
            live_on.set()
            assert [future.result() for future in listed] == [1] * threads
        assert 1 <= open_while_alive <= 3
        assert store.count_gallery() == threads
    finally:
        store.close()
    assert server_connections(name) == []  # close gives every pooled connection back to the server


def kill(pid: int) -> None:
    """End a connection from the server's side, as a restart, a failover or an idle timeout does."""
    assert as_admin("SELECT pg_terminate_backend(%s)", pid) == [(True,)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pinged(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each `SELECT 1` the pool asks before lending a connection (peewee's check), by the connection's id."""
    asked: list[int] = []
    peewee_check = _PooledPostgresqlDatabase._is_closed

    def counting(self: Any, conn: Any) -> bool:
        asked.append(id(conn))
        return bool(peewee_check(self, conn))

    monkeypatch.setattr(_PooledPostgresqlDatabase, "_is_closed", counting)
    return asked


@dataclass
class WatchedStore:
    """A store on PostgreSQL with a pool of 2 whose recheck window runs on `clock`, and its connections' name."""

    store: MascotStore
    clock: FakeClock
    name: str

    @property
    def pool(self) -> RecheckingPool:
        assert isinstance(self.store.database, RecheckingPool)
        return self.store.database

    def kill_its_connection(self) -> int:
        """End the store's one open connection from the server's side; its server process id."""
        [pid] = server_connections(self.name)
        kill(pid)
        return pid


@pytest.fixture
def watched(named_url: tuple[str, str], tmp_path: Path) -> Iterator[WatchedStore]:
    url, name = named_url
    store = MascotStore(url, tmp_path / "images", database_connections=2)
    assert isinstance(store.database, RecheckingPool)
    store.database.clock = clock = FakeClock()
    try:
        yield WatchedStore(store, clock, name)
    finally:
        store.close()


@needs_postgres
def test_a_connection_the_server_closed_while_it_was_unused_is_replaced(
    watched: WatchedStore, pinged: list[int]
) -> None:
    """After a server restart, a failover or an idle timeout, the next call works: the pool checks a connection that
    sat unused for a while before lending it. Each thread's own connection stayed broken before, and so did every call
    on that thread."""
    store = watched.store
    save(store, owner("before"), "an otter before the restart")
    pid = watched.kill_its_connection()
    watched.clock.now += watched.pool.recheck_after_s + 0.1
    pinged.clear()
    assert store.count_gallery() == 1
    assert len(pinged) == 1  # asked, found closed, replaced
    save(store, owner("after"), "an otter after the restart")
    assert store.count_gallery() == 2
    assert pid not in server_connections(watched.name)


@needs_postgres
def test_a_connection_given_back_moments_ago_is_lent_without_a_round_trip(
    watched: WatchedStore, pinged: list[int]
) -> None:
    """A Create click makes about 10 store calls in a row: only the first after a pause asks the server."""
    store, window = watched.store, watched.pool.recheck_after_s
    store.count_gallery()
    pinged.clear()
    for _ in range(5):
        store.count_gallery()
        watched.clock.now += window / 2  # each call soon after the one before
    assert pinged == []
    watched.clock.now += window + 0.1  # a pause
    store.count_gallery()
    assert len(pinged) == 1


@needs_postgres
def test_a_connection_the_server_closed_moments_after_its_last_use_fails_one_call_only(watched: WatchedStore) -> None:
    """The price of not asking within the window (the clock stands still here): one call fails, with a sentence, and
    its connection is thrown away when it is given back."""
    store = watched.store
    save(store, owner("before"), "an otter before the restart")
    watched.kill_its_connection()
    with pytest.raises(StoreUnavailable, match=UNREACHABLE):  # a sentence, not the driver's text
        store.count_gallery()
    assert store.count_gallery() == 1
    pid = watched.kill_its_connection()  # its replacement
    with pytest.raises(StoreUnavailable, match=UNREACHABLE):  # a write says the same, not "the disk is full"
        save(store, owner("during"), "an otter during the restart")
    save(store, owner("after"), "an otter after the restart")
    assert store.count_gallery() == 2
    assert pid not in server_connections(watched.name)


@needs_postgres
def test_a_call_that_finds_every_connection_lent_waits_then_says_the_database_is_busy(
    named_url: tuple[str, str],
) -> None:
    url, _ = named_url
    database = open_database(url, max_connections=1, pool_wait_s=0.2)
    taken, give_back = threading.Event(), threading.Event()

    def hold_the_only_connection() -> None:
        with lent_connection(database):
            database.execute_sql("SELECT 1")
            taken.set()
            give_back.wait(timeout=60)

    holder = threading.Thread(target=hold_the_only_connection)
    holder.start()
    try:
        assert taken.wait(timeout=60)
        with pytest.raises(StoreUnavailable, match=BUSY), lent_connection(database):
            pytest.fail("lent a connection the pool did not have")
    finally:
        give_back.set()
        holder.join(timeout=60)
    with lent_connection(database):  # given back: lent again
        assert database.execute_sql("SELECT 2").fetchone() == (2,)
    database.close_all()


@needs_postgres
def test_a_generator_method_holds_its_connection_until_it_is_exhausted(
    named_url: tuple[str, str], tmp_path: Path
) -> None:
    url, _ = named_url
    store = MascotStore(url, tmp_path / "images", database_connections=1)
    try:
        for index in range(3):
            save(store, owner(f"browser {index}"), f"otter {index}")
        ideas = store.stored_ideas(in_gallery=True, batch_size=1)  # one query a row: the connection is needed
        first = next(ideas)
        assert not store.database.is_closed()
        rest = list(ideas)
        assert store.database.is_closed()  # given back once exhausted
        assert len([first, *rest]) == 3
    finally:
        store.close()


def test_a_database_that_cannot_be_reached_is_refused_with_a_sentence() -> None:
    database = open_database("postgresql://mascot@127.0.0.1:1/mascots", max_connections=1)  # nothing listens there
    with pytest.raises(StoreUnavailable, match=UNREACHABLE), lent_connection(database):
        pytest.fail("lent a connection to nothing")


def test_a_database_that_takes_the_connection_but_never_answers_is_refused_with_a_sentence() -> None:
    """A server that accepts the connection and then says nothing (overloaded, or a proxy whose far side is gone)
    held a store call's thread for good (a review found it): libpq now gives up after the connect timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepted by the kernel, never answered
        port = silent.getsockname()[1]
        database = open_database(f"postgresql://mascot@127.0.0.1:{port}/mascots", max_connections=1)
        outcome: list[BaseException | None] = []

        def lend() -> None:
            try:
                with lent_connection(database):
                    outcome.append(None)
            except BaseException as error:  # what the thread met, for the test to look at
                outcome.append(error)

        calling = threading.Thread(target=lend, daemon=True)
        calling.start()
        calling.join(SILENT_PATIENCE_S)
    assert not calling.is_alive(), "still waiting for a server that never answers"
    assert isinstance(outcome[0], StoreUnavailable) and str(outcome[0]) == UNREACHABLE


def test_the_urls_own_connection_settings_win_over_the_stores_limits() -> None:
    limited = open_database("postgresql://mascot@127.0.0.1/mascots")
    assert limited.connect_params["connect_timeout"] == POSTGRES_LIMITS["connect_timeout"]
    # Nothing the server sees: PgBouncer and other poolers refuse startup options, and PGOPTIONS would be overridden.
    assert "options" not in limited.connect_params and "connection_factory" not in limited.connect_params
    own = open_database("postgresql://mascot@127.0.0.1/mascots?connect_timeout=3")
    assert own.connect_params["connect_timeout"] == 3


@needs_postgres
def test_a_migration_lifts_the_operators_statement_limit_for_its_own_transaction(
    named_url: tuple[str, str], tmp_path: Path
) -> None:
    """A migration may rewrite a large table, or wait for another replica's: a statement limit the operator set (here
    in the URL's options, beside the test schema's search_path) must not cut it off half-way."""
    url, _ = named_url
    assert "options=" in url
    store = MascotStore(url.replace("options=", "options=-cstatement_timeout%3D5s%20"), tmp_path / "images")
    try:
        with lent_connection(store.database):
            assert store.database.execute_sql("SHOW statement_timeout").fetchone() == ("5s",)
            with store.database.atomic():
                _lock_for_migration(store.database)
                assert store.database.execute_sql("SHOW statement_timeout").fetchone() == ("0",)
            assert store.database.execute_sql("SHOW statement_timeout").fetchone() == ("5s",)
    finally:
        store.close()


def test_a_pool_needs_a_connection_and_a_wait() -> None:
    with pytest.raises(ValueError, match="A pool needs"):
        open_database("postgresql://mascot@127.0.0.1/mascots", max_connections=0)
    with pytest.raises(ValueError, match="A pool needs"):
        open_database("postgresql://mascot@127.0.0.1/mascots", max_connections=1, pool_wait_s=0)


def test_sqlite_keeps_a_connection_per_thread(tmp_path: Path) -> None:
    """No pool there: a call leaves its thread's connection open for the next, as peewee does."""
    store = MascotStore(f"sqlite:///{tmp_path / 'mascots.db'}", tmp_path / "images")
    try:
        assert store.count_gallery() == 0
        assert not store.database.is_closed()
    finally:
        store.close()


@needs_postgres
@pytest.mark.parametrize("action", ["like", "report"])
def test_a_like_or_report_that_waited_for_a_delete_finds_the_mascot_gone(
    named_url: tuple[str, str], tmp_path: Path, action: str
) -> None:
    """Its transaction saw the mascot before the owner's delete committed, then waited for the row's lock: it must
    find it gone, not insert a like or report of a deleted row (a foreign-key error, shown as a bare "Error"; a review
    of the store found it)."""
    url, name = named_url
    store = MascotStore(url, tmp_path / "images")
    deleting = psycopg2.connect(url)  # the owner's delete, held open until the like waits for its lock
    try:
        public_id = save(store, owner("alice"), "an otter").public_ids[0]
        with deleting.cursor() as cursor:
            cursor.execute("SELECT id FROM mascot_image WHERE public_id = %s", (public_id,))
            (image_id,) = cursor.fetchone()
            cursor.execute("DELETE FROM mascot_like WHERE image_id = %s", (image_id,))
            cursor.execute("DELETE FROM mascot_image WHERE id = %s", (image_id,))
        answers: list[object] = []

        def act() -> None:
            if action == "like":
                answers.append(store.toggle_like(owner("bob"), public_id))
            else:
                answers.append(store.report_mascot(owner("bob"), public_id).outcome)

        acting = threading.Thread(target=act, daemon=True)
        acting.start()
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'"
        for _ in range(600):  # until the like waits for the delete's lock (30 s at most)
            if as_admin(waiting, name)[0][0]:
                break
            acting.join(0.05)
        else:
            pytest.fail("the like or report never waited for the delete's lock: the race was not tested")
        deleting.commit()
        acting.join(SILENT_PATIENCE_S)
    finally:
        deleting.close()
        store.close()
    assert answers == [None if action == "like" else "not_found"]
