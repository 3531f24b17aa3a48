// Type declarations of concord.js (hand-written; the module has no build step).

// ------------------------------------------------------------------ wire shapes

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type Kind = "set" | "inc" | "add" | "remove" | "delete" | "restore";
export type Role = "owner" | "editor" | "reader";

/** An operation as this device queues and pushes it (docs/protocol.md section 2). */
export interface Operation {
  op_id: string;
  space_id: string;
  entity_type: string;
  entity_id: string;
  kind: Kind;
  field: string | null;
  value: Json;
  pred: string[];
  lamport: number;
  client_time?: string;
}

/** An operation as stored: server kinds (`reminder_fired`, `member_added`...) included. */
export interface Event {
  seq: number;
  op_id: string;
  space_id: string;
  entity_type: string;
  entity_id: string;
  kind: string;
  field?: string | null;
  value?: Json;
  pred?: string[];
  lamport: number;
  client_time?: string | null;
  device_id: string;
  user_id: string | null;
  recorded_at: string;
  schema_version: number;
}

export interface ErrorBody {
  code: string;
  message: string;
  retryable: boolean;
  retry_after_ms?: number | null;
}

export interface Head {
  op_id: string;
  value: Json;
  device_id: string;
  lamport: number;
}

/** `heads` and `conflicted` are given for lww and mv fields only. */
export interface FieldView {
  value: Json;
  heads?: Head[];
  conflicted?: boolean;
}

/** An entity as reads report it (the server's entity read without `seq`). */
export interface EntityView {
  entity_type: string;
  entity_id: string;
  deleted: boolean;
  edited_while_deleted: boolean;
  fields: Record<string, FieldView>;
}

export interface Notification {
  id: string;
  space_id: string;
  entity_type: string;
  entity_id: string;
  kind: string;
  fire_at: string;
  fired_at: string;
}

export interface Limits {
  max_message_bytes: number;
  max_ops_per_push: number;
  max_value_bytes: number;
  max_pred: number;
  max_subscriptions: number;
  max_pull_limit: number;
  lamport_headroom: number;
}

export interface AuthAnswer {
  user_id: string;
  device_id: string;
  access_token: string;
  refresh_token: string;
  access_expires_at: string;
  personal_space_id: string;
}

export interface InvitationCreated {
  invitation_id: string;
  code: string;
  expires_at: string;
}

/** The answer of `invite` for an email that is already a member: its role, set at once. */
export interface MemberRole {
  space_id: string;
  user_id: string;
  role: Role;
}

export interface InvitationInfo {
  invitation_id: string;
  email: string;
  role: Role;
  invited_by: string;
  created_at: string;
  expires_at: string;
}

export interface SpaceInfo {
  space_id: string;
  name: string;
  role: Role;
  personal?: boolean;
}

export interface FieldSpec {
  type: "lww" | "mv" | "counter" | "set";
  value?: string;
  nullable?: boolean;
  max_length?: number | null;
  max_abs?: number | null;
}

export interface EntityTypeSpec {
  fields: Record<string, FieldSpec>;
}

export interface Schema {
  version: number;
  entity_types: Record<string, EntityTypeSpec>;
}

// ------------------------------------------------------------------ stores

/** A stored entity state: `state` is `EntityState.toJSON()`. */
export interface StateRow {
  space_id: string;
  entity_type: string;
  entity_id: string;
  state: unknown;
}

export interface RejectedOp {
  op: Operation;
  code: string;
  message: string;
  rejected_at: string;
}

export interface Snapshot {
  meta: Record<string, string>;
  queue: Operation[];
  cursors: Record<string, number>;
  states: StateRow[];
  rejected: RejectedOp[];
}

/** Where a device keeps its queue, cursors, states and session; each write all or nothing. */
export interface Store {
  open(): Promise<Snapshot>;
  putMeta(values: Record<string, string>): Promise<void>;
  enqueue(op: Operation, lamport: number): Promise<void>;
  settle(ackedIds: string[], rejected: RejectedOp[], states: StateRow[]): Promise<void>;
  applyEvents(spaceId: string, seq: number, states: StateRow[]): Promise<void>;
  close(): Promise<void>;
}

