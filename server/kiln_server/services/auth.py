"""Users and bearer tokens. Tokens are random; only their sha256 is stored, and of a
generated token its first few characters, to tell it apart in a list."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Literal

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from ..errors import ConflictError, NotFoundError
from ..models import Token, User

__all__ = ["ADMIN", "TokenCache", "authenticate", "create_token", "find_token", "hash_token",
           "list_tokens", "revoke_token", "seed_admin", "token_kind"]

#: The first user's name.
ADMIN = "admin"

TOKEN_PREFIX = "kiln_"
#: How much of a generated token is kept in clear (``kiln_`` and 6 of its 43 random
#: characters: 220 bits stay secret). A token given from outside (KILN_ADMIN_TOKEN) keeps
#: none: nothing is known of its strength.
SHOWN_CHARS = len(TOKEN_PREFIX) + 6


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user(session: Session, name: str, *, admin: bool = False) -> User:
    """The user ``name`` (created if new), made an admin if ``admin``."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, is_admin=admin)
        session.add(user)
        session.flush()
    elif admin:
        user.is_admin = True
    return user


def _admin_tokens() -> Select[tuple[str]]:
    """The ids of the tokens that reach the admin's routes."""
    return (select(Token.id).join(User, Token.user_id == User.id)
            .where(User.is_admin, Token.worker.is_(False)))


def create_token(session: Session, user: str, *, worker: bool = False, admin: bool = False
                 ) -> tuple[Token, str]:
    """A new token for ``user`` (created if new; made an admin if ``admin``): its record,
    and the plain token, shown only now."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = Token(user_id=_user(session, user, admin=admin).id, sha256=hash_token(token),
                   worker=worker, prefix=token[:SHOWN_CHARS])
    session.add(record)
    session.flush()
    return record, token


def token_kind(token: Token, user: User) -> Literal["user", "worker", "admin"]:
    """What a token reaches: the worker API, the user API, or that and the admin's routes."""
    return "worker" if token.worker else "admin" if user.is_admin else "user"


def list_tokens(session: Session) -> list[tuple[Token, User]]:
    """Every token with its user, oldest first."""
    return [(t, u) for t, u in session.execute(
        select(Token, User).join(User, Token.user_id == User.id)
        .order_by(Token.created_at, Token.id))]


def find_token(session: Session, ref: str) -> Token | None:
    """A token by its id, or by the token itself."""
    return session.get(Token, ref) or session.scalar(
        select(Token).where(Token.sha256 == hash_token(ref)))


def revoke_token(session: Session, token_id: str) -> Token:
    """Delete a token: from now on it is refused (401), and the workers that registered
    with it are forgotten. NotFoundError if there is none; ConflictError for the last
    admin token (an admin's would then be out of reach but for the command line)."""
    found = session.execute(select(Token, User).join(User, Token.user_id == User.id)
                            .where(Token.id == token_id)).first()
    if found is None:
        raise NotFoundError(f"no token {token_id!r}")
    token, user = found
    if token_kind(token, user) == "admin" and session.scalar(
            _admin_tokens().where(Token.id != token.id).limit(1)) is None:
        raise ConflictError(f"token {token.id} is the last admin token; create another "
                            f"first (kiln-server token create --user NAME --admin)")
    session.delete(token)
    session.flush()
    return token


def seed_admin(session: Session, token: str | None) -> str | None:
    """Make sure the admin exists with a token: ``token`` if given (KILN_ADMIN_TOKEN),
    else a new one when no admin has a token (the first time). Returns a newly generated
    token (to print once)."""
    admin = _user(session, ADMIN, admin=True)
    if token is not None:
        if session.scalar(select(Token).where(Token.sha256 == hash_token(token))) is None:
            session.add(Token(user_id=admin.id, sha256=hash_token(token)))
        return None
    if session.scalar(_admin_tokens().limit(1)) is not None:
        return None
    return create_token(session, ADMIN)[1]


def authenticate(session: Session, token: str) -> tuple[User, Token] | None:
    """The user and token record a bearer token belongs to, or None."""
    row = session.execute(select(User, Token).join(Token, Token.user_id == User.id)
                          .where(Token.sha256 == hash_token(token))).first()
    return None if row is None else (row[0], row[1])


class TokenCache:
    """What bearer tokens were found to be, kept ``ttl_s`` seconds: a worker's claim or
    heartbeat need not look its token up (a query and a commit) every time. Only tokens
    found are kept: a token created a moment ago on another replica works at once. The
    records kept are detached from any session, and only read. At most ``size`` are
    kept; when full, it starts afresh."""

    def __init__(self, ttl_s: float, size: int = 10_000) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._found: dict[str, tuple[float, User, Token]] = {}

    def cached(self, token: str) -> tuple[User, Token] | None:
        """What ``token`` was found to be, if that is fresh; else None."""
        kept = self._found.get(hash_token(token))
        if kept is None or time.monotonic() - kept[0] >= self.ttl_s:
            return None
        return kept[1], kept[2]

    def look_up(self, session: Session, token: str) -> tuple[User, Token] | None:
        """:func:`authenticate`, keeping what is found."""
        found = authenticate(session, token)
        if found is not None and self.ttl_s > 0:
            for record in found:
                session.expunge(record)
            if len(self._found) >= self.size:
                self._found.clear()
            self._found[hash_token(token)] = (time.monotonic(), *found)
        return found

    def forget(self) -> None:
        """Drop every entry (a token was revoked: each is looked up again)."""
        self._found.clear()
