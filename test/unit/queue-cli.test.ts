// The queue CLI's decisions as tables: which messages `queue list --domain/--sender` selects, and why a verb left a message unchanged.
import { describe, expect, it } from 'vitest';
import { selectMessages, whyUnchanged } from '../../src/cli/queue.ts';
import type { QueuedMessageSummary, RecipientState } from '../../src/queue/queue-store.ts';

function message(id: string, mailFrom: string, state: QueuedMessageSummary['state'], recipients: [string, RecipientState][]): QueuedMessageSummary {
  return {
    id,
    mailFrom,
    recipients: recipients.map(([address]) => address),
    size: 1,
    receivedAt: new Date(0),
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
  ] as const)('%s on a %s message: %s (failure: %s)', (verb, state, reason, failed) => {
    expect(whyUnchanged(verb, state)).toEqual({ reason, failed });
  });
});
