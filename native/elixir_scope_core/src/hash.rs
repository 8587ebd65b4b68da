//! A fast hasher for u64-like keys (raw term words, event ids).
//!
//! Multiply-rotate in the style of rustc's FxHash: one multiply per word.
//! Keys here are not attacker-chosen hash-flooding inputs (term words and
//! sequential ids), so SipHash's DoS resistance buys nothing and costs ~4x.

use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default, Clone, Copy)]
pub struct WordHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(n as u64)
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64)
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64)
    }
}

pub type BuildWordHasher = BuildHasherDefault<WordHasher>;
pub type WordMap<K, V> = std::collections::HashMap<K, V, BuildWordHasher>;

/// Spreads a raw term word (whose low bits are tag bits) over 64 bits.
pub fn mix(word: u64) -> u64 {
    let x = word.wrapping_mul(K);
    x ^ (x >> 29)
}
