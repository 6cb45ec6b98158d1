// A Map kept to a number of entries, the one set longest ago going first:
// for what the relay keeps per domain (recent delivery times, dead
// destinations, MTA-STS policies), where domains a long run or an attacker
// can make up must not grow it for ever.
//
//   keepLatest - set an entry as the latest, dropping the oldest past a limit.

/** keepLatest - set `key` as the latest entry of `map`, then drop the oldest while more than `limit` are kept. */
export function keepLatest<K, V>(map: Map<K, V>, key: K, value: V, limit: number): void {
  // Deleted and set again: the map's order is then the order in which keys were last set.
  map.delete(key);
  map.set(key, value);
  while (map.size > limit) map.delete(map.keys().next().value!);
}
