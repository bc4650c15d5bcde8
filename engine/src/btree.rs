//! A B+tree of short entries (at most [`MAX_WORDS`] words), for key indexes whose
//! entries have a bounded length: every key column of a fixed-width type.
//!
//! Why not the skip list: a skip-list node per entry costs about 75 bytes (value, key,
//! reference count and tower, in its size class) and a lookup hops some 40 nodes. A
//! leaf here holds 29 to 59 entries in 1 KiB, so an entry costs its words and a
//! length byte (17 bytes for an int4 key and its row id) at the leaf's fill, and a
//! lookup reads a few nodes.
//!
//! Entries carry no value: a key index's entry ends with the row id, and the record is
//! found from it in the row-id index (a few loads). A value word per entry (the
//! record's address) took 8 bytes per row of every index.
//!
//! # Layout
//! A node is [`NODE_WORDS`] words, all atomics (readers read them while a writer may
//! change them; see below): a version word, a header word (entry count, level), then
//! arrays of words whose sizes depend on the tree's entry width `w`:
//! * a leaf (level 0): `leaf_cap` entries of `w` words and their lengths (one byte
//!   each, eight to a word);
//! * an inner node (level > 0): `inner_cap` separator entries, their lengths, and one
//!   child more than separators. Child `i` holds the entries `e` with
//!   `sep[i - 1] <= e < sep[i]` (unbounded at the ends).
//!
//! An entry is a byte string of at most `8 * w` bytes, stored as big-endian words,
//! zero-padded, and its length. Comparing padded words, then lengths, orders entries
//! as byte strings (also against probes longer than `8 * w` bytes: see [`Probe`]).
//!
//! # Concurrency
//! * One writer at a time per tree (`writer` lock): inserts and removals change a few
//!   nodes each. Between writers no node is shared in a half-changed state.
//! * Readers take no lock (optimistic lock coupling): a node's version word is odd
//!   ([`LOCKED`]) while the writer changes it and grows by [`STEP`] when it is done; a
//!   reader reads the version, then the words it needs, then checks the version again
//!   and starts over from the root if it moved. Going down, a reader checks the
//!   parent's version after reading the child's, so a child is never trusted unless
//!   the parent still pointed to it when the child's version was read.
//! * The writer locks every node a change touches (a leaf and the ancestors a split
//!   or a removal reaches) before changing any, and unlocks them after all changes:
//!   a reader never sees a leaf split without its separator in the parent.
//! * A new root is published while the old one is locked; readers check the root
//!   pointer after reading the root's version.
//! * A node taken out of the tree is marked [`OBSOLETE`] (and stays locked) and freed
//!   through the epoch collector: readers that reached it hold older guards; they see
//!   it obsolete and start over.
//! * Empty leaves are taken out (with ancestors left without children); other
//!   underfull nodes are kept (no merging), as PostgreSQL's B-tree does.
//! * The writer remembers the leaf it last inserted into and that leaf's fences
//!   ([`LastLeaf`]); the next insert whose entry lies within them, into a leaf with
//!   room, goes there without a descent (ascending keys append to the same leaf, as
//!   PostgreSQL's B-tree inserts into its cached rightmost leaf). Fences only widen
//!   while the leaf stays in the tree (removals hand a removed neighbour's range to
//!   it); they narrow only when the leaf splits, and a split or the leaf's removal
//!   forgets it.
//!
//! Scans copy a leaf's matching entries, validate, then hand them out; the next leaf is
//! found from the root again, from the separator that bounded the last one (the
//! leaf's fence), so a scan holds nothing between leaves and sees a weakly consistent
//! order, as a skip-list iteration does.

use crossbeam_epoch::Guard;
use std::alloc::Layout;
use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering::*};

/// Most words an entry may take.
pub(crate) const MAX_WORDS: usize = 4;
/// Bytes of every node (one arena size class).
pub(crate) const NODE_BYTES: usize = 1024;
const NODE_WORDS: usize = NODE_BYTES / 8;
/// Version word and header word.
const HEADER_WORDS: usize = 2;
/// Set while the writer changes the node.
const LOCKED: u64 = 1;
/// Set (with [`LOCKED`], for good) when the node is out of the tree.
const OBSOLETE: u64 = 2;
/// Added to the version by every completed change.
const STEP: u64 = 4;
/// Deepest tree the writer's path holds. A tree gets a level only when its root is
/// full; with at least 24 separators per inner node and splits in the middle (or at
/// the right end, leaving a full left node), 40 levels are far beyond any memory.
const MAX_DEPTH: usize = 40;
/// Most entries a node holds (a leaf at `w` = 2, as an int4 or int8 key with its row
/// id takes; a leaf of one-word entries stops here too).
const MAX_CAP: usize = 59;
/// No slot (see [`Node::recent`]).
const NO_SLOT: usize = 0xFF;

/// Where a full node of `n` entries splits when a new one goes to slot `pos`: the
/// number of the `n + 1` entries (the new one included) the left node keeps, and
/// whether the separator should be the lowest possible one (just above the left
/// node's last entry) rather than the right node's first entry. Runs of ascending or
/// descending inserts (also two interleaved runs, as two replay threads make) should
/// leave full nodes behind, not half-full ones:
/// * At the end (ascending keys): the left node stays full, the new entry starts the
///   right one, where the next ones go; for leaves under the lowest separator, so
///   that a descending run that begins there goes on in the right node too.
/// * Right after one of the latest entries put here (an ascending run with other
///   entries above it): the left node keeps the new entry, the run goes on there,
///   the entries above go right.
/// * Leaves only, right before one of them (a descending run): the new entry starts
///   the right node (at least one entry stays left) under the lowest separator, so
///   the next, smaller, entries of the run go there too until it is full.
/// * Otherwise in the middle.
fn split_point(n: usize, pos: usize, recent: [usize; 2], leaf: bool) -> (usize, bool) {
    let after_recent = |d: usize| recent.iter().any(|&s| s != NO_SLOT && pos == s + d);
    if pos == n {
        (n, leaf)
    } else if after_recent(1) {
        (pos + 1, false)
    } else if leaf && after_recent(0) {
        (pos.max(1), true)
    } else {
        (n.div_ceil(2), false)
    }
}

/// An entry or a probe: up to [`MAX_WORDS`] big-endian words, zero-padded, and the
/// length in bytes. Order: words, then length (see the module docs); a probe may be
/// longer than its words (its first `8 * MAX_WORDS` bytes are kept; stored entries are
/// never that long, so the rest only shows in the length).
/// The derived order (words, then length) is the byte-string order of entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Probe {
    words: [u64; MAX_WORDS],
    len: usize,
}

impl Probe {
    pub(crate) fn new(bytes: &[u8]) -> Probe {
        let mut words = [0u64; MAX_WORDS];
        for (i, w) in words.iter_mut().enumerate() {
            let from = (i * 8).min(bytes.len());
            let to = (i * 8 + 8).min(bytes.len());
            let mut b = [0u8; 8];
            b[..to - from].copy_from_slice(&bytes[from..to]);
            *w = u64::from_be_bytes(b);
        }
        Probe {
            words,
            len: bytes.len(),
        }
    }

