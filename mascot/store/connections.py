"""Database connections lent for one store call at a time, from a bounded pool on PostgreSQL.

peewee gives each thread its own connection and keeps it until the thread closes it. The app's threads never do:
Gradio runs handlers on up to 40 threads and the worker saves on up to 8, so a busy app held one server connection
per thread it ever used (29 for 30 people at once, measured), and a server that allows fewer (a small managed plan,
several replicas) refused the rest. Such a connection was also never replaced: after the server restarted or dropped
it, every later call on that thread failed. So on PostgreSQL each public store call borrows a connection from a pool
of at most `max_connections`, waits for one when all are lent, and gives it back when it returns. Before lending a
connection that sat unused for over a second, the pool asks it `SELECT 1` and replaces it when the server has closed
it (mascot.store.pool).

SQLite keeps peewee's connection per thread: opening one costs its pragmas on every call, and there is no server to
run out of connections.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import peewee
from playhouse.pool import MaxConnectionsExceeded, PooledDatabase

from mascot.store.faults import BUSY, StoreUnavailable

log = logging.getLogger(__name__)

UNREACHABLE = "The server cannot reach its database right now. Nothing was changed; please try again in a few minutes."

StoreClass = TypeVar("StoreClass", bound=type)


@contextmanager
def lent_connection(database: peewee.Database) -> Iterator[None]:
    """A pooled connection for this thread while the block runs, given back after it; the connection this thread
    already holds, when an outer call lent it. Other databases use their own connection per thread."""
    if not isinstance(database, PooledDatabase) or not database.is_closed():
        yield
        return
    try:
        database.connect()
    except MaxConnectionsExceeded as error:
        raise StoreUnavailable(BUSY) from error
    except peewee.OperationalError as error:  # the server is down or refuses us: a sentence, as a failed write gets
        log.error("could not connect to the database: %s", error)
        raise StoreUnavailable(UNREACHABLE) from error
    connection = database.connection()
    try:
        yield
    except (peewee.OperationalError, peewee.InterfaceError, StoreUnavailable) as error:
        if not connection.closed:  # the database refused the query (a conflict, say), or the disk is full: as it is
            raise
        # The server closed the connection while it was unused (a restart, within the pool's recheck window) or
        # during the call: a sentence, not the driver's text with the server's address, and the pool throws it away.
        log.error("the database connection was lost: %s", error)
        raise StoreUnavailable(UNREACHABLE) from error
    finally:
        database.close()  # back to the pool, or thrown away there when the server closed it


def lends_connections(store_class: StoreClass) -> StoreClass:
    """Wrap each public method and property of `store_class` (whose instances have `.database`) in lent_connection;
    a generator method holds its connection until it is exhausted or closed. `close` is left as it is."""
    for name, member in list(vars(store_class).items()):
        if name.startswith("_") or name == "close":
            continue
        if isinstance(member, property) and member.fget is not None:
            setattr(store_class, name, property(_lending(member.fget), member.fset, member.fdel, member.__doc__))
        elif inspect.isfunction(member):
            setattr(store_class, name, _lending(member))
    return store_class


def _lending(method: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def lending_while_iterated(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            with lent_connection(self.database):
                yield from method(self, *args, **kwargs)

        return lending_while_iterated

    @functools.wraps(method)
    def lending(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lent_connection(self.database):
            return method(self, *args, **kwargs)

    return lending
