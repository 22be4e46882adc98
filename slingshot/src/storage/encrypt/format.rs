//! The encrypted object format: a header, then AES-256-GCM segments of 64 KiB
//! under a per-object key (HKDF-SHA256), each authenticated with its index and
//! whether it is the last, so that truncation, reordering and flipped bits are
//! errors, never wrong bytes.
//!
//! ```text
//! header   = "SLSE" | version (1) | key-ID length (1) | key ID | salt (32) | nonce prefix (7)
//! object   = header | segment 0 | segment 1 | ... | last segment
//! segment  = AES-256-GCM(object key, nonce, aad = header, plaintext (64 KiB; the last 0..=64 KiB)) | tag (16)
//! nonce    = nonce prefix (7) | segment index (u32, big-endian) | 1 if last else 0
//! object key = HKDF-SHA256(ikm = master key, salt, info = "slingshot object encryption v1/" | key ID)
//! ```
//!
//! The design is Tink's streaming AEAD (AES-GCM-HKDF), written here from its
//! description. Memory stays at one segment whatever the object's size.

use std::fmt;
use std::io::{self, Read, Write};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};

/// The first bytes of every encrypted object.
pub const MAGIC: &[u8; 4] = b"SLSE";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Plaintext bytes per segment (the last may hold fewer).
pub const SEGMENT: usize = 64 * 1024;
/// Bytes of a GCM tag after each segment.
pub const TAG: usize = 16;
const SALT: usize = 32;
const PREFIX: usize = 7;
const INFO: &[u8] = b"slingshot object encryption v1/";

/// A 256-bit master key. Its bytes never appear in `Debug` or any error, and
/// are overwritten when it is dropped.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    /// Parses a key written as 64 hexadecimal digits or as standard base64
    /// (with or without padding) of 32 bytes. The error says what is wrong
    /// without repeating the text.
    pub fn parse(text: &str) -> Result<MasterKey, String> {
        let text = text.trim();
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut key = [0u8; 32];
            for (i, pair) in text.as_bytes().chunks(2).enumerate() {
                key[i] = (hex_digit(pair[0]) << 4) | hex_digit(pair[1]);
            }
            return Ok(MasterKey(key));
        }
        match base64_decode(text) {
            Some(bytes) if bytes.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                Ok(MasterKey(key))
            }
            Some(bytes) => Err(format!(
                "is base64 of {} bytes; a key is 32 bytes (64 hex digits or 44 base64 characters)",
                bytes.len()
            )),
            None => Err(format!(
                "is {} characters that are neither 64 hex digits nor base64 of 32 bytes",
                text.chars().count()
            )),
        }
    }

    /// The key of one object: HKDF-SHA256 of this key with the object's salt
    /// and key ID.
    fn object_key(&self, salt: &[u8; SALT], key_id: &str) -> io::Result<LessSafeKey> {
        let failed = |_| io::Error::other("deriving the object key failed");
        let prk = Salt::new(HKDF_SHA256, salt).extract(&self.0);
        let mut okm = [0u8; 32];
        let info = [INFO, key_id.as_bytes()];
        prk.expand(&info, HKDF_SHA256)
            .map_err(failed)?
            .fill(&mut okm)
            .map_err(failed)?;
        let key = UnboundKey::new(&AES_256_GCM, &okm).map_err(failed);
        wipe(&mut okm);
        Ok(LessSafeKey::new(key?))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Overwrites key material; `black_box` keeps the stores from being dropped
/// as dead (best effort: copies the compiler made are not reached).
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

fn hex_digit(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Standard base64 (RFC 4648 alphabet, padding optional); `None` if `text`
/// is not that.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 || body.is_empty() || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in body.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A fresh header for an object encrypted under `key_id`, and its key.
fn new_header(master: &MasterKey, key_id: &str) -> io::Result<(Vec<u8>, [u8; PREFIX], LessSafeKey)> {
    let id_len = u8::try_from(key_id.len())
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a key ID is 1 to 255 bytes"))?;
    let mut salt = [0u8; SALT];
    let mut prefix = [0u8; PREFIX];
    let random =
        |buf: &mut [u8]| aws_lc_rs::rand::fill(buf).map_err(|_| io::Error::other("the system random generator failed"));
    random(&mut salt)?;
    random(&mut prefix)?;
    let mut header = Vec::with_capacity(MAGIC.len() + 2 + key_id.len() + SALT + PREFIX);
    header.extend_from_slice(MAGIC);
    header.push(VERSION);
    header.push(id_len);
    header.extend_from_slice(key_id.as_bytes());
    header.extend_from_slice(&salt);
    header.extend_from_slice(&prefix);
    let key = master.object_key(&salt, key_id)?;
    Ok((header, prefix, key))
}

fn nonce(prefix: &[u8; PREFIX], index: u32, last: bool) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[..PREFIX].copy_from_slice(prefix);
    n[PREFIX..PREFIX + 4].copy_from_slice(&index.to_be_bytes());
    n[NONCE_LEN - 1] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// Encrypts what is written to it into `inner`, one segment at a time.
/// [`EncryptWriter::finish`] seals the last segment: an object not finished
/// does not decrypt.
pub struct EncryptWriter<W: Write> {
    inner: W,
    key: LessSafeKey,
    header: Vec<u8>,
    prefix: [u8; PREFIX],
    index: u32,
    buf: Vec<u8>,
}

impl<W: Write> fmt::Debug for EncryptWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptWriter")
            .field("segment", &self.index)
            .finish_non_exhaustive()
    }
}

