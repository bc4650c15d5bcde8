//! FNV-1a, for hash tables keyed by short values that need no protection against
//! chosen collisions (the default hasher, SipHash, costs more than the rest of such a
//! lookup): the engine's table map (database and relation OIDs, looked up by every
//! statement), and in the FDW the GROUP BY table's group keys and scan plans' serials.

/// An FNV-1a hasher (`Default` starts it).
#[derive(Default)]
pub struct Fnv(u64);

/// Builds [`Fnv`] hashers, for `HashMap`s.
pub type FnvBuild = std::hash::BuildHasherDefault<Fnv>;

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}
