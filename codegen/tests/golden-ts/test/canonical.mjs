// The canonical JSON form of decoded values that the Rust side (golden-rust/tests/compat.rs)
// computes too: bigints and 64-bit numbers as decimal strings, bytes as 0x-hex, non-integral
// or huge numbers by their IEEE-754 bits, maps as {"$map": [[k, v], ...]}, no $unknown.

const view = new DataView(new ArrayBuffer(8));

export function canonical(v) {
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") {
    if (Number.isNaN(v)) return "NaN";
    if (v === Infinity) return "Infinity";
    if (v === -Infinity) return "-Infinity";
    if (v === 0 && 1 / v < 0) return "-0";
    if (Number.isInteger(v) && Math.abs(v) <= 2 ** 53) return v;
    view.setFloat64(0, v);
    return "f64:" + view.getBigUint64(0).toString(16).padStart(16, "0");
  }
  if (typeof v === "boolean" || typeof v === "string") return v;
  if (v instanceof Uint8Array) return "0x" + [...v].map((b) => b.toString(16).padStart(2, "0")).join("");
  if (Array.isArray(v)) return v.map(canonical);
  if (v instanceof Map) return { $map: [...v].map(([k, x]) => [canonical(k), canonical(x)]) };
  const out = {};
  for (const k of Object.keys(v).sort()) {
    if (k === "$unknown" || v[k] === undefined) continue;
    out[k] = canonical(v[k]);
  }
  return out;
}

/** Sorted keys and sorted map entries, as a string: equal values give equal strings. */
export function normalized(v) {
  const norm = (x) => {
    if (Array.isArray(x)) return x.map(norm);
    if (x && typeof x === "object") {
      if (Array.isArray(x.$map)) {
        const entries = x.$map.map(norm).map((e) => [JSON.stringify(e), e]);
        entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
        return { $map: entries.map((e) => e[1]) };
      }
      const out = {};
      for (const k of Object.keys(x).sort()) out[k] = norm(x[k]);
      return out;
    }
    return x;
  };
  return JSON.stringify(norm(v));
}

export function hex(bytes) {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export function unhex(s) {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}