impl<W: Write> EncryptWriter<W> {
    /// Writes a fresh header for `key_id` into `inner`.
    pub fn new(mut inner: W, master: &MasterKey, key_id: &str) -> io::Result<Self> {
        let (header, prefix, key) = new_header(master, key_id)?;
        inner.write_all(&header)?;
        Ok(EncryptWriter {
            inner,
            key,
            header,
            prefix,
            index: 0,
            buf: Vec::with_capacity(SEGMENT + TAG),
        })
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce(&self.prefix, self.index, last),
                Aad::from(&self.header),
                &mut self.buf,
            )
            .map_err(|_| io::Error::other("sealing a segment failed"))?;
        self.inner.write_all(&self.buf)?;
        self.inner.write_all(tag.as_ref())?;
        self.buf.clear();
        self.index = self.index.checked_add(1).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::FileTooLarge,
                "an encrypted object holds at most 2^32 segments",
            )
        })?;
        Ok(())
    }

    /// Seals the last segment, flushes, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut taken = 0;
        while taken < data.len() {
            // A full segment is sealed only once more data follows it: the
            // last segment may be full.
            if self.buf.len() == SEGMENT {
                self.seal(false)?;
            }
            let n = (SEGMENT - self.buf.len()).min(data.len() - taken);
            self.buf.extend_from_slice(&data[taken..taken + n]);
            taken += n;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Encrypts all of `plaintext` in memory.
pub fn encrypt_bytes(master: &MasterKey, key_id: &str, plaintext: &[u8]) -> io::Result<Vec<u8>> {
    let segments = plaintext.len() / SEGMENT + 1;
    let mut out = Vec::with_capacity(64 + key_id.len() + plaintext.len() + segments * TAG);
    let mut writer = EncryptWriter::new(&mut out, master, key_id)?;
    writer.write_all(plaintext)?;
    writer.finish()?;
    Ok(out)
}

/// What decrypting found wrong. Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The object does not start with the encrypted format's magic bytes.
    NotEncrypted,
    /// The header is cut short, or names a version this code cannot read.
    BadHeader(String),
    /// The header names a key ID the key ring does not hold.
    UnknownKey(String),
    /// A segment failed authentication, or the object ends where it should not.
    Integrity(String),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::NotEncrypted => f.write_str("is not an encrypted object (no SLSE header)"),
            FormatError::BadHeader(why) => write!(f, "has a bad encryption header: {why}"),
            FormatError::UnknownKey(id) => {
                write!(f, "was encrypted under key ID {id:?}, which the key ring does not hold")
            }
            FormatError::Integrity(why) => write!(f, "failed its integrity check: {why}"),
        }
    }
}

/// A parsed header: the key ID and what the object key is derived from.
#[derive(Debug, Clone)]
pub struct Header {
    /// The bytes as stored (the associated data of every segment).
    bytes: Vec<u8>,
    /// The key ID the object was written under.
    pub key_id: String,
    salt: [u8; SALT],
    prefix: [u8; PREFIX],
}

