/**
 * The generated connect-web clients of the four services — the console's only way to call
 * the API (the one exception is the CSV download, see `csv.ts`). Every call carries the
 * session's access token; a unary call refused UNAUTHENTICATED refreshes the session once
 * and is sent again (safe for writes: the edge refuses a bad token before any service acts,
 * and the stock and order writes carry request ids anyway).
 */
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthService } from "../gen/stockmesh/auth/v1/auth_pb";
import { InventoryService } from "../gen/stockmesh/inventory/v1/inventory_pb";
import { OrderService } from "../gen/stockmesh/orders/v1/orders_pb";
import { ProductService } from "../gen/stockmesh/products/v1/products_pb";
import { Session, webLock } from "./session";
import type { TransportKind } from "./transport";

export interface AccessTokens {
  accessToken(): Promise<string | null>;
  refresh(failed?: string): Promise<boolean>;
}

export function authInterceptor(session: AccessTokens): Interceptor {
  return (next) => async (req) => {
    const token = await session.accessToken();
    if (token) req.header.set("authorization", `Bearer ${token}`);
    try {
      return await next(req);
    } catch (e) {
      const err = ConnectError.from(e);
      if (err.code !== Code.Unauthenticated || !token || req.stream) throw e;
      if (!(await session.refresh(token))) throw e;
      const fresh = await session.accessToken();
      if (!fresh) throw e;
      req.header.set("authorization", `Bearer ${fresh}`);
      return await next(req);
    }
  };
}

export function makeTransport(kind: TransportKind, baseUrl: string, interceptors: Interceptor[]): Transport {
  return kind === "connect"
    ? createConnectTransport({ baseUrl, interceptors })
    : createGrpcWebTransport({ baseUrl, interceptors, useBinaryFormat: true });
}

export interface Api {
  kind: TransportKind;
  session: Session;
  auth: Client<typeof AuthService>;
  products: Client<typeof ProductService>;
  inventory: Client<typeof InventoryService>;
  orders: Client<typeof OrderService>;
}

export function createApi(kind: TransportKind, baseUrl: string, storage: Storage): Api {
  // Refresh goes through its own client: no token, no retry-on-401 loop.
  const bare = createClient(AuthService, makeTransport(kind, baseUrl, []));
  const session = new Session({
    storage,
    refresh: (refreshToken) => bare.refresh({ refreshToken }),
    lock: webLock,
  });
  const transport = makeTransport(kind, baseUrl, [authInterceptor(session)]);
  return {
    kind,
    session,
    auth: createClient(AuthService, transport),
    products: createClient(ProductService, transport),
    inventory: createClient(InventoryService, transport),
    orders: createClient(OrderService, transport),
  };
}