    /// `key` followed by `suffix` (big-endian), without an intermediate buffer.
    pub(crate) fn with_suffix(key: &[u8], suffix: u64) -> Probe {
        let mut b = [0u8; MAX_WORDS * 8];
        let n = key.len().min(b.len());
        b[..n].copy_from_slice(&key[..n]);
        let s = suffix.to_be_bytes();
        let m = (b.len() - n).min(8);
        b[n..n + m].copy_from_slice(&s[..m]);
        let mut p = Probe::new(&b[..n + m]);
        p.len = key.len() + 8;
        p
    }

    /// The bytes (at most `8 * MAX_WORDS`), in `out`.
    pub(crate) fn bytes<'a>(&self, out: &'a mut [u8; MAX_WORDS * 8]) -> &'a [u8] {
        for (i, w) in self.words.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_be_bytes());
        }
        &out[..self.len.min(MAX_WORDS * 8)]
    }

    fn cmp_words(&self, w: usize, words: &[u64; MAX_WORDS], len: usize) -> Ordering {
        self.words[..w]
            .cmp(&words[..w])
            .then_with(|| self.words[w..].cmp(&words[w..]))
            .then_with(|| self.len.cmp(&len))
    }
}

/// The widths of one tree's nodes.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    /// Words per entry.
    w: usize,
    leaf_cap: usize,
    inner_cap: usize,
}

impl Geometry {
    fn new(w: usize) -> Geometry {
        assert!((1..=MAX_WORDS).contains(&w), "entry width {w}");
        let fits_leaf = |c: usize| HEADER_WORDS + c * w + c.div_ceil(8) <= NODE_WORDS;
        let fits_inner = |c: usize| HEADER_WORDS + c * w + c.div_ceil(8) + c < NODE_WORDS;
        let leaf_cap = (1..=MAX_CAP)
            .take_while(|&c| fits_leaf(c))
            .last()
            .unwrap_or(1);
        let inner_cap = (1..=MAX_CAP)
            .take_while(|&c| fits_inner(c))
            .last()
            .unwrap_or(1);
        Geometry {
            w,
            leaf_cap,
            inner_cap,
        }
    }
    /// Word offset of entry `i`'s first word.
    fn key(&self, i: usize) -> usize {
        HEADER_WORDS + i * self.w
    }
    /// Word offset of the length word holding entry `i`'s length byte.
    fn len_word(&self, leaf: bool, i: usize) -> usize {
        let base = if leaf {
            HEADER_WORDS + self.leaf_cap * self.w
        } else {
            HEADER_WORDS + self.inner_cap * self.w
        };
        base + i / 8
    }
    /// Word offset of inner child `i`.
    fn child(&self, i: usize) -> usize {
        HEADER_WORDS + self.inner_cap * self.w + self.inner_cap.div_ceil(8) + i
    }
}

/// A node: [`NODE_WORDS`] atomic words in the arena.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Node(*const AtomicU64);

fn node_layout() -> Layout {
    Layout::from_size_align(NODE_BYTES, 16).expect("node layout")
}

impl Node {
    /// A new zeroed node of `level` (version 0, no entries).
    fn alloc(level: u8) -> Node {
        let layout = node_layout();
        // SAFETY: a non-zero-sized layout; zeroed atomics are valid.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        let n = Node(p.cast());
        n.word(1).store(
            ((NO_SLOT as u64 * 0x101) << 40) | ((level as u64) << 32),
            Relaxed,
        );
        n
    }

