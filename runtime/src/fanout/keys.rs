//! Which keys each stretch of a partition holds: a subscription to one key (joining from
//! `earliest`, or resuming) skips the stretches without it instead of reading them.
//!
//! The index covers one contiguous range of offsets, `[start, end)`, cut into blocks at
//! multiples of [`BLOCK_OFFSETS`], so that every gateway node cuts the same blocks from
//! the same records; each block keeps the 32-bit hashes of the keys it holds. A hash can
//! only say "maybe": a block whose set has the key's hash is read (a collision costs one
//! block read, never a record), one without it is skipped. It is built in order only
//! (every record of the range seen once, none left out), by the hub's index builder and
//! then by its live reader, or loaded from blocks other nodes shared ([`Block::encode`]);
//! and bounded in bytes: when full, the oldest blocks go and the range starts later.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use fnv::FnvHasher;

/// Offsets per block: the most a subscription to one key reads for nothing around each of
/// its records (one fetch, about 100 KiB of 100-byte records).
pub(crate) const BLOCK_OFFSETS: i64 = 1024;

/// What a sealed block costs besides its hashes (its offsets, the allocation's header).
const BLOCK_OVERHEAD: usize = 48;

/// Version of the shared block format ([`Block::encode`]).
const FORMAT: u8 = 1;

/// A sealed block: offsets `[start, end)` hold records with these key hashes only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    start: i64,
    end: i64,
    /// Sorted, each hash once.
    keys: Box<[u32]>,
}

/// The start of the aligned block `offset` is in.
fn aligned(offset: i64) -> i64 {
    offset.div_euclid(BLOCK_OFFSETS) * BLOCK_OFFSETS
}

pub(crate) struct KeyIndex {
    start: i64,
    end: i64,
    sealed: VecDeque<Block>,
    /// The block being filled: from `open_start` to `end`.
    open_start: i64,
    open: HashSet<u32, BuildHasherDefault<FnvHasher>>,
    bytes: usize,
    budget: usize,
    /// The builder has reached the live reader, which adds its records from then on.
    pub(crate) live: bool,
    /// The builder is reading towards the live reader: a keyed subscription beyond the
    /// index's end waits for it instead of reading the same records itself.
    pub(crate) waits: bool,
}

