// Open connections per client IP, shared by all listeners of a process
// (Postfix: smtpd_client_connection_count_limit, counted by anvil).

export class ConnectionCounts {
  private readonly byIp = new Map<string, number>();

  /** open - count a new connection; returns the IP's count including it. */
  open(ip: string): number {
    const fromIp = (this.byIp.get(ip) ?? 0) + 1;
    this.byIp.set(ip, fromIp);
    return fromIp;
  }

  /** close - forget one connection of an IP. */
  close(ip: string): void {
    const n = (this.byIp.get(ip) ?? 0) - 1;
    if (n <= 0) this.byIp.delete(ip);
    else this.byIp.set(ip, n);
  }

  /** fromIp - open connections of one IP. */
  fromIp(ip: string): number {
    return this.byIp.get(ip) ?? 0;
  }
}
