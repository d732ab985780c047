"""The PostgreSQL connection pool: peewee's, checking only the connections that sat unused for a while.

peewee's pool asks an idle connection `SELECT 1` before lending it, so that one the server closed (a restart, a
failover, an idle timeout) is replaced instead of failing the call. That is one round trip per store call, and a
Create click makes about 10 store calls: 10 round trips to a database on another machine. A connection given back
moments ago was working moments ago, so, as HikariCP does (its "alive bypass window", 500 ms), only a connection
unused for longer than `recheck_after_s` is asked. The cost: a connection the server closed within that window fails
one call, and is then thrown away when it is given back (its state is unknown).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from playhouse.pool import PooledPostgresqlDatabase

RECHECK_AFTER_S = 1.0


class RecheckingPool(PooledPostgresqlDatabase):
    """peewee's PostgreSQL pool, which asks a connection `SELECT 1` before lending it only when it was given back
    more than `recheck_after_s` ago (or never was)."""

    def __init__(
        self,
        *args: Any,
        recheck_after_s: float = RECHECK_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        self.recheck_after_s = recheck_after_s
        self.clock = clock
        self._given_back_at: dict[int, float] = {}  # by id(connection), for those waiting in the pool
        super().__init__(*args, **kwargs)

    def _is_closed(self, conn: Any) -> bool:  # called by peewee's _connect, under the pool's lock
        given_back_at = self._given_back_at.pop(id(conn), None)
        if conn.closed:
            return True
        if given_back_at is not None and self.clock() - given_back_at <= self.recheck_after_s:
            return False
        return bool(super()._is_closed(conn))  # the round trip

    def close_idle(self) -> None:
        with self._pool_lock:
            super().close_idle()
            self._given_back_at.clear()  # none of them waits in the pool any more

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        with self._pool_lock:  # reentrant: peewee's _close takes it too
            super()._close(conn, close_conn)
            if any(pooled is conn for _, _, pooled in self._connections):  # back in the pool, not thrown away
                self._given_back_at[id(conn)] = self.clock()
