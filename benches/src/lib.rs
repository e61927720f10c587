//! Shared inputs for the component benchmarks.

/// Deterministic pseudo-random bytes (incompressible).
pub fn random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    seed |= 1;
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Text-like bytes (compressible about 3:1 by zstd).
pub fn text(len: usize) -> Vec<u8> {
    let words = [
        "association ",
        "budget ",
        "réunion ",
        "procès-verbal ",
        "adhérents ",
        "trésorerie ",
        "assemblée ",
        "générale ",
        "2024 ",
        "compte-rendu\n",
        "le ",
        "la ",
        "des ",
        "et ",
    ];
    let r = random(len / 4 + 16, 7);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(words[usize::from(r[i % r.len()]) % words.len()].as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}
