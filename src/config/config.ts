// The validated configuration every part receives. Built by load.ts from
// CONFIG_KEYS; nothing else reads files or the environment for settings.

export type ListenerName = 'relay' | 'submission' | 'submissions';

export interface ListenerConfig {
  enabled: boolean;
  host: string;
  port: number;
}

export type TlsLevel = 'none' | 'may' | 'encrypt' | 'verify';

/** A level for a recipient domain (outbound.tls.level, outbound.tlsPolicies): one of the levels, or its MTA-STS policy's. */
export type DomainTlsLevel = TlsLevel | 'mta-sts';

export interface RouteConfig {
  host: string;
  port?: number;
  tls?: TlsLevel;
  /** Implicit TLS (port 465). */
  secure?: boolean;
}

export interface OutboundConfig {
  enabled: boolean;
  concurrency: number;
  perDestination: number;
  recipientsPerTransaction: number;
  port: number;
  heloName: string;
  /** seconds */
  connectTimeout: number;
  socketTimeout: number;
  connectionCacheTime: number;
  lease: number;
  stopTimeout: number;
  retry: { initial: number; max: number; lifetime: number };
  relayhost: {
    host: string;
    port: number;
    secure: boolean;
    tls: TlsLevel;
    auth: { user: string; pass: string; passFile: string; oauth2: Record<string, string> };
  };
  routes: Record<string, RouteConfig>;
  tlsPolicies: Record<string, DomainTlsLevel>;
  tls: { level: DomainTlsLevel; caFile: string };
  mtaStsPort: number;
  dns: { servers: string[] };
  allowPrivateTargets: boolean;
  /** Addresses that reach this relay through NAT or a proxy (Postfix proxy_interfaces): an MX at one is a loop. */
  ownAddresses: string[];
}

/** tls.minVersion: the oldest protocol the listeners accept. */
export const INBOUND_TLS_VERSIONS = ['TLSv1.3', 'TLSv1.2', 'TLSv1.1', 'TLSv1'] as const;
export type InboundTlsVersion = (typeof INBOUND_TLS_VERSIONS)[number];

export interface Config {
  hostname: string;
  listeners: Record<ListenerName, ListenerConfig>;
  tls: { cert: string; key: string; sni: Record<string, { cert: string; key: string }>; clientCa: string; minVersion: InboundTlsVersion };
  /** keepDone: seconds */
  queue: { backend: 'sqlite' | 'postgres'; path: string; url: string; keepDone: number; minFree: number };
  relay: { trustedNetworks: string[]; localDomains: string[]; senderDomains: string[]; users: string };
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
  smtp: { reverseLookup: boolean; greetingPause: number; inFlowDelay: number; bareLineFeed: 'normalize' | 'reject'; proxyProtocol: string[]; proxyProtocolTimeout: number };
  outbound: OutboundConfig;
  http: { enabled: boolean; host: string; port: number; token: string; tokenFile: string; autoconfig: boolean };
  log: { level: string };
}

export const LISTENER_NAMES: readonly ListenerName[] = ['relay', 'submission', 'submissions'];
