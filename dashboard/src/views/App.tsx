// The shell: sign in with a token (kept in localStorage), the header, and the page the
// hash names.

import { useEffect, useMemo, useState } from "preact/hooks";
import { Api, ApiError } from "../api";
import type { Route } from "../route";
import type { User } from "../types";
import { ErrorBox } from "./common";
import { ComparePage } from "./ComparePage";
import { DatasetsPage } from "./DatasetsPage";
import { useRoute } from "./hooks";
import { JobPage } from "./JobPage";
import { JobsPage } from "./JobsPage";
import { SignIn } from "./SignIn";
import { WorkersPage } from "./WorkersPage";

const TOKEN_KEY = "kiln.token";

export function App() {
  const [token, setToken] = useState<string | null>(() => localStorage.getItem(TOKEN_KEY));
  const [user, setUser] = useState<User | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const route = useRoute();

  const signOut = (why: string | null = null) => {
    localStorage.removeItem(TOKEN_KEY);
    setToken(null);
    setUser(null);
    setNotice(why);
  };

  const api = useMemo(() => token ? new Api(token, {
    onUnauthorized: (e) => signOut(`The server refused the token (${e.message}): sign in again.`),
  }) : null, [token]);

  // signing in or out in another tab does so here too
  useEffect(() => {
    const on = (e: StorageEvent) => {
      if (e.key === TOKEN_KEY && e.newValue !== token) {
        setUser(null);
        setToken(e.newValue);
      }
    };
    addEventListener("storage", on);
    return () => removeEventListener("storage", on);
  }, [token]);

  useEffect(() => {
    if (!api) return;
    setError(null);
    api.me().then(setUser, (e: ApiError) => { if (e.status !== 401) setError(e); });
  }, [api]);

  if (!api) {
    return <SignIn notice={notice} onSignedIn={(t, u) => {
      localStorage.setItem(TOKEN_KEY, t);
      setNotice(null);
      setToken(t);
      setUser(u);
    }} />;
  }
  return (
    <>
      <Header route={route} user={user} onSignOut={() => signOut()} />
      <main>
        <ErrorBox error={error} />
        <Page route={route} api={api} />
      </main>
    </>
  );
}

function Page({ route, api }: { route: Route; api: Api }) {
  switch (route.page) {
    case "jobs":
      return <JobsPage api={api} status={route.status} />;
    case "job":
      return <JobPage key={route.id} api={api} id={route.id} smooth={route.smooth} log={route.log} />;
    case "datasets":
      return <DatasetsPage api={api} />;
    case "workers":
      return <WorkersPage api={api} />;
    case "compare":
      return <ComparePage api={api} ids={route.ids} smooth={route.smooth} />;
    case "notfound":
      return <p class="empty" data-testid="not-found">No page at <code>#{route.hash}</code>. <a href="#/jobs">See the jobs.</a></p>;
  }
}

const NAV: { href: string; label: string; pages: Route["page"][] }[] = [
  { href: "#/jobs", label: "Jobs", pages: ["jobs", "job", "compare"] },
  { href: "#/datasets", label: "Datasets", pages: ["datasets"] },
  { href: "#/workers", label: "Workers", pages: ["workers"] },
];

function Header({ route, user, onSignOut }: { route: Route; user: User | null; onSignOut: () => void }) {
  return (
    <header class="top">
      <a class="brand" href="#/jobs">Kiln</a>
      <nav aria-label="Main">
        {NAV.map((n) => (
          <a key={n.href} href={n.href} data-testid={`nav-${n.label.toLowerCase()}`}
            aria-current={n.pages.includes(route.page) ? "page" : undefined}>{n.label}</a>
        ))}
      </nav>
      <span class="spacer" />
      {user ? <span class="user" data-testid="user-name">{user.name}{user.admin ? " (admin)" : ""}</span> : null}
      <button type="button" class="quiet" data-testid="sign-out" onClick={onSignOut}>Sign out</button>
    </header>
  );
}
