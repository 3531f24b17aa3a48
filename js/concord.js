// Concord's JavaScript client (protocol v1, docs/protocol.md): an ES module with no dependencies.
// Browser: <script type="module">import { Device, IndexedDBStore } from "/js/concord.js"</script>
// Node 20+: import { Device, MemoryStore } from "./js/concord.js" (see docs/js-client.md).

export { Device } from "./src/device.js";
export { DEFAULT_CONFIG, DEFAULT_LIMITS } from "./src/engine.js";
export { ApiError, ClientError, LinkClosed, Offline, SignedOut, SyncTimeout } from "./src/errors.js";
export { Backoff, Faults } from "./src/faults.js";
export { HttpApi } from "./src/http.js";
export { IndexedDBStore } from "./src/idb-store.js";
export { PROTOCOL, wsUrl } from "./src/link.js";
export { compareOrder, compareStrings, LamportClock, MAX_SAFE_INT } from "./src/order.js";
export { Replica } from "./src/replica.js";
export { DEFAULT_SCHEMA } from "./src/schema.js";
export { REFRESH_GRACE_MS, Session } from "./src/session.js";
export { EntityState, fold } from "./src/state.js";
export { MemoryStore } from "./src/store.js";
export { compareElements } from "./src/views.js";
