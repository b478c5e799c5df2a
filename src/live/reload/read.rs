//! Reading the map file, bounded: a regular file only (the final target of
//! any symlinks), opened without blocking, at most `--map-max-bytes`, and
//! only when it stayed the same file with the same size and modification
//! time across the read (a writer still at work is read again shortly).
//!
//! Why each rule: a FIFO would block the reload thread (and start-up) until
//! someone writes into it, a device such as `/dev/zero` never ends, and a
//! file of any size would be read whole before the parser could object.
//! Opening with `O_NONBLOCK` makes even the open of a FIFO return at once;
//! the type is then checked on the open descriptor, so a file swapped
//! between a check and the open cannot slip through.

use std::fs::{File, Metadata};
use std::io::{self, Read as _};
use std::path::Path;

/// Default `--map-max-bytes`: 256 MiB. A 1,000,000-tenant map is 18 MB as
/// TOML and 24 MB as JSON, so this allows maps ten times that size while
/// bounding what a bad file can make the reload read and parse.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// What identifies a version of the map file without reading it: the
/// polling check compares it, and a read must see the same before and
/// after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl Signature {
    fn of(m: &Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            Self {
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            }
        }
        #[cfg(not(unix))]
        {
            let mtime_ns = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            Self {
                dev: 0,
                ino: 0,
                size: m.len(),
                mtime_ns,
            }
        }
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// The signature of what `path` resolves to now; `None` when it does not
/// exist (or cannot be looked at).
pub fn signature(path: &Path) -> Option<Signature> {
    std::fs::metadata(path).ok().map(|m| Signature::of(&m))
}

/// Why the map file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Nothing at the path (or a dangling symlink).
    #[error("{file}: the map file does not exist")]
    Missing {
        /// The path.
        file: String,
    },
    /// Not a regular file.
    #[error(
        "{file}: the map must be a regular file (or a symlink to one), not {kind}; refusing to read it"
    )]
    NotRegular {
        /// The path.
        file: String,
        /// What it is ("a FIFO", "a character device", ...).
        kind: &'static str,
    },
    /// Larger than `--map-max-bytes`.
    #[error(
        "{file}: the map file is {size} bytes, over the limit of {max} bytes (--map-max-bytes); refusing to read it"
    )]
    TooLarge {
        /// The path.
        file: String,
        /// Its size (at least this many bytes when it grew while read).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// It changed while it was read: a writer is still at work.
    #[error("{file}: the map file changed while it was read (still being written?)")]
    Changing {
        /// The path.
        file: String,
    },
    /// The OS refused.
    #[error("{file}: cannot read the map: {source}")]
    Io {
        /// The path.
        file: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl ReadError {
    /// Whether trying again soon may succeed without anyone changing the
    /// file: descriptors or memory exhausted, an I/O error, a writer still
    /// writing. A missing, oversized or non-regular file needs a change
    /// (which the watch reports) instead.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Changing { .. } => true,
            Self::Io { source, .. } => !matches!(
                source.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput
            ),
            _ => false,
        }
    }
}

/// What kind of non-regular file `m` describes.
fn kind_of(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}

fn open_nonblocking(path: &Path) -> io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    o.open(path)
}

/// Size of the pieces [`read_bounded_chunks`] reads: 1 MiB, so that each
/// is its own mapping (see `main.rs`) and goes back to the OS when freed.
pub const CHUNK: usize = 1 << 20;

/// Reads the file at `path` under the rules of the module docs; returns
/// its bytes and its signature.
pub fn read_bounded(path: &Path, max: u64) -> Result<(Vec<u8>, Signature), ReadError> {
    let (chunks, sig) = read_bounded_chunks(path, max, CHUNK)?;
    let mut bytes = Vec::with_capacity(chunks.iter().map(Vec::len).sum());
    // Each piece is freed once copied: the peak stays about one file.
    for c in chunks {
        bytes.extend_from_slice(&c);
    }
    Ok((bytes, sig))
}

/// [`read_bounded`], the content in pieces of `chunk` bytes (the last one
/// shorter), each its own allocation: a parser that reads them in order can
/// free each as soon as it is consumed ([`ChunkReader`]), so that the text
/// of a big map and what is parsed from it are never both whole in memory.
pub fn read_bounded_chunks(
    path: &Path,
    max: u64,
    chunk: usize,
) -> Result<(Vec<Vec<u8>>, Signature), ReadError> {
    let file = path.display().to_string();
    let io_err = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound {
            ReadError::Missing { file: file.clone() }
        } else {
            ReadError::Io {
                file: file.clone(),
                source,
            }
        }
    };
    // Looked at before opening, for a clear error: opening a socket fails
    // with a confusing one, and a device need not be opened at all.
    let before = std::fs::metadata(path).map_err(io_err)?;
    if !before.is_file() {
        return Err(ReadError::NotRegular {
            file,
            kind: kind_of(&before),
        });
    }
    let mut f = open_nonblocking(path).map_err(io_err)?;
    // The descriptor decides: the path may have been swapped meanwhile.
    let opened = f.metadata().map_err(io_err)?;
    if !opened.is_file() {
        return Err(ReadError::NotRegular {
            file,
            kind: kind_of(&opened),
        });
    }
    let sig = Signature::of(&opened);
    if sig.size > max {
        return Err(ReadError::TooLarge {
            file,
            size: sig.size,
            max,
        });
    }
    // One byte more than allowed tells a file that grew past the limit.
    let chunk = chunk.max(1);
    let mut limited = (&mut f).take(max + 1);
    let mut chunks = Vec::with_capacity((sig.size as usize).div_ceil(chunk) + 1);
    let mut total: u64 = 0;
    loop {
        let mut c = Vec::with_capacity(chunk);
        (&mut limited)
            .take(chunk as u64)
            .read_to_end(&mut c)
            .map_err(io_err)?;
        if c.is_empty() {
            break;
        }
        total += c.len() as u64;
        chunks.push(c);
    }
    if total > max {
        return Err(ReadError::TooLarge {
            file,
            size: total,
            max,
        });
    }
    let after = Signature::of(&f.metadata().map_err(io_err)?);
    let now = signature(path);
    if after != sig || total != sig.size || now != Some(sig) {
        return Err(ReadError::Changing { file });
    }
    Ok((chunks, sig))
}

