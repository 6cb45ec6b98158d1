// Addresses as SMTP carries them: the parts Postern decides on.

/** domainOf - the lowercased domain of an address; '' for a domainless one such as <postmaster>. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}

/**
 * hasSenderRouting - whether the local part routes onward: user%elsewhere@domain, elsewhere!user@domain,
 * user@elsewhere@domain. A next hop that honours such forms relays to "elsewhere" on our word.
 */
export function hasSenderRouting(address: string): boolean {
  const at = address.lastIndexOf('@');
  return /[@%!]/.test(at < 0 ? address : address.slice(0, at));
}