export class MemoryStore implements Store {
  constructor();
  open(): Promise<Snapshot>;
  putMeta(values: Record<string, string>): Promise<void>;
  enqueue(op: Operation, lamport: number): Promise<void>;
  settle(ackedIds: string[], rejected: RejectedOp[], states: StateRow[]): Promise<void>;
  applyEvents(spaceId: string, seq: number, states: StateRow[]): Promise<void>;
  close(): Promise<void>;
}

export class IndexedDBStore implements Store {
  constructor(name?: string, options?: { indexedDB?: IDBFactory });
  readonly name: string;
  open(): Promise<Snapshot>;
  putMeta(values: Record<string, string>): Promise<void>;
  enqueue(op: Operation, lamport: number): Promise<void>;
  settle(ackedIds: string[], rejected: RejectedOp[], states: StateRow[]): Promise<void>;
  applyEvents(spaceId: string, seq: number, states: StateRow[]): Promise<void>;
  close(): Promise<void>;
  static destroy(name?: string, options?: { indexedDB?: IDBFactory }): Promise<void>;
}

// ------------------------------------------------------------------ faults and config

export interface FaultOptions {
  dropResults?: number;
  flaky?: number;
  cutAfterSend?: number;
  dropRefreshResults?: number;
  proactiveRefresh?: boolean;
  random?: () => number;
}

/** Fault switches; change them while the device runs. */
export class Faults {
  constructor(options?: FaultOptions);
  /** `push_result` messages to drop after the server stored the push (the link is cut). */
  dropResults: number;
  /** Probability (0..1) of dropping each `push_result` the same way. */
  flaky: number;
  /** Pushes after which the link is cut before any answer. */
  cutAfterSend: number;
  /** Refresh answers to lose after the server rotated the pair. */
  dropRefreshResults: number;
  /** Renew on `auth_expiring` (off: tokens expire under a queue). */
  proactiveRefresh: boolean;
  random: () => number;
  takeDrop(): boolean;
  takeCut(): boolean;
  takeRefreshDrop(): boolean;
}

export class Backoff {
  constructor(baseMs?: number, capMs?: number, random?: () => number);
  baseMs: number;
  capMs: number;
  attempt: number;
  next(): number;
  reset(): void;
}

export interface Config {
  batchSize: number;
  pushIntervalMs: number;
  pushTimeoutMs: number;
  backoffBaseMs: number;
  backoffCapMs: number;
  refreshLeadMs: number | null;
}

export const DEFAULT_CONFIG: Readonly<Config>;
export const DEFAULT_LIMITS: Readonly<Limits>;
export const DEFAULT_SCHEMA: Readonly<Schema>;
export const PROTOCOL: "concord.v1.json";
export const REFRESH_GRACE_MS: number;
export const MAX_SAFE_INT: number;

// ------------------------------------------------------------------ errors

export class ClientError extends Error {}

export class ApiError extends ClientError {
  constructor(
    status: number,
    code: string,
    message: string,
    options?: { retryable?: boolean; retryAfterMs?: number | null },
  );
  /** HTTP status; 0 when nothing answered. */
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  readonly retryable: boolean;
  readonly retryAfterMs: number | null;
}

export class SignedOut extends ClientError {}
export class SyncTimeout extends ClientError {}
export class Offline extends ClientError {}

export class LinkClosed extends ClientError {
  constructor(code: number | null, reason?: string);
  readonly code: number | null;
  readonly reason: string;
}

// ------------------------------------------------------------------ the device

export interface OpenOptions {
  /** Default: the page's origin. */
  baseUrl?: string;
  /** Default: a new MemoryStore (nothing survives the process). */
  store?: Store;
  email?: string | null;
  password?: string | null;
  deviceName?: string;
  register?: boolean;
  online?: boolean;
  config?: Partial<Config>;
  faults?: Faults;
  schema?: Schema;
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
}

export interface SetOptions {
  /** false: supersede only the winning head, leaving a conflict in place. */
  resolve?: boolean;
  /** The op_ids this set supersedes (overrides `resolve`). */
  pred?: string[] | null;
}

export type Status = "offline" | "connecting" | "online" | "signed_out";

