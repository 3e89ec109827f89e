import assert from "node:assert/strict";
import { test } from "node:test";
import { consoleLogger, redactingLogger, REDACTED } from "../src/logger.js";
import { captureLogger, type LogLine } from "../testing/fakes.js";

test("consoleLogger writes its level and above only", () => {
  const out: string[] = [];
  const sink = {
    debug: (m: unknown) => out.push(`debug ${String(m)}`),
    info: (m: unknown) => out.push(`info ${String(m)}`),
    warn: (m: unknown) => out.push(`warn ${String(m)}`),
    error: (m: unknown) => out.push(`error ${String(m)}`),
  };
  for (const level of ["debug", "info", "warn", "error", "silent"] as const) {
    out.length = 0;
    const log = consoleLogger(level, sink);
    log.debug("d");
    log.info("i");
    log.warn("w");
    log.error("e");
    assert.equal(out.length, { debug: 4, info: 3, warn: 2, error: 1, silent: 0 }[level], level);
  }
  out.length = 0;
  consoleLogger(undefined, sink).info("hidden");
  consoleLogger(undefined, sink).warn("shown");
  assert.deepEqual(out, ["warn [kafkasocks] shown"], "default is warn and above");
});

test("redactingLogger masks secret-named fields and known secrets anywhere", () => {
  const lines: LogLine[] = [];
  const secrets = new Set(["hunter2-token"]);
  const log = redactingLogger(captureLogger(lines), () => secrets);
  log.warn("refused hunter2-token!", {
    token: "anything",
    Authorization: "Bearer x",
    nested: { note: "x hunter2-token y", accessToken: "z" },
    error: new Error("bad hunter2-token"),
    count: 3,
  });
  const line = lines[0];
  assert.ok(line);
  assert.equal(line.message, `refused ${REDACTED}!`);
  assert.deepEqual(line.fields, {
    token: REDACTED,
    Authorization: REDACTED,
    nested: { note: `x ${REDACTED} y`, accessToken: REDACTED },
    error: `Error: bad ${REDACTED}`,
    count: 3,
  });
});

test("a throwing logger does not throw into the runtime", () => {
  const log = redactingLogger(
    {
      debug: () => {
        throw new Error("x");
      },
      info: () => undefined,
      warn: () => undefined,
      error: () => undefined,
    },
    () => [],
  );
  assert.doesNotThrow(() => log.debug("m"));
});
