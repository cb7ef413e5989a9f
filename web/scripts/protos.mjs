// Stages the protos that `buf generate` reads: a copy of ../proto into .proto-build/.
//
// TEMPORARY: the reports RPCs (OrderService.GetSalesReport, InventoryService.GetStockReport)
// are specified (scripts/reports.pending.proto.txt, verbatim from the contract) but not yet
// in proto/. Until they are, this script splices them into the staged copy so the dashboard's
// generated clients exist; once proto/ has them, it copies proto/ unchanged. Delete this
// splice (and the .txt) when the reports land.
import { cpSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, "..", "..", "proto");
const out = join(here, "..", ".proto-build");
rmSync(out, { recursive: true, force: true });
cpSync(src, out, { recursive: true });

const pending = readFileSync(join(here, "reports.pending.proto.txt"), "utf8");
const sections = Object.fromEntries(
  pending
    .split(/^\/\/ ---- /m)
    .slice(1)
    .map((s) => [s.slice(0, s.indexOf("\n")), s.slice(s.indexOf("\n") + 1)]),
);

function splice(file, service, key) {
  const path = join(out, file);
  let text = readFileSync(path, "utf8");
  const body = sections[key];
  if (!body) throw new Error(`no section ${key}`);
  const rpc = /^\s*rpc (\w+)/m.exec(body)[1];
  if (text.includes(`rpc ${rpc}(`)) return false;
  // The rpc block is everything up to the first top-level declaration.
  const split = body.search(/^(message|enum) /m);
  const rpcBlock = body.slice(0, split).trimEnd();
  const decls = body.slice(split).trimEnd();
  const start = text.indexOf(`service ${service} {`);
  let depth = 0;
  let end = -1;
  for (let i = text.indexOf("{", start); i < text.length; i++) {
    if (text[i] === "{") depth++;
    else if (text[i] === "}" && --depth === 0) {
      end = i;
      break;
    }
  }
  if (start < 0 || end < 0) throw new Error(`service ${service} not found in ${file}`);
  text = `${text.slice(0, end).trimEnd()}\n\n${rpcBlock}\n${text.slice(end)}`;
  if (!text.includes('import "google/protobuf/timestamp.proto"')) {
    text = text.replace(/(import "google\/api\/annotations.proto";\n)/, '$1import "google/protobuf/timestamp.proto";\n');
  }
  writeFileSync(path, `${text.trimEnd()}\n\n${decls}\n`);
  return true;
}

const a = splice("stockmesh/orders/v1/orders.proto", "OrderService", "to be added to proto/stockmesh/orders/v1/orders.proto (service OrderService) ----");
const b = splice(
  "stockmesh/inventory/v1/inventory.proto",
  "InventoryService",
  "to be added to proto/stockmesh/inventory/v1/inventory.proto (service InventoryService) ----",
);
if (a || b) console.warn("protos: reports RPCs spliced from scripts/reports.pending.proto.txt (not yet in proto/)");
