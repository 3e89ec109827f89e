/** Version of this runtime (follows package.json). */
export const RUNTIME_VERSION = "0.1.0";
/** The WebSocket subprotocol, which is also the protocol version. */
export const PROTOCOL = "kafkasocks.v1";
