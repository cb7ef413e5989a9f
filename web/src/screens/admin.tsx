/** Admin: users and their roles. */
import { useState } from "preact/hooks";
import { roleName, useApp, useUser } from "../context";
import { when } from "../format";
import { Role, type User } from "../gen/stockmesh/auth/v1/auth_pb";
import { useAction } from "../ui/action";
import { Busy, Field, Page, Pager, Select, Status, useLoad, usePager } from "../ui/kit";

const ROLES = [Role.CUSTOMER, Role.OPERATOR, Role.ADMIN].map((r) => ({ value: String(r), label: roleName(r) }));

function RoleRow({ u, self, onSaved }: { u: User; self: boolean; onSaved: (u: User) => void }) {
  const { api } = useApp();
  const [role, setRole] = useState(String(u.role));
  const save = useAction();
  return (
    <tr>
      <th scope="row">{u.displayName}</th>
      <td>{u.email}</td>
      <td>
        <form
          class="inline"
          onSubmit={async (e) => {
            e.preventDefault();
            const r = await save.submit(() => api.auth.updateUserRole({ id: u.id, role: Number(role) as Role }), () => "Saved.");
            if (r?.user) onSaved(r.user);
          }}
        >
          <label class="sr-only" for={`role-${u.id}`}>
            Role of {u.email}
          </label>
          <select id={`role-${u.id}`} value={role} disabled={self} onChange={(e) => setRole(e.currentTarget.value)}>
            {(u.role === Role.SERVICE ? [...ROLES, { value: String(Role.SERVICE), label: "service" }] : ROLES).map((o) => (
              <option key={o.value} value={o.value}>
                {o.label}
              </option>
            ))}
          </select>
          <Busy busy={save.busy} type="submit" disabled={self || role === String(u.role)}>
            Save<span class="sr-only"> role of {u.email}</span>
          </Busy>
          <Status error={save.error} ok={save.ok} />
        </form>
      </td>
      <td>{when(u.createdAt)}</td>
    </tr>
  );
}

export function Users() {
  const { api } = useApp();
  const me = useUser();
  const pager = usePager();
  const list = useLoad(() => api.auth.listUsers({ pageSize: 50, pageToken: pager.token }), [pager.token]);
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [role, setRole] = useState(String(Role.OPERATOR));
  const create = useAction();
  return (
    <Page title="Users and roles">
      <form
        class="card narrow"
        aria-label="New user"
        onSubmit={async (e) => {
          e.preventDefault();
          const r = await create.submit(
            () => api.auth.createUser({ email, displayName: name, password, role: Number(role) as Role }),
            (r) => `Created ${r.user?.email}.`,
          );
          if (r) {
            setEmail("");
            setName("");
            setPassword("");
            list.reload();
          }
        }}
      >
        <h2>New user</h2>
        <Field label="Email" name="user-email" type="email" required value={email} onInput={setEmail} />
        <Field label="Name" name="user-name" required value={name} onInput={setName} />
        <Field label="Password" name="user-password" type="password" autoComplete="new-password" minLength={8} required value={password} onInput={setPassword} />
        <Select label="Role" name="user-role" value={role} onChange={setRole} options={ROLES} />
        <Status error={create.error} ok={create.ok} />
        <Busy busy={create.busy} type="submit" class="primary">
          Create user
        </Busy>
      </form>
      <Status error={list.error} />
      <table>
        <caption>Users</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Email</th>
            <th scope="col">Role</th>
            <th scope="col">Created</th>
          </tr>
        </thead>
        <tbody>
          {(list.data?.users ?? []).map((u) => (
            <RoleRow
              key={u.id}
              u={u}
              self={u.id === me?.id}
              onSaved={(nu) => list.setData(list.data && { ...list.data, users: list.data.users.map((x) => (x.id === nu.id ? nu : x)) })}
            />
          ))}
        </tbody>
      </table>
      {list.data && <Pager page={pager.page} hasNext={!!list.data.nextPageToken} onPrev={pager.prev} onNext={() => pager.next(list.data!.nextPageToken)} />}
    </Page>
  );
}
