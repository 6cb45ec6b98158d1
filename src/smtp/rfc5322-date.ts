// Dates as RFC 5322 §3.3 writes them, in UTC: for Received, Date and DSN fields.

/** formatRfc5322Date - "Sun, 29 Nov 2026 01:17:33 +0000". */
export function formatRfc5322Date(date: Date): string {
  const [weekday, day, month, year, time] = date.toUTCString().replace(',', '').split(' ');
  return `${weekday}, ${day} ${month} ${year} ${time} +0000`;
}
