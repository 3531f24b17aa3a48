// The store interface (store.js) over IndexedDB, for browsers. One database per device
// installation: open one Device per database name (two tabs on one name would be two
// writers of one queue; give each its own name, or use one tab).

const STORES = ["meta", "queue", "rejected", "cursors", "states"];
const VERSION = 1;

function promised(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

export class IndexedDBStore {
  /** `name`: the database name; `indexedDB`: the factory (the browser's by default). */
  constructor(name = "concord", { indexedDB = globalThis.indexedDB } = {}) {
    if (!indexedDB) throw new TypeError("no IndexedDB here: use MemoryStore, or pass options.indexedDB");
    this.name = name;
    this.factory = indexedDB;
    this.db = null;
  }

  async open() {
    const request = this.factory.open(this.name, VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      db.createObjectStore("meta", { keyPath: "key" });
      const queue = db.createObjectStore("queue", { keyPath: "pos", autoIncrement: true });
      queue.createIndex("op_id", "op.op_id", { unique: true });
      db.createObjectStore("rejected", { keyPath: "op.op_id" });
      db.createObjectStore("cursors", { keyPath: "space_id" });
      db.createObjectStore("states", { keyPath: "key" });
    };
    this.db = await promised(request);
    const got = {};
    await this._tx("readonly", (tx) => {
      for (const name of STORES) {
        tx.objectStore(name).getAll().onsuccess = (e) => {
          got[name] = e.target.result;
        };
      }
    });
    return {
      meta: Object.fromEntries(got.meta.map((r) => [r.key, r.value])),
      queue: got.queue.map((r) => r.op), // getAll returns them by `pos`: enqueue order
      cursors: Object.fromEntries(got.cursors.map((r) => [r.space_id, r.seq])),
      states: got.states.map(({ key, ...row }) => row),
      rejected: got.rejected,
    };
  }

  /** Run `work(tx)` in one transaction; resolves when it commits, rejects if it aborts. */
  _tx(mode, work) {
    return new Promise((resolve, reject) => {
      const tx = this.db.transaction(STORES, mode);
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
      work(tx);
    });
  }

  putMeta(values) {
    return this._tx("readwrite", (tx) => {
      const meta = tx.objectStore("meta");
      for (const [key, value] of Object.entries(values)) meta.put({ key, value: String(value) });
    });
  }

  enqueue(op, lamport) {
    return this._tx("readwrite", (tx) => {
      tx.objectStore("queue").add({ op });
      tx.objectStore("meta").put({ key: "lamport", value: String(lamport) });
    });
  }

  settle(ackedIds, rejected, states) {
    return this._tx("readwrite", (tx) => {
      const queue = tx.objectStore("queue");
      const unqueue = (opId) => {
        queue.index("op_id").getKey(opId).onsuccess = (e) => {
          if (e.target.result !== undefined) queue.delete(e.target.result);
        };
      };
      for (const opId of ackedIds) unqueue(opId);
      for (const record of rejected) {
        unqueue(record.op.op_id);
        tx.objectStore("rejected").put(record);
      }
      putStates(tx, states);
    });
  }

  applyEvents(spaceId, seq, states) {
    return this._tx("readwrite", (tx) => {
      putStates(tx, states);
      const cursors = tx.objectStore("cursors");
      cursors.get(spaceId).onsuccess = (e) => {
        const held = e.target.result?.seq ?? 0;
        if (seq > held) cursors.put({ space_id: spaceId, seq });
      };
    });
  }

  async close() {
    this.db?.close();
    this.db = null;
  }

  /** Delete a device's database (sign-out for good, or tests). */
  static destroy(name = "concord", { indexedDB = globalThis.indexedDB } = {}) {
    return promised(indexedDB.deleteDatabase(name));
  }
}

function putStates(tx, states) {
  const store = tx.objectStore("states");
  for (const row of states) {
    store.put({ key: `${row.space_id}\n${row.entity_type}\n${row.entity_id}`, ...row });
  }
}
