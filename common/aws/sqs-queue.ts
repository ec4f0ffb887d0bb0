import { randomUUID } from 'node:crypto';
import {
  ChangeMessageVisibilityCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SendMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { LeaseLostError } from '../errors.js';
import type { Queue, QueueCounts, QueueMessage, Store } from '../ports.js';
import { awsCode, wrapAws } from './errors.js';

/** SQS refuses bodies over 256 KiB; larger ones travel as a pointer to the Store (claim check). */
const CLAIM_OVER_BYTES = 200 * 1024;
/** SQS holds a message at most 12 hours after it was received. */
const SQS_VISIBILITY_CAP_MS = 12 * 3600 * 1000;

interface Claim {
  dstackClaim: string;
}

export interface SqsQueueOptions {
  sqs: SQSClient;
  queueUrl: string;
  dlqUrl: string;
  /** Where bodies too large for SQS are kept. */
  claims: Store;
  /** The visibility cap (12 h on SQS; shorter in tests). */
  visibilityCapMs?: number;
}

interface Pending {
  body: string;
  resolve: (id: string) => void;
  reject: (e: unknown) => void;
}

/**
 * The Queue on SQS: long polling, leases through ChangeMessageVisibility, dead-lettering through the
 * queue's RedrivePolicy, batched sends (sends in the same tick go as one SendMessageBatch), and
 * claim checks for large bodies.
 *
 * A lease cannot outlive SQS's 12-hour visibility cap. Near the cap, `extend` hands the message
 * over to a fresh copy, delayed 15 minutes, and deletes the old one; from then on the job is held by
 * the agent's heartbeat in the Store alone. An agent that receives such a copy while the holder is
 * still heartbeating parks it again (the agent's rule: never run a job whose holder is alive).
 */
export class SqsQueue implements Queue {
  private batch: Pending[] = [];
  /** Per held receipt: when it was received and the body as it travels (a claim pointer for large bodies). */
  private readonly held = new Map<string, { receivedAt: number; wire: string; handedOver: boolean }>();

  constructor(private readonly o: SqsQueueOptions) {}

  async send(body: string): Promise<string> {
    let wire = body;
    if (Buffer.byteLength(body) > CLAIM_OVER_BYTES) {
      const key = `claims/${randomUUID()}.json`;
      await this.o.claims.put(key, body);
      wire = JSON.stringify({ dstackClaim: key } satisfies Claim);
    }
    return this.enqueue(wire, 0);
  }

  private enqueue(body: string, delaySec: number): Promise<string> {
    if (delaySec > 0) return this.sendBatch([{ body, delaySec }]).then((ids) => ids[0] ?? '');
    return new Promise((resolve, reject) => {
      this.batch.push({ body, resolve, reject });
      if (this.batch.length === 1) setImmediate(() => void this.flush());
      if (this.batch.length >= 10) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    const items = this.batch.splice(0, 10);
    if (items.length === 0) return;
    try {
      const ids = await this.sendBatch(items.map((i) => ({ body: i.body, delaySec: 0 })));
      items.forEach((item, n) => item.resolve(ids[n] ?? ''));
    } catch (e) {
      for (const item of items) item.reject(e);
    }
    if (this.batch.length > 0) void this.flush();
  }

  private async sendBatch(items: Array<{ body: string; delaySec: number }>): Promise<string[]> {
    try {
      const r = await this.o.sqs.send(
        new SendMessageBatchCommand({
          QueueUrl: this.o.queueUrl,
          Entries: items.map((item, n) => ({ Id: String(n), MessageBody: item.body, DelaySeconds: item.delaySec })),
        }),
      );
      if ((r.Failed ?? []).length > 0) {
        const f = r.Failed?.[0];
        throw wrapAws(Object.assign(new Error(f?.Message ?? 'send failed'), { name: f?.Code ?? 'SendFailed' }), 'send');
      }
      const byId = new Map((r.Successful ?? []).map((s) => [s.Id, s.MessageId ?? '']));
      return items.map((_, n) => byId.get(String(n)) ?? '');
    } catch (e) {
      throw wrapAws(e, 'send');
    }
  }

  async receive(options: { waitMs: number; visibilityMs: number; signal?: AbortSignal }): Promise<QueueMessage | undefined> {
    const deadline = Date.now() + options.waitMs;
    for (;;) {
      const waitSec = Math.max(0, Math.min(20, Math.ceil((deadline - Date.now()) / 1000)));
      let r;
      try {
        r = await this.o.sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: this.o.queueUrl,
            MaxNumberOfMessages: 1,
            WaitTimeSeconds: waitSec,
            VisibilityTimeout: Math.max(1, Math.ceil(options.visibilityMs / 1000)),
            MessageSystemAttributeNames: ['ApproximateReceiveCount'],
          }),
          options.signal ? { abortSignal: options.signal } : {},
        );
      } catch (e) {
        if (options.signal?.aborted) return undefined;
        throw wrapAws(e, 'receive');
      }
      const m = r.Messages?.[0];
      if (m?.ReceiptHandle && m.Body !== undefined) {
        this.held.set(m.ReceiptHandle, { receivedAt: Date.now(), wire: m.Body, handedOver: false });
        return {
          id: m.MessageId ?? '',
          receipt: m.ReceiptHandle,
          body: await this.unclaim(m.Body),
          receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? '1'),
        };
      }
      if (Date.now() >= deadline || options.signal?.aborted) return undefined;
    }
  }

  private async unclaim(body: string): Promise<string> {
    if (!body.startsWith('{"dstackClaim"')) return body;
    const claim = JSON.parse(body) as Claim;
    const data = await this.o.claims.get(claim.dstackClaim);
    if (!data) throw new LeaseLostError(`claim-checked message body ${claim.dstackClaim} is missing from the store`);
    return data.toString('utf8');
  }

  async extend(receipt: string, visibilityMs: number): Promise<void> {
    const h = this.held.get(receipt);
    if (h?.handedOver) return;
    const cap = this.o.visibilityCapMs ?? SQS_VISIBILITY_CAP_MS;
    if (h && Date.now() - h.receivedAt + visibilityMs > cap - 1000) {
      // The copy waits as long as one lease: if this agent dies now, the job is found that much later.
      await this.enqueue(h.wire, Math.min(900, Math.ceil(visibilityMs / 1000)));
      await this.deleteQuietly(receipt);
      h.handedOver = true;
      return;
    }
    await this.change(receipt, visibilityMs);
  }

  async defer(receipt: string, delayMs: number): Promise<void> {
    const h = this.held.get(receipt);
    this.held.delete(receipt);
    if (!h) throw new LeaseLostError('defer: this receipt is not held here');
    await this.enqueue(h.wire, Math.min(900, Math.ceil(delayMs / 1000)));
    await this.deleteQuietly(receipt);
  }

  private async change(receipt: string, visibilityMs: number): Promise<void> {
    try {
      await this.o.sqs.send(
        new ChangeMessageVisibilityCommand({ QueueUrl: this.o.queueUrl, ReceiptHandle: receipt, VisibilityTimeout: Math.ceil(visibilityMs / 1000) }),
      );
    } catch (e) {
      throw this.leaseError(e, 'extend');
    }
  }

  private leaseError(e: unknown, what: string): Error {
    const code = awsCode(e);
    if (code === 'ReceiptHandleIsInvalid' || code === 'InvalidParameterValue' || code === 'MessageNotInflight' || code.includes('ReceiptHandle')) {
      return new LeaseLostError(`${what}: the lease has lapsed (${code})`, { cause: e });
    }
    return wrapAws(e, what);
  }

  async ack(receipt: string): Promise<void> {
    const h = this.held.get(receipt);
    this.held.delete(receipt);
    // A handed-over message was deleted already; its delayed copy is dropped by whoever receives it.
    if (h?.handedOver) return;
    try {
      await this.o.sqs.send(new DeleteMessageCommand({ QueueUrl: this.o.queueUrl, ReceiptHandle: receipt }));
    } catch (e) {
      throw this.leaseError(e, 'ack');
    }
  }

  private async deleteQuietly(receipt: string): Promise<void> {
    await this.o.sqs.send(new DeleteMessageCommand({ QueueUrl: this.o.queueUrl, ReceiptHandle: receipt })).catch(() => undefined);
  }

  async release(receipt: string, delayMs = 0): Promise<void> {
    const h = this.held.get(receipt);
    this.held.delete(receipt);
    if (h?.handedOver) {
      await this.enqueue(h.wire, Math.min(900, Math.ceil(delayMs / 1000)));
      return;
    }
    await this.change(receipt, delayMs);
  }

  async deadLetter(receipt: string): Promise<void> {
    const h = this.held.get(receipt);
    this.held.delete(receipt);
    if (!h) throw new LeaseLostError('deadLetter: this receipt is not held here');
    try {
      await this.o.sqs.send(new SendMessageCommand({ QueueUrl: this.o.dlqUrl, MessageBody: h.wire }));
    } catch (e) {
      throw wrapAws(e, 'dead-letter');
    }
    if (h.handedOver) return;
    try {
      await this.o.sqs.send(new DeleteMessageCommand({ QueueUrl: this.o.queueUrl, ReceiptHandle: receipt }));
    } catch (e) {
      throw this.leaseError(e, 'dead-letter');
    }
  }

  async counts(): Promise<QueueCounts> {
    const names = ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible', 'ApproximateNumberOfMessagesDelayed'] as const;
    try {
      const [main, dead] = await Promise.all(
        [this.o.queueUrl, this.o.dlqUrl].map((QueueUrl) => this.o.sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: [...names] }))),
      );
      const n = (r: typeof main, k: (typeof names)[number]): number => Number(r?.Attributes?.[k] ?? 0);
      return {
        visible: n(main, 'ApproximateNumberOfMessages') + n(main, 'ApproximateNumberOfMessagesDelayed'),
        inFlight: n(main, 'ApproximateNumberOfMessagesNotVisible'),
        dead: n(dead, 'ApproximateNumberOfMessages'),
      };
    } catch (e) {
      throw wrapAws(e, 'counts');
    }
  }
}
