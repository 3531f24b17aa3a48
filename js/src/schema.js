// The default schema (docs/protocol.md section 3, version 1), exactly as `GET /v1/schema` returns
// it. The client needs only each field's merge `type` (lww or mv decides how reads list
// heads); `Device.open({schema})` takes another, e.g. the server's own.

const field = (type, value, { nullable = false, max_length = null, max_abs = null } = {}) => ({
  type,
  value,
  nullable,
  max_length,
  max_abs,
});

export const DEFAULT_SCHEMA = Object.freeze({
  version: 1,
  entity_types: {
    task: {
      fields: {
        title: field("lww", "string", { max_length: 500 }),
        notes: field("lww", "string", { max_length: 10_000 }),
        done: field("lww", "boolean"),
        due_at: field("lww", "timestamp", { nullable: true }),
        remind_at: field("lww", "timestamp", { nullable: true }),
        position: field("lww", "string", { max_length: 64 }),
        list_id: field("lww", "string", { nullable: true }),
        assignee: field("mv", "string", { nullable: true }),
        tags: field("set", "string", { max_length: 64 }),
        pomodoros: field("counter", "integer", { max_abs: 1_000_000 }),
      },
    },
    list: {
      fields: {
        name: field("lww", "string", { max_length: 200 }),
        archived: field("lww", "boolean"),
      },
    },
  },
});
