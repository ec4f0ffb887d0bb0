import type { Readable } from 'node:stream';
import type { ResourceSpec } from './spec/job-spec.js';

/** A message held under a lease. `receipt` identifies this delivery, not the message. */
export interface QueueMessage {
  id: string;
  receipt: string;
  body: string;
  /** How many times the message has been delivered, this delivery included (1 on the first). */
  receiveCount: number;
}

/** Message counts; approximate on transports that can only estimate them. */
export interface QueueCounts {
  visible: number;
  inFlight: number;
  dead: number;
}

/**
 * An at-least-once work queue with visibility leases and a dead-letter destination.
 * A received message stays hidden for `visibilityMs`; the holder extends the lease (heartbeat),
 * acks it when done, or releases it for another receiver. After `maxReceives` deliveries the
 * transport moves it to the dead-letter queue instead of delivering it again.
 */
export interface Queue {
  send(body: string): Promise<string>;
  /** Waits up to `waitMs` for a message; undefined if none arrived. */
  receive(options: { waitMs: number; visibilityMs: number; signal?: AbortSignal }): Promise<QueueMessage | undefined>;
  /** Extends the lease to `visibilityMs` from now; throws LeaseLostError if the receipt is no longer valid. */
  extend(receipt: string, visibilityMs: number): Promise<void>;
  /** Deletes the message; throws LeaseLostError if the receipt is no longer valid. */
  ack(receipt: string): Promise<void>;
  /** Ends the lease so that the message is visible again after `delayMs` (default 0). */
  release(receipt: string, delayMs?: number): Promise<void>;
  /** Puts the message back for later without counting this delivery (used to park a job another agent holds). */
  defer(receipt: string, delayMs: number): Promise<void>;
  /** Moves the held message to the dead-letter queue now (a job given up after its last attempt). */
  deadLetter(receipt: string): Promise<void>;
  counts(): Promise<QueueCounts>;
}

export interface ObjectInfo {
  key: string;
  sizeBytes: number;
  /** When the object was last written (ms since the epoch); set by `list`, for the collector's grace period. */
  modifiedAtMs?: number;
}

/** Options of `Store.list`. */
export interface ListOptions {
  /** Only keys that sort strictly after this one (a whole key, not a prefix), as S3's `StartAfter`. */
  startAfter?: string;
}

/**
 * A key-value object store. Writes are atomic: a reader sees the old object, the new one, or none,
 * never a partial one. Keys are `/`-separated and never start with `/` or contain `..`.
 */
export interface Store {
  /** Writes an object. With `ifAbsent`, throws ConflictError when the key already exists. */
  put(key: string, data: Buffer | string, options?: { ifAbsent?: boolean }): Promise<void>;
  /** Size of an object, or undefined if it does not exist. */
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Reads a whole (small) object; undefined if it does not exist. */
  get(key: string): Promise<Buffer | undefined>;
  /**
   * Streams `body` into the object; it appears only when the stream has ended without error.
   * `sizeBytes`, when known, lets a transport size its upload parts.
   */
  putStream(key: string, body: Readable, options?: { sizeBytes?: number }): Promise<void>;
  /** Streams an object out; throws NotFoundError if it does not exist. */
  getStream(key: string): Promise<Readable>;
  /**
   * Lists the objects whose key starts with `prefix`, sorted by key. With `startAfter`, only keys
   * that sort after it: a reader that saw a listing up to some key reads only what came since.
   */
  list(prefix: string, options?: ListOptions): Promise<ObjectInfo[]>;
  /** Deletes objects; missing keys are not an error. */
  delete(keys: string[]): Promise<void>;
  /**
   * Sets an object's modification time (as `list` reports it) to now without sending its bytes
   * again; false if there is no such object. A save that reuses a blob touches it, so that the
   * collector sees it as recent.
   */
  touch(key: string): Promise<boolean>;
}

/** An agent as Compute sees it. */
export interface AgentInfo {
  id: string;
  /** Where it runs: a pid locally, an instance type and zone on EC2. */
  location: string;
  state: 'starting' | 'idle' | 'busy' | 'running';
  /** The placement profile whose queue it serves (EC2 and the fleet simulator). */
  profileId?: string;
  /** Its instance's type and market, where Compute knows them (EC2 and the fleet simulator), busy or idle. */
  instance?: { type: string; market: 'spot' | 'on-demand' };
}

/** A machine type a job could run on, and its price. */
export interface Offer {
  instanceType: string;
  market: 'spot' | 'on-demand';
  /** USD per hour: the lowest current spot price over the zones, or the on-demand price. */
  pricePerHour: number;
  vcpus: number;
  memoryMiB: number;
  gpu: { name: string; count: number; memoryMiB: number } | null;
}

/**
 * Where jobs with one resource request run: a profile with its own queue (and, on EC2, its own
 * fleet), and the machine types that satisfy it, cheapest first. Locally there is one profile.
 */
export interface Placement {
  profileId: string;
  offers: Offer[];
}

/** Jobs waiting for or held by agents of one profile. */
export interface Demand {
  placement: Placement;
  /** Visible plus in-flight jobs in the profile's queue. */
  backlog: number;
}

/** Starts and lists the machines that run agents. */
export interface Compute {
  /** The profile and machine offers for a resource request; ResourceError if no machine satisfies it. */
  plan(resources: ResourceSpec): Promise<Placement>;
  /** Makes sure enough agents run or start for each profile's backlog, within the configured maximum. */
  ensureCapacity(demand: Demand[]): Promise<void>;
  listAgents(): Promise<AgentInfo[]>;
}
