//! Durable-subscriber definitions, one small file per subscription.
//!
//! Owns: the `durables/` directory of a store, the `.durable` file format, the mapping from
//! (client id, durable name) to a file name, and the atomic replace/remove protocol.
//!
//! Invariants:
//! - A file's name is a pure function of the (client id, name) stored inside it
//!   ([`file_name`]); the escaped parts use only `[A-Za-z0-9_.%-]`, never start with `.`
//!   and never contain `$`, `/` or `~`, so every file lies directly inside `durables/`, and
//!   distinct pairs get distinct names (up to a 64-bit hash for names over the 255-byte
//!   limit, whose collisions are detected by comparing the stored names, never served).
//! - Every `.durable` file that `list`/`get` can see is complete: it is written under a
//!   `.tmp` name, synced, renamed over the final name, and the directory is synced before
//!   `save` returns; `remove` syncs the directory after unlinking. So after any crash each
//!   subscription is at its old or its new version, never torn or missing.
//! - Every byte read from disk is checked (magic, version, CRC32, every length against the
//!   bytes present and the field limits, UTF-8, flags, no trailing bytes) before use; a bad
//!   file is `Error::Corruption` naming `durables/<file>`. Decoding never panics and never
//!   allocates more than the (size-capped) file itself.
//! - After an I/O failure of a write (which may leave the directory in an unknown state)
//!   every later `save`/`remove` of this handle fails with `Error::Poisoned` until reopen.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::file::{parent_dir, FileSystem, OpenMode};
use crate::planted::PlantedBugs;
use crate::poison::Poison;

/// The directory, inside a store directory, that holds the `.durable` files.
pub const DIR: &str = "durables";
/// The suffix of every durable-subscription file.
pub const SUFFIX: &str = ".durable";
/// The suffix appended to a file's final name while it is being written.
pub const TMP_SUFFIX: &str = ".tmp";
/// Largest client id and durable name, in bytes.
pub const MAX_ID_LEN: usize = 4096;
/// Largest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 4096;
/// Largest selector, in bytes.
pub const MAX_SELECTOR_LEN: usize = 64 * 1024;

/// The file system's limit on one file name, in bytes.
const NAME_LIMIT: usize = 255;
/// Longest final name, so that the temporary name (`+ ".tmp"`) stays within the limit.
const MAX_FINAL_NAME: usize = NAME_LIMIT - TMP_SUFFIX.len();
/// Escaped bytes of each part kept in front of the hash of a shortened name.
const SHORT_PREFIX: usize = 100;

const MAGIC: &[u8; 8] = b"STOWDUR1";
const VERSION: u32 = 1;
/// Magic + version.
const HEADER_LEN: usize = 12;
/// The smallest possible record: header, three length prefixes, selector flag, no-local
/// flag, CRC.
const MIN_RECORD_LEN: usize = HEADER_LEN + 3 * 4 + 1 + 1 + 4;
/// The largest possible record (every field at its limit); longer files are corrupt and are
/// never read into memory.
const MAX_RECORD_LEN: usize =
    HEADER_LEN + 3 * 4 + 2 * MAX_ID_LEN + MAX_TOPIC_LEN + 1 + 4 + MAX_SELECTOR_LEN + 1 + 4;

/// One durable subscription: a client's named, persistent interest in a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableSubscription {
    /// The JMS client id (1..=4096 bytes, any characters).
    pub client_id: String,
    /// The durable subscription name, unique per client id (1..=4096 bytes).
    pub name: String,
    /// The topic subscribed to (1..=4096 bytes).
    pub topic: String,
    /// The message selector, if any (at most 64 KiB).
    pub selector: Option<String>,
    /// Whether messages published on the subscriber's own connection are skipped.
    pub no_local: bool,
}

/// The durable subscriptions of one store directory (see the module docs).
///
/// `Send + Sync`: writers are serialised by an internal mutex; readers need no lock because
/// every file change is an atomic rename or unlink.
#[derive(Debug)]
pub struct Durables {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    writer: Mutex<()>,
    poison: Poison,
    bugs: PlantedBugs,
}

