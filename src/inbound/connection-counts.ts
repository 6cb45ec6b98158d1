// Open connections per client IP, shared by all listeners of a process
// (Postfix: smtpd_client_connection_count_limit, counted by anvil); an IPv6
// client counted by its prefix (limit-key.ts).
import { limitKey } from './limit-key.ts';

export class ConnectionCounts {
  private readonly byIp = new Map<string, number>();

  /** open - count a new connection; returns the IP's count including it. */
  open(ip: string): number {
    const key = limitKey(ip);
    const fromIp = (this.byIp.get(key) ?? 0) + 1;
    this.byIp.set(key, fromIp);
    return fromIp;
  }

  /** close - forget one connection of an IP. */
  close(ip: string): void {
    const key = limitKey(ip);
    const n = (this.byIp.get(key) ?? 0) - 1;
    if (n <= 0) this.byIp.delete(key);
    else this.byIp.set(key, n);
  }

  /** fromIp - open connections of one IP. */
  fromIp(ip: string): number {
    return this.byIp.get(limitKey(ip)) ?? 0;
  }
}
