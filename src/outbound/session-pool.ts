// Idle outbound sessions kept for reuse: several messages to one next hop
// share a connection (STARTTLS once, then RSET between transactions), like
// Postfix's connection cache (smtp_connection_cache_on_demand). A session is
// keyed by everything that decided how it was opened (host, address, port,
// TLS level, credentials), so a reused session always meets the policy the
// new delivery asks for. Idle sessions are closed after `idleMs`.
import type { OutboundSession } from './smtp-session.ts';

interface Idle {
  session: OutboundSession;
  timer: NodeJS.Timeout;
}

export class SessionPool {
  private readonly idle = new Map<string, Idle[]>();

  constructor(private readonly options: { idleMs: number; maxIdlePerKey: number }) {}

  /** take - an idle session for this key that still answers RSET, or undefined. */
  async take(key: string): Promise<OutboundSession | undefined> {
    for (;;) {
      const list = this.idle.get(key);
      const entry = list?.pop();
      if (!entry) return undefined;
      if (list!.length === 0) this.idle.delete(key);
      clearTimeout(entry.timer);
      if (await entry.session.reset()) return entry.session;
      entry.session.close();
    }
  }

  /** give - keep a session for the next delivery to the same key, or close it. */
  give(key: string, session: OutboundSession): void {
    const list = this.idle.get(key) ?? [];
    if (!session.usable || list.length >= this.options.maxIdlePerKey) return session.close();
    const timer = setTimeout(() => {
      const current = this.idle.get(key);
      const index = current?.findIndex((e) => e.session === session) ?? -1;
      if (index >= 0) current!.splice(index, 1);
      if (current?.length === 0) this.idle.delete(key);
      session.close();
    }, this.options.idleMs);
    timer.unref();
    list.push({ session, timer });
    this.idle.set(key, list);
  }

  /** closeAll - QUIT every idle session (on stop). */
  closeAll(): void {
    for (const list of this.idle.values()) {
      for (const entry of list) {
        clearTimeout(entry.timer);
        entry.session.close();
      }
    }
    this.idle.clear();
  }
}
