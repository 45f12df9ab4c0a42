"""jobs.updated_at is stamped at commit, in commit order, on SQLite and PostgreSQL: a user's
jobs stream moves its cursor past what it has seen, so a change that committed later
must never carry an earlier stamp, nor the same one as another transaction's."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from kiln_server import migrate
from kiln_server.db import make_engine, make_sessionmaker, session_scope
from kiln_server.models import Job, User
from kiln_server.services import jobs, stamps
from kiln_server.wakeups import owner_news, tell
from sqlalchemy import event, select

from .conftest import pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'kiln.db'}"
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield make_sessionmaker(engine)
    else:
        with pg_database() as url:
            engine = make_engine(url)
            migrate.upgrade(engine)
            yield make_sessionmaker(engine)
    engine.dispose()


def _jobs(sessions, n: int) -> list[str]:
    with session_scope(sessions) as s:
        user = User(name=f"u{time.monotonic_ns()}")
        s.add(user)
        s.flush()
        made = [Job(owner_id=user.id, spec={"epochs": 1}, parameters=0, paths=[])
                for _ in range(n)]
        s.add_all(made)
        s.flush()
        return [j.id for j in made]


def _stamps(sessions) -> dict[str, datetime]:
    with session_scope(sessions) as s:
        return {job_id: at for job_id, at in s.execute(select(Job.id, Job.updated_at))}


def _change(session, job_id: str) -> None:
    session.get(Job, job_id).epoch += 1
    tell(session, job_id)


def test_a_change_that_commits_later_has_the_later_stamp(sessions):
    """The first transaction writes first and commits last (on PostgreSQL the second
    commits meanwhile; on SQLite it waits for the first's lock)."""
    first_job, second_job = _jobs(sessions, 2)
    commits: list[str] = []
    first = sessions()
    first.begin()
    _change(first, first_job)
    first.flush()  # written now, long before its commit

    def second() -> None:
        with session_scope(sessions) as s:
            _change(s, second_job)
        commits.append(second_job)

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(2.0)  # PostgreSQL: done; SQLite: waiting for the first's write lock
    first.commit()
    commits.append(first_job)
    first.close()
    thread.join(30)
    at = _stamps(sessions)
    assert sorted(commits, key=lambda j: at[j]) == sorted(commits, key=commits.index)
    if sessions.kw["bind"].dialect.name == "postgresql":
        assert commits == [second_job, first_job]  # so the test did test the race


def test_two_commits_in_the_same_instant_get_two_stamps_in_their_order(sessions,
                                                                         monkeypatch):
    a, b, c = _jobs(sessions, 3)
    instant = datetime.now(UTC) + timedelta(days=1)  # past every stamp so far
    monkeypatch.setattr(stamps, "utcnow", lambda: instant)
    with session_scope(sessions) as s:
        _change(s, b)
        _change(s, c)
    with session_scope(sessions) as s:
        _change(s, a)
    at = _stamps(sessions)
    assert at[b] == at[c] == instant  # one transaction, one stamp
    assert at[a] == instant + timedelta(microseconds=1)


def test_a_commit_stamps_only_what_it_told_and_marks_the_owners_bell(sessions):
    told, untold = _jobs(sessions, 2)
    before = _stamps(sessions)
    keys: list[set[str]] = []
    event.listen(sessions, "after_commit",
                 lambda s: keys.append(set(s.info.get("kiln_touched_jobs", ()))))
    with session_scope(sessions) as s:
        _change(s, told)
        s.get(Job, untold).state = {"changed": True}  # not something a stream reports
        owner = s.get(Job, told).owner_id
    assert owner_news(owner) in keys[0]  # the change's commit rings the owner's bell
    after = _stamps(sessions)
    assert after[told] > before[told] and after[untold] == before[untold]


def test_the_jobs_cursor_pages_through_jobs_stamped_in_the_same_instant(sessions):
    """Five jobs changed in one transaction share its stamp; read two at a time, each
    comes once, in the order of their ids, and a resumed cursor goes on after the last."""
    ids = _jobs(sessions, 5)
    with session_scope(sessions) as s:
        owner = s.get(User, s.get(Job, ids[0]).owner_id)
        cursor = jobs.jobs_now(s, owner)
    with session_scope(sessions) as s:
        for job_id in ids:
            _change(s, job_id)
    seen: list[str] = []
    with session_scope(sessions) as s:
        while True:
            events, cursor = jobs.changed_jobs(s, owner, jobs.JobsCursor.decode(
                cursor.encode()), 2)
            if not events:
                break
            seen += [data["id"] for _, data, _ in events]
    assert seen == sorted(ids)
    with session_scope(sessions) as s:
        _change(s, ids[2])
    with session_scope(sessions) as s:
        events, _ = jobs.changed_jobs(s, owner, cursor, 2)
    assert [(data["id"], data["epoch"]) for _, data, _ in events] == [(ids[2], 2)]


@pytest.fixture
def pg_sessions():
    with pg_database() as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield make_sessionmaker(engine)
        engine.dispose()


def test_another_users_change_does_not_wait_for_a_stampers_lock(pg_sessions):
    """On PostgreSQL the stamp lock is one per owner: while a transaction holds its
    owner's (stamped, not yet committed), another user's change commits at once. (SQLite
    has one write lock for every writer, by design: db.py.)"""
    sessions = pg_sessions
    (mine,), (theirs,) = _jobs(sessions, 1), _jobs(sessions, 1)
    holder = sessions()
    holder.begin()
    _change(holder, mine)
    stamps.stamp_changed_jobs(holder)  # the owner's lock is held until the commit
    done = threading.Event()

    def other() -> None:
        with session_scope(sessions) as s:
            _change(s, theirs)
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    committed_alongside = done.wait(10)
    holder.commit()
    holder.close()
    thread.join(30)
    assert committed_alongside
