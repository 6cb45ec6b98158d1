// Durability for the SQLite store without stalling the event loop. With
// synchronous=FULL, better-sqlite3's COMMIT waits for SQLite's fsync of the
// WAL on the event loop, and every SMTP session waits with it. The store
// runs with synchronous=NORMAL instead (in WAL mode a COMMIT then only
// write()s its frames to the -wal file) and fsyncs that file itself, on
// libuv's thread pool, before it calls anything durable: after the fsync
// the committed frames, and the WAL header before them, are on disk, which
// is what FULL's fsync at COMMIT gives. SQLite's own checkpoints still sync
// the WAL before copying it into the database, as under FULL.
//
// The -wal file keeps its inode while the store's connection is open (it is
// rewound after a checkpoint, never replaced; only the last connection to
// close removes it), so one descriptor opened after the first write serves
// for the store's lifetime.
//
// How it fails: sync rejects with the fsync error; the caller must then not
// report as durable anything committed before the call (those rows stay,
// and are kept or delivered like any other: at least once, never lost).
//
//   openWalSync - the fsync of one database's WAL file.
import { open, type FileHandle } from 'node:fs/promises';

export interface WalSync {
  /** sync - every transaction committed before this call is on disk when it resolves. */
  sync(): Promise<void>;
  /** size - the -wal file's size in bytes. */
  size(): Promise<number>;
  close(): Promise<void>;
}

/** openWalSync - a descriptor on `<databaseFile>-wal`, which must exist (the database is in WAL mode and was written). */
export async function openWalSync(databaseFile: string): Promise<WalSync> {
  const handle: FileHandle = await open(`${databaseFile}-wal`, 'r');
  return {
    sync: () => handle.sync(),
    size: async () => (await handle.stat()).size,
    close: () => handle.close(),
  };
}