/// Reads as many bytes as fit into `buf[filled..]`, stopping only at the end of `r`.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// What the start of an object is.
#[derive(Debug)]
pub enum Start {
    /// An encrypted object's header.
    Encrypted(Header),
    /// Not the encrypted format: the bytes read so far, which belong to the
    /// plain object.
    Plain(Vec<u8>),
}

/// Reads the header at the start of `r`: `Err` with an I/O error of `r`, or
/// `Ok(Err)` if the bytes are not a header this code can read.
pub fn read_start(r: &mut impl Read) -> io::Result<Result<Start, FormatError>> {
    let mut fixed = [0u8; MAGIC.len() + 2];
    let n = fill(r, &mut fixed)?;
    if n < MAGIC.len() || &fixed[..MAGIC.len()] != MAGIC {
        return Ok(Ok(Start::Plain(fixed[..n].to_vec())));
    }
    if n < fixed.len() {
        return Ok(Err(FormatError::BadHeader(format!("the object ends after {n} bytes"))));
    }
    if fixed[4] != VERSION {
        return Ok(Err(FormatError::BadHeader(format!(
            "format version {} (this build reads version {VERSION})",
            fixed[4]
        ))));
    }
    let id_len = usize::from(fixed[5]);
    let mut rest = vec![0u8; id_len + SALT + PREFIX];
    let got = fill(r, &mut rest)?;
    if got < rest.len() || id_len == 0 {
        return Ok(Err(FormatError::BadHeader("the header is cut short".into())));
    }
    let Ok(key_id) = std::str::from_utf8(&rest[..id_len]) else {
        return Ok(Err(FormatError::BadHeader("the key ID is not UTF-8".into())));
    };
    let mut salt = [0u8; SALT];
    salt.copy_from_slice(&rest[id_len..id_len + SALT]);
    let mut prefix = [0u8; PREFIX];
    prefix.copy_from_slice(&rest[id_len + SALT..]);
    let mut bytes = fixed.to_vec();
    bytes.extend_from_slice(&rest);
    Ok(Ok(Start::Encrypted(Header {
        key_id: key_id.to_string(),
        bytes,
        salt,
        prefix,
    })))
}

/// Decrypts the segments after a header, one at a time: [`Read`] yields
/// only authenticated plaintext, and fails (never ends early) on a segment
/// that does not authenticate or an object cut short.
pub struct Segments<R: Read> {
    inner: R,
    key: LessSafeKey,
    header: Header,
    index: u32,
    /// The current segment: ciphertext while read, then its plaintext.
    buf: Vec<u8>,
    /// What of `buf` is plaintext not yet returned.
    start: usize,
    end: usize,
    /// A byte read past a full segment to learn it was not the last.
    peeked: Option<u8>,
    /// The last segment was opened: the object is complete.
    done: bool,
}

