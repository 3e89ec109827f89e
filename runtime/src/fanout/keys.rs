//! Which keys each stretch of a partition holds: a subscription to one key (joining from
//! `earliest`, or resuming) skips the stretches without it instead of reading them.
//!
//! The index covers one contiguous range of offsets, `[start, end)`, cut into blocks of
//! [`BLOCK_RECORDS`] records; each block keeps the 32-bit hashes of the keys it holds.
//! A hash can only say "maybe": a block whose set has the key's hash is read (a
//! collision costs one block read, never a record), one without it is skipped. It is
//! built in order only (every record of the range seen once, none left out), by the
//! hub's index builder and then by its live reader, and bounded in bytes: when full, the
//! oldest blocks go and the range starts later.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use fnv::FnvHasher;

/// Records per block: the most a subscription to one key reads for nothing around each
/// of its records (one fetch, about 100 KiB of 100-byte records).
pub(crate) const BLOCK_RECORDS: usize = 1024;

/// What a sealed block costs besides its hashes (its offsets, the allocation's header).
const BLOCK_OVERHEAD: usize = 48;

struct Block {
    start: i64,
    end: i64,
    /// Sorted, each hash once.
    keys: Box<[u32]>,
}

pub(crate) struct KeyIndex {
    start: i64,
    end: i64,
    sealed: VecDeque<Block>,
    /// The block being filled: from `open_start` to `end`.
    open_start: i64,
    open: HashSet<u32, BuildHasherDefault<FnvHasher>>,
    open_records: usize,
    bytes: usize,
    budget: usize,
    /// The builder has reached the live reader, which adds its records from then on.
    pub(crate) live: bool,
    /// The builder is reading towards the live reader: a keyed subscription beyond the
    /// index's end waits for it instead of reading the same records itself.
    pub(crate) waits: bool,
}

/// The hash a key is indexed by (FNV-1a, folded to 32 bits).
pub(crate) fn key_hash(key: &[u8]) -> u32 {
    let mut h = FnvHasher::default();
    h.write(key);
    let h = h.finish();
    (h ^ (h >> 32)) as u32
}

impl KeyIndex {
    /// An empty index whose range starts (and ends) at `from`, holding at most `budget`
    /// bytes of sealed blocks.
    pub(crate) fn new(from: i64, budget: usize) -> KeyIndex {
        KeyIndex {
            start: from,
            end: from,
            sealed: VecDeque::new(),
            open_start: from,
            open: HashSet::default(),
            open_records: 0,
            bytes: 0,
            budget,
            live: false,
            waits: false,
        }
    }

    /// The first offset not yet indexed.
    pub(crate) fn end(&self) -> i64 {
        self.end
    }

    /// Adds the record at `offset` with `key`. The caller has seen every record from
    /// [`end`](Self::end) up to it (offsets in between hold none); one below the end is
    /// ignored (already indexed).
    pub(crate) fn add(&mut self, offset: i64, key: &[u8]) {
        if offset < self.end {
            return;
        }
        // A record without a key matches no keyed subscription: it only extends the range.
        if !key.is_empty() {
            self.open.insert(key_hash(key));
        }
        self.open_records += 1;
        self.end = offset + 1;
        if self.open_records >= BLOCK_RECORDS {
            self.seal();
        }
    }

    /// Extends the range to `to`: the caller knows the offsets in between hold no records
    /// (a reader at the end of the partition).
    pub(crate) fn extend_to(&mut self, to: i64) {
        self.end = self.end.max(to);
    }

    fn seal(&mut self) {
        let mut keys: Vec<u32> = self.open.drain().collect();
        keys.sort_unstable();
        self.bytes += keys.len() * 4 + BLOCK_OVERHEAD;
        self.sealed.push_back(Block { start: self.open_start, end: self.end, keys: keys.into_boxed_slice() });
        self.open_start = self.end;
        self.open_records = 0;
        while self.bytes > self.budget
            && let Some(old) = self.sealed.pop_front()
        {
            self.bytes -= old.keys.len() * 4 + BLOCK_OVERHEAD;
            self.start = self.sealed.front().map_or(self.open_start, |b| b.start);
        }
    }