impl Durables {
    /// Opens the durable subscriptions of `store_dir`: creates `durables/` if missing,
    /// makes the directory entries durable, and removes temporary files a crashed `save`
    /// left. Reads no `.durable` file.
    pub fn open(fs: Arc<dyn FileSystem>, store_dir: &Path) -> Result<Durables> {
        Self::open_with(fs, store_dir, PlantedBugs::default())
    }

    /// [`Durables::open`] with deliberate bugs switched on (the crash harness's self-test;
    /// only `skip_dir_fsync` is honoured). Never use it outside tests.
    #[doc(hidden)]
    pub fn open_with(
        fs: Arc<dyn FileSystem>,
        store_dir: &Path,
        bugs: PlantedBugs,
    ) -> Result<Durables> {
        let dir = store_dir.join(DIR);
        let d = Durables {
            fs,
            dir,
            writer: Mutex::new(()),
            poison: Poison::new(),
            bugs,
        };
        let fs = &d.fs;
        let io = |what: &str, p: &Path, e: io::Error| {
            Error::io(
                format!("opening durable subscriptions: {what} {}", p.display()),
                e,
            )
        };
        if !fs
            .exists(store_dir)
            .map_err(|e| io("checking", store_dir, e))?
        {
            fs.create_dir_all(store_dir)
                .map_err(|e| io("creating", store_dir, e))?;
            let parent = parent_dir(store_dir);
            d.sync_dir_at(&parent)
                .map_err(|e| io("syncing", &parent, e))?;
        }
        if !fs.exists(&d.dir).map_err(|e| io("checking", &d.dir, e))? {
            fs.create_dir_all(&d.dir)
                .map_err(|e| io("creating", &d.dir, e))?;
        }
        // Always, even if the directory existed: a process killed after creating it may
        // have left the entry unsynced, and what this open observes must survive.
        d.sync_dir_at(store_dir)
            .map_err(|e| io("syncing", store_dir, e))?;
        let names = fs.read_dir(&d.dir).map_err(|e| io("listing", &d.dir, e))?;
        for n in names.iter().filter(|n| n.ends_with(TMP_SUFFIX)) {
            let p = d.dir.join(n);
            match fs.remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("removing leftover", &p, e)),
            }
        }
        // Makes the removals durable, and any rename a killed process did not sync.
        d.sync_dir_at(&d.dir)
            .map_err(|e| io("syncing", &d.dir, e))?;
        Ok(d)
    }

    /// Inserts `d`, or replaces the subscription with the same client id and name.
    /// Atomic and durable when it returns `Ok`.
    ///
    /// Fails with `InvalidArgument` naming the field if a field breaks its limit, and (in
    /// practice only on a case-insensitive file system) if the file for these names already
    /// holds a different subscription.
    pub fn save(&self, d: &DurableSubscription) -> Result<()> {
        validate(d)?;
        let _w = self.writer.lock();
        self.poison.check()?;
        let name = file_name(&d.client_id, &d.name);
        let path = self.dir.join(&name);
        // Never overwrite another subscription's file (a hash collision, or names that
        // differ only in case on a case-insensitive file system). A corrupt file at our
        // own path is replaced.
        if let Ok(Some(other)) = self.read_path(&name) {
            if other.client_id != d.client_id || other.name != d.name {
                return Err(Error::invalid_argument(format!(
                    "durable subscription `{}`/`{}` maps to file durables/{name}, which holds `{}`/`{}` (hash collision or case-insensitive file system); choose another name",
                    d.client_id, d.name, other.client_id, other.name
                )));
            }
        }
        let bytes = encode(d);
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        let io = |what: &str, e: io::Error| {
            self.poison.latch(Error::io(
                format!("saving durable subscription: {what} durables/{name}"),
                e,
            ))
        };
        if self
            .fs
            .exists(&tmp)
            .map_err(|e| io("checking the temporary file of", e))?
        {
            self.fs
                .remove_file(&tmp)
                .map_err(|e| io("removing a stale temporary file of", e))?;
        }
        let f = self
            .fs
            .open(&tmp, OpenMode::CreateNew)
            .map_err(|e| io("creating the temporary file of", e))?;
        f.write_all_at(&bytes, 0)
            .map_err(|e| io("writing the temporary file of", e))?;
        f.sync_all()
            .map_err(|e| io("syncing the temporary file of", e))?;
        drop(f);
        self.fs
            .rename(&tmp, &path)
            .map_err(|e| io("renaming into place", e))?;
        self.sync_dir_at(&self.dir)
            .map_err(|e| io("syncing the directory after renaming", e))?;
        Ok(())
    }

    /// The subscription with this client id and name, if saved.
    pub fn get(&self, client_id: &str, name: &str) -> Result<Option<DurableSubscription>> {
        validate_id("client_id", client_id)?;
        validate_id("name", name)?;
        let file = file_name(client_id, name);
        Ok(self
            .read_path(&file)?
            .filter(|d| d.client_id == client_id && d.name == name))
    }

    /// Every saved subscription, sorted by (client id, name). A corrupt or misnamed
    /// `.durable` file fails the whole call with `Error::Corruption` naming it.
    pub fn list(&self) -> Result<Vec<DurableSubscription>> {
        let names = self.fs.read_dir(&self.dir).map_err(|e| {
            Error::io(
                format!("listing durable subscriptions in {}", self.dir.display()),
                e,
            )
        })?;
        let mut out = Vec::new();
        for n in names.iter().filter(|n| n.ends_with(SUFFIX)) {
            // Gone meanwhile: removed by a concurrent `remove`.
            let Some(d) = self.read_path(n)? else {
                continue;
            };
            if file_name(&d.client_id, &d.name) != *n {
                return Err(Error::corruption(
                    format!("{DIR}/{n}"),
                    "header",
                    format!(
                        "holds `{}`/`{}`, whose file name is {}",
                        d.client_id,
                        d.name,
                        file_name(&d.client_id, &d.name)
                    ),
                ));
            }
            out.push(d);
        }
        out.sort_by(|a, b| (&a.client_id, &a.name).cmp(&(&b.client_id, &b.name)));
        Ok(out)
    }

    /// Removes the subscription; `Ok(true)` if it existed. Durable when it returns `Ok`.
    /// A corrupt file at this subscription's path is removed too (and counts as existing).
    pub fn remove(&self, client_id: &str, name: &str) -> Result<bool> {
        validate_id("client_id", client_id)?;
        validate_id("name", name)?;
        let _w = self.writer.lock();
        self.poison.check()?;
        let file = file_name(client_id, name);
        match self.read_path(&file) {
            Ok(None) => return Ok(false),
            Ok(Some(d)) if d.client_id != client_id || d.name != name => return Ok(false),
            Ok(Some(_)) | Err(Error::Corruption { .. }) => {}
            Err(e) => return Err(e),
        }
        let io = |what: &str, e: io::Error| {
            self.poison.latch(Error::io(
                format!("removing durable subscription: {what} durables/{file}"),
                e,
            ))
        };
        self.fs
            .remove_file(&self.dir.join(&file))
            .map_err(|e| io("unlinking", e))?;
        self.sync_dir_at(&self.dir)
            .map_err(|e| io("syncing the directory after unlinking", e))?;
        Ok(true)
    }

    /// `sync_dir`, unless the planted bug skips it.
    fn sync_dir_at(&self, dir: &Path) -> io::Result<()> {
        if self.bugs.skip_dir_fsync {
            return Ok(());
        }
        self.fs.sync_dir(dir)
    }

    /// Reads and decodes `durables/<file>`; `None` if it does not exist.
    fn read_path(&self, file: &str) -> Result<Option<DurableSubscription>> {
        let path = self.dir.join(file);
        let ctx = |e: io::Error| Error::io(format!("reading durables/{file}"), e);
        let f = match self.fs.open(&path, OpenMode::Existing) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ctx(e)),
        };
        let len = f.len().map_err(ctx)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= MAX_RECORD_LEN)
            .ok_or_else(|| {
                Error::corruption(
                    format!("{DIR}/{file}"),
                    "header",
                    format!("file is {len} bytes, more than the largest record ({MAX_RECORD_LEN})"),
                )
            })?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, 0).map_err(ctx)?;
        decode(&buf, &format!("{DIR}/{file}")).map(Some)
    }
}