impl<R: Read> fmt::Debug for Segments<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segments")
            .field("key_id", &self.header.key_id)
            .field("segment", &self.index)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Segments<R> {
    /// Decrypts what follows `header` in `inner` with `master`, the key of
    /// the header's key ID.
    pub fn new(inner: R, header: Header, master: &MasterKey) -> io::Result<Self> {
        let key = master.object_key(&header.salt, &header.key_id)?;
        Ok(Segments {
            inner,
            key,
            header,
            index: 0,
            buf: Vec::with_capacity(SEGMENT + TAG),
            start: 0,
            end: 0,
            peeked: None,
            done: false,
        })
    }

    /// The key ID of the object.
    pub fn key_id(&self) -> &str {
        &self.header.key_id
    }

    /// Reads and opens the next segment. `Ok(Err)`: it does not authenticate.
    fn next_segment(&mut self) -> io::Result<Result<(), FormatError>> {
        self.buf.clear();
        self.buf.resize(SEGMENT + TAG, 0);
        let mut filled = 0;
        if let Some(b) = self.peeked.take() {
            self.buf[0] = b;
            filled = 1;
        }
        filled += fill(&mut self.inner, &mut self.buf[filled..])?;
        self.buf.truncate(filled);
        let last = if filled == SEGMENT + TAG {
            let mut one = [0u8; 1];
            match fill(&mut self.inner, &mut one)? {
                0 => true,
                _ => {
                    self.peeked = Some(one[0]);
                    false
                }
            }
        } else {
            true
        };
        let index = self.index;
        if filled < TAG {
            let why = match index {
                0 => "the object ends inside its first segment".to_string(),
                _ => format!(
                    "the object ends after segment {}, which is not its last (truncated)",
                    index - 1
                ),
            };
            return Ok(Err(FormatError::Integrity(why)));
        }
        // A full segment at the end may be a cut after a segment that was
        // not the last: keep it to tell a truncation from a forgery.
        let kept = (last && filled == SEGMENT + TAG).then(|| self.buf.clone());
        let aad = Aad::from(&self.header.bytes);
        let opened = self
            .key
            .open_in_place(nonce(&self.header.prefix, index, last), aad, &mut self.buf)
            .map(|plain| plain.len());
        let Ok(len) = opened else {
            let truncated = kept.is_some_and(|mut copy| {
                let aad = Aad::from(&self.header.bytes);
                self.key
                    .open_in_place(nonce(&self.header.prefix, index, false), aad, &mut copy)
                    .is_ok()
            });
            let why = if truncated {
                format!("the object ends after segment {index}, which is not its last (truncated)")
            } else {
                format!(
                    "segment {index} does not authenticate: the object was modified, truncated or reordered, \
                     or key {:?} is not the key it was written with",
                    self.header.key_id
                )
            };
            return Ok(Err(FormatError::Integrity(why)));
        };
        self.start = 0;
        self.end = len;
        self.done = last;
        self.index = match self.index.checked_add(1) {
            Some(next) => next,
            None => return Ok(Err(FormatError::Integrity("more than 2^32 segments".into()))),
        };
        Ok(Ok(()))
    }

    /// Like [`Read::read`], with a format error apart from I/O errors.
    pub fn read_plain(&mut self, out: &mut [u8]) -> io::Result<Result<usize, FormatError>> {
        while self.start == self.end {
            if self.done || out.is_empty() {
                return Ok(Ok(0));
            }
            if let Err(e) = self.next_segment()? {
                // Nothing of a bad segment is ever returned.
                self.buf.clear();
                self.start = 0;
                self.end = 0;
                return Ok(Err(e));
            }
        }
        let n = (self.end - self.start).min(out.len());
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(Ok(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> MasterKey {
        MasterKey::from_bytes([b; 32])
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Decrypts `object` with `master` under whatever key ID it names.
    fn decrypt(object: &[u8], master: &MasterKey) -> Result<Vec<u8>, FormatError> {
        let mut r = object;
        let header = match read_start(&mut r).unwrap()? {
            Start::Encrypted(header) => header,
            Start::Plain(_) => return Err(FormatError::NotEncrypted),
        };
        let mut segments = Segments::new(r, header, master).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 5000];
        loop {
            match segments.read_plain(&mut buf).unwrap()? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn header_len(id: &str) -> usize {
        MAGIC.len() + 2 + id.len() + SALT + PREFIX
    }

    #[test]
    fn round_trips_at_every_boundary() {
        for len in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            2 * SEGMENT,
            3 * 1024 * 1024 + 17,
        ] {
            let plain = data(len);
            let object = encrypt_bytes(&key(1), "k1", &plain).unwrap();
            let segments = len.div_ceil(SEGMENT).max(1);
            assert_eq!(object.len(), header_len("k1") + len + segments * TAG, "size at {len}");
            assert_eq!(decrypt(&object, &key(1)).unwrap(), plain, "round trip at {len}");
            if len > 16 {
                assert!(
                    !object.windows(16).any(|w| w == &plain[..16]),
                    "plaintext visible at {len}"
                );
            }
        }
    }

    #[test]
    fn small_writes_make_the_same_segments_as_one_write() {
        let plain = data(SEGMENT * 2 + 5);
        let mut object = Vec::new();
        let mut w = EncryptWriter::new(&mut object, &key(1), "k1").unwrap();
        for chunk in plain.chunks(999) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(decrypt(&object, &key(1)).unwrap(), plain);
    }

    fn integrity(result: Result<Vec<u8>, FormatError>) -> String {
        match result {
            Err(FormatError::Integrity(why)) => why,
            other => panic!("expected an integrity error, got {other:?}"),
        }
    }

    #[test]
    fn truncation_is_an_error_at_a_boundary_and_mid_segment() {
        let object = encrypt_bytes(&key(1), "k1", &data(3 * SEGMENT + 100)).unwrap();
        let seg = SEGMENT + TAG;
        let h = header_len("k1");
        // After segment 0 and after segment 1: boundaries.
        for cut in [h + seg, h + 2 * seg] {
            let why = integrity(decrypt(&object[..cut], &key(1)));
            assert!(why.contains("truncated"), "{why}");
        }
        // Mid-segment, in the last segment, and the header only.
        for cut in [h + seg / 2, object.len() - 1, h + 3 * seg + 3, h] {
            integrity(decrypt(&object[..cut], &key(1)));
        }
        // Inside the header.
        assert!(matches!(
            decrypt(&object[..h - 1], &key(1)),
            Err(FormatError::BadHeader(_))
        ));
    }

    #[test]
    fn reordered_segments_are_an_error() {
        let mut object = encrypt_bytes(&key(1), "k1", &data(3 * SEGMENT + 100)).unwrap();
        let (h, seg) = (header_len("k1"), SEGMENT + TAG);
        let first = object[h..h + seg].to_vec();
        let second = object[h + seg..h + 2 * seg].to_vec();
        object[h..h + seg].copy_from_slice(&second);
        object[h + seg..h + 2 * seg].copy_from_slice(&first);
        let why = integrity(decrypt(&object, &key(1)));
        assert!(why.contains("segment 0"), "{why}");
    }

    #[test]
    fn a_flipped_bit_anywhere_is_an_error() {
        let plain = data(SEGMENT + 500);
        let object = encrypt_bytes(&key(1), "k1", &plain).unwrap();
        let h = header_len("k1");
        // Salt, nonce prefix, body of segment 0, tag of segment 0, body and tag of the last.
        for at in [
            h - PREFIX - 3,
            h - 1,
            h + 10,
            h + SEGMENT + 3,
            h + SEGMENT + TAG + 4,
            object.len() - 1,
        ] {
            let mut bad = object.clone();
            bad[at] ^= 0x10;
            integrity(decrypt(&bad, &key(1)));
        }
        // The version byte and the key ID.
        let mut bad = object.clone();
        bad[4] ^= 1;
        assert!(matches!(decrypt(&bad, &key(1)), Err(FormatError::BadHeader(_))));
        let mut bad = object.clone();
        bad[6] ^= 1;
        let mut r = &bad[..];
        let Start::Encrypted(header) = read_start(&mut r).unwrap().unwrap() else {
            panic!("still a header")
        };
        assert_eq!(header.key_id, "j1");
    }

    #[test]
    fn a_wrong_key_is_an_error_that_names_the_key_id_only() {
        let object = encrypt_bytes(&key(1), "k1", b"secret words").unwrap();
        let why = integrity(decrypt(&object, &key(2)));
        assert!(why.contains("\"k1\""), "{why}");
    }

    #[test]
    fn plain_objects_are_told_apart() {
        for plain in [&b""[..], b"SL", b"hello world"] {
            let mut r = plain;
            match read_start(&mut r).unwrap().unwrap() {
                Start::Plain(read) => assert_eq!(read, &plain[..plain.len().min(6)]),
                Start::Encrypted(_) => panic!("plain taken for encrypted"),
            }
        }
    }

    #[test]
    fn keys_parse_from_hex_and_base64_only() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        assert_eq!(MasterKey::parse(hex).unwrap().0[1], 0x11);
        let b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        assert_eq!(MasterKey::parse(b64).unwrap().0[31], 31);
        assert_eq!(MasterKey::parse(b64.trim_end_matches('=')).unwrap().0[31], 31);
        for bad in [
            "",
            "short",
            &hex[..62],
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8fHw==",
            "not base64 !",
        ] {
            let why = MasterKey::parse(bad).unwrap_err();
            assert!(bad.len() < 5 || !why.contains(bad), "{why}");
        }
        assert_eq!(format!("{:?}", MasterKey::parse(hex).unwrap()), "MasterKey(..)");
    }
}