export interface DeviceEvents {
  change: { space_id: string; entities: { entity_type: string; entity_id: string }[] };
  events: { space_id: string; events: Event[] };
  ack: { op: Operation; status: "applied" | "duplicate"; seq: number | null };
  rejected: RejectedOp & { retryable: false };
  caught_up: { space_id: string; seq: number };
  notification: Notification;
  status: Status;
  auth_ok: { token_expires_at: string };
  space_lost: { space_id: string };
  signed_out: SignedOut;
  fault: { fault: "result_dropped" | "cut_after_send"; batch_id: string };
  server_error: { error: ErrorBody; ref: string | null };
  error: unknown;
}

export interface SyncStats {
  connects: number;
  reconnects: number;
  pushes: number;
  events: number;
  renewals: number;
  authOk: number;
  resultsDropped: number;
  linksCut: number;
  mixedPushes: number;
  /** Op results by status (`applied`, `duplicate`, `rejected`) or retryable code. */
  results: Record<string, number>;
}

export class Device {
  static open(options?: OpenOptions): Promise<Device>;
  readonly api: HttpApi;
  readonly store: Store;
  readonly session: Session;
  readonly userId: string;
  readonly deviceId: string;
  readonly personalSpaceId: string;
  readonly stats: SyncStats;
  readonly notifications: Notification[];
  readonly faults: Faults;
  readonly status: Status;
  readonly online: boolean;
  readonly connected: boolean;
  close(): Promise<void>;
  token(): Promise<string>;

  set(
    spaceId: string,
    entityType: string,
    entityId: string,
    field: string,
    value: Json,
    options?: SetOptions,
  ): Promise<string>;
  inc(spaceId: string, entityType: string, entityId: string, field: string, delta: number): Promise<string>;
  add(
    spaceId: string,
    entityType: string,
    entityId: string,
    field: string,
    element: string | number,
  ): Promise<string>;
  remove(
    spaceId: string,
    entityType: string,
    entityId: string,
    field: string,
    element: string | number,
  ): Promise<string>;
  delete(spaceId: string, entityType: string, entityId: string): Promise<string>;
  restore(spaceId: string, entityType: string, entityId: string): Promise<string>;

  state(spaceId: string, entityType: string, entityId: string): EntityView | null;
  fieldHeads(spaceId: string, entityType: string, entityId: string, field: string): string[];
  entityIds(spaceId: string, entityType: string): string[];
  pending(): Operation[];
  rejected(): RejectedOp[];
  cursor(spaceId: string): number;

  on<K extends keyof DeviceEvents>(name: K, listener: (payload: DeviceEvents[K]) => void): () => void;

  goOffline(): void;
  goOnline(): void;
  subscribe(spaceId: string): void;
  unsubscribe(spaceId: string): void;
  sync(options?: { withinMs?: number }): Promise<void>;

  authed<T>(call: (token: string) => Promise<T>): Promise<T>;
  createSpace(name: string): Promise<string>;
  spaces(): Promise<SpaceInfo[]>;
  invite(spaceId: string, email: string, role: Role): Promise<InvitationCreated | MemberRole>;
  acceptInvitation(code: string): Promise<{ space_id: string; role: Role }>;
  invitations(spaceId: string): Promise<InvitationInfo[]>;
  cancelInvitation(spaceId: string, invitationId: string): Promise<null>;
  removeMember(spaceId: string, userId: string): Promise<null>;
  serverState(
    spaceId: string,
    entityType: string,
    entityId: string,
  ): Promise<(EntityView & { seq: number }) | null>;
  logout(): Promise<void>;
}

export class Session {
  constructor(
    api: HttpApi,
    store: Store,
    login?: { email?: string | null; password?: string | null; deviceName?: string; register?: boolean },
  );
  readonly userId: string;
  readonly deviceId: string;
  readonly personalSpaceId: string;
  readonly token: string;
  readonly refreshToken: string;
  /** Epoch ms. */
  readonly expiresAt: number;
  readonly generation: number;
  readonly refreshes: number;
  /** Refreshes re-presented after a lost answer. */
  readonly refreshRetries: number;
  /** Sign-ins after the server ended the session. */
  readonly signIns: number;
  readonly lifetime: number;
  expiresIn(): number;
  start(meta: Record<string, string>): Promise<void>;
  refresh(seenGeneration?: number | null): Promise<string>;
  freshToken(marginMs?: number): Promise<string>;
}

