// RecentBodies: the store's in-memory copies of just-committed bodies,
// bounded by bytes with the oldest out first, served only to a delivery
// leased here.
import { describe, expect, it } from 'vitest';
import { RecentBodies } from '../../src/queue/recent-bodies.ts';

const bytes = (n: number, fill = 0x61) => Buffer.alloc(n, fill);

describe('RecentBodies', () => {
  it('keeps a body made of several chunks, in order, until it is deleted', () => {
    const recent = new RecentBodies(100);
    recent.add('a', [Buffer.from('ab'), Buffer.from('cd')]);
    recent.leased('1', 'a');
    expect(Buffer.concat(recent.get('a') ?? []).toString()).toBe('abcd');
    expect(recent.bytes).toBe(4);
    recent.delete('a');
    expect(recent.get('a')).toBeUndefined();
    expect(recent.bytes).toBe(0);
  });

  it('drops the oldest bodies first when a new one passes the limit, and never keeps one larger than the limit', () => {
    const recent = new RecentBodies(100);
    recent.add('a', [bytes(40)]);
    recent.add('b', [bytes(40)]);
    recent.add('c', [bytes(40)]);
    for (const id of ['a', 'b', 'c', 'huge']) recent.leased(`delivery of ${id}`, id);
    expect([recent.get('a'), recent.get('b') !== undefined, recent.get('c') !== undefined]).toEqual([undefined, true, true]);
    expect(recent.bytes).toBe(80);
    recent.add('huge', [bytes(101)]);
    expect(recent.get('huge')).toBeUndefined();
    expect(recent.bytes).toBe(80);
  });

  it('counts a body added twice under one id once', () => {
    const recent = new RecentBodies(100);
    recent.add('a', [bytes(30)]);
    recent.add('a', [bytes(50, 0x62)]);
    recent.leased('1', 'a');
    expect(recent.bytes).toBe(50);
    expect(recent.get('a')?.[0]?.[0]).toBe(0x62);
    recent.delete('missing');
    expect(recent.bytes).toBe(50);
  });

  it('serves a body only while a delivery of its message is leased here', () => {
    const recent = new RecentBodies(100);
    recent.add('a', [bytes(10)]);
    expect(recent.get('a')).toBeUndefined();
    recent.leased('1', 'a');
    recent.leased('2', 'a');
    recent.leased('2', 'a'); // a claim seen twice counts once
    recent.leaseEnded('1');
    expect(recent.get('a')).toBeDefined();
    recent.leaseEnded('2');
    recent.leaseEnded('2');
    recent.leaseEnded('unknown');
    expect(recent.get('a')).toBeUndefined();
    expect(recent.bytes).toBe(10);
  });
});
