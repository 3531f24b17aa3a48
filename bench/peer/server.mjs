// Hocuspocus with its SQLite extension: the peer server of bench/e2e/peer.py.
//   node server.mjs <port> <sqlite file>
// Prints "ready <port>" once listening; stops on SIGTERM (storing pending documents).
import { Server } from "@hocuspocus/server";
import { SQLite } from "@hocuspocus/extension-sqlite";

const [port, database] = [Number(process.argv[2]), process.argv[3]];
const server = new Server({
  port,
  address: "127.0.0.1",
  quiet: true,
  // Defaults, stated: a document is stored 2 s after its last change, at most 10 s after
  // its first unstored one; updates are acknowledged when applied in memory.
  debounce: 2000,
  maxDebounce: 10000,
  extensions: [new SQLite({ database })],
});
await server.listen();
console.log(`ready ${port}`);
