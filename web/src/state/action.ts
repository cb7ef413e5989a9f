/**
 * One idempotent write as the user sees it (a restock form, an adjustment, a cart's order).
 *
 * The request id is made when the form opens and sent with every submission of it, so a
 * double click, a retry after a timeout, or a resubmission after an answer that got lost are
 * all ONE write on the server (it replays the first result). The id changes only when the
 * form describes a new write: the user edits it after a success, or after a failure that
 * certainly wrote nothing (INVALID_ARGUMENT, FAILED_PRECONDITION, …). After an ambiguous
 * failure (UNAVAILABLE, DEADLINE_EXCEEDED) the id stays even if the form is edited, so a
 * write that did land is not made twice. While a submission is in flight, further ones are
 * refused (the button is disabled too, but a fast double click can beat the re-render).
 */
import { ConnectError } from "@connectrpc/connect";
import { newRequestId } from "../api/ids";
import { isAmbiguous } from "../api/errors";

export type Outcome = "none" | "succeeded" | "failed" | "ambiguous";

export class IdempotentAction {
  private id: string;
  private outcome: Outcome = "none";
  private busy = false;

  /** `initial`: the id of a form restored after a reload (its write may have landed). */
  constructor(private readonly makeId: () => string = () => newRequestId(), initial?: string) {
    this.id = initial || makeId();
  }

  get requestId(): string {
    return this.id;
  }

  get inFlight(): boolean {
    return this.busy;
  }

  get lastOutcome(): Outcome {
    return this.outcome;
  }

  /** The form's contents changed. */
  edited(): void {
    if (this.outcome === "succeeded" || this.outcome === "failed") {
      this.id = this.makeId();
      this.outcome = "none";
    }
  }

  /**
   * Runs `write` with the request id, unless a submission is already in flight (then it
   * resolves to `undefined` without calling `write`).
   */
  async run<T>(write: (requestId: string) => Promise<T>): Promise<T | undefined> {
    if (this.busy) return undefined;
    this.busy = true;
    try {
      const r = await write(this.id);
      this.outcome = "succeeded";
      return r;
    } catch (e) {
      this.outcome = isAmbiguous(ConnectError.from(e).code) ? "ambiguous" : "failed";
      throw e;
    } finally {
      this.busy = false;
    }
  }
}
