"""Users and bearer tokens. Tokens are random; only their sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Token, User

__all__ = ["ADMIN", "authenticate", "create_token", "hash_token", "seed_admin"]

#: The first user's name.
ADMIN = "admin"

TOKEN_PREFIX = "kiln_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user(session: Session, name: str, *, admin: bool = False) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, is_admin=admin)
        session.add(user)
        session.flush()
    return user


def create_token(session: Session, user: str, *, worker: bool = False,
                 token: str | None = None) -> str:
    """A new token for ``user`` (created if new); the plain token, shown only now."""
    token = token or TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(Token(user_id=_user(session, user).id, sha256=hash_token(token), worker=worker))
    return token


def seed_admin(session: Session, token: str | None) -> str | None:
    """Make sure the admin exists with a token: ``token`` if given (KILN_ADMIN_TOKEN),
    else a new one the first time. Returns a newly generated token (to print once)."""
    admin = _user(session, ADMIN, admin=True)
    if token is not None:
        if session.scalar(select(Token).where(Token.sha256 == hash_token(token))) is None:
            session.add(Token(user_id=admin.id, sha256=hash_token(token)))
        return None
    if session.scalar(select(Token.id).where(Token.user_id == admin.id).limit(1)) is not None:
        return None
    return create_token(session, ADMIN)


def authenticate(session: Session, token: str) -> tuple[User, Token] | None:
    """The user and token record a bearer token belongs to, or None."""
    row = session.execute(select(User, Token).join(Token, Token.user_id == User.id)
                          .where(Token.sha256 == hash_token(token))).first()
    return None if row is None else (row[0], row[1])
