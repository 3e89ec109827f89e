/**
 * Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
 * Jitter"): the n-th retry (n from 0) waits a uniformly random time in
 * `[0, min(maxMs, initialMs * 2^n))`. Spreads reconnect storms over the whole window.
 */

/**
 * Settings of a {@link Backoff} (and of {@link ConnectOptions.backoff}, the reconnect backoff):
 * the n-th retry (n from 0) waits a uniformly random time in `[0, min(maxMs, initialMs * 2^n))`
 * ("full jitter").
 */
export interface BackoffOptions {
  /** Window of the first retry, in milliseconds (negative values count as 0). Default 500. */
  initialMs?: number;
  /** Cap on the window, in milliseconds (raised to `initialMs` if below it). Default 20000. */
  maxMs?: number;
  /** Uniform random in [0, 1). Default `Math.random`; inject for tests. */
  random?: () => number;
}

/**
 * Time source and timers. The runtime schedules every timer through a Clock so tests can run
 * in virtual time. `now()` must be Unix milliseconds (it is compared with token expiries).
 */
export interface Clock {
  /** The current time in Unix milliseconds. */
  now(): number;
  /** Calls `fn` once after `ms` milliseconds; returns a handle for {@link Clock.clearTimeout}. */
  setTimeout(fn: () => void, ms: number): unknown;
  /**
   * Cancels a timer set by {@link Clock.setTimeout}. The runtime also passes `undefined` and
   * handles of timers that already fired: those must be ignored.
   */
  clearTimeout(handle: unknown): void;
}

/** The real clock: `Date.now` and the global timers. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as number),
};

/** The defaults of {@link BackoffOptions}, in milliseconds. */
export const DEFAULT_BACKOFF = { initialMs: 500, maxMs: 20_000 } as const;

/** The upper bound of the retry window for `attempt` (0-based). */
export function backoffCap(attempt: number, initialMs: number, maxMs: number): number {
  return Math.min(maxMs, initialMs * 2 ** Math.min(Math.max(attempt, 0), 52));
}

/** Stateful backoff: `next()` returns the delay of the next attempt; `reset()` after a success. */
export class Backoff {
  /** Window of the first retry, in milliseconds: `options.initialMs` (default 500), at least 0. */
  readonly initialMs: number;
  /** Cap on the window, in milliseconds: `options.maxMs` (default 20000), at least {@link initialMs}. */
  readonly maxMs: number;
  readonly #random: () => number;
  /** Attempts made since the last reset. */
  attempt = 0;

  /** Every option is optional; see {@link BackoffOptions} for the defaults. */
  constructor(options: BackoffOptions = {}) {
    this.initialMs = Math.max(0, options.initialMs ?? DEFAULT_BACKOFF.initialMs);
    this.maxMs = Math.max(this.initialMs, options.maxMs ?? DEFAULT_BACKOFF.maxMs);
    this.#random = options.random ?? Math.random;
  }

  /** The delay for attempt `attempt`, without advancing. Never negative, never at or above the cap (unless the cap is 0). */
  delay(attempt: number): number {
    const cap = backoffCap(attempt, this.initialMs, this.maxMs);
    const r = Math.min(Math.max(this.#random(), 0), 1);
    return Math.min(Math.floor(r * cap), Math.max(cap - 1, 0));
  }

  /** The delay before the next attempt; advances the attempt counter. */
  next(): number {
    return this.delay(this.attempt++);
  }

  /** Starts over from the first window (sets {@link attempt} to 0), e.g. after a successful connect. */
  reset(): void {
    this.attempt = 0;
  }
}
