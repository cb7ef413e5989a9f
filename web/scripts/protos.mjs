// Stages the protos that `buf generate` reads: a copy of ../proto into .proto-build/, so
// the generated clients always come from the repository's contract as it is.
import { cpSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, "..", "..", "proto");
const out = join(here, "..", ".proto-build");
rmSync(out, { recursive: true, force: true });
cpSync(src, out, { recursive: true });
