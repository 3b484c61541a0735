// Type declarations for axon-client (hand-written; the implementation is src/client.mjs).

/** An error answered by the relay (`code` is the spec's code) or a connection failure (`code` 0). */
export class AxonError extends Error {
  constructor(code: number, message: string, details?: { retryAfterMs?: number | null; id?: Uint8Array | null; subId?: string | null; seq?: number | null });
  readonly code: number;
  /** Milliseconds to wait before retrying (spec §15), when the relay said so. */
  readonly retryAfterMs: number | null;
  /** The event id the error answers, if any. */
  readonly id: Uint8Array | null;
  /** The subscription the error ended, if any. */
  readonly subId: string | null;
  /** Resume point of an overflow (503), if any. */
  readonly seq: number | null;
  static fromCode(code: number, message: string, details?: object): AxonError;
}
export class BadRequestError extends AxonError {}
export class AuthError extends AxonError {}
export class ForbiddenError extends AxonError {}
export class DuplicateError extends AxonError {}
export class ExpiredError extends AxonError {}
export class LeaseLostError extends AxonError {}
export class TooLargeError extends AxonError {}
export class RateLimitedError extends AxonError {}
export class StorageError extends AxonError {}
export class UnavailableError extends AxonError {}
/** {@link Relay.request} got no result within its timeout; code 0. */
export class RequestTimeoutError extends AxonError {
  constructor(message: string, details?: object);
}
/** The connection closed (or could not be opened) before the relay answered; code 0. */
export class ConnectionClosedError extends AxonError {
  constructor(message: string, details?: object);
}

export function bytesToHex(bytes: Uint8Array): string;
export function hexToBytes(hex: string): Uint8Array;

/** An Ed25519 key pair; the secret is the 32-byte seed of an `axon keygen` file. */
export class Key {
  private constructor(seed: Uint8Array | string);
  static generate(): Key;
  /** From the 32-byte seed (bytes or 64 hex characters). Works everywhere. */
  static fromBytes(seed: Uint8Array | string): Key;
  static fromHex(hex: string): Key;
  /** From the text (or bytes) of an `axon keygen` file. */
  static fromKeyFile(text: string | Uint8Array): Key;
  /** Node only: reads an `axon keygen` file. */
  static load(path: string): Promise<Key>;
  /** Node only: writes a key file with mode 0600; refuses to overwrite. */
  save(path: string): Promise<void>;
  toKeyFile(): string;
  secretBytes(): Uint8Array;
  readonly publicKey: Uint8Array;
  readonly publicHex: string;
  sign(message: Uint8Array): Uint8Array;
  x25519Secret(): Uint8Array;
}

/** A tag: `[name, ...values]`. */
export type Tag = [string, ...string[]];

export interface EventFields {
  id: Uint8Array;
  pubkey: Uint8Array;
  created_at: number;
  kind: number;
  content: Uint8Array;
  sig: Uint8Array;
  tags: Tag[];
  seq?: number | null;
}

export class Event implements EventFields {
  constructor(fields: EventFields);
  id: Uint8Array;
  pubkey: Uint8Array;
  created_at: number;
  kind: number;
  content: Uint8Array;
  sig: Uint8Array;
  tags: Tag[];
  /** The relay's seq: null when unknown, 0 for ephemeral events. */
  seq: number | null;
  readonly idHex: string;
  readonly pubkeyHex: string;
  readonly sigHex: string;
  /** The content as UTF-8 text. */
  readonly text: string;
  tag(name: string): string | undefined;
  /** id and signature check (spec §3). */
  verify(): boolean;
  toWire(): object;
  toJSON(): object;
  static fromWire(map: object, seq?: number | null): Event;
}

export interface PublishFields {
  kind: number;
  content?: string | Uint8Array;
  tags?: Tag[];
  /** Unix seconds; default now. */
  createdAt?: number;
  /** Adds an `expires_at` tag this many seconds from now. */
  expiresIn?: number;
}

export interface Limits {
  maxContentBytes: number;
  maxTags: number;
  maxTagValues: number;
  maxTagValueBytes: number;
}

