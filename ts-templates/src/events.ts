/** A tiny typed event emitter: `on` returns an unsubscribe function; listener errors are reported, not thrown. */

export type Listener<A extends unknown[]> = (...args: A) => void;
export type EventMap = { [event: string]: unknown[] };

export class Emitter<E extends EventMap> {
  readonly #listeners: { [K in keyof E]?: Set<Listener<E[K]>> } = {};
  readonly #onListenerError: (error: unknown) => void;

  constructor(onListenerError: (error: unknown) => void) {
    this.#onListenerError = onListenerError;
  }

  on<K extends keyof E>(event: K, fn: Listener<E[K]>): () => void {
    const set = (this.#listeners[event] ??= new Set());
    // Wrap so the same function can be added twice and removed independently.
    const entry: Listener<E[K]> = (...args) => fn(...args);
    set.add(entry);
    return () => {
      set.delete(entry);
    };
  }

  count<K extends keyof E>(event: K): number {
    return this.#listeners[event]?.size ?? 0;
  }

  emit<K extends keyof E>(event: K, ...args: E[K]): void {
    const set = this.#listeners[event];
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (error) {
        this.#onListenerError(error);
      }
    }
  }

  clear(): void {
    for (const k in this.#listeners) delete this.#listeners[k];
  }
}
