"""Signing in to the dashboard with an API token: a wrong one is told so, a right one is
kept across reloads, one the server stops accepting sends the person back to sign in,
and signing out forgets it."""

from __future__ import annotations

import re

from .conftest import expect

TOKEN_KEY = "kiln.token"


def test_a_wrong_token_is_told_so_and_a_right_one_signs_in_until_sign_out(page, token, kiln):
    page.goto("/")
    form = page.get_by_test_id("sign-in-form")
    expect(form).to_be_visible()

    page.get_by_test_id("token-input").fill("kiln_not-a-token")
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("error")).to_have_text(re.compile(r"^Wrong token: "))
    expect(page.get_by_test_id("user-name")).to_have_count(0)
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") is None

    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("user-name")).to_have_text(kiln.me().name)
    expect(form).to_have_count(0)
    expect(page.get_by_test_id("jobs-empty")).to_be_visible()  # a new user: no jobs

    page.reload()  # the token is kept in the browser's storage
    expect(page.get_by_test_id("user-name")).to_have_text(kiln.me().name)

    page.get_by_test_id("sign-out").click()
    expect(form).to_be_visible()
    expect(page.get_by_test_id("user-name")).to_have_count(0)
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") is None
    page.reload()
    expect(form).to_be_visible()


def test_a_kept_token_the_server_refuses_signs_out_saying_why(page):
    page.goto("/")
    page.evaluate(f"localStorage.setItem('{TOKEN_KEY}', 'kiln_revoked-or-mistyped')")
    page.goto("/#/jobs")
    page.reload()
    expect(page.get_by_test_id("sign-in-notice")).to_have_text(
        re.compile(r"The server refused the token \(.+\): sign in again\."))
    expect(page.get_by_test_id("sign-in-form")).to_be_visible()
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") is None
