/** The shell: skip link, navigation by role, the current screen, and sign-in guards. */
import { Component, type ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { isAdmin, isStaff, roleName, useApp, useCartVersion, useUser } from "./context";
import { navigate, onNavigate, parseRoute, type Route } from "./router";
import { Users } from "./screens/admin";
import { Register, SignIn, signOut } from "./screens/auth";
import { Catalog, ProductPage } from "./screens/catalog";
import { Dashboard } from "./screens/dashboard";
import { CartPage, MyOrders, StaffOrders } from "./screens/orders";
import { ProductForm, Suppliers, Variables, Warehouses } from "./screens/staff";
import { Page } from "./ui/kit";

function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.pathname, location.search));
  useEffect(() => onNavigate(() => setRoute(parseRoute(location.pathname, location.search))), []);
  return route;
}

/** A screen that throws shows a message instead of a blank page. */
class Boundary extends Component<{ children: ComponentChildren; resetKey: string }, { error: unknown }> {
  state = { error: null as unknown };
  static getDerivedStateFromError(error: unknown) {
    return { error };
  }
  componentDidUpdate(prev: { resetKey: string }) {
    if (prev.resetKey !== this.props.resetKey && this.state.error) this.setState({ error: null });
  }
  render() {
    if (this.state.error) {
      return (
        <Page title="Something went wrong">
          <p role="alert" class="status error">
            {String((this.state.error as Error)?.message ?? this.state.error)}
          </p>
          <p>
            <a href="/catalog">Back to the catalog</a>
          </p>
        </Page>
      );
    }
    return this.props.children;
  }
}

const needsUser = new Set<Route["name"]>(["cart", "orders", "staff-orders", "staff-product-new", "staff-product-edit", "staff-suppliers", "staff-variables", "staff-warehouses", "admin-users", "dashboard"]);
const needsStaff = new Set<Route["name"]>(["staff-orders", "staff-product-new", "staff-product-edit", "staff-suppliers", "staff-variables", "staff-warehouses", "dashboard"]);

function Screen({ route, notice }: { route: Route; notice: string | null }) {
  const user = useUser();
  if (needsUser.has(route.name) && !user) return <SignIn notice={notice ?? "Sign in to continue."} />;
  if ((needsStaff.has(route.name) && !isStaff(user)) || (route.name === "admin-users" && !isAdmin(user))) {
    return (
      <Page title="Not allowed">
        <p role="alert" class="status error">This screen is for staff.</p>
      </Page>
    );
  }
  switch (route.name) {
    case "home":
      return <Catalog query="" />;
    case "signin":
      return <SignIn notice={notice} />;
    case "register":
      return <Register />;
    case "catalog":
      return <Catalog query={route.query} />;
    case "product":
      return <ProductPage id={route.id} />;
    case "cart":
      return <CartPage />;
    case "orders":
      return <MyOrders />;
    case "staff-orders":
      return <StaffOrders />;
    case "staff-product-new":
      return <ProductForm />;
    case "staff-product-edit":
      return <ProductForm id={route.id} />;
    case "staff-suppliers":
      return <Suppliers />;
    case "staff-variables":
      return <Variables />;
    case "staff-warehouses":
      return <Warehouses />;
    case "admin-users":
      return <Users />;
    case "dashboard":
      return <Dashboard />;
    case "not-found":
      return (
        <Page title="Not found">
          <p>
            Nothing at {route.path}. <a href="/catalog">Go to the catalog</a>.
          </p>
        </Page>
      );
  }
}

export function App() {
  const { api, cart } = useApp();
  const user = useUser();
  const route = useRoute();
  useCartVersion();
  const [notice, setNotice] = useState<string | null>(null);
  const [menu, setMenu] = useState(false);

  useEffect(
    () =>
      api.session.subscribe((e) => {
        if (e === "expired") {
          setNotice("Your session has ended. Please sign in again.");
          navigate(`/signin?next=${encodeURIComponent(location.pathname + location.search)}`, true);
        } else if (e === "signed-in") setNotice(null);
      }),
    [api],
  );
  useEffect(() => setMenu(false), [route]);

  // Links inside the app navigate without a reload.
  useEffect(() => {
    const click = (e: MouseEvent) => {
      if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
      const a = (e.target as Element).closest?.("a");
      if (!a || a.target || a.hasAttribute("download") || a.origin !== location.origin) return;
      if (a.getAttribute("href")?.startsWith("#")) return;
      e.preventDefault();
      navigate(a.pathname + a.search);
    };
    document.addEventListener("click", click);
    return () => document.removeEventListener("click", click);
  }, []);

  const link = (href: string, text: string) => (
    <li>
      <a href={href} aria-current={location.pathname === href ? "page" : undefined}>
        {text}
      </a>
    </li>
  );
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href="/catalog">
          stockmesh
        </a>
        <button type="button" class="menu-toggle" aria-expanded={menu} aria-controls="nav" onClick={() => setMenu(!menu)}>
          Menu
        </button>
        <nav id="nav" aria-label="Main" class={menu ? "open" : ""}>
          <ul>
            {link("/catalog", "Catalog")}
            {user && link("/cart", `Cart (${cart.count})`)}
            {user && link("/orders", "My orders")}
            {isStaff(user) && link("/staff/orders", "Orders queue")}
            {isStaff(user) && link("/staff/warehouses", "Warehouses")}
            {isStaff(user) && link("/staff/suppliers", "Suppliers")}
            {isStaff(user) && link("/staff/variables", "Variables")}
            {isStaff(user) && link("/dashboard", "Dashboard")}
            {isAdmin(user) && link("/admin/users", "Users")}
          </ul>
          <div class="who">
            {user ? (
              <>
                <span data-testid="who">
                  {user.displayName} ({roleName(user.role)})
                </span>
                <button type="button" onClick={() => void signOut(api)}>
                  Sign out
                </button>
              </>
            ) : (
              <>
                <a href="/signin">Sign in</a> <a href="/register">Register</a>
              </>
            )}
          </div>
        </nav>
      </header>
      <main id="main" tabIndex={-1}>
        <Boundary resetKey={location.pathname + location.search}>
          <Screen route={route} notice={notice} />
        </Boundary>
      </main>
      <footer class="foot">
        <small>
          Transport: <span data-testid="transport">{api.kind}</span>
        </small>
      </footer>
    </>
  );
}