export function signEvent(key: Key, fields: PublishFields, limits?: Limits): Event;

export interface Filter {
  /** Hex prefixes (even length) or byte prefixes. */
  ids?: Array<string | Uint8Array>;
  authors?: Array<string | Uint8Array>;
  kinds?: number[];
  since?: number;
  until?: number;
  /** `{topic: ["hello"]}` or `[{name: "topic", values: ["hello"]}]`. */
  tags?: Record<string, string[] | string> | Array<{ name: string; values: string[] }>;
  limit?: number;
}
export function encodeFilter(filter: Filter): object;

export interface PublishResult {
  id: Uint8Array;
  idHex: string;
  /** The relay's seq (0 for ephemeral events; null for a duplicate). */
  seq: number | null;
  /** True when the relay already stored this event (409). */
  duplicate: boolean;
}

export const END_OF_STORED: unique symbol;
export type SubscriptionItem = Event | typeof END_OF_STORED;

export interface SubscribeOptions {
  /** Replay every stored match with a higher seq, oldest first. */
  afterSeq?: number | null;
  /** Survive disconnects and overflow: reconnect with backoff and resume without gaps. */
  resume?: boolean;
  subId?: string;
}

export interface ConnectOptions {
  /** The relay_url signed into AUTH; default: the info document's relay_url. */
  relayUrl?: string;
  timeoutMs?: number;
  /** Node: client pings (default 20000; 0 = off). */
  pingIntervalMs?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** 429/503 retries of a publish (default 5), waiting retry_after_ms when given. */
  maxRetries?: number;
  /** A WebSocket implementation (default: globalThis.WebSocket, else the `ws` package). */
  WebSocket?: unknown;
}

export interface JobsOptions {
  /** Unfinished leases at once for this member (1..=256, default 1). */
  maxInFlight?: number;
  /** Lease length in seconds (1..=3600, default 60). */
  leaseSecs?: number;
  /** More filter fields (e.g. `{authors: [...]}`) or a list of them; each is limited to the job kinds. */
  filters?: Filter | Filter[];
  /** Only when the group does not exist yet: its queue starts after this seq. */
  afterSeq?: number | null;
  subId?: string;
}

export interface CompleteOptions {
  /** Default: the request's kind + 1000. */
  kind?: number;
  /** Added after the `["e", job id hex]` tag. */
  tags?: Tag[];
  /** 429/503 retries (default: the connect option maxRetries). */
  retries?: number;
}

/** A job offered to this worker under a lease (spec §14). */
export class Job {
  private constructor();
  /** The job request. */
  readonly event: Event;
  /** The job id (the request's event id). */
  readonly id: Uint8Array;
  readonly idHex: string;
  readonly group: string;
  readonly subId: string;
  /** Which offer of this job this is (from 1). */
  readonly attempt: number;
  /** When the lease ends (unix ms); updated by extend(). */
  readonly leaseUntilMs: number;
  /** True once this worker completed, ACKed or NACKed the job. */
  readonly finished: boolean;
  /** False once the subscription holding the lease ended, or the job was finished. */
  readonly held: boolean;
  /** The request's content as UTF-8 text. */
  readonly text: string;
  /** Publishes the result and completes the job in one step; a 409 retry resolves with `duplicate: true`. Rejects with LeaseLostError when the job is no longer this worker's. */
  complete(result?: string | Uint8Array, options?: CompleteOptions): Promise<PublishResult>;
  /** Completes the job without a result. */
  ack(): Promise<void>;
  /** Gives the job back (NACK); offered again after `delaySecs` (default 0). */
  fail(delaySecs?: number): Promise<void>;
  /** Renews the lease from now; resolves the new end (unix ms). */
  extend(leaseSecs?: number): Promise<number>;
  /** Extends the lease every leaseSecs/3 until the returned function is called. */
  keepAlive(leaseSecs?: number): () => void;
}

