import { describe, expect, it } from "vitest";
import { csvRequest, parseCsv } from "../src/api/csv";

describe("CSV download requests", () => {
  it("sales by day: REST path, RFC 3339 period, grouping by name, Accept text/csv, bearer", () => {
    const r = csvRequest(
      "http://127.0.0.1:8080/",
      "sales",
      { start: new Date("2026-01-01T00:00:00Z"), end: new Date("2026-01-31T00:00:00Z"), groupBy: "day" },
      "tok",
    );
    const u = new URL(r.url);
    expect(u.origin + u.pathname).toBe("http://127.0.0.1:8080/v1/reports/sales");
    expect(u.searchParams.get("startTime")).toBe("2026-01-01T00:00:00.000Z");
    expect(u.searchParams.get("endTime")).toBe("2026-01-31T00:00:00.000Z");
    expect(u.searchParams.get("groupBy")).toBe("SALES_REPORT_GROUPING_DAY");
    expect(r.headers).toEqual({ accept: "text/csv", authorization: "Bearer tok" });
    expect(r.filename).toBe("sales-by-day.csv");
  });

  it("sales by product and the stock report", () => {
    const p = csvRequest("http://h", "sales", { start: new Date(0), end: new Date(1000), groupBy: "product" }, null);
    expect(new URL(p.url).searchParams.get("groupBy")).toBe("SALES_REPORT_GROUPING_PRODUCT");
    expect(p.headers.authorization).toBeUndefined();
    expect(csvRequest("http://h", "stock", {}, "t").url).toBe("http://h/v1/reports/stock");
    expect(csvRequest("http://h", "stock", { warehouseId: "w 1", lowOnly: true }, "t").url).toBe(
      "http://h/v1/reports/stock?warehouseId=w+1&lowOnly=true",
    );
  });

  it("parses RFC 4180 quoting", () => {
    expect(parseCsv('day,units\r\n2026-01-02,3\r\n"a, ""b""",4\n')).toEqual([
      ["day", "units"],
      ["2026-01-02", "3"],
      ['a, "b"', "4"],
    ]);
  });
});