export class HttpApi {
  constructor(
    baseUrl: string,
    options?: { fetch?: typeof fetch; faults?: Faults | null; timeoutMs?: number },
  );
  readonly baseUrl: string;
  call(
    method: string,
    path: string,
    options?: { token?: string | null; body?: unknown; query?: Record<string, unknown> | null },
  ): Promise<any>;
  register(email: string, password: string, deviceName: string): Promise<AuthAnswer>;
  login(email: string, password: string, deviceName: string, deviceId?: string | null): Promise<AuthAnswer>;
  refresh(refreshToken: string): Promise<AuthAnswer>;
  logout(token: string): Promise<null>;
  devices(token: string): Promise<unknown[]>;
  revokeDevice(token: string, deviceId: string): Promise<null>;
  createSpace(token: string, name: string): Promise<string>;
  spaces(token: string): Promise<SpaceInfo[]>;
  invite(token: string, spaceId: string, email: string, role: Role): Promise<InvitationCreated | MemberRole>;
  acceptInvitation(token: string, code: string): Promise<{ space_id: string; role: Role }>;
  invitations(token: string, spaceId: string): Promise<InvitationInfo[]>;
  cancelInvitation(token: string, spaceId: string, invitationId: string): Promise<null>;
  removeMember(token: string, spaceId: string, userId: string): Promise<null>;
  push(
    token: string,
    ops: Operation[],
    batchId?: string,
  ): Promise<{ batch_id: string | null; server_lamport: number; results: unknown[] }>;
  pullAll(token: string, spaceId: string, after?: number): Promise<Event[]>;
  entity(
    token: string,
    spaceId: string,
    entityType: string,
    entityId: string,
    options?: { asOfSeq?: number | null },
  ): Promise<(EntityView & { seq: number }) | null>;
  history(token: string, spaceId: string, entityType: string, entityId: string): Promise<Event[]>;
  reminders(token: string, spaceId: string): Promise<unknown[]>;
  schema(): Promise<Schema>;
  all<T = unknown>(path: string, token: string, key: string, query?: Record<string, unknown>): Promise<T[]>;
}

// ------------------------------------------------------------------ merge rules

/** What EntityState reads of an op or event. */
export interface MergeOp {
  op_id: string;
  entity_type: string;
  entity_id: string;
  kind: string;
  field?: string | null;
  value?: Json;
  pred?: string[];
  lamport: number;
  device_id?: string;
}

export class EntityState {
  constructor(entityType: string, entityId: string);
  readonly entity_type: string;
  readonly entity_id: string;
  apply(op: MergeOp): { applied: boolean; conflicted: boolean };
  applyAll(ops: Iterable<MergeOp>): { applied: boolean; conflicted: boolean };
  copy(): EntityState;
  holds(opId: string): boolean;
  readonly hasClientEvents: boolean;
  readonly lastLamport: number;
  fieldHeads(field: string): string[];
  liveAdds(field: string, element: string | number): string[];
  lifecycleHeads(): string[];
  deletedBy(): MergeOp | null;
  view(spec?: EntityTypeSpec | null): EntityView;
  toJSON(): unknown;
  static fromJSON(data: unknown): EntityState;
}

/** Apply ops in order, grouped by entity: keys are `${entity_type}\n${entity_id}`. */
export function fold(ops: Iterable<MergeOp>): Map<string, EntityState>;

export class Replica {
  constructor(deviceId: string, options?: { lamport?: number; schema?: Schema });
  readonly clock: LamportClock;
  readonly pending: Map<string, Operation>;
  view(spaceId: string, entityType: string, entityId: string): EntityView | null;
  fieldHeads(spaceId: string, entityType: string, entityId: string, field: string): string[];
  entityIds(spaceId: string, entityType: string): string[];
}

export class LamportClock {
  constructor(value?: number);
  value: number;
  observe(n: number): void;
  tick(): number;
}

/** Order by `(lamport, op_id)`: -1, 0 or 1. */
export function compareOrder(
  a: { lamport: number; op_id: string },
  b: { lamport: number; op_id: string },
): number;
/** Compare strings by Unicode code point (as Python does): -1, 0 or 1. */
export function compareStrings(a: string, b: string): number;
/** Set elements in reads: integers ascending, then strings by code point. */
export function compareElements(a: unknown, b: unknown): number;
/** `http(s)://host` -> `ws(s)://host/v1/sync`. */
export function wsUrl(baseUrl: string): string;
