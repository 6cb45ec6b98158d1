// The queue CLI's decisions as tables: which messages `queue list --domain/--sender` selects, why a verb left a message unchanged, and `queue shape`.
import { describe, expect, it } from 'vitest';
import { selectMessages, whyUnchanged } from '../../src/cli/queue.ts';
import { formatShape, queueShape } from '../../src/cli/queue-shape.ts';
import type { QueuedMessageSummary, RecipientState } from '../../src/queue/queue-store.ts';

function message(id: string, mailFrom: string, state: QueuedMessageSummary['state'], recipients: [string, RecipientState][], receivedAt = new Date(0)): QueuedMessageSummary {
  return {
    id,
    mailFrom,
    recipients: recipients.map(([address]) => address),
    size: 1,
    receivedAt,
    state,
    recipientStates: recipients.map(([address, s]) => ({ address, state: s })),
  };
}

const messages = [
  message('waiting', 'alice@example.org', 'deferred', [['a@temp.test', 'deferred'], ['b@ok.test', 'delivered']]),
  message('sent-part', 'bob@example.org', 'queued', [['c@ok.test', 'delivered'], ['d@Temp.Test', 'queued']]),
  message('report', '', 'queued', [['alice@example.org', 'queued']]),
  message('done', 'Alice@Example.org', 'done', [['e@ok.test', 'delivered']]),
];

describe('selectMessages', () => {
  it.each([
    ['a domain: recipients still to be tried, any case, a final dot ignored', { domain: 'TEMP.test.' }, ['waiting', 'sent-part']],
    ['a domain whose recipients were all delivered in a message not done', { domain: 'ok.test' }, ['done']],
    ['a sender, any case', { sender: 'alice@EXAMPLE.org' }, ['waiting', 'done']],
    ['the null sender', { sender: '<>' }, ['report']],
    ['both', { sender: 'bob@example.org', domain: 'temp.test' }, ['sent-part']],
    ['no filter', {}, ['waiting', 'sent-part', 'report', 'done']],
    ['a domain that is only a suffix', { domain: 'test' }, []],
  ])('%s', (_name, filter, ids) => {
    expect(selectMessages(messages, filter).map((m) => m.id)).toEqual(ids);
  });
});

describe('whyUnchanged', () => {
  it.each([
    ['hold', 'held', 'already held', false],
    ['release', 'queued', 'not held', false],
    ['release', 'deferred', 'not held', false],
    ['retry', 'held', 'held: release it first', true],
    ['delete', undefined, 'no such message in the queue', true],
    ['hold', 'done', 'done: it was delivered or returned', true],
    ['retry', 'queued', 'queued (changed meanwhile?)', true],
    ['bounce', 'deferred', 'an attempt is under way: bounce it again once it ends', true],
    ['bounce', 'done', 'done: it was delivered or returned', true],
  ] as const)('%s on a %s message: %s (failure: %s)', (verb, state, reason, failed) => {
    expect(whyUnchanged(verb, state)).toEqual({ reason, failed });
  });
});

describe('queueShape (qshape)', () => {
  const now = new Date(Date.UTC(2026, 10, 30, 12));
  const minutesAgo = (m: number) => new Date(now.getTime() - m * 60_000);
  const shaped = [
    message('fresh', 'a@x.test', 'queued', [['a@Temp.test', 'queued'], ['b@temp.test', 'queued'], ['c@ok.test', 'delivered']], minutesAgo(1)),
    message('hour', 'a@x.test', 'deferred', [['a@temp.test', 'deferred'], ['d@slow.test', 'deferred']], minutesAgo(61)),
    message('days', 'a@x.test', 'held', [['e@slow.test', 'queued']], minutesAgo(3 * 1440)),
    message('edge', 'a@x.test', 'deferred', [['f@temp.test', 'deferred']], minutesAgo(5)),
  ];

  it('counts each message once per domain it still has recipients in, by age bucket (minutes: ≤5, ≤10 … ≤1280, more)', () => {
    const shape = queueShape(shaped, now);
    expect(shape.total).toEqual([4, 2, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
    expect(shape.rows).toEqual([
      { domain: 'temp.test', counts: [3, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0] },
      { domain: 'slow.test', counts: [2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1] },
    ]);
  });

  it('prints the table as qshape does, counts right-aligned under T and the bucket bounds', () => {
    expect(formatShape(queueShape(shaped, now)).split('\n')).toEqual([
      '          T 5 10 20 40 80 160 320 640 1280 1280+',
      '    TOTAL 4 2  0  0  0  1   0   0   0    0     1',
      'temp.test 3 2  0  0  0  1   0   0   0    0     0',
      'slow.test 2 0  0  0  0  1   0   0   0    0     1',
      '',
    ]);
  });
});
