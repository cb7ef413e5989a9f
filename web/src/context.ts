/** What every screen reaches: the API clients (with the session) and the cart. */
import { createContext } from "preact";
import { useContext, useEffect, useState } from "preact/hooks";
import type { Api } from "./api/clients";
import type { SessionUser } from "./api/session";
import { Role } from "./gen/stockmesh/auth/v1/auth_pb";
import type { Cart } from "./state/cart";

export interface Ctx {
  api: Api;
  cart: Cart;
  /** Where the app was created (the gateway's origin). */
  base: string;
}

export const AppContext = createContext<Ctx | null>(null);

export function useApp(): Ctx {
  const c = useContext(AppContext);
  if (!c) throw new Error("AppContext missing");
  return c;
}

/** The signed-in user, re-rendered on sign-in, refresh and sign-out. */
export function useUser(): SessionUser | null {
  const { api } = useApp();
  const [user, setUser] = useState(api.session.user);
  useEffect(() => api.session.subscribe(() => setUser(api.session.user)), [api]);
  return user;
}

export function useCartVersion(): number {
  const { cart } = useApp();
  const [v, setV] = useState(0);
  useEffect(() => cart.subscribe(() => setV((x) => x + 1)), [cart]);
  return v;
}

export const isStaff = (u: SessionUser | null) => !!u && (u.role === Role.OPERATOR || u.role === Role.ADMIN);
export const isAdmin = (u: SessionUser | null) => !!u && u.role === Role.ADMIN;

export function roleName(r: Role): string {
  return Role[r]?.toLowerCase() ?? "unknown";
}