/// The hash a key is indexed by (FNV-1a, folded to 32 bits): the same in every process
/// and version, since nodes share blocks.
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
            bytes: 0,
            budget,
            live: false,
            waits: false,
        }
    }

    /// The index made of the most recent contiguous run of `blocks` (shared by other
    /// nodes; in any order, duplicates and overlaps allowed), if any.
    pub(crate) fn from_blocks(blocks: Vec<Block>, budget: usize) -> Option<KeyIndex> {
        // Per end, the block reaching furthest back.
        let mut by_end: HashMap<i64, Block> = HashMap::new();
        for b in blocks {
            match by_end.get(&b.end) {
                Some(have) if have.start <= b.start => {}
                _ => {
                    by_end.insert(b.end, b);
                }
            }
        }
        let mut at = *by_end.keys().max()?;
        let mut chain = Vec::new();
        while let Some(b) = by_end.remove(&at) {
            at = b.start;
            chain.push(b);
        }
        chain.reverse();
        let end = chain.last().map_or(at, |b| b.end);
        let mut idx = KeyIndex::new(at, budget);
        idx.end = end;
        idx.open_start = end;
        for b in chain {
            idx.bytes += b.keys.len() * 4 + BLOCK_OVERHEAD;
            idx.sealed.push_back(b);
        }
        idx.evict();
        Some(idx)
    }

    /// The first offset not yet indexed.
    pub(crate) fn end(&self) -> i64 {
        self.end
    }

    /// The first offset indexed.
    pub(crate) fn start(&self) -> i64 {
        self.start
    }

    /// Adds the record at `offset` with `key`. The caller has seen every record from
    /// [`end`](Self::end) up to it (offsets in between hold none); one below the end is
    /// ignored (already indexed). Returns the block this sealed, if it did.
    pub(crate) fn add(&mut self, offset: i64, key: &[u8]) -> Option<Block> {
        if offset < self.end {
            return None;
        }
        let sealed = (offset >= aligned(self.open_start) + BLOCK_OFFSETS).then(|| self.seal(aligned(offset)));
        // A record without a key matches no keyed subscription: it only extends the range.
        if !key.is_empty() {
            self.open.insert(key_hash(key));
        }
        self.end = offset + 1;
        sealed
    }

    /// Extends the range to `to`: the caller knows the offsets in between hold no records
    /// (a reader at the end of the partition).
    pub(crate) fn extend_to(&mut self, to: i64) {
        self.end = self.end.max(to);
    }

    /// Seals the open block as `[open_start, to)` and opens the next at `to`.
    fn seal(&mut self, to: i64) -> Block {
        let mut keys: Vec<u32> = self.open.drain().collect();
        keys.sort_unstable();
        let block = Block { start: self.open_start, end: to, keys: keys.into_boxed_slice() };
        self.bytes += block.keys.len() * 4 + BLOCK_OVERHEAD;
        self.sealed.push_back(block.clone());
        self.open_start = to;
        self.evict();
        block
    }

    fn evict(&mut self) {
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

impl Block {
    pub(crate) fn end(&self) -> i64 {
        self.end
    }

    /// The block as a record of the shared index topic: the key names the topic (its id
    /// and name), the partition and the aligned block, so that compaction keeps one
    /// record per block; the value holds the range and the sorted hashes.
    pub(crate) fn encode(&self, topic_id: &[u8], topic: &str, partition: i32) -> (Vec<u8>, Vec<u8>) {
        let mut key = entry_prefix(topic_id, topic, partition);
        key.extend_from_slice(&aligned(self.start).to_be_bytes());
        let mut value = Vec::with_capacity(21 + 4 * self.keys.len());
        value.push(FORMAT);
        value.extend_from_slice(&self.start.to_be_bytes());
        value.extend_from_slice(&self.end.to_be_bytes());
        value.extend_from_slice(&(self.keys.len() as u32).to_be_bytes());
        for h in &self.keys {
            value.extend_from_slice(&h.to_be_bytes());
        }
        (key, value)
    }

    /// A block of partition `partition` of this topic from a record of the shared index
    /// topic, or `None` (another topic or partition, another format, a malformed record).
    pub(crate) fn decode(key: &[u8], value: &[u8], topic_id: &[u8], topic: &str, partition: i32) -> Option<Block> {
        let prefix = entry_prefix(topic_id, topic, partition);
        let aligned_start = i64::from_be_bytes(key.strip_prefix(prefix.as_slice())?.try_into().ok()?);
        let (&format, rest) = value.split_first()?;
        if format != FORMAT {
            return None;
        }
        let be64 = |b: &[u8]| Some(i64::from_be_bytes(b.get(..8)?.try_into().ok()?));
        let (start, end) = (be64(rest)?, be64(rest.get(8..)?)?);
        let n = u32::from_be_bytes(rest.get(16..20)?.try_into().ok()?) as usize;
        let hashes = rest.get(20..)?;
        if hashes.len() != n * 4 || start >= end || start < 0 || aligned(start) != aligned_start {
            return None;
        }
        let mut keys: Vec<u32> = hashes.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect();
        keys.sort_unstable();
        keys.dedup();
        Some(Block { start, end, keys: keys.into_boxed_slice() })
    }
}

/// What the key of every shared block of one partition starts with.
fn entry_prefix(topic_id: &[u8], topic: &str, partition: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + topic_id.len() + topic.len() + 12);
    key.push(FORMAT);
    key.push(topic_id.len() as u8);
    key.extend_from_slice(topic_id);
    key.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    key.extend_from_slice(topic.as_bytes());
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets 100..10,100, "needle" at three of them: from anywhere, the index points at
    /// the block of the next needle, and past the last one at its end.
    #[test]
    fn it_skips_blocks_without_the_key() {
        let needles = [150i64, 5_000, 9_990];
        let mut idx = KeyIndex::new(100, usize::MAX);
        for o in 100..10_100 {
            let key: &[u8] = if needles.contains(&o) { b"needle" } else { [b"a", b"b", b"c"][o as usize % 3] };
            idx.add(o, key);
        }
        assert_eq!(idx.end(), 10_100);
        // Blocks are aligned: [100, 1024), [1024, 2048), ...
        assert_eq!(idx.sealed[0].start, 100);
        assert_eq!(idx.sealed[1].start, BLOCK_OFFSETS);
        // Within the block of a needle: the cursor itself (the block must be read from there).
        assert_eq!(idx.next_for(b"needle", 100), 100);
        assert_eq!(idx.next_for(b"needle", 151), 151);
        // After the first needle's block: the start of the block of the second.
        assert_eq!(idx.next_for(b"needle", BLOCK_OFFSETS), aligned(5_000));
        // The last needle is in the open block; past it nothing is known to hold one.
        assert_eq!(idx.next_for(b"needle", aligned(5_000) + BLOCK_OFFSETS), aligned(9_990));
        assert_eq!(idx.next_for(b"needle", 9_991), 9_991);
        // A key it never saw: the end of the index, from anywhere inside it.
        assert_eq!(idx.next_for(b"absent", 100), 10_100);
        assert_eq!(idx.next_for(b"absent", 9_000), 10_100);
        // Outside the index nothing is known.
        assert_eq!(idx.next_for(b"absent", 99), 99);
        assert_eq!(idx.next_for(b"absent", 10_100), 10_100);
        assert_eq!(idx.next_for(b"absent", 20_000), 20_000);
    }

    /// Records below the end are ignored; gaps between offsets are part of the range, and a
    /// gap across block boundaries seals one block up to the next record's block.
    #[test]
    fn it_grows_in_order_only() {
        let mut idx = KeyIndex::new(100, usize::MAX);
        for (o, k) in [(100, &b"x"[..]), (105, b"y"), (103, b"z")] {
            idx.add(o, k);
        }
        assert_eq!(idx.end(), 106);
        assert_eq!(idx.next_for(b"z", 100), 106);
        idx.extend_to(110);
        assert_eq!(idx.end(), 110);
        // "y" is in the (open) block: maybe further on in it too.
        assert_eq!(idx.next_for(b"y", 106), 106);
        assert_eq!(idx.next_for(b"q", 106), 110);
        idx.extend_to(90);
        assert_eq!(idx.end(), 110);
        let sealed = idx.add(5 * BLOCK_OFFSETS + 7, b"w").expect("crossing a boundary seals");
        assert_eq!((sealed.start, sealed.end), (100, 5 * BLOCK_OFFSETS));
        assert_eq!(idx.next_for(b"w", 200), 5 * BLOCK_OFFSETS);
    }

    /// Over its budget the oldest blocks go: the range starts later, and a cursor before it
    /// is read as if there were no index.
    #[test]
    fn it_is_bounded_in_bytes() {
        let per_block = BLOCK_OFFSETS as usize * 4 + BLOCK_OVERHEAD;
        let mut idx = KeyIndex::new(0, 4 * per_block);
        for o in 0..20 * BLOCK_OFFSETS {
            idx.add(o, format!("k{o}").as_bytes());
        }
        assert!(idx.bytes() <= 4 * per_block, "{}", idx.bytes());
        // 19 sealed (the 20th is open), the last 4 kept.
        assert_eq!(idx.sealed.len(), 4);
        let start = idx.start;
        assert_eq!(start, 15 * BLOCK_OFFSETS);
        assert_eq!(idx.next_for(b"k5", 5), 5);
        assert_eq!(idx.next_for(b"k5", start), idx.end());
        let late = start + 10;
        assert_eq!(idx.next_for(format!("k{late}").as_bytes(), start), start);
    }

    /// Blocks go through the shared topic's format unchanged, only for their own topic and
    /// partition; malformed records are ignored.
    #[test]
    fn blocks_round_trip_through_the_shared_format() {
        let block = Block { start: 1_100, end: 2_048, keys: vec![3, 9, 40_000].into_boxed_slice() };
        let (key, value) = block.encode(b"0123456789abcdef", "orders", 2);
        assert_eq!(Block::decode(&key, &value, b"0123456789abcdef", "orders", 2), Some(block.clone()));
        assert_eq!(Block::decode(&key, &value, b"0123456789abcdef", "orders", 1), None);
        assert_eq!(Block::decode(&key, &value, b"fedcba9876543210", "orders", 2), None);
        assert_eq!(Block::decode(&key, &value, b"", "orders", 2), None);
        assert_eq!(Block::decode(&key, &value[..value.len() - 1], b"0123456789abcdef", "orders", 2), None);
        assert_eq!(Block::decode(&key[..key.len() - 1], &value, b"0123456789abcdef", "orders", 2), None);
        let mut bad = value.clone();
        bad[0] = 9;
        assert_eq!(Block::decode(&key, &bad, b"0123456789abcdef", "orders", 2), None);
        assert_eq!(Block::decode(&key, &[], b"0123456789abcdef", "orders", 2), None);
    }

    /// An index loaded from shared blocks is the most recent contiguous run, the furthest
    /// back where two nodes' first blocks overlap; it answers as the one that made them.
    #[test]
    fn an_index_loads_from_shared_blocks() {
        let mut made = KeyIndex::new(300, usize::MAX);
        let mut blocks = Vec::new();
        for o in 300..6 * BLOCK_OFFSETS + 5 {
            let key = if o == 3_000 { "needle".to_owned() } else { format!("k{}", o % 7) };
            blocks.extend(made.add(o, key.as_bytes()));
        }
        assert_eq!(blocks.len(), 6);
        // Another node's first block started later, and blocks come twice.
        let late = Block { start: 700, end: BLOCK_OFFSETS, keys: Box::new([]) };
        let mut shared = vec![late];
        shared.extend(blocks.iter().rev().cloned());
        shared.extend(blocks.iter().cloned());
        let loaded = KeyIndex::from_blocks(shared, usize::MAX).expect("an index");
        assert_eq!((loaded.start, loaded.end()), (300, 6 * BLOCK_OFFSETS));
        for from in [300, 1_500, 2_048, 3_001, 4_000] {
            assert_eq!(loaded.next_for(b"needle", from), made.next_for(b"needle", from).min(loaded.end()), "{from}");
        }
        assert_eq!(loaded.next_for(b"needle", 2_500), 2_500);
        assert_eq!(loaded.next_for(b"needle", 3 * BLOCK_OFFSETS), 6 * BLOCK_OFFSETS);
        // A gap: only the run after it.
        let gapped: Vec<Block> = blocks.iter().enumerate().filter(|(i, _)| *i != 2).map(|(_, b)| b.clone()).collect();
        let loaded = KeyIndex::from_blocks(gapped, usize::MAX).expect("an index");
        assert_eq!((loaded.start, loaded.end()), (3 * BLOCK_OFFSETS, 6 * BLOCK_OFFSETS));
        assert!(KeyIndex::from_blocks(Vec::new(), usize::MAX).is_none());
    }
}