/// Reads pieces of a file in order ([`read_bounded_chunks`]), freeing each
/// once it has been read past. Wrap it in a `BufReader` for byte-by-byte
/// readers such as `serde_json::from_reader`.
#[derive(Debug)]
pub struct ChunkReader {
    rest: std::vec::IntoIter<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl ChunkReader {
    /// A reader over `chunks`, in order.
    pub fn new(chunks: Vec<Vec<u8>>) -> Self {
        Self {
            rest: chunks.into_iter(),
            current: Vec::new(),
            at: 0,
        }
    }
}

impl io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.rest.next() {
                // The piece read past is dropped here.
                Some(next) => {
                    self.current = next;
                    self.at = 0;
                }
                None => {
                    self.current = Vec::new();
                    self.at = 0;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        let c =
            std::ffi::CString::new(path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    #[test]
    fn reads_a_regular_file_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let real = dir.path().join("real.toml");
        std::fs::write(&real, "hello").unwrap_or_else(|e| panic!("{e}"));
        let link = dir.path().join("map.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap_or_else(|e| panic!("{e}"));
        let (bytes, sig) = read_bounded(&link, 100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bytes, b"hello");
        assert_eq!(sig.size(), 5);
        assert_eq!(signature(&link), Some(sig));
    }

    #[test]
    fn chunks_hold_the_file_in_order_and_the_reader_gives_it_back() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("map.json");
        let text: Vec<u8> = (0..1000u32).flat_map(|i| i.to_le_bytes()).collect();
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
        for chunk in [1, 7, 4000, 4001, 1 << 20] {
            let (chunks, sig) =
                read_bounded_chunks(&path, 4000, chunk).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(sig.size(), 4000);
            assert_eq!(chunks.len(), 4000usize.div_ceil(chunk), "{chunk}");
            assert!(chunks.iter().all(|c| c.len() <= chunk && !c.is_empty()));
            assert_eq!(chunks.concat(), text, "{chunk}");
            let mut back = Vec::new();
            let mut r = std::io::BufReader::with_capacity(13, ChunkReader::new(chunks));
            r.read_to_end(&mut back).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, text, "{chunk}");
        }
        // The limit and the other rules are read_bounded's.
        let e = read_bounded_chunks(&path, 3999, 7).expect_err("too large");
        assert!(
            e.to_string().contains("4000 bytes, over the limit of 3999"),
            "{e}"
        );
        let empty = dir.path().join("empty.json");
        std::fs::write(&empty, "").unwrap_or_else(|e| panic!("{e}"));
        let (chunks, _) = read_bounded_chunks(&empty, 10, 7).unwrap_or_else(|e| panic!("{e}"));
        assert!(chunks.is_empty());
        let mut back = Vec::new();
        ChunkReader::new(chunks)
            .read_to_end(&mut back)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(back.is_empty());
    }

    #[test]
    fn refuses_what_is_not_a_bounded_regular_file_without_blocking() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fifo = dir.path().join("fifo.toml");
        mkfifo(&fifo);
        // Nobody writes into it: this would block forever without
        // O_NONBLOCK and the type check.
        let e = read_bounded(&fifo, 100).expect_err("a FIFO");
        assert!(
            matches!(e, ReadError::NotRegular { kind: "a FIFO", .. }),
            "{e}"
        );
        assert!(!e.is_transient());

        let zero = dir.path().join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap_or_else(|e| panic!("{e}"));
        let e = read_bounded(&zero, 100).expect_err("/dev/zero");
        assert!(e.to_string().contains("not a character device"), "{e}");

        let e = read_bounded(dir.path(), 100).expect_err("a directory");
        assert!(e.to_string().contains("not a directory"), "{e}");

        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'x'; 101]).unwrap_or_else(|e| panic!("{e}"));
        let e = read_bounded(&big, 100).expect_err("too large");
        assert!(
            e.to_string()
                .contains("101 bytes, over the limit of 100 bytes"),
            "{e}"
        );
        assert!(read_bounded(&big, 101).is_ok());

        let e = read_bounded(&dir.path().join("none.toml"), 100).expect_err("missing");
        assert!(matches!(e, ReadError::Missing { .. }), "{e}");
        let dangling = dir.path().join("dangling.toml");
        std::os::unix::fs::symlink("nowhere", &dangling).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            read_bounded(&dangling, 100),
            Err(ReadError::Missing { .. })
        ));
    }
}
