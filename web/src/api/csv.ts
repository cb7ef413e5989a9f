/**
 * CSV downloads of the reports. This is the console's ONE call that does not go through a
 * generated client: the gateway answers a report's REST path with `Accept: text/csv` as a
 * file (header line of the rows' JSON field names, one line per row), and a file download is
 * not an RPC. It is a `fetch` with the bearer token (a plain link cannot send the header),
 * saved through a Blob URL.
 */
export type ReportKind = "sales" | "stock";

export interface SalesCsvParams {
  start: Date;
  end: Date;
  groupBy: "day" | "product";
}

export interface StockCsvParams {
  warehouseId?: string;
  lowOnly?: boolean;
}

export interface CsvRequest {
  url: string;
  headers: Record<string, string>;
  filename: string;
}

export function csvRequest(
  base: string,
  report: "sales",
  params: SalesCsvParams,
  token: string | null,
): CsvRequest;
export function csvRequest(base: string, report: "stock", params: StockCsvParams, token: string | null): CsvRequest;
export function csvRequest(
  base: string,
  report: ReportKind,
  params: SalesCsvParams | StockCsvParams,
  token: string | null,
): CsvRequest {
  const q = new URLSearchParams();
  if (report === "sales") {
    const p = params as SalesCsvParams;
    q.set("startTime", p.start.toISOString());
    q.set("endTime", p.end.toISOString());
    q.set("groupBy", p.groupBy === "product" ? "SALES_REPORT_GROUPING_PRODUCT" : "SALES_REPORT_GROUPING_DAY");
  } else {
    const p = params as StockCsvParams;
    if (p.warehouseId) q.set("warehouseId", p.warehouseId);
    if (p.lowOnly) q.set("lowOnly", "true");
  }
  const url = `${base.replace(/\/+$/, "")}/v1/reports/${report}${q.size ? `?${q}` : ""}`;
  const headers: Record<string, string> = { accept: "text/csv" };
  if (token) headers.authorization = `Bearer ${token}`;
  const suffix = report === "sales" ? `-by-${(params as SalesCsvParams).groupBy}` : "";
  return { url, headers, filename: `${report}${suffix}.csv` };
}

/** Parses RFC 4180 CSV (quoted fields, doubled quotes, CRLF or LF). */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      row.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
    } else field += c;
  }
  if (field !== "" || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

/** Fetches the CSV and hands it to the browser as a download. */
export async function downloadCsv(req: CsvRequest): Promise<void> {
  const resp = await fetch(req.url, { headers: req.headers });
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    try {
      const body = (await resp.json()) as { message?: string };
      if (body.message) message = body.message;
    } catch {
      // not JSON: keep the status line
    }
    throw new Error(message);
  }
  const blob = await resp.blob();
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = req.filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}