// ---- validation ----

fn validate_id(field: &str, v: &str) -> Result<()> {
    if v.is_empty() || v.len() > MAX_ID_LEN {
        return Err(Error::invalid_argument(format!(
            "durable subscription `{field}` must be 1..={MAX_ID_LEN} bytes, got {}",
            v.len()
        )));
    }
    Ok(())
}

fn validate(d: &DurableSubscription) -> Result<()> {
    validate_id("client_id", &d.client_id)?;
    validate_id("name", &d.name)?;
    if d.topic.is_empty() || d.topic.len() > MAX_TOPIC_LEN {
        return Err(Error::invalid_argument(format!(
            "durable subscription `topic` must be 1..={MAX_TOPIC_LEN} bytes, got {}",
            d.topic.len()
        )));
    }
    if let Some(s) = &d.selector {
        if s.len() > MAX_SELECTOR_LEN {
            return Err(Error::invalid_argument(format!(
                "durable subscription `selector` must be at most {MAX_SELECTOR_LEN} bytes, got {}",
                s.len()
            )));
        }
    }
    Ok(())
}

// ---- file names ----

/// Percent-encodes every byte outside `[A-Za-z0-9_.-]`, and a leading `.`, as `%XX`
/// (uppercase hex). The result never contains `$`, `/`, `~` or NUL and is never `.` or `..`.
pub fn escape_part(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
    out
}

