// The default schema (PROTOCOL section 3, version 1), as `GET /v1/schema` returns it.
// The client needs only each field's merge `type` (lww or mv decides how reads list
// heads); `Device.open({schema})` takes another, e.g. the server's own.

const lww = (value, extra = {}) => ({ type: "lww", value, nullable: false, ...extra });

export const DEFAULT_SCHEMA = Object.freeze({
  version: 1,
  entity_types: {
    task: {
      fields: {
        title: lww("string", { max_length: 500 }),
        notes: lww("string", { max_length: 10_000 }),
        done: lww("boolean"),
        due_at: lww("timestamp", { nullable: true }),
        remind_at: lww("timestamp", { nullable: true }),
        position: lww("string", { max_length: 64 }),
        list_id: lww("string", { nullable: true }),
        assignee: { type: "mv", value: "string", nullable: true },
        tags: { type: "set", value: "string", nullable: false, max_length: 64 },
        pomodoros: { type: "counter", value: "integer", nullable: false, max_abs: 1_000_000 },
      },
    },
    list: {
      fields: {
        name: lww("string", { max_length: 200 }),
        archived: lww("boolean"),
      },
    },
  },
});
