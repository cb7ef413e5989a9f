/** Sign in (with the transport setting), register, and what signing out does. */
import { useState } from "preact/hooks";
import type { Api } from "../api/clients";
import { TRANSPORT_KEY, type TransportKind } from "../api/transport";
import { useApp } from "../context";
import { navigate } from "../router";
import { Busy, Field, Page, Select, Status } from "../ui/kit";

function afterSignIn() {
  const next = new URLSearchParams(location.search).get("next");
  navigate(next && next.startsWith("/") && !next.startsWith("//") ? next : "/catalog", true);
}

export function SignIn({ notice }: { notice?: string | null }) {
  const { api } = useApp();
  const [email, setEmail] = useState(() => {
    const pending = sessionStorage.getItem("stockmesh.pending-login");
    sessionStorage.removeItem("stockmesh.pending-login");
    try {
      return pending ? String((JSON.parse(pending) as { email?: string }).email ?? "") : "";
    } catch {
      return "";
    }
  });
  const [password, setPassword] = useState("");
  const [transport, setTransport] = useState<TransportKind>(api.kind);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  async function submit(e: Event) {
    e.preventDefault();
    if (busy) return;
    if (transport !== api.kind) {
      // A different wire protocol means new clients: remember it and start over.
      localStorage.setItem(TRANSPORT_KEY, transport);
      sessionStorage.setItem("stockmesh.pending-login", JSON.stringify({ email }));
      const u = new URL(location.href);
      u.searchParams.delete("transport");
      location.assign(u.toString());
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const r = await api.auth.login({ email, password });
      api.session.signedIn(r);
      afterSignIn();
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  }

  return (
    <Page title="Sign in">
      <form class="card narrow" onSubmit={submit} aria-describedby={notice ? "signin-notice" : undefined}>
        {notice && (
          <p id="signin-notice" class="status info" role="status">
            {notice}
          </p>
        )}
        <Field label="Email" type="email" name="email" autoComplete="username" required value={email} onInput={setEmail} />
        <Field
          label="Password"
          type="password"
          name="password"
          autoComplete="current-password"
          required
          value={password}
          onInput={setPassword}
        />
        <Select
          label="Transport"
          name="transport"
          value={transport}
          onChange={(v) => setTransport(v as TransportKind)}
          options={[
            { value: "grpc-web", label: "gRPC-web (binary)" },
            { value: "connect", label: "Connect (JSON)" },
          ]}
        />
        <Status error={error} />
        <Busy busy={busy} type="submit" class="primary">
          Sign in
        </Busy>
        <p>
          No account? <a href="/register">Register</a>
        </p>
      </form>
    </Page>
  );
}

export function Register() {
  const { api } = useApp();
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  async function submit(e: Event) {
    e.preventDefault();
    if (busy) return;
    setBusy(true);
    setError(null);
    try {
      await api.auth.register({ email, password, displayName: name });
      const r = await api.auth.login({ email, password });
      api.session.signedIn(r);
      afterSignIn();
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  }

  return (
    <Page title="Create an account">
      <form class="card narrow" onSubmit={submit}>
        <Field label="Email" type="email" name="email" autoComplete="email" required value={email} onInput={setEmail} />
        <Field label="Your name" name="displayName" autoComplete="name" required value={name} onInput={setName} />
        <Field
          label="Password"
          type="password"
          name="password"
          autoComplete="new-password"
          minLength={8}
          required
          hint="At least 8 characters."
          value={password}
          onInput={setPassword}
        />
        <Status error={error} />
        <Busy busy={busy} type="submit" class="primary">
          Register
        </Busy>
        <p>
          Have an account? <a href="/signin">Sign in</a>
        </p>
      </form>
    </Page>
  );
}

/** Revokes the refresh token (best effort) and forgets the session. */
export async function signOut(api: Api): Promise<void> {
  const t = api.session.current;
  api.session.signOut();
  if (t) {
    try {
      await api.auth.logout({ refreshToken: t.refreshToken });
    } catch {
      // Signed out locally either way; the token expires on its own.
    }
  }
  navigate("/signin");
}