/// At most `max` bytes of an escaped part, never cutting a `%XX` in two.
fn escaped_prefix(escaped: &str, max: usize) -> &str {
    let b = escaped.as_bytes();
    let mut end = 0;
    while end < b.len() {
        let unit = if b[end] == b'%' { 3 } else { 1 };
        if end + unit > max {
            break;
        }
        end += unit;
    }
    // Escaped text is ASCII, so every index is a char boundary.
    escaped.get(..end).unwrap_or("")
}

/// 64-bit FNV-1a of the length-prefixed client id and name.
fn names_hash(client_id: &str, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for part in [client_id, name] {
        feed(&(part.len() as u64).to_le_bytes());
        feed(part.as_bytes());
    }
    h
}

/// The file name (inside `durables/`) of a subscription:
/// `<escaped client id>$<escaped name>.durable`, or, when that would leave no room for the
/// `.tmp` suffix within 255 bytes, `<escaped prefix>$<escaped prefix>~<16 hex digits of a
/// 64-bit FNV-1a hash of both full names>.durable` (at most 226 bytes).
pub fn file_name(client_id: &str, name: &str) -> String {
    let (c, n) = (escape_part(client_id), escape_part(name));
    let full = c.len() + 1 + n.len() + SUFFIX.len();
    if full <= MAX_FINAL_NAME {
        return format!("{c}${n}{SUFFIX}");
    }
    format!(
        "{}${}~{:016x}{SUFFIX}",
        escaped_prefix(&c, SHORT_PREFIX),
        escaped_prefix(&n, SHORT_PREFIX),
        names_hash(client_id, name)
    )
}

// ---- the file format ----

/// Encodes a subscription as a `.durable` file (see `docs/design.md`).
fn encode(d: &DurableSubscription) -> Vec<u8> {
    let mut out = Vec::with_capacity(MIN_RECORD_LEN + d.client_id.len() + d.name.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    let field = |out: &mut Vec<u8>, s: &str| {
        // Validated lengths are far below u32::MAX.
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    field(&mut out, &d.client_id);
    field(&mut out, &d.name);
    field(&mut out, &d.topic);
    match &d.selector {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            field(&mut out, s);
        }
    }
    out.push(u8::from(d.no_local));
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A bounds-checked reader over a record's body; errors name the byte offset.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl Reader<'_> {
    fn corrupt(&self, at: usize, detail: String) -> Error {
        Error::corruption(self.file, format!("byte {at}"), detail)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        let start = self.pos;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                self.corrupt(
                    start,
                    format!(
                        "{what} needs {n} bytes, only {} left",
                        self.buf.len().saturating_sub(start)
                    ),
                )
            })?;
        self.pos = end;
        Ok(&self.buf[start..end])
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn flag(&mut self, what: &str) -> Result<bool> {
        let at = self.pos;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.corrupt(at, format!("{what} is {v}, not 0 or 1"))),
        }
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-prefixed UTF-8 string of `min..=max` bytes.
    fn string(&mut self, what: &str, min: usize, max: usize) -> Result<String> {
        let at = self.pos;
        let len = self.u32(what)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| (min..=max).contains(l))
            .ok_or_else(|| {
                self.corrupt(at, format!("{what} length {len} is outside {min}..={max}"))
            })?;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.corrupt(at, format!("{what} is not UTF-8: {e}"))),
        }
    }
}