    /// The first offset at or after `from` where a record with `key` may be: `from` itself
    /// when it is outside the index (nothing is known there), the end of the index when
    /// no block from `from` on has the key.
    pub(crate) fn next_for(&self, key: &[u8], from: i64) -> i64 {
        if from < self.start || from >= self.end {
            return from;
        }
        let h = key_hash(key);
        let first = self.sealed.partition_point(|b| b.end <= from);
        for b in self.sealed.range(first..) {
            if b.keys.binary_search(&h).is_ok() {
                return from.max(b.start);
            }
        }
        if self.open.contains(&h) {
            return from.max(self.open_start);
        }
        self.end
    }

    /// Bytes held by sealed blocks (the open one holds at most a block's keys more).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(keys: impl IntoIterator<Item = (i64, &'static [u8])>, budget: usize) -> KeyIndex {
        let mut idx = KeyIndex::new(100, budget);
        for (o, k) in keys {
            idx.add(o, k);
        }
        idx
    }

    /// 10,000 records of other keys with "needle" at three offsets: from anywhere, the
    /// index points at the block of the next needle, and past the last one at its end.
    #[test]
    fn it_skips_blocks_without_the_key() {
        let needles = [150i64, 5_000, 9_990];
        let mut idx = KeyIndex::new(100, usize::MAX);
        for o in 100..10_100 {
            let key: &[u8] = if needles.contains(&o) { b"needle" } else { [b"a", b"b", b"c"][o as usize % 3] };
            idx.add(o, key);
        }
        assert_eq!(idx.end(), 10_100);
        // Within the block of a needle: the cursor itself (the block must be read from there).
        assert_eq!(idx.next_for(b"needle", 100), 100);
        assert_eq!(idx.next_for(b"needle", 140), 140);
        // Past the first needle but in its block: from there (a block is read whole).
        assert_eq!(idx.next_for(b"needle", 151), 151);
        // After the first needle's block: the start of the block of the second.
        let second = idx.next_for(b"needle", 100 + BLOCK_RECORDS as i64);
        assert!(second <= 5_000 && 5_000 - second < BLOCK_RECORDS as i64, "{second}");
        // The last needle is in the open block; past it nothing is known to hold one.
        let third = idx.next_for(b"needle", second + BLOCK_RECORDS as i64);
        assert!(third <= 9_990 && 9_990 - third < BLOCK_RECORDS as i64, "{third}");
        assert_eq!(idx.next_for(b"needle", 9_991), 9_991);
        // A key it never saw: the end of the index, from anywhere inside it.
        assert_eq!(idx.next_for(b"absent", 100), 10_100);
        assert_eq!(idx.next_for(b"absent", 9_000), 10_100);
        // Outside the index nothing is known.
        assert_eq!(idx.next_for(b"absent", 99), 99);
        assert_eq!(idx.next_for(b"absent", 10_100), 10_100);
        assert_eq!(idx.next_for(b"absent", 20_000), 20_000);
    }

    /// Records below the end are ignored; gaps between offsets are part of the range.
    #[test]
    fn it_grows_in_order_only() {
        let mut idx = filled([(100, &b"x"[..]), (105, b"y"), (103, b"z")], usize::MAX);
        assert_eq!(idx.end(), 106);
        assert_eq!(idx.next_for(b"z", 100), 106);
        idx.extend_to(110);
        assert_eq!(idx.end(), 110);
        // "y" is in the (open) block: maybe further on in it too.
        assert_eq!(idx.next_for(b"y", 106), 106);
        assert_eq!(idx.next_for(b"q", 106), 110);
        idx.extend_to(90);
        assert_eq!(idx.end(), 110);
    }

    /// Over its budget the oldest blocks go: the range starts later, and a cursor before it
    /// is read as if there were no index.
    #[test]
    fn it_is_bounded_in_bytes() {
        let budget = 4 * (BLOCK_RECORDS * 4 + BLOCK_OVERHEAD);
        let mut idx = KeyIndex::new(0, budget);
        for o in 0..(20 * BLOCK_RECORDS) as i64 {
            idx.add(o, format!("k{o}").as_bytes());
        }
        assert!(idx.bytes() <= budget, "{}", idx.bytes());
        assert_eq!(idx.sealed.len(), 4);
        let start = idx.start;
        assert_eq!(start, (16 * BLOCK_RECORDS) as i64);
        assert_eq!(idx.next_for(b"k5", 5), 5);
        assert_eq!(idx.next_for(b"k5", start), idx.end());
        let late = start + 10;
        assert_eq!(idx.next_for(format!("k{late}").as_bytes(), start), start);
    }
}
