// Addresses as SMTP carries them: the parts Postern decides on.

/** domainOf - the lowercased domain of an address; '' for a domainless one such as <postmaster>. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}
