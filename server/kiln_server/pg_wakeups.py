"""Wake-ups across API replicas on PostgreSQL: LISTEN/NOTIFY.

A replica's commit rings the bells of its own process at once (wakeups.py); the other
replicas hear of it through PostgreSQL. Before a transaction that touched jobs commits,
:meth:`Carrier.publish` sends ``pg_notify`` with the bell keys it touched; PostgreSQL
delivers a notification only once, and only if, its transaction commits, so a waiter
woken by it reads the new rows. Each replica keeps one connection ``LISTEN``-ing on
:data:`CHANNEL`, in a thread, and rings the keys it hears on its event loop.

A payload starts with its sender's id: a replica ignores its own notifications (its
bells rang at the commit already; ringing twice would make every waiter read twice).
While the listening connection is down, notifications are lost: each (re)connection
rings every bell, so that every waiter reads again, and nothing is missed.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator

import psycopg
from sqlalchemy import URL, String, bindparam, func, select
from sqlalchemy.orm import Session

__all__ = ["CHANNEL", "Carrier"]

log = logging.getLogger("kiln_server")

#: The PostgreSQL channel the replicas' wake-ups travel on.
CHANNEL = "kiln_wakeups"
#: A notification's payload must stay under 8,000 bytes; keys beyond go in another.
PAYLOAD_MAX = 7_000
#: How long the listener waits for a notification before it looks whether it must stop.
_LISTEN_TICK_S = 0.5
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.5, 10.0
#: The notification, built once (building a statement costs more than sending it).
_NOTIFY = select(func.pg_notify(CHANNEL, bindparam("payload", type_=String)))


def _payloads(sender: str, keys: Iterable[str]) -> Iterator[str]:
    """``sender key key …`` strings, each under PAYLOAD_MAX."""
    payload = sender
    for key in sorted(keys):
        if len(payload) + 1 + len(key) > PAYLOAD_MAX:
            yield payload
            payload = sender
        payload += " " + key
    if payload != sender:
        yield payload


class Carrier:
    """One replica's side of LISTEN/NOTIFY: :meth:`publish` (a ``before_commit`` hook)
    sends the keys a transaction touched; a listener thread hands the other replicas'
    keys to ``ring``, and calls ``ring_all`` at each (re)connection."""

    def __init__(self, url: URL, ring: Callable[[list[str]], None],
                 ring_all: Callable[[], None]) -> None:
        self.id = secrets.token_hex(8)
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._ring, self._ring_all = ring, ring_all
        self._stopping = threading.Event()
        self.listening = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="kiln-listener", daemon=True)

    def publish(self, session: Session, keys: Iterable[str]) -> None:
        for payload in _payloads(self.id, keys):
            session.execute(_NOTIFY, {"payload": payload})

    def start(self, timeout: float = 10.0) -> None:
        """Start listening; wait (up to ``timeout``) until the first LISTEN is in place."""
        self._thread.start()
        if not self.listening.wait(timeout):
            log.warning("wake-ups: not yet listening on PostgreSQL after %.0f s; "
                        "still trying", timeout)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _listen(self) -> None:
        delay = RECONNECT_FIRST_S
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    self._ring_all()  # whatever committed while nobody listened
                    delay = RECONNECT_FIRST_S
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=_LISTEN_TICK_S):
                            sender, _, keys = note.payload.partition(" ")
                            if sender != self.id:
                                self._ring(keys.split())
            except psycopg.Error as e:
                self.listening.clear()
                log.warning("wake-ups: lost the PostgreSQL listener (%s); again in %.1f s",
                            e, delay)
                self._ring_all()
                self._stopping.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
