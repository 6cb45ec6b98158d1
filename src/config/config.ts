// The validated configuration every part receives. Built by load.ts from
// CONFIG_KEYS; nothing else reads files or the environment for settings.

export type ListenerName = 'relay' | 'submission' | 'submissions';

export interface ListenerConfig {
  enabled: boolean;
  host: string;
  port: number;
}

export interface Config {
  hostname: string;
  listeners: Record<ListenerName, ListenerConfig>;
  tls: { cert: string; key: string; sni: Record<string, { cert: string; key: string }>; clientCa: string };
  queue: { backend: 'sqlite'; path: string };
  relay: { trustedNetworks: string[]; localDomains: string[]; users: string };
  limits: {
    messageSize: number;
    recipients: number;
    connectionsPerIp: number;
    connections: number;
    /** seconds */
    idleTimeout: number;
    authFailuresPerConnection: number;
    authFailuresPerIp: number;
    /** seconds */
    authLockout: number;
  };
  dns: { servers: string[] };
  smtp: { reverseLookup: boolean; bareLineFeed: 'normalize' | 'reject' };
  log: { level: string };
}

export const LISTENER_NAMES: readonly ListenerName[] = ['relay', 'submission', 'submissions'];