export interface WorkOptions extends Omit<JobsOptions, 'maxInFlight' | 'subId'> {
  /** Jobs handled at once (the subscription's max_in_flight; default 1). */
  concurrency?: number;
  /** Stop taking jobs; work() resolves once the running handlers have finished. */
  signal?: AbortSignal;
  /** Stop after this many jobs. */
  maxJobs?: number;
  /** The result kind (default: request kind + 1000). */
  resultKind?: number;
  /** NACK delay in seconds after a handler threw, by attempt (default 1, 2, 4, … ≤ 300). */
  retryDelaySecs?: (attempt: number) => number;
  /** Handler failures, lost leases, refused completions. */
  onError?: (error: unknown, job: Job) => void;
}

export interface RequestOptions {
  /** Default 30000. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export type ConnectionState = 'connecting' | 'open' | 'disconnected' | 'reconnecting' | 'closed';

export class Relay {
  readonly url: string;
  readonly key: Key;
  readonly relayUrl: string;
  /** The info document (null when relayUrl was given). */
  readonly info: any;
  readonly state: ConnectionState;
  on(name: 'state', listener: (state: ConnectionState, error: AxonError | null) => void): () => void;
  on(name: 'error', listener: (error: AxonError) => void): () => void;
  publish(fields: PublishFields | Event, options?: { retries?: number }): Promise<PublishResult>;
  /** `ack` completes a job with this event (spec §14; Job.complete does this for you). */
  publishEvent(event: Event | object, options?: { retries?: number; ack?: { sub_id: string; job: Uint8Array } }): Promise<PublishResult>;
  subscribe(filters: Filter | Filter[], options?: SubscribeOptions): AsyncIterableIterator<SubscriptionItem>;
  query(filters: Filter | Filter[], options?: { afterSeq?: number | null }): Promise<Event[]>;
  sendDm(recipient: string | Uint8Array, plaintext: string | Uint8Array, options?: { tags?: Tag[]; kind?: number; expiresIn?: number }): Promise<PublishResult>;
  /** Joins the job queue `group` for job-request kinds (5000–5999): an async iterator of Jobs. */
  jobs(group: string, kinds: number | number[], options?: JobsOptions): AsyncIterableIterator<Job>;
  /**
   * Runs `handler` per job (lease extended while it runs); a string/bytes return value is
   * published as the result, undefined/null ACKs, a throw NACKs with backoff. Resolves the
   * number of offers handled (a job offered again counts again).
   */
  work(group: string, kinds: number | number[], handler: (job: Job) => Promise<string | Uint8Array | null | undefined | void> | string | Uint8Array | null | undefined | void, options?: WorkOptions): Promise<number>;
  /** Publishes a job request and resolves its first result (kind + 1000, `e` tag = the request id). */
  request(fields: PublishFields | Event, options?: RequestOptions): Promise<Event>;
  allow(...keys: Array<string | Uint8Array>): Promise<PublishResult>;
  revoke(...keys: Array<string | Uint8Array>): Promise<PublishResult>;
  allowlist(): Promise<string[]>;
  adminLog(): Promise<Event[]>;
  /** Reconnects if needed (backoff with jitter, honouring retry_after_ms). */
  ensureConnection(): Promise<unknown>;
  close(): void;
}

export function connect(url: string, key: Key, options?: ConnectOptions): Promise<Relay>;
export function fetchInfo(url: string): Promise<any>;
export function infoUrl(url: string): string;

export function sealDm(key: Key, recipient: string | Uint8Array, plaintext: string | Uint8Array): Uint8Array;
export function openDm(key: Key, event: Event): Uint8Array;

export const KIND_DM: 2000;
export const KIND_ALLOW: 9000;
export const KIND_REVOKE: 9001;

export function verifySignature(sig: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean;
export function validateEvent(bytes: Uint8Array): { ok: true; event: object } | { ok: false; code: number; message: string };
export function encodeEvent(event: object): Uint8Array;
export function eventId(event: object): Uint8Array;
export function canonicalPayload(event: object): Uint8Array;
export function canonicalTags(tags: Tag[]): Uint8Array;
