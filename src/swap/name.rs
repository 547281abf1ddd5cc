//! Swap file names: a queue name escaped into one safe path component.
//!
//! Invariants: the prefix consists of `[A-Za-z0-9_%-]` only (so no `/`, `.`, NUL or
//! non-ASCII byte reaches the file system: nothing escapes `swap/`), is at most
//! [`MAX_PREFIX`] bytes long, and unshortened prefixes are injective (every byte outside
//! `[A-Za-z0-9_-]`, `%` included, becomes `%XX`). Shortened prefixes contain `%%`, which no
//! unshortened prefix does. Distinct queues never share files even if two shortened
//! prefixes collided, because file numbers are unique per `SwapDir` (see `mod.rs`).

/// Longest escaped name kept whole; longer ones are cut and get a hash suffix.
pub(crate) const MAX_PREFIX: usize = 200;
/// Bytes of the escaped name kept in front of the hash when shortening.
const KEEP: usize = 180;

fn safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// FNV-1a, 64-bit: stable across builds and platforms.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The file-name prefix of queue `name`: files are `<prefix>-<file number>.swap`.
pub(crate) fn file_prefix(name: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(name.len().min(MAX_PREFIX + 20));
    // `cut` remembers the last escape boundary at or below KEEP bytes.
    let mut cut = 0;
    for &b in name.as_bytes() {
        if out.len() <= KEEP {
            cut = out.len();
        }
        if safe(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
        if out.len() > MAX_PREFIX + 3 && cut > 0 {
            // Long enough to know it gets shortened; stop copying.
            break;
        }
    }
    if out.len() <= MAX_PREFIX {
        return out;
    }
    out.truncate(cut);
    out.push_str("%%");
    out.push_str(&format!("{:016x}", fnv1a64(name.as_bytes())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_outside_the_safe_set() {
        assert_eq!(file_prefix("orders-1_A"), "orders-1_A");
        assert_eq!(file_prefix(".."), "%2E%2E");
        assert_eq!(file_prefix("a/b"), "a%2Fb");
        assert_eq!(file_prefix("\0"), "%00");
        assert_eq!(file_prefix("%"), "%25");
        assert_eq!(file_prefix("é"), "%C3%A9");
        assert_eq!(file_prefix(""), "");
    }

    #[test]
    fn long_names_are_shortened_with_a_hash_and_stay_distinct() {
        let a = "x".repeat(1000);
        let b = format!("{}y", "x".repeat(999));
        let (pa, pb) = (file_prefix(&a), file_prefix(&b));
        assert!(
            pa.len() <= MAX_PREFIX && pb.len() <= MAX_PREFIX,
            "{}",
            pa.len()
        );
        assert_ne!(pa, pb);
        assert!(pa.contains("%%"));
        let c = "/".repeat(1000);
        let pc = file_prefix(&c);
        assert!(pc.len() <= MAX_PREFIX);
        assert!(pc.bytes().all(|b| safe(b) || b == b'%'));
        // Exactly at the limit: kept whole.
        let d = "z".repeat(MAX_PREFIX);
        assert_eq!(file_prefix(&d), d);
        assert!(file_prefix(&format!("{d}z")).contains("%%"));
    }
}
