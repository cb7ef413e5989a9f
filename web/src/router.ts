/**
 * The console's routes (history API, no hash). `CONSOLE_PREFIXES` is also written into the
 * build as `console-routes.txt`, from which the gateway learns which paths get index.html
 * (SPA fallback) — every other path stays the API's.
 */
export type Route =
  | { name: "home" }
  | { name: "signin" }
  | { name: "register" }
  | { name: "catalog"; query: string; page: string }
  | { name: "product"; id: string }
  | { name: "cart" }
  | { name: "orders" }
  | { name: "staff-orders" }
  | { name: "staff-product-new" }
  | { name: "staff-product-edit"; id: string }
  | { name: "staff-suppliers" }
  | { name: "staff-variables" }
  | { name: "staff-warehouses" }
  | { name: "admin-users" }
  | { name: "dashboard" }
  | { name: "not-found"; path: string };

/** First path segments owned by the console (plus `/` itself). */
export const CONSOLE_PREFIXES = [
  "/signin",
  "/register",
  "/catalog",
  "/products",
  "/cart",
  "/orders",
  "/staff",
  "/admin",
  "/dashboard",
] as const;

export function isConsolePath(path: string): boolean {
  return path === "/" || CONSOLE_PREFIXES.some((p) => path === p || path.startsWith(`${p}/`));
}

export function parseRoute(path: string, search = ""): Route {
  const q = new URLSearchParams(search);
  const seg = path.split("/").filter(Boolean).map(decodeURIComponent);
  const [a, b, c] = seg;
  switch (seg.length) {
    case 0:
      return { name: "home" };
    case 1:
      if (a === "signin") return { name: "signin" };
      if (a === "register") return { name: "register" };
      if (a === "catalog") return { name: "catalog", query: q.get("q") ?? "", page: q.get("page") ?? "" };
      if (a === "cart") return { name: "cart" };
      if (a === "orders") return { name: "orders" };
      if (a === "dashboard") return { name: "dashboard" };
      break;
    case 2:
      if (a === "products") return { name: "product", id: b };
      if (a === "staff" && b === "orders") return { name: "staff-orders" };
      if (a === "staff" && b === "suppliers") return { name: "staff-suppliers" };
      if (a === "staff" && b === "variables") return { name: "staff-variables" };
      if (a === "staff" && b === "warehouses") return { name: "staff-warehouses" };
      if (a === "staff" && b === "products") return { name: "staff-product-new" };
      if (a === "admin" && b === "users") return { name: "admin-users" };
      break;
    case 3:
      if (a === "staff" && b === "products" && c === "new") return { name: "staff-product-new" };
      break;
    case 4:
      if (a === "staff" && b === "products" && seg[3] === "edit") return { name: "staff-product-edit", id: c };
      break;
  }
  return { name: "not-found", path };
}

type Listener = () => void;
const listeners = new Set<Listener>();

export function navigate(to: string, replace = false): void {
  if (replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  for (const l of listeners) l();
}

export function onNavigate(l: Listener): () => void {
  listeners.add(l);
  const pop = () => l();
  window.addEventListener("popstate", pop);
  return () => {
    listeners.delete(l);
    window.removeEventListener("popstate", pop);
  };
}
