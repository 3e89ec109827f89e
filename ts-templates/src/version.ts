/** Version of this runtime (follows package.json). */
export const RUNTIME_VERSION = "0.1.0";
/** The WebSocket subprotocol, which is also the protocol version. */
export const PROTOCOL = "kafkasocks.v1";
/**
 * The code generation interface this runtime implements: what generated files are written
 * against (`MessageCodec`, `defineService`, the `json` helpers, ...). It changes whenever code
 * generated for an older runtime would no longer work with this one; every generated file
 * checks it at type-check time, so a mismatch is a type error naming the fix (regenerate, or
 * upgrade @kafkasocks/runtime) rather than a failure at run time.
 */
export const CODEGEN_INTERFACE = 1;
