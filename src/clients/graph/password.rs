//! The password a user created in Entra ID gets (docs/behaviour.md §6): random, never shown.
//!
//! Sign-in goes through the federated service, so nobody ever types it; it exists because Graph
//! requires `passwordProfile` on create. It must pass Entra's cloud password policy (8–256
//! printable ASCII characters, three of four classes, no banned words): 40 characters drawn
//! uniformly from an alphabet of 90 with at least one of each class (≈ 259 bits), from the
//! operating system's generator. It lives in a [`SecretString`], is registered with the create
//! call's `Redactor`, and is never logged or put in an error.

use rand::TryRngCore;
use rand::rngs::OsRng;
use secrecy::SecretString;

/// Characters per password (Entra allows 8–256; docs/behaviour.md §6 asks for at least 32).
pub const PASSWORD_LEN: usize = 40;

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";
/// Symbols of Entra's allowed set, without white space, quotes and backslash (harmless in JSON
/// anyway, but easier on anyone who ever has to paste one).
const SYMBOLS: &[u8] = b"!#$%&()*+,-./:;<=>?@[]^_{|}~";
const CLASSES: [&[u8]; 4] = [LOWER, UPPER, DIGITS, SYMBOLS];

/// A fresh random password of [`PASSWORD_LEN`] characters with every class present.
/// Fails only when the operating system's random source does.
pub fn random_password() -> Result<SecretString, crate::directory::DirectoryError> {
    let mut rng = OsRng;
    let mut next = |n: usize| -> Result<usize, crate::directory::DirectoryError> {
        uniform(&mut rng, n).map_err(|_| {
            crate::directory::DirectoryError::Unavailable(
                "the operating system's random source failed; no user was created".to_string(),
            )
        })
    };
    let all: Vec<u8> = CLASSES.concat();
    let mut out = Vec::with_capacity(PASSWORD_LEN);
    // One of each class, the rest from the whole alphabet, then a Fisher–Yates shuffle so the
    // guaranteed characters are not at known positions.
    for class in CLASSES {
        out.push(class[next(class.len())?]);
    }
    while out.len() < PASSWORD_LEN {
        out.push(all[next(all.len())?]);
    }
    for i in (1..out.len()).rev() {
        let j = next(i + 1)?;
        out.swap(i, j);
    }
    // Every byte is ASCII from the tables above.
    let s: String = out.iter().map(|&b| b as char).collect();
    Ok(SecretString::from(s))
}

/// A uniform index below `n` (1 ≤ n ≤ 256) by rejection sampling of single bytes.
fn uniform(rng: &mut OsRng, n: usize) -> Result<usize, rand::rand_core::OsError> {
    debug_assert!((1..=256).contains(&n));
    // The largest multiple of n that fits in a byte's 256 values.
    let limit = 256 - 256 % n;
    loop {
        let mut b = [0u8; 1];
        rng.try_fill_bytes(&mut b)?;
        if (b[0] as usize) < limit {
            return Ok(b[0] as usize % n);
        }
    }
}

/// Which of the four classes `s` uses (lower, upper, digit, symbol).
#[cfg(test)]
fn classes(s: &str) -> [bool; 4] {
    let mut c = [false; 4];
    for b in s.bytes() {
        for (i, class) in CLASSES.iter().enumerate() {
            if class.contains(&b) {
                c[i] = true;
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashSet;

    #[test]
    fn passwords_are_long_use_every_class_and_only_the_alphabet() {
        let all: Vec<u8> = CLASSES.concat();
        assert_eq!(all.len(), 90);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 90, "no repeats");
        for _ in 0..500 {
            let p = random_password().unwrap();
            let p = p.expose_secret();
            assert_eq!(p.len(), PASSWORD_LEN);
            assert!(p.len() >= 32);
            assert_eq!(classes(p), [true; 4], "every class");
            assert!(p.bytes().all(|b| all.contains(&b)), "only the alphabet");
        }
    }

    #[test]
    fn passwords_differ_and_spread_over_the_alphabet() {
        let mut seen = HashSet::new();
        let mut counts = [0u32; 128];
        for _ in 0..1000 {
            let p = random_password().unwrap();
            for b in p.expose_secret().bytes() {
                counts[b as usize] += 1;
            }
            assert!(seen.insert(p.expose_secret().to_string()), "a repeat");
        }
        // 40,000 characters over 90 symbols: about 445 each; a broken draw (a class never
        // chosen past its guaranteed one, a stuck byte) would be far off.
        for b in CLASSES.concat() {
            let n = counts[b as usize];
            assert!((250..800).contains(&n), "{} drawn {n} times", b as char);
        }
    }

    #[test]
    fn uniform_indices_stay_in_range() {
        let mut rng = OsRng;
        for n in [1, 2, 10, 26, 88, 255, 256] {
            for _ in 0..200 {
                assert!(uniform(&mut rng, n).unwrap() < n);
            }
        }
    }
}
