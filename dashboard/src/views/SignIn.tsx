// Sign in with an API token: checked with GET /v1/me before it is kept.

import { useState } from "preact/hooks";
import { Api, ApiError } from "../api";
import type { User } from "../types";
import { ErrorBox } from "./common";

export function SignIn({ notice, onSignedIn }: {
  notice: string | null;
  onSignedIn: (token: string, user: User) => void;
}) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    const t = token.trim();
    if (!t) return;
    setBusy(true);
    setError(null);
    try {
      onSignedIn(t, await new Api(t).me());
    } catch (err) {
      const ae = err as ApiError;
      setError(ae.status === 401
        ? new ApiError(401, `Wrong token: the server does not accept it (${ae.message}).`)
        : ae);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="signin">
      <form onSubmit={submit} aria-label="Sign in" data-testid="sign-in-form">
        <h1>Kiln</h1>
        <p>Sign in with an API token: <code>make run</code> prints one on its first start, and{" "}
          <code>kiln-server token create --user NAME</code> makes more.</p>
        {notice ? <p class="notice" role="status" data-testid="sign-in-notice">{notice}</p> : null}
        <label>API token
          <input type="password" autocomplete="current-password" data-testid="token-input" value={token}
            placeholder="kiln_…" onInput={(e) => setToken(e.currentTarget.value)} required />
        </label>
        <button type="submit" data-testid="sign-in" disabled={busy}>{busy ? "Signing in…" : "Sign in"}</button>
        <ErrorBox error={error} />
      </form>
    </main>
  );
}
