// Checkpoints of the SQLite queue's WAL without an fsync on the event loop.
// SQLite's automatic checkpoint runs inside a COMMIT, so on the event loop,
// and fsyncs twice: the WAL before it copies frames into the database, the
// database after. With 100 KB bodies in their rows that was about 7 ms every
// 36 messages, a seventh of the loop (bench/README, eleventh round). The
// store checkpoints instead, after a durable batch, at most once per
// CHECKPOINT_INTERVAL_MS:
//
//   1. the store's writes wait (writesPaused), so that the first write after
//      the checkpoint finds the WAL wholly copied and rewinds it: a WAL that
//      is written during every checkpoint is never rewound and grows;
//   2. a second connection opens a read transaction. Its snapshot bounds
//      what a checkpoint may copy, and while it is open no connection, of
//      this process or another (`postern queue …`), can rewind the WAL;
//   3. the WAL is fsynced (thread pool): every frame of that snapshot is on disk;
//   4. the frames up to the snapshot are copied into the database with
//      synchronous=OFF (no fsync: the loop only copies pages);
//   5. the database is fsynced (thread pool); then the read transaction
//      ends and the writes go on.
//
// Steps 3 and 5 are the two fsyncs of SQLite's own checkpoint, and until 5
// is done the WAL keeps every copied frame, so a crash at any point loses
// nothing. SQLite's automatic checkpoint stays on at BACKSTOP_PAGES, for a
// WAL written only by other paths (claims, operator commands).
//
// How it fails: nothing rejects. A failed WAL fsync or checkpoint is logged
// and the writes go on. A failed database fsync is logged and the read
// transaction is kept until close: the WAL is then never rewound (it grows
// until a restart, whose recovery has every frame), because rewinding it
// would leave copied pages that may not be on disk as their only copy.
//
//   openWalCheckpointer - the checkpoints of one store's database.
//   CHECKPOINT_INTERVAL_MS - the least time between two checkpoints.
import Database from 'better-sqlite3';
import { open } from 'node:fs/promises';
import type { Logger } from '../../observability/logger.ts';
import type { WalSync } from './sqlite-wal-sync.ts';

/** The least time between two checkpoints: under load a few MB of WAL each, about 2.5 ms of copying. */
export const CHECKPOINT_INTERVAL_MS = 100;

/** SQLite's own checkpoint (on the loop, with its fsyncs) runs only when the WAL has this many pages (40 MB). */
const BACKSTOP_PAGES = 10_000;

export interface WalCheckpointer {
  /** afterDurable - a batch of writes is durable: start a checkpoint unless one started less than the interval ago. */
  afterDurable(): void;
  /** writesPaused - while a checkpoint runs, a promise the store's writes wait for; otherwise undefined. */
  readonly writesPaused: Promise<void> | undefined;
  /** close - wait for a checkpoint in flight, then close the second connection and the database descriptor. */
  close(): Promise<void>;
}

/** openWalCheckpointer - turn SQLite's automatic checkpoint down to the backstop and take over (`file`: the database `db` has open). */
export async function openWalCheckpointer(options: { db: Database.Database; file: string; wal: WalSync; logger: Logger; intervalMs?: number }): Promise<WalCheckpointer> {
  const { db, wal, logger } = options;
  const intervalMs = options.intervalMs ?? CHECKPOINT_INTERVAL_MS;
  db.pragma(`wal_autocheckpoint = ${BACKSTOP_PAGES}`);
  const synchronous = Number(db.pragma('synchronous', { simple: true }));
  const databaseFile = await open(options.file, 'r');
  const snapshot = new Database(options.file);
  const readSchema = snapshot.prepare('SELECT count(*) FROM sqlite_master');
  /** After a failed database fsync the snapshot stays open: the WAL must not be rewound. */
  let snapshotPinned = false;
  let lastStart = -Infinity;
  let running: Promise<void> | undefined;

  async function checkpoint(): Promise<void> {
    snapshot.exec('BEGIN');
    try {
      readSchema.get(); // a read transaction starts at the first read
      await wal.sync();
      try {
        db.pragma('synchronous = OFF');
        db.pragma('wal_checkpoint(PASSIVE)');
      } finally {
        db.pragma(`synchronous = ${synchronous}`);
      }
      try {
        await databaseFile.sync();
      } catch (error) {
        snapshotPinned = true;
        throw error;
      }
    } finally {
      if (!snapshotPinned) snapshot.exec('COMMIT');
    }
  }

  return {
    afterDurable() {
      if (running || snapshotPinned || performance.now() - lastStart < intervalMs) return;
      lastStart = performance.now();
      running = checkpoint()
        .catch((error: unknown) => {
          if (snapshotPinned) logger.error({ err: error }, 'queue database fsync after a checkpoint failed; the WAL is kept whole until a restart');
          else logger.error({ err: error }, 'queue checkpoint failed; the WAL keeps its frames');
        })
        .finally(() => {
          running = undefined;
        });
    },
    get writesPaused() {
      return running;
    },
    async close() {
      await running;
      snapshot.close();
      await databaseFile.close();
    },
  };
}
