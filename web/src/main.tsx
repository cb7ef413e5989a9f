/** Entry: picks the transport, restores the session and cart, renders the app. */
import { render } from "preact";
import { createApi } from "./api/clients";
import { chooseTransport, TRANSPORT_KEY } from "./api/transport";
import { App } from "./app";
import { AppContext } from "./context";
import { Cart } from "./state/cart";
import "./styles.css";

const kind = chooseTransport(location.search, localStorage.getItem(TRANSPORT_KEY));
// `?transport=` is remembered like the sign-in screen's setting.
localStorage.setItem(TRANSPORT_KEY, kind);
const base = location.origin;
const api = createApi(kind, base, localStorage);

function cartFor(userId: string | undefined): Cart {
  return new Cart(localStorage, `stockmesh.cart.${userId ?? "anonymous"}`);
}

let cartUser = api.session.user?.id;
const ctx = { api, cart: cartFor(cartUser), base };
window.addEventListener("storage", (e) => {
  if (e.key === "stockmesh.session") api.session.reload();
});
api.session.subscribe(() => {
  const id = api.session.user?.id;
  if (id === cartUser) return;
  cartUser = id;
  ctx.cart = cartFor(id);
  draw();
});

const root = document.getElementById("app");
function draw() {
  if (!root) return;
  render(
    <AppContext.Provider value={{ ...ctx }}>
      <App />
    </AppContext.Provider>,
    root,
  );
}
draw();
