// Reply classification (RFC 5321 §4.2.1): 2xx delivered, 5xx bounced,
// everything else (4xx, or a local failure with no code) deferred.
// A reply may start with the basic code ("550 5.1.1 …") or, for our own
// local reasons, with an enhanced code only ("4.4.1 connection refused").

/** classifyReply - what a reply means for the recipient it answered. */
export function classifyReply(reply: string): 'delivered' | 'deferred' | 'bounced' {
  const first = reply.trimStart()[0];
  if (first === '2') return 'delivered';
  if (first === '5') return 'bounced';
  return 'deferred';
}