/// Decodes a `.durable` file; `file` names it in errors (`durables/<name>`).
fn decode(bytes: &[u8], file: &str) -> Result<DurableSubscription> {
    let header = |detail: String| Error::corruption(file, "header", detail);
    if bytes.len() < MIN_RECORD_LEN {
        return Err(header(format!(
            "file is {} bytes, shorter than the smallest record ({MIN_RECORD_LEN})",
            bytes.len()
        )));
    }
    if bytes.len() > MAX_RECORD_LEN {
        return Err(header(format!(
            "file is {} bytes, longer than the largest record ({MAX_RECORD_LEN})",
            bytes.len()
        )));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(header("bad magic (not a .durable file)".into()));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(header(format!(
            "unsupported version {version} (this build reads {VERSION})"
        )));
    }
    let crc_at = bytes.len() - 4;
    let (body, crc) = bytes.split_at(crc_at);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let actual = crc32fast::hash(body);
    if stored != actual {
        return Err(Error::corruption(
            file,
            format!("byte {crc_at}"),
            format!("checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"),
        ));
    }
    let mut r = Reader {
        buf: body,
        pos: HEADER_LEN,
        file,
    };
    let client_id = r.string("client id", 1, MAX_ID_LEN)?;
    let name = r.string("durable name", 1, MAX_ID_LEN)?;
    let topic = r.string("topic", 1, MAX_TOPIC_LEN)?;
    let selector = if r.flag("selector flag")? {
        Some(r.string("selector", 0, MAX_SELECTOR_LEN)?)
    } else {
        None
    };
    let no_local = r.flag("no-local flag")?;
    if r.pos != body.len() {
        return Err(r.corrupt(
            r.pos,
            format!(
                "{} unexpected bytes before the checksum",
                body.len() - r.pos
            ),
        ));
    }
    Ok(DurableSubscription {
        client_id,
        name,
        topic,
        selector,
        no_local,
    })
}

