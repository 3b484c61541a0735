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
  publishEvent(event: Event | object, options?: { retries?: number }): Promise<PublishResult>;
  subscribe(filters: Filter | Filter[], options?: SubscribeOptions): AsyncIterableIterator<SubscriptionItem>;
  query(filters: Filter | Filter[], options?: { afterSeq?: number | null }): Promise<Event[]>;
  sendDm(recipient: string | Uint8Array, plaintext: string | Uint8Array, options?: { tags?: Tag[]; kind?: number; expiresIn?: number }): Promise<PublishResult>;
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