    /// # Safety
    /// `self` came from [`Node::alloc`] and nobody can reach it any more.
    unsafe fn free(self) {
        // SAFETY: forwarded contract; same layout as allocated.
        unsafe { std::alloc::dealloc(self.0 as *mut u8, node_layout()) }
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < NODE_WORDS);
        // SAFETY: nodes are NODE_WORDS words; a `Node` is only formed for a node that is
        // reachable from its tree under the caller's epoch guard, or held by the writer
        // (see the module docs), so the block is allocated.
        unsafe { &*self.0.add(i) }
    }

    fn version(&self) -> &AtomicU64 {
        self.word(0)
    }
    fn level(&self) -> u8 {
        (self.word(1).load(Relaxed) >> 32) as u8
    }
    fn count(&self) -> usize {
        (self.word(1).load(Relaxed) & 0xFFFF_FFFF) as usize
    }
    fn set_count(&self, n: usize) {
        let rest = self.word(1).load(Relaxed) & !0xFFFF_FFFF;
        self.word(1).store(rest | n as u64, Relaxed);
    }
    /// Slots of the two latest entries the writer put here (latest first; each
    /// [`NO_SLOT`] if unknown), kept up to date as entries shift: a split next to one
    /// of them continues a run of ascending or descending inserts (see
    /// [`split_point`]). Two, for two runs interleaved in one node.
    fn recent(&self) -> [usize; 2] {
        let w = self.word(1).load(Relaxed);
        [((w >> 40) & 0xFF) as usize, ((w >> 48) & 0xFF) as usize]
    }
    fn set_recent(&self, r: [usize; 2]) {
        let rest = self.word(1).load(Relaxed) & !(0xFFFF << 40);
        let bits = ((r[0] as u64 & 0xFF) << 40) | ((r[1] as u64 & 0xFF) << 48);
        self.word(1).store(rest | bits, Relaxed);
    }
    /// Records an entry put at slot `pos` (the ones from `pos` on moved up).
    fn note_put(&self, pos: usize) {
        let [a, _] = self
            .recent()
            .map(|s| if s != NO_SLOT && s >= pos { s + 1 } else { s });
        self.set_recent([pos, a]);
    }
    /// Records the entry at slot `pos` taken out (the ones after it moved down).
    fn note_taken(&self, pos: usize) {
        self.set_recent(self.recent().map(|s| match s {
            NO_SLOT => NO_SLOT,
            s if s == pos => NO_SLOT,
            s if s > pos => s - 1,
            s => s,
        }));
    }

    /// The version to validate against once the node is read, or None if the node is
    /// out of the tree (start over). Waits while the writer changes it.
    fn read_begin(&self) -> Option<u64> {
        let mut backoff = crate::sync::Backoff::new();
        loop {
            let v = self.version().load(Acquire);
            if v & OBSOLETE != 0 {
                return None;
            }
            if v & LOCKED == 0 {
                return Some(v);
            }
            backoff.snooze();
        }
    }

    /// Did the node stay at version `v` while it was read?
    fn validate(&self, v: u64) -> bool {
        fence(Acquire);
        self.version().load(Relaxed) == v
    }

    /// Writer only: readers wait or start over until [`Node::unlock`].
    fn lock(&self) {
        let v = self.version().load(Relaxed);
        debug_assert_eq!(v & LOCKED, 0);
        self.version().store(v | LOCKED, Relaxed);
        fence(Release);
    }

    fn unlock(&self) {
        let v = self.version().load(Relaxed);
        debug_assert_eq!(v & (LOCKED | OBSOLETE), LOCKED);
        self.version().store((v & !LOCKED) + STEP, Release);
    }

    /// Writer only, on a locked node taken out of the tree.
    fn mark_obsolete(&self) {
        let v = self.version().load(Relaxed);
        debug_assert_eq!(v & LOCKED, LOCKED);
        self.version().store(v | OBSOLETE, Release);
    }

    fn entry_len(&self, g: &Geometry, leaf: bool, i: usize) -> usize {
        let w = self.word(g.len_word(leaf, i)).load(Relaxed);
        ((w >> ((i % 8) * 8)) & 0xFF) as usize
    }

    fn entry(&self, g: &Geometry, leaf: bool, i: usize) -> Probe {
        let mut words = [0u64; MAX_WORDS];
        let k = g.key(i);
        for (j, w) in words[..g.w].iter_mut().enumerate() {
            *w = self.word(k + j).load(Relaxed);
        }
        Probe {
            words,
            len: self.entry_len(g, leaf, i),
        }
    }

    /// `probe` against entry `i`.
    fn cmp_at(&self, g: &Geometry, leaf: bool, i: usize, probe: &Probe) -> Ordering {
        let k = g.key(i);
        for j in 0..g.w {
            let w = self.word(k + j).load(Relaxed);
            match probe.words[j].cmp(&w) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        if probe.words[g.w..].iter().any(|&w| w != 0) {
            return Ordering::Greater;
        }
        probe.len.cmp(&self.entry_len(g, leaf, i))
    }

    /// Number of entries among the first `n` that are less than `probe` (or, with
    /// `or_equal`, less than or equal to it). Entries are sorted when the node is
    /// consistent; a torn read gives some position in `0..=n`, later rejected.
    fn rank(&self, g: &Geometry, leaf: bool, n: usize, probe: &Probe, or_equal: bool) -> usize {
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let c = self.cmp_at(g, leaf, mid, probe);
            let below = c == Ordering::Greater || (or_equal && c == Ordering::Equal);
            if below {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn child(&self, g: &Geometry, i: usize) -> Node {
        Node(self.word(g.child(i)).load(Relaxed) as *const AtomicU64)
    }

    /// Asks for all of the node's lines at once: a search reads a handful of them,
    /// one after another, and a node just reached is rarely in the cache (a descent
    /// through a large tree waited for each binary-search step's line in turn).
    fn prefetch(&self) {
        crate::prefetch::read_lines(self.0.cast(), NODE_BYTES);
    }

    // Writer-only stores (the node is locked, or not yet reachable).

    fn put_entry(&self, g: &Geometry, leaf: bool, i: usize, e: &Probe) {
        let k = g.key(i);
        for j in 0..g.w {
            self.word(k + j).store(e.words[j], Relaxed);
        }
        let lw = self.word(g.len_word(leaf, i));
        let shift = (i % 8) * 8;
        let old = lw.load(Relaxed);
        lw.store(
            (old & !(0xFF << shift)) | ((e.len as u64 & 0xFF) << shift),
            Relaxed,
        );
    }
    fn put_child(&self, g: &Geometry, i: usize, c: Node) {
        self.word(g.child(i)).store(c.0 as u64, Relaxed);
    }
}

/// Where a descent goes at each inner node.
#[derive(Clone, Copy)]
enum Seek<'a> {
    /// The child that may hold `probe` (separators `<=` it to the left).
    AtOrAfter(&'a Probe),
    /// The child that may hold the last entry below `probe`.
    Before(&'a Probe),
    First,
    Last,
}

/// A leaf a reader reached, with the version to validate its reads against, and the
/// separators bounding it: it holds entries `lower <= e < upper`.
struct Reached {
    leaf: Node,
    version: u64,
    lower: Option<Probe>,
    upper: Option<Probe>,
}

/// The leaf the writer last inserted into, with separators that bound it:
/// `lower <= e < upper` routes to it. Kept under the writer lock only.
#[derive(Clone, Copy)]
struct LastLeaf {
    leaf: Node,
    lower: Option<Probe>,
    upper: Option<Probe>,
}

// SAFETY: the node pointer is into the shared arena, valid in every process and
// thread that shares the tree; it is read and written under the writer lock only and
// forgotten before its node can be retired.
unsafe impl Send for LastLeaf {}

impl LastLeaf {
    fn covers(&self, e: &Probe) -> bool {
        self.lower.as_ref().is_none_or(|l| l <= e) && self.upper.as_ref().is_none_or(|u| e < u)
    }
}

/// A B+tree of entries of at most `8 * w` bytes.
pub(crate) struct BTree {
    geo: Geometry,
    root: AtomicU64,
    len: AtomicUsize,
    /// Nodes allocated, for memory reports.
    nodes: AtomicUsize,
    /// At least the first word of every entry in the tree: raised (by the writer,
    /// before the entry is published) by every insert, never lowered (removals leave
    /// it an upper bound). A probe whose first word is above it follows every entry,
    /// which answers unique-key checks of ascending keys without a descent.
    max_first: AtomicU64,
    /// Bytes accounted per entry (see [`BTree::entry_bytes`]).
    entry_bytes: usize,
    /// Serialises changes; holds the writer's [`LastLeaf`].
    writer: crate::sync::SpinLock<Option<LastLeaf>>,
}

// SAFETY: the nodes are shared by design (atomics only); the writer lock serialises
// changes and readers validate (see the module docs).
unsafe impl Send for BTree {}
// SAFETY: as above.
unsafe impl Sync for BTree {}

impl BTree {
    /// An empty tree for entries of at most `max_len` bytes (at most
    /// `8 * MAX_WORDS`). Allocates its root: call it where the tree's memory belongs.
    pub(crate) fn new(max_len: usize) -> BTree {
        let geo = Geometry::new(max_len.div_ceil(8).max(1));
        let block = crate::arena::block_size(NODE_BYTES);
        let entry_bytes = (block * 4).div_ceil(geo.leaf_cap * 3)
            + block.div_ceil(geo.leaf_cap * geo.inner_cap / 2);
        BTree {
            geo,
            entry_bytes,
            root: AtomicU64::new(Node::alloc(0).0 as u64),
            len: AtomicUsize::new(0),
            nodes: AtomicUsize::new(1),
            max_first: AtomicU64::new(0),
            writer: crate::sync::SpinLock::new(None),
        }
    }

    /// Longest entry this tree holds.
    pub(crate) fn max_len(&self) -> usize {
        self.geo.w * 8
    }

    /// Can a tree hold entries of up to `max_len` bytes?
    pub(crate) fn fits(max_len: usize) -> bool {
        max_len <= MAX_WORDS * 8
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Nodes allocated.
    pub(crate) fn nodes(&self) -> usize {
        self.nodes.load(Relaxed)
    }

    /// Bytes of the nodes allocated.
    pub(crate) fn bytes(&self) -> usize {
        self.nodes.load(Relaxed) * crate::arena::block_size(NODE_BYTES)
    }

    /// Expected bytes per entry: a leaf's block over its entries at three-quarters
    /// fill, plus a share of the inner nodes (for memory accounting, which is per entry).
    pub(crate) fn entry_bytes(&self) -> usize {
        self.entry_bytes
    }

    fn root(&self) -> Node {
        Node(self.root.load(Acquire) as *const AtomicU64)
    }

    /// Goes down to the leaf `seek` names (reader side, optimistic).
    fn reach(&self, seek: Seek, _guard: &Guard) -> Reached {
        let g = &self.geo;
        'restart: loop {
            let mut node = self.root();
            let Some(mut v) = node.read_begin() else {
                continue 'restart;
            };
            if self.root() != node {
                continue 'restart;
            }
            let (mut lower, mut upper) = (None, None);
            loop {
                if node.level() == 0 {
                    return Reached {
                        leaf: node,
                        version: v,
                        lower,
                        upper,
                    };
                }
                let n = node.count().min(g.inner_cap);
                let i = match seek {
                    Seek::AtOrAfter(p) => node.rank(g, false, n, p, true),
                    Seek::Before(p) => node.rank(g, false, n, p, false),
                    Seek::First => 0,
                    Seek::Last => n,
                };
                if i > 0 {
                    lower = Some(node.entry(g, false, i - 1));
                }
                if i < n {
                    upper = Some(node.entry(g, false, i));
                }
                let child = node.child(g, i);
                // (Before the validation: a stale pointer only costs the hints.)
                child.prefetch();
                if !node.validate(v) {
                    continue 'restart;
                }
                let Some(cv) = child.read_begin() else {
                    continue 'restart;
                };
                if !node.validate(v) {
                    continue 'restart;
                }
                node = child;
                v = cv;
            }
        }
    }

    /// May the tree hold an entry at or after `p`? False when every entry is below it
    /// (as of the entries published before this call).
    pub(crate) fn may_hold_at_or_after(&self, p: &Probe) -> bool {
        p.words[0] <= self.max_first.load(Acquire)
    }

    /// Is entry `e` present?
    pub(crate) fn contains(&self, e: &Probe, guard: &Guard) -> bool {
        let g = &self.geo;
        loop {
            let r = self.reach(Seek::AtOrAfter(e), guard);
            let n = r.leaf.count().min(g.leaf_cap);
            let i = r.leaf.rank(g, true, n, e, false);
            let found = i < n && r.leaf.cmp_at(g, true, i, e) == Ordering::Equal;
            if r.leaf.validate(r.version) {
                return found;
            }
        }
    }

    /// Visits the entries within the bounds, in order (or in reverse), until `f`
    /// returns false. The tree is not held while `f` runs.
    pub(crate) fn scan(
        &self,
        lower: Bound<Probe>,
        upper: Bound<Probe>,
        reverse: bool,
        guard: &Guard,
        mut f: impl FnMut(&Probe) -> bool,
    ) {
        let g = &self.geo;
        let in_upper = |e: &Probe| match &upper {
            Bound::Included(u) => u.cmp_words(MAX_WORDS, &e.words, e.len) != Ordering::Less,
            Bound::Excluded(u) => u.cmp_words(MAX_WORDS, &e.words, e.len) == Ordering::Greater,
            Bound::Unbounded => true,
        };
        let in_lower = |e: &Probe| match &lower {
            Bound::Included(l) => l.cmp_words(MAX_WORDS, &e.words, e.len) != Ordering::Greater,
            Bound::Excluded(l) => l.cmp_words(MAX_WORDS, &e.words, e.len) == Ordering::Less,
            Bound::Unbounded => true,
        };
        // A leaf's matching entries (not initialised: 2 KiB of zeroes per call showed
        // as memset in every unique-key check).
        let mut buf = [const { std::mem::MaybeUninit::<Probe>::uninit() }; MAX_CAP];
        // Where the next leaf's part begins (forward: entries at or after; reverse:
        // entries before or at).
        let mut cursor = if reverse { upper } else { lower };
        loop {
            let r = match &cursor {
                Bound::Unbounded if reverse => self.reach(Seek::Last, guard),
                Bound::Unbounded => self.reach(Seek::First, guard),
                Bound::Included(p) if reverse => self.reach(Seek::AtOrAfter(p), guard),
                Bound::Excluded(p) if reverse => self.reach(Seek::Before(p), guard),
                Bound::Included(p) | Bound::Excluded(p) => self.reach(Seek::AtOrAfter(p), guard),
            };
            let leaf = r.leaf;
            let n = leaf.count().min(g.leaf_cap);
            // This leaf's slots from the cursor on (backwards when reverse), while
            // they are within the far bound.
            let (from, to) = match (&cursor, reverse) {
                (Bound::Unbounded, _) => (0, n),
                (Bound::Included(p), true) => (0, leaf.rank(g, true, n, p, true)),
                (Bound::Excluded(p), true) => (0, leaf.rank(g, true, n, p, false)),
                (Bound::Included(p), false) => (leaf.rank(g, true, n, p, false), n),
                (Bound::Excluded(p), false) => (leaf.rank(g, true, n, p, true), n),
            };
            let (mut forward, mut backward) = ((from..to), (from..to).rev());
            let slots: &mut dyn Iterator<Item = usize> =
                if reverse { &mut backward } else { &mut forward };
            let inside: &dyn Fn(&Probe) -> bool = if reverse { &in_lower } else { &in_upper };
            let mut got = 0;
            let mut ended = false;
            for i in slots {
                let e = leaf.entry(g, true, i);
                if !inside(&e) {
                    ended = true;
                    break;
                }
                buf[got].write(e);
                got += 1;
            }
            if !leaf.validate(r.version) {
                continue;
            }
            for b in &buf[..got] {
                // SAFETY: slots `..got` were written just above in this pass.
                let e = unsafe { b.assume_init_ref() };
                if !f(e) {
                    return;
                }
            }
            if ended {
                return;
            }
            cursor = match (reverse, r.lower, r.upper) {
                (true, Some(l), _) => {
                    if !in_lower(&l) {
                        return;
                    }
                    Bound::Excluded(l)
                }
                (false, _, Some(u)) => {
                    if !in_upper(&u) {
                        return;
                    }
                    Bound::Included(u)
                }
                _ => return,
            };
        }
    }

    /// The writer's way down to the leaf for `e`: the inner nodes and the child taken
    /// in each; returns the leaf and the path's depth, and the separators that bound
    /// the leaf.
    fn path_to(&self, e: &Probe, path: &mut [(Node, usize); MAX_DEPTH]) -> (Node, usize, LastLeaf) {
        let g = &self.geo;
        let mut node = self.root();
        let mut depth = 0;
        let (mut lower, mut upper) = (None, None);
        while node.level() > 0 {
            let n = node.count();
            let i = node.rank(g, false, n, e, true);
            if i > 0 {
                lower = Some(node.entry(g, false, i - 1));
            }
            if i < n {
                upper = Some(node.entry(g, false, i));
            }
            path[depth] = (node, i);
            depth += 1;
            node = node.child(g, i);
            node.prefetch();
        }
        (
            node,
            depth,
            LastLeaf {
                leaf: node,
                lower,
                upper,
            },
        )
    }

    /// Puts `e` into locked-by-the-writer `leaf` of `n < leaf_cap` entries unless `e`
    /// is there; returns whether it was put.
    fn put_in_leaf(&self, leaf: Node, n: usize, e: &Probe) -> bool {
        let g = self.geo;
        // Ascending inserts land after the last entry: one comparison.
        let pos = if n > 0 && leaf.cmp_at(&g, true, n - 1, e) == Ordering::Greater {
            n
        } else {
            leaf.rank(&g, true, n, e, false)
        };
        if pos < n && leaf.cmp_at(&g, true, pos, e) == Ordering::Equal {
            return false;
        }
        self.len.fetch_add(1, Relaxed);
        leaf.lock();
        for i in (pos..n).rev() {
            leaf.put_entry(&g, true, i + 1, &leaf.entry(&g, true, i));
        }
        leaf.put_entry(&g, true, pos, e);
        leaf.set_count(n + 1);
        leaf.note_put(pos);
        leaf.unlock();
        true
    }

    /// Inserts entry `e` unless it is present; returns whether it
    /// was inserted. `e` must fit the tree ([`BTree::max_len`]).
    pub(crate) fn insert(&self, e: &Probe, _guard: &Guard) -> bool {
        assert!(e.len <= self.max_len(), "entry of {} bytes", e.len);
        let g = self.geo;
        let mut last = self.writer.lock();
        // Before the entry is published (the leaf's unlock releases it): see
        // `max_first`. Only the writer stores it.
        if e.words[0] > self.max_first.load(Relaxed) {
            self.max_first.store(e.words[0], Release);
        }
        if let Some(h) = *last {
            let n = h.leaf.count();
            if n < g.leaf_cap && h.covers(e) {
                return self.put_in_leaf(h.leaf, n, e);
            }
        }
        let mut path = [(Node(std::ptr::null()), 0); MAX_DEPTH];
        let (leaf, depth, fenced) = self.path_to(e, &mut path);
        let n = leaf.count();
        if n < g.leaf_cap {
            *last = Some(fenced);
            return self.put_in_leaf(leaf, n, e);
        }
        let pos = leaf.rank(&g, true, n, e, false);
        if pos < n && leaf.cmp_at(&g, true, pos, e) == Ordering::Equal {
            return false;
        }
        self.len.fetch_add(1, Relaxed);
        // The leaf's fences narrow: forget it.
        *last = None;
        // Split: lock the leaf and every ancestor the split reaches (up to the first
        // with room, or all and a new root), change them, then unlock them all.
        let mut top = depth;
        while top > 0 && path[top - 1].0.count() >= g.inner_cap {
            top -= 1;
        }
        let first = top.saturating_sub(1);
        for p in &path[first..depth] {
            p.0.lock();
        }
        leaf.lock();
        let (mut sep, mut right) = self.split_leaf(leaf, pos, e);
        let mut level = depth;
        loop {
            if level == 0 {
                // The root split: a new root over the two halves.
                let old = self.root();
                let root = self.new_node(old.level() + 1);
                root.put_entry(&g, false, 0, &sep);
                root.put_child(&g, 0, old);
                root.put_child(&g, 1, right);
                root.set_count(1);
                self.root.store(root.0 as u64, Release);
                break;
            }
            let (parent, ci) = path[level - 1];
            let pn = parent.count();
            if pn < g.inner_cap {
                for i in (ci..pn).rev() {
                    parent.put_entry(&g, false, i + 1, &parent.entry(&g, false, i));
                }
                for i in (ci + 1..=pn).rev() {
                    parent.put_child(&g, i + 1, parent.child(&g, i));
                }
                parent.put_entry(&g, false, ci, &sep);
                parent.put_child(&g, ci + 1, right);
                parent.set_count(pn + 1);
                parent.note_put(ci);
                break;
            }
            (sep, right) = self.split_inner(parent, ci, &sep, right);
            level -= 1;
        }
        leaf.unlock();
        for p in path[first..depth].iter().rev() {
            p.0.unlock();
        }
        true
    }

    fn new_node(&self, level: u8) -> Node {
        self.nodes.fetch_add(1, Relaxed);
        Node::alloc(level)
    }

    /// Splits full, locked `leaf` while inserting `e` at `pos`: returns the
    /// first entry of the new right leaf (the separator) and the leaf, not yet linked.
    fn split_leaf(&self, leaf: Node, pos: usize, e: &Probe) -> (Probe, Node) {
        let g = self.geo;
        let n = g.leaf_cap;
        let mut all = [*e; MAX_CAP + 1];
        for i in 0..n {
            let at = if i < pos { i } else { i + 1 };
            all[at] = leaf.entry(&g, true, i);
        }
        let (m, low) = split_point(n, pos, leaf.recent(), true);
        let right = self.new_node(0);
        for (i, k) in all[m..=n].iter().enumerate() {
            right.put_entry(&g, true, i, k);
        }
        right.set_count(n + 1 - m);
        for (i, k) in all[..m].iter().enumerate() {
            leaf.put_entry(&g, true, i, k);
        }
        leaf.set_count(m);
        if pos < m {
            leaf.set_recent([pos, NO_SLOT]);
        } else {
            leaf.set_recent([NO_SLOT; 2]);
            right.set_recent([pos - m, NO_SLOT]);
        }
        // The lowest separator: the left node's last entry and a zero byte (the same
        // words, one byte longer), if the tree's entries have room for it.
        let last = all[m - 1];
        let sep = if low && last.len < self.max_len() {
            Probe {
                words: last.words,
                len: last.len + 1,
            }
        } else {
            all[m]
        };
        (sep, right)
    }

    /// Splits full, locked inner `node` while inserting separator `sep` at `ci` with
    /// child `right` after it: returns the separator for the level above and the new
    /// right node, not yet linked.
    fn split_inner(&self, node: Node, ci: usize, sep: &Probe, right: Node) -> (Probe, Node) {
        let g = self.geo;
        let n = g.inner_cap;
        let mut keys = [*sep; MAX_CAP + 1];
        let mut kids = [right; MAX_CAP + 2];
        for i in 0..n {
            keys[if i < ci { i } else { i + 1 }] = node.entry(&g, false, i);
        }
        for i in 0..=n {
            kids[if i <= ci { i } else { i + 1 }] = node.child(&g, i);
        }
        // n + 1 separators, n + 2 children. Separator m goes up; the left keeps
        // separators 0..m and children 0..=m.
        let (m, _) = split_point(n, ci, node.recent(), false);
        let level = node.level();
        let new = self.new_node(level);
        for (i, k) in keys[m + 1..=n].iter().enumerate() {
            new.put_entry(&g, false, i, k);
        }
        for (i, c) in kids[m + 1..=n + 1].iter().enumerate() {
            new.put_child(&g, i, *c);
        }
        new.set_count(n - m);
        for (i, k) in keys[..m].iter().enumerate() {
            node.put_entry(&g, false, i, k);
        }
        for (i, c) in kids[..=m].iter().enumerate() {
            node.put_child(&g, i, *c);
        }
        node.set_count(m);
        if ci < m {
            node.set_recent([ci, NO_SLOT]);
        } else {
            node.set_recent([NO_SLOT; 2]);
            // (The new separator itself goes up when ci == m.)
            if ci > m {
                new.set_recent([ci - m - 1, NO_SLOT]);
            }
        }
        (keys[m], new)
    }

    /// Removes entry `e`; returns whether it was present.
    pub(crate) fn remove(&self, e: &Probe, guard: &Guard) -> bool {
        let g = self.geo;
        let mut last = self.writer.lock();
        let mut path = [(Node(std::ptr::null()), 0); MAX_DEPTH];
        let (leaf, depth, _) = self.path_to(e, &mut path);
        let n = leaf.count();
        let pos = leaf.rank(&g, true, n, e, false);
        if pos >= n || leaf.cmp_at(&g, true, pos, e) != Ordering::Equal {
            return false;
        }
        self.len.fetch_sub(1, Relaxed);
        if n > 1 || depth == 0 {
            leaf.lock();
            for i in pos..n - 1 {
                leaf.put_entry(&g, true, i, &leaf.entry(&g, true, i + 1));
            }
            leaf.set_count(n - 1);
            leaf.note_taken(pos);
            leaf.unlock();
            return true;
        }
        // The leaf empties: take it out, with the ancestors it leaves without
        // children, from the lowest ancestor that keeps one. (The writer's last leaf
        // may be among the nodes retired: forget it.)
        *last = None;
        let mut keep = depth;
        while keep > 0 && path[keep - 1].0.count() == 0 {
            keep -= 1;
        }
        let mut gone = [Node(std::ptr::null()); MAX_DEPTH + 1];
        let mut ngone = 0;
        if keep == 0 {
            // Every ancestor had this one child (not reached while roots with one
            // child give way to it, below): the emptied leaf becomes the root.
            for p in &path[..depth] {
                p.0.lock();
                p.0.mark_obsolete();
            }
            leaf.lock();
            leaf.set_count(0);
            leaf.note_taken(pos);
            self.root.store(leaf.0 as u64, Release);
            leaf.unlock();
            for p in &path[..depth] {
                self.retire(p.0, guard);
            }
            return true;
        }
        {
            let (a, ci) = path[keep - 1];
            a.lock();
            for p in &path[keep..depth] {
                p.0.lock();
            }
            leaf.lock();
            let an = a.count();
            // Child ci goes with separator ci - 1 (the left neighbour's range grows
            // over it) or, for child 0, separator 0.
            let k = ci.saturating_sub(1);
            for i in k..an - 1 {
                a.put_entry(&g, false, i, &a.entry(&g, false, i + 1));
            }
            for i in ci..an {
                a.put_child(&g, i, a.child(&g, i + 1));
            }
            a.set_count(an - 1);
            a.note_taken(k);
            for p in &path[keep..depth] {
                gone[ngone] = p.0;
                ngone += 1;
            }
        }
        gone[ngone] = leaf;
        ngone += 1;
        for node in &gone[..ngone] {
            node.mark_obsolete();
        }
        path[keep - 1].0.unlock();
        for node in &gone[..ngone] {
            self.retire(*node, guard);
        }
        // A root left with one child gives way to it.
        loop {
            let root = self.root();
            if root.level() == 0 || root.count() > 0 {
                break;
            }
            root.lock();
            self.root.store(root.child(&g, 0).0 as u64, Release);
            root.mark_obsolete();
            self.retire(root, guard);
        }
        true
    }

    /// Frees obsolete `node` once no reader can reach it.
    fn retire(&self, node: Node, guard: &Guard) {
        self.nodes.fetch_sub(1, Relaxed);
        let p = node.0 as usize;
        // SAFETY: the node is out of the tree and marked obsolete; readers that
        // reached it hold guards older than this deferral and start over when they
        // see it obsolete. The function runs inside an engine scope in some process
        // sharing the arena, where `dealloc` routes the block back to it.
        unsafe {
            guard.defer_unchecked(move || Node(p as *const AtomicU64).free());
        }
    }
}

impl Drop for BTree {
    fn drop(&mut self) {
        // Nobody else holds the tree: free every node now.
        let g = self.geo;
        let mut stack = vec![self.root()];
        while let Some(n) = stack.pop() {
            if n.level() > 0 {
                for i in 0..=n.count() {
                    stack.push(n.child(&g, i));
                }
            }
            // SAFETY: the tree is being dropped; each node is reachable once.
            unsafe { n.free() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn collector() -> crossbeam_epoch::Collector {
        crossbeam_epoch::Collector::new()
    }

    fn bytes(p: &Probe) -> Vec<u8> {
        let mut b = [0u8; MAX_WORDS * 8];
        p.bytes(&mut b).to_vec()
    }

    fn all(
        t: &BTree,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        rev: bool,
        c: &crossbeam_epoch::Collector,
    ) -> Vec<Vec<u8>> {
        let h = c.register();
        let g = h.pin();
        let mut out = Vec::new();
        t.scan(lo.map(Probe::new), hi.map(Probe::new), rev, &g, |e| {
            out.push(bytes(e));
            true
        });
        out
    }

    #[test]
    fn geometry_fits_one_block() {
        for w in 1..=MAX_WORDS {
            let g = Geometry::new(w);
            assert!(g.child(g.inner_cap) < NODE_WORDS, "{g:?}");
            assert!(g.len_word(true, g.leaf_cap - 1) < NODE_WORDS, "{g:?}");
            assert!(g.leaf_cap <= MAX_CAP && g.inner_cap <= MAX_CAP);
        }
        assert_eq!(Geometry::new(2).leaf_cap, 59);
        assert_eq!(Geometry::new(4).leaf_cap, 30);
    }

    #[test]
    fn ascending_inserts_fill_leaves() {
        let c = collector();
        let h = c.register();
        let t = BTree::new(13);
        for i in 0..100_000u64 {
            let g = h.pin();
            assert!(t.insert(&Probe::with_suffix(&(i as u32).to_be_bytes()[..], i), &g));
        }
        assert_eq!(t.len(), 100_000);
        let per = t.bytes() as f64 / 100_000.0;
        assert!(per < 19.0, "{per} bytes per entry");
        let got = all(&t, Bound::Unbounded, Bound::Unbounded, false, &c);
        assert_eq!(got.len(), 100_000);
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn inserts_after_the_last_leaf_went_reach_the_tree() {
        // Ascending inserts go to the writer's last leaf without a descent; emptying
        // that leaf takes it out of the tree, and the next insert within its old
        // fences must go to the leaf that took its range over.
        let c = collector();
        let h = c.register();
        let t = BTree::new(4);
        let key = |k: u32| Probe::new(&k.to_be_bytes());
        for k in 0..200u32 {
            t.insert(&key(k), &h.pin());
        }
        // The last leaf holds the highest keys: empty it (and more).
        for k in (100..200u32).rev() {
            assert!(t.remove(&key(k), &h.pin()));
        }
        for k in [1000u32, 150, 120] {
            assert!(t.insert(&key(k), &h.pin()));
        }
        for _ in 0..4 {
            c.register().pin().flush();
        }
        // The bound of entries' first words: exact after inserts, an upper bound
        // after removals.
        let hi = |k: u32, rowid: u64| Probe::with_suffix(&k.to_be_bytes(), rowid);
        assert!(t.may_hold_at_or_after(&key(1000)));
        assert!(!t.may_hold_at_or_after(&hi(1000, 1 << 32)));
        assert!(t.may_hold_at_or_after(&Probe::new(&1000u32.to_be_bytes()[..3])));
        assert!(!t.may_hold_at_or_after(&key(1001)));
        assert!(t.remove(&key(1000), &h.pin()));
        assert!(t.may_hold_at_or_after(&key(1000)));
        assert!(t.insert(&key(1000), &h.pin()));
        for k in [150u32, 1000, 120, 0, 99] {
            assert!(t.contains(&key(k), &h.pin()), "key {k}");
        }
        let got = all(&t, Bound::Unbounded, Bound::Unbounded, false, &c);
        assert_eq!(got.len(), 103);
        // Splits narrow the last leaf's fences: an insert below a split point after
        // the split still lands in order.
        let t = BTree::new(4);
        for k in (0..400u32).step_by(2) {
            t.insert(&key(k), &h.pin());
        }
        for k in (1..400u32).step_by(2) {
            t.insert(&key(k), &h.pin());
        }
        let got = all(&t, Bound::Unbounded, Bound::Unbounded, false, &c);
        assert_eq!(got.len(), 400);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, e)| *e == (i as u32).to_be_bytes()));
    }

    #[test]
    fn interleaved_and_descending_runs_fill_leaves() {
        // Two ascending runs in two key ranges, interleaved (as two replay threads
        // insert), then a descending run: each fills its nodes.
        let c = collector();
        let h = c.register();
        let t = BTree::new(13);
        let n = 50_000u32;
        for i in 0..n {
            let g = h.pin();
            for k in [i, 1_000_000 + i] {
                t.insert(&Probe::with_suffix(&k.to_be_bytes(), 0), &g);
            }
        }
        for k in (2_000_000..2_000_000 + n).rev() {
            let g = h.pin();
            t.insert(&Probe::with_suffix(&k.to_be_bytes(), 0), &g);
        }
        assert_eq!(t.len(), 3 * n as usize);
        let per = t.bytes() as f64 / t.len() as f64;
        assert!(per < 19.0, "{per} bytes per entry");
        let got = all(&t, Bound::Unbounded, Bound::Unbounded, false, &c);
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(got.len(), 3 * n as usize);
        // Descending into an empty tree, and random order (splits in the middle:
        // about two-thirds full).
        for (descending, limit) in [(true, 19.0), (false, 29.0)] {
            let t = BTree::new(13);
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            for i in 0..n {
                // (xorshift: a random order, not an evenly spread one.)
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = if descending { n - i } else { x as u32 };
                let g = h.pin();
                t.insert(&Probe::with_suffix(&k.to_be_bytes(), 0), &g);
            }
            assert_eq!(t.len(), n as usize);
            let per = t.bytes() as f64 / t.len() as f64;
            assert!(
                per < limit,
                "descending {descending}: {per} bytes per entry"
            );
        }
    }

    proptest! {
        #[test]
        fn probes_order_like_their_bytes(
            a in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..40),
            b in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..40),
        ) {
            let (pa, pb) = (Probe::new(&a), Probe::new(&b));
            if a.len() <= MAX_WORDS * 8 && b.len() <= MAX_WORDS * 8 {
                prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
                prop_assert_eq!(bytes(&pa), a.clone());
            }
            // A stored entry (at most 8 * w bytes) against any probe.
            if b.len() <= 16 {
                let t = BTree::new(16);
                let c = collector();
                let h = c.register();
                let g = h.pin();
                t.insert(&pb, &g);
                let n = t.root();
                prop_assert_eq!(n.cmp_at(&t.geo, true, 0, &pa), a.cmp(&b));
            }
            let mut k = a.clone();
            k.extend_from_slice(&9u64.to_be_bytes());
            if a.len() + 8 <= MAX_WORDS * 8 {
                prop_assert_eq!(Probe::with_suffix(&a, 9), Probe::new(&k));
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Vec<u8>),
        /// Keys `prefix ++ [i]` for `i` in `from..to`, ascending or descending (runs
        /// of inserts: the split heuristics).
        Run(Vec<u8>, u8, u8, bool),
        Remove(Vec<u8>),
        Scan(
            Option<(Vec<u8>, bool)>,
            Option<(Vec<u8>, bool)>,
            bool,
            usize,
        ),
        Get(Vec<u8>),
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        // Short keys over a small alphabet: many collisions, prefixes and zeros.
        proptest::collection::vec(
            prop_oneof![Just(0u8), Just(1u8), Just(255u8), any::<u8>()],
            0..=16,
        )
    }

    fn bound(b: &Option<(Vec<u8>, bool)>) -> Bound<&[u8]> {
        match b {
            None => Bound::Unbounded,
            Some((k, true)) => Bound::Included(k),
            Some((k, false)) => Bound::Excluded(k),
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => key().prop_map(Op::Insert),
            1 => (proptest::collection::vec(any::<u8>(), 0..14), any::<u8>(), any::<u8>(), any::<bool>())
                .prop_map(|(p, a, b, d)| Op::Run(p, a.min(b), a.max(b), d)),
            3 => key().prop_map(Op::Remove),
            1 => (
                proptest::option::of((proptest::collection::vec(any::<u8>(), 0..40), any::<bool>())),
                proptest::option::of((proptest::collection::vec(any::<u8>(), 0..40), any::<bool>())),
                any::<bool>(),
                0usize..50
            )
                .prop_map(|(a, b, r, n)| Op::Scan(a, b, r, n)),
            1 => key().prop_map(Op::Get),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn behaves_like_an_ordered_map(ops in proptest::collection::vec(op(), 1..3000)) {
            let c = collector();
            let h = c.register();
            let t = BTree::new(16);
            let mut model: BTreeSet<Vec<u8>> = BTreeSet::new();
            for op in ops.iter() {
                let g = h.pin();
                match op {
                    Op::Insert(k) => {
                        prop_assert_eq!(t.insert(&Probe::new(k), &g), model.insert(k.clone()));
                    }
                    Op::Run(prefix, from, to, desc) => {
                        let mut run: Vec<u8> = (*from..*to).collect();
                        if *desc {
                            run.reverse();
                        }
                        for i in run {
                            let mut k = prefix.clone();
                            k.push(i);
                            prop_assert_eq!(t.insert(&Probe::new(&k), &g), model.insert(k));
                        }
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(t.remove(&Probe::new(k), &g), model.remove(k));
                    }
                    Op::Get(k) => {
                        prop_assert_eq!(t.contains(&Probe::new(k), &g), model.contains(k));
                        // A "nothing at or after" answer must be true of the model.
                        if !t.may_hold_at_or_after(&Probe::new(k)) {
                            prop_assert!(model.range(k.clone()..).next().is_none());
                        }
                    }
                    Op::Scan(lo, hi, rev, limit) => {
                        let (lo, hi) = (bound(lo), bound(hi));
                        let mut got = Vec::new();
                        t.scan(lo.map(Probe::new), hi.map(Probe::new), *rev, &g, |e| {
                            got.push(bytes(e));
                            got.len() < *limit
                        });
                        let ordered = match (lo, hi) {
                            (Bound::Included(a), Bound::Included(b)) | (Bound::Included(a), Bound::Excluded(b))
                            | (Bound::Excluded(a), Bound::Included(b)) | (Bound::Excluded(a), Bound::Excluded(b)) => a <= b,
                            _ => true,
                        };
                        // BTreeMap::range panics on inverted or empty-excluded ranges.
                        let empty = !ordered || matches!((lo, hi), (Bound::Excluded(a), Bound::Excluded(b)) if a == b);
                        let want: Vec<Vec<u8>> = if empty {
                            Vec::new()
                        } else if *rev {
                            model.range::<[u8], _>((lo, hi)).rev().take((*limit).max(1)).cloned().collect()
                        } else {
                            model.range::<[u8], _>((lo, hi)).take((*limit).max(1)).cloned().collect()
                        };
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(t.len(), model.len());
            }
            let got = all(&t, Bound::Unbounded, Bound::Unbounded, true, &c);
            let want: Vec<_> = model.iter().rev().cloned().collect();
            prop_assert_eq!(got, want);
            // Emptying the tree frees every node but the root leaf.
            for k in model.iter() {
                let g = h.pin();
                prop_assert!(t.remove(&Probe::new(k), &g));
            }
            prop_assert_eq!(t.len(), 0);
            prop_assert_eq!(t.nodes.load(Relaxed), 1);
        }
    }

    #[test]
    fn readers_see_every_stable_entry_while_a_writer_churns() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let c = collector();
        let t = Arc::new(BTree::new(12));
        let stop = Arc::new(AtomicBool::new(false));
        // Even keys stay; odd keys come and go (splits and removals of whole leaves).
        {
            let h = c.register();
            for i in (0..20_000u32).step_by(2) {
                let g = h.pin();
                t.insert(&Probe::with_suffix(&i.to_be_bytes(), 0), &g);
            }
        }
        let writer = {
            let (t, stop, c) = (t.clone(), stop.clone(), c.clone());
            std::thread::spawn(move || {
                let h = c.register();
                let mut round = 0u32;
                while !stop.load(Relaxed) {
                    // Odd keys in, then out, ascending or descending by turns.
                    let mut odd: Vec<u32> = (1..20_000u32).step_by(2).collect();
                    if round % 2 == 1 {
                        odd.reverse();
                    }
                    for &i in &odd {
                        let g = h.pin();
                        t.insert(&Probe::with_suffix(&i.to_be_bytes(), 0), &g);
                    }
                    odd.reverse();
                    for &i in &odd {
                        let g = h.pin();
                        t.remove(&Probe::with_suffix(&i.to_be_bytes(), 0), &g);
                    }
                    round += 1;
                }
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (t, c) = (t.clone(), c.clone());
                std::thread::spawn(move || {
                    let h = c.register();
                    for pass in 0..60 {
                        let g = h.pin();
                        let mut evens = 0;
                        let mut last: Option<Vec<u8>> = None;
                        t.scan(
                            Bound::Unbounded,
                            Bound::Unbounded,
                            (pass + r) % 2 == 1,
                            &g,
                            |e| {
                                let b = bytes(e);
                                if let Some(l) = &last {
                                    assert!(if (pass + r) % 2 == 1 { *l > b } else { *l < b });
                                }
                                let k = u32::from_be_bytes(b[..4].try_into().unwrap());
                                evens += (k % 2 == 0) as usize;
                                last = Some(b);
                                true
                            },
                        );
                        assert_eq!(evens, 10_000);
                        for i in (0..20_000u32).step_by(2 * 97) {
                            assert!(t.contains(&Probe::with_suffix(&i.to_be_bytes(), 0), &g));
                        }
                    }
                })
            })
            .collect();
        for r in readers {
            r.join().unwrap();
        }
        stop.store(true, Relaxed);
        writer.join().unwrap();
    }
}

#[cfg(test)]
mod timing {
    //! `cargo test -p memfdw-engine --release --lib btree::timing -- --ignored --nocapture`:
    //! B+tree against the skip list, one thread, 1M int4 entries.
    use super::*;
    use crate::index::IndexKey;
    use crossbeam_skiplist::base::SkipList;

    #[test]
    #[ignore]
    fn tree_against_skip_list() {
        let c = crossbeam_epoch::Collector::new();
        let h = c.register();
        let n = 1_000_000u32;
        let key = |i: u32| {
            let mut k = vec![1u8];
            k.extend_from_slice(&i.to_be_bytes());
            k.extend_from_slice(&(i as u64).to_be_bytes());
            k
        };
        let keys: Vec<Vec<u8>> = (0..n).map(key).collect();
        let mut x = 88172645463325252u64;
        let probes: Vec<u32> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % n as u64) as u32
            })
            .collect();
        let t = BTree::new(13);
        let s = std::time::Instant::now();
        for k in &keys {
            let g = h.pin();
            t.insert(&Probe::new(k), &g);
        }
        let tree_ins = s.elapsed();
        let s = std::time::Instant::now();
        for &p in &probes {
            let g = h.pin();
            assert!(t.contains(&Probe::new(&keys[p as usize]), &g));
        }
        let tree_get = s.elapsed();
        let l: SkipList<IndexKey, u64> = SkipList::new(c.clone());
        let s = std::time::Instant::now();
        for k in &keys {
            let g = h.pin();
            l.get_or_insert(IndexKey::new(k), 1, &g).release(&g);
        }
        let list_ins = s.elapsed();
        let s = std::time::Instant::now();
        for &p in &probes {
            let g = h.pin();
            assert!(l.get(&IndexKey::new(&keys[p as usize]), &g).is_some());
        }
        let list_get = s.elapsed();
        eprintln!(
            "1M ascending inserts: tree {tree_ins:?}, skip list {list_ins:?}; 1M random gets: tree {tree_get:?}, skip list {list_get:?}"
        );
    }
}
