/**
 * Pluggable logging. The runtime logs through a {@link Logger}; the default writes warnings
 * and errors to the console. Every logger the runtime uses is wrapped by
 * {@link redactingLogger}, so tokens never reach it: fields whose name looks like a secret
 * are replaced, and any occurrence of a known token in a message or string field is masked.
 */

/** Severity of a log entry, lowest first; {@link consoleLogger} writes its level and above. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/**
 * Structured context of a log entry, e.g. `{ method, code, retryInMs }`. Before a
 * {@link Logger} sees them, values under secret-looking names (token, secret, password,
 * authorization, credential) are replaced with "[redacted]", known tokens are masked in
 * strings, and `Error`s become "name: message" strings.
 */
export type LogFields = { readonly [key: string]: unknown };

/**
 * Where the runtime's logs go ({@link ConnectOptions.logger}). The runtime calls every level;
 * filtering is up to the logger ({@link consoleLogger} does it by level). Messages and fields
 * are redacted before they arrive, and a logger that throws is ignored: logging never breaks
 * the connection.
 */
export interface Logger {
  /** Detail for debugging, e.g. frames the runtime ignored. */
  debug(message: string, fields?: LogFields): void;
  /** Normal events: state changes, reconnect delays, GoAway, rate-limited publishes. */
  info(message: string, fields?: LogFields): void;
  /** Problems with one socket, subscription or publish: a dropped socket, a refused or failed subscription, a record that did not decode, a failing token provider. */
  warn(message: string, fields?: LogFields): void;
  /** A connection closed on an error, an undecodable message from the gateway, an event listener that threw. */
  error(message: string, fields?: LogFields): void;
}

const LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/** Minimal console surface (so a test or app can pass its own sink). */
export interface ConsoleLike {
  /** Receives `"[kafkasocks] " + message`, then the fields object when there is one. */
  debug(...args: unknown[]): void;
  /** As {@link ConsoleLike.debug}, for info entries. */
  info(...args: unknown[]): void;
  /** As {@link ConsoleLike.debug}, for warnings. */
  warn(...args: unknown[]): void;
  /** As {@link ConsoleLike.debug}, for errors. */
  error(...args: unknown[]): void;
}

/**
 * A logger writing `level` and above to `sink` (default: warn and above, to `console`);
 * `"silent"` writes nothing. Each message is prefixed with "[kafkasocks] ".
 */
export function consoleLogger(level: LogLevel | "silent" = "warn", sink: ConsoleLike = console): Logger {
  const min = level === "silent" ? LEVELS.length : LEVELS.indexOf(level);
  const make = (l: LogLevel) => (message: string, fields?: LogFields) => {
    if (LEVELS.indexOf(l) >= min) {
      if (fields) sink[l](`[kafkasocks] ${message}`, fields);
      else sink[l](`[kafkasocks] ${message}`);
    }
  };
  return { debug: make("debug"), info: make("info"), warn: make("warn"), error: make("error") };
}

/** A logger that drops everything. */
export const silentLogger: Logger = consoleLogger("silent");

const SECRET_KEY = /token|secret|password|authorization|credential/i;
/** What a redacted value or masked token is replaced with. */
export const REDACTED = "[redacted]";

/**
 * Wraps `inner` so that secrets never reach it: field values under secret-looking names are
 * replaced with "[redacted]", and every string in `secrets()` is masked wherever it appears
 * in the message or in string fields.
 */
export function redactingLogger(inner: Logger, secrets: () => Iterable<string>): Logger {
  const mask = (text: string): string => {
    for (const s of secrets()) if (s) text = text.split(s).join(REDACTED);
    return text;
  };
  const clean = (value: unknown, depth: number): unknown => {
    if (typeof value === "string") return mask(value);
    if (value instanceof Error) return mask(`${value.name}: ${value.message}`);
    if (value && typeof value === "object" && depth < 3 && !ArrayBuffer.isView(value)) {
      const out: { [key: string]: unknown } = {};
      for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEY.test(k) ? REDACTED : clean(v, depth + 1);
      return out;
    }
    return value;
  };
  const make = (l: LogLevel) => (message: string, fields?: LogFields) => {
    try {
      if (fields) inner[l](mask(message), clean(fields, 0) as LogFields);
      else inner[l](mask(message));
    } catch {
      // A throwing logger must not break the connection.
    }
  };
  return { debug: make("debug"), info: make("info"), warn: make("warn"), error: make("error") };
}
