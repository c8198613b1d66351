//! The crypt(3) pieces htpasswd files need beyond the digest crates: the
//! crypt base-64 alphabet with its byte orders, and MD5-crypt (`$1$`,
//! Apache's `$apr1$`), which no maintained crate offers.

use base64ct::{Base64ShaCrypt, Encoding};
use md5::{Digest, Md5};

/// Decode crypt's base64 (`./0-9A-Za-z`, little-endian groups) into
/// exactly `N` bytes.
pub(super) fn decode_crypt_b64<const N: usize>(encoded: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    match Base64ShaCrypt::decode(encoded, &mut out) {
        Ok(d) if d.len() == N => Some(out),
        _ => None,
    }
}

pub(super) fn transpose<const N: usize>(raw: &[u8; N], order: &[usize; N]) -> [u8; N] {
    let mut out = [0u8; N];
    for (o, &i) in out.iter_mut().zip(order) {
        *o = raw[i];
    }
    out
}

/// The byte order in which MD5-crypt encodes its digest: groups
/// (0,6,12) (1,7,13) (2,8,14) (3,9,15) (4,10,5) (11), most significant
/// byte first, each written little-endian.
pub(super) const MD5_CRYPT_ORDER: [usize; 16] =
    [12, 6, 0, 13, 7, 1, 14, 8, 2, 15, 9, 3, 5, 10, 4, 11];

/// The same for SHA-256-crypt (Drepper's specification).
pub(super) const SHA256_CRYPT_ORDER: [usize; 32] = [
    20, 10, 0, 11, 1, 21, 2, 22, 12, 23, 13, 3, 14, 4, 24, 5, 25, 15, 26, 16, 6, 17, 7, 27, 8, 28,
    18, 29, 19, 9, 30, 31,
];

/// The same for SHA-512-crypt.
pub(super) const SHA512_CRYPT_ORDER: [usize; 64] = [
    42, 21, 0, 1, 43, 22, 23, 2, 44, 45, 24, 3, 4, 46, 25, 26, 5, 47, 48, 27, 6, 7, 49, 28, 29, 8,
    50, 51, 30, 9, 10, 52, 31, 32, 11, 53, 54, 33, 12, 13, 55, 34, 35, 14, 56, 57, 36, 15, 16, 58,
    37, 38, 17, 59, 60, 39, 18, 19, 61, 40, 41, 20, 62, 63,
];

/// MD5-crypt (Poul-Henning Kamp's, FreeBSD `$1$`; Apache's `$apr1$` is the
/// same with another magic), returning the digest in encoded byte order.
pub(super) fn md5_crypt(password: &[u8], magic: &[u8], salt: &[u8]) -> [u8; 16] {
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(magic);
    ctx.update(salt);
    for chunk in password.chunks(16) {
        ctx.update(&alternate[..chunk.len()]);
    }
    // For each bit of the length, low first: a zero byte where it is set,
    // the password's first byte where it is clear.
    let first = &password[..password.len().min(1)];
    let mut bits = password.len();
    while bits != 0 {
        if bits & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(first);
        }
        bits >>= 1;
    }
    let mut digest = ctx.finalize();
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round % 2 == 1 {
            ctx.update(password);
        } else {
            ctx.update(digest);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round % 2 == 1 {
            ctx.update(digest);
        } else {
            ctx.update(password);
        }
        digest = ctx.finalize();
    }
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&digest);
    transpose(&raw, &MD5_CRYPT_ORDER)
}
