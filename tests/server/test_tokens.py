"""Token management over HTTP, as an admin: create (also an admin's), list without
secrets, revoke (refused at once), and the last admin token kept."""

from __future__ import annotations

import secrets

import httpx

from .conftest import ADMIN_TOKEN, Server


def _create(client, **body) -> dict:
    r = client.post("/v1/tokens", json={"user": "u" + secrets.token_hex(6), **body})
    assert r.status_code == 201, r.text
    return r.json()


def _listed(client) -> dict[str, dict]:
    r = client.get("/v1/tokens")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["data"])
    return {t["id"]: t for t in body["data"]}


def test_an_admin_lists_tokens_without_secrets_and_revokes_them_at_once(admin, server):
    made = {kind: _create(admin, worker=kind == "worker") for kind in ("user", "worker")}
    for kind, t in made.items():
        assert (t["kind"], t["worker"]) == (kind, kind == "worker")
        assert t["prefix"] == t["token"][:11] and t["prefix"].startswith("kiln_")
    r = admin.get("/v1/tokens")
    for t in made.values():  # neither secret shows, nor anything but the prefix of it
        assert t["token"] not in r.text and t["token"][:12] not in r.text
    listed = _listed(admin)
    for t in made.values():
        assert listed[t["id"]] == {k: t[k] for k in ("id", "user", "kind", "prefix",
                                                     "created_at")}
    assert {"admin"} <= {t["kind"] for t in listed.values()}  # the server's own admin

    with server.client(made["user"]["token"]) as user, \
            server.client(made["worker"]["token"]) as worker:
        assert user.get("/v1/jobs").status_code == 200
        assert admin.delete(f"/v1/tokens/{made['user']['id']}").status_code == 204
        assert user.get("/v1/jobs").status_code == 401
        register = {"name": "w", "device": {}}
        assert worker.post("/v1/worker/register", json=register).status_code == 201
        assert admin.delete(f"/v1/tokens/{made['worker']['id']}").status_code == 204
        assert worker.post("/v1/worker/register", json=register).status_code == 401
    listed = _listed(admin)
    assert made["user"]["id"] not in listed and made["worker"]["id"] not in listed
    r = admin.delete(f"/v1/tokens/{made['user']['id']}")
    assert r.status_code == 404 and made["user"]["id"] in r.json()["detail"]


def test_only_an_admin_manages_tokens(admin, user, worker):
    victim = _create(admin)["id"]
    for client in (user, worker):
        assert client.get("/v1/tokens").status_code == 403
        assert client.delete(f"/v1/tokens/{victim}").status_code == 403
        assert client.post("/v1/tokens", json={"user": "x", "admin": True}).status_code == 403
    assert victim in _listed(admin)
    r = admin.post("/v1/tokens", json={"user": "x", "worker": True, "admin": True})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "admin"] and "worker" in error["msg"]


def test_a_lost_admin_token_is_replaced_and_the_last_one_kept(tmp_path, database_url):
    """A second admin revokes the first admin's token; the last admin token left cannot
    be revoked (409), and keeps working."""
    srv = Server(tmp_path, database_url=database_url)
    try:
        with srv.client(ADMIN_TOKEN) as first:
            second = _create(first, admin=True)
            assert second["kind"] == "admin"
            (first_id,) = [i for i, t in _listed(first).items()
                           if t["user"] == "admin" and t["kind"] == "admin"]
            with srv.client(second["token"]) as new:
                assert new.delete(f"/v1/tokens/{first_id}").status_code == 204
                assert first.get("/v1/tokens").status_code == 401
                r = new.delete(f"/v1/tokens/{second['id']}")
                assert r.status_code == 409 and "last admin token" in r.json()["detail"]
                assert list(_listed(new)) == [second["id"]]
                # It is still an admin's: it makes tokens that work.
                made = _create(new)
                with srv.client(made["token"]) as user:
                    assert user.get("/v1/jobs").status_code == 200
    finally:
        srv.stop()


def test_the_token_routes_and_fields_are_documented(server):
    spec = httpx.get(server.url + "/openapi.json").json()
    assert {m: op["operationId"] for m, op in spec["paths"]["/v1/tokens"].items()} == {
        "post": "create_token", "get": "list_tokens"}
    revoke = spec["paths"]["/v1/tokens/{token_id}"]["delete"]
    assert revoke["operationId"] == "revoke_token" and {"204", "404", "409"} <= set(
        revoke["responses"])
    schemas = spec["components"]["schemas"]
    for name in ("TokenCreate", "TokenInfo", "TokensPublic", "TokenPublic"):
        props = schemas[name]["properties"]
        assert props and not [p for p, s in props.items() if not s.get("description")], name