/// The fuzz target's entry point (and its corpus replay): decodes arbitrary bytes, as they
/// are and with their checksum fixed up (so the fuzzer reaches the field parser), checks
/// that whatever decodes re-encodes to the same bytes, then serves the bytes as a file of a
/// simulated store through `open`, `list`, `get` and `remove`. Never panics on any input
/// unless it finds a bug.
#[doc(hidden)]
pub fn decode_for_fuzzing(bytes: &[u8]) {
    let check = |b: &[u8]| {
        if let Ok(d) = decode(b, "durables/fuzz.durable") {
            assert_eq!(encode(&d), b, "decode/encode must round-trip");
        }
    };
    check(bytes);
    if bytes.len() >= 4 {
        let mut fixed = bytes.to_vec();
        let at = fixed.len() - 4;
        let crc = crc32fast::hash(&fixed[..at]);
        fixed[at..].copy_from_slice(&crc.to_le_bytes());
        check(&fixed);
    }
    let sim = crate::file::SimFs::new();
    let store = Path::new("/fuzz");
    let decoded = decode(bytes, "fuzz").ok();
    let file = match &decoded {
        Some(d) => file_name(&d.client_id, &d.name),
        None => format!("a$b{SUFFIX}"),
    };
    sim.write_file_durable(&store.join(DIR).join(&file), bytes);
    let Ok(ds) = Durables::open(Arc::new(sim), store) else {
        return;
    };
    let listed = ds.list();
    match (&decoded, &listed) {
        (Some(d), Ok(l)) => assert_eq!(l.as_slice(), std::slice::from_ref(d)),
        (None, Ok(l)) => panic!("a file that does not decode was listed: {l:?}"),
        _ => {}
    }
    let (c, n) = decoded
        .as_ref()
        .map_or(("a", "b"), |d| (d.client_id.as_str(), d.name.as_str()));
    if let Ok(Some(got)) = ds.get(c, n) {
        assert_eq!(Some(&got), decoded.as_ref());
    }
    let _ = ds.remove(c, n);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(c: &str, n: &str) -> DurableSubscription {
        DurableSubscription {
            client_id: c.into(),
            name: n.into(),
            topic: "t".into(),
            selector: Some("x > 1".into()),
            no_local: true,
        }
    }

    #[test]
    fn escaping_keeps_safe_bytes_and_escapes_the_rest() {
        assert_eq!(escape_part("aZ09_-.x"), "aZ09_-.x");
        assert_eq!(escape_part(".a"), "%2Ea");
        assert_eq!(escape_part(".."), "%2E.");
        assert_eq!(escape_part("a$b/c\\d%"), "a%24b%2Fc%5Cd%25");
        assert_eq!(escape_part("\0 é"), "%00%20%C3%A9");
        assert_eq!(file_name("a$b", "c"), "a%24b$c.durable");
    }

    #[test]
    fn long_names_are_shortened_with_a_hash_within_the_limit() {
        let long = "x".repeat(300);
        let f = file_name(&long, "n");
        assert!(f.len() <= MAX_FINAL_NAME && f.contains('~'), "{f}");
        assert_ne!(f, file_name(&format!("{long}y"), "n"));
        // Exactly at the limit: not shortened; one byte more: shortened.
        let fit = "a".repeat(MAX_FINAL_NAME - 2 - SUFFIX.len());
        assert_eq!(file_name(&fit, "b").len(), MAX_FINAL_NAME);
        assert!(!file_name(&fit, "b").contains('~'));
        assert!(file_name(&fit, "bb").contains('~'));
        // A prefix never splits an escape.
        assert_eq!(escaped_prefix("ab%20", 4), "ab");
        assert_eq!(escaped_prefix("ab%20", 5), "ab%20");
    }

    #[test]
    fn hash_separates_the_boundary_between_client_and_name() {
        assert_ne!(names_hash("ab", "c"), names_hash("a", "bc"));
    }

    #[test]
    fn encode_decode_round_trip_and_bounds() {
        for d in [
            sub("c", "n"),
            DurableSubscription {
                selector: None,
                no_local: false,
                ..sub("c", "n")
            },
            DurableSubscription {
                selector: Some(String::new()),
                ..sub(&"é".repeat(2048), &"z".repeat(4096))
            },
        ] {
            let b = encode(&d);
            assert_eq!(decode(&b, "f").unwrap(), d);
            assert!(b.len() >= MIN_RECORD_LEN && b.len() <= MAX_RECORD_LEN);
        }
        let mut max = sub(&"a".repeat(MAX_ID_LEN), &"b".repeat(MAX_ID_LEN));
        max.topic = "t".repeat(MAX_TOPIC_LEN);
        max.selector = Some("s".repeat(MAX_SELECTOR_LEN));
        assert_eq!(encode(&max).len(), MAX_RECORD_LEN);
        assert_eq!(
            encode(&DurableSubscription {
                selector: None,
                ..sub("", "")
            })
            .len(),
            MIN_RECORD_LEN + 1 // the topic's byte; ids are empty only in this probe
        );
    }

    #[test]
    fn a_valid_checksum_over_bad_fields_is_still_corruption() {
        let mut b = encode(&sub("c", "n"));
        b[HEADER_LEN + 3] = 0xFF; // client id length: 0xFF000001
        let at = b.len() - 4;
        let crc = crc32fast::hash(&b[..at]);
        b[at..].copy_from_slice(&crc.to_le_bytes());
        match decode(&b, "durables/x") {
            Err(Error::Corruption { location, .. }) => assert_eq!(location, "byte 12"),
            other => panic!("{other:?}"),
        }
    }
}
