// RecentBodies: the store's in-memory copies of just-committed bodies,
// bounded by bytes with the oldest out first, served only to a delivery
// leased here while its lease counts.
import { describe, expect, it } from 'vitest';
import { RecentBodies } from '../../src/queue/recent-bodies.ts';

const bytes = (n: number, fill = 0x61) => Buffer.alloc(n, fill);
const LEASE_MS = 60_000;

describe('RecentBodies', () => {
  it('keeps a body made of several chunks, in order, until it is deleted', () => {
    const recent = new RecentBodies(100);
    recent.add('a', [Buffer.from('ab'), Buffer.from('cd')]);
    recent.leased('1', 'a', LEASE_MS);
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
    for (const id of ['a', 'b', 'c', 'huge']) recent.leased(`delivery of ${id}`, id, LEASE_MS);
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
    recent.leased('1', 'a', LEASE_MS);
    expect(recent.bytes).toBe(50);
    expect(recent.get('a')?.[0]?.[0]).toBe(0x62);
    recent.delete('missing');
    expect(recent.bytes).toBe(50);
  });

  it('serves a body only while a delivery of its message is leased here', () => {
    const recent = new RecentBodies(100);
    recent.add('a', [bytes(10)]);
    expect(recent.get('a')).toBeUndefined();
    recent.leased('1', 'a', LEASE_MS);
    recent.leased('2', 'a', LEASE_MS);
    recent.leased('2', 'a', LEASE_MS); // a delivery claimed again counts once
    recent.leaseEnded('1');
    expect(recent.get('a')).toBeDefined();
    recent.leaseEnded('2');
    recent.leaseEnded('2');
    recent.leaseEnded('unknown');
    expect(recent.get('a')).toBeUndefined();
    expect([recent.bytes, recent.leases]).toEqual([10, 0]);
  });

  it('stops serving at half the lease, and forgets leases that lapsed without an end', () => {
    let now = 0;
    const recent = new RecentBodies(100, { now: () => now });
    recent.add('a', [bytes(10)]);
    recent.leased('1', 'a', LEASE_MS);
    now = LEASE_MS / 2 - 1;
    expect(recent.get('a')).toBeDefined();
    now = LEASE_MS / 2;
    expect(recent.get('a')).toBeUndefined();
    // Deliveries whose attempt was never recorded: each new lease sweeps the lapsed ones.
    for (let i = 0; i < 1000; i++) {
      recent.leased(`lost ${i}`, `m${i}`, LEASE_MS);
      now += LEASE_MS;
    }
    expect(recent.leases).toBe(1);
  });

  it('copies a small body cut from a larger buffer, so the limit bounds the memory it holds', () => {
    const recent = new RecentBodies(100_000);
    const socketRead = bytes(65_536);
    const pooled = Buffer.from('a short body');
    recent.add('small', [socketRead.subarray(0, 1000)]);
    recent.add('whole', [socketRead]);
    recent.add('pooled', [pooled]);
    for (const id of ['small', 'whole', 'pooled']) recent.leased(id, id, LEASE_MS);
    expect(recent.get('small')![0]!.buffer.byteLength).toBe(1000);
    expect(recent.get('whole')![0]).toBe(socketRead);
    expect(pooled.buffer.byteLength).toBeGreaterThan(2 * pooled.length); // Node's shared pool
    expect(recent.get('pooled')![0]!.buffer.byteLength).toBe(pooled.length);
  });
});
