//! The map: its file format ([`schema`]), validation ([`validate`]), and
//! compilation into the immutable [`Snapshot`] that DNS answers and tokens
//! read ([`compile`]).
//!
//! ```text
//! map file (TOML/JSON) ──parse──▶ MapFile ──validate──▶ Checked ──compile──▶ Snapshot
//! ```
//!
//! Every error of a file is collected and reported with its file, line and
//! field. This layer is pure data: it knows no DNS wire format, no metrics
//! and nothing that is served; the `live` part turns a snapshot into what
//! queries read.

pub mod compile;
pub mod diff;
pub mod failover;
pub mod generate;
pub(crate) mod index;
mod locate;
pub mod schema;
pub mod snapshot;
mod tenants_toml;
pub mod validate;

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};

pub use compile::compile;
pub use index::TenantIndex;
pub use schema::MapFile;
pub use snapshot::{
    Cell, CellId, HealthCheck, Move, Placement, Probe, Snapshot, StaticName, Status, Zone,
};
pub use validate::Issue;

/// The example map shipped in `zones/`, used when `serve` gets no `--map`.
pub const EXAMPLE_MAP: &str = include_str!("../../zones/example.toml");
/// How the embedded example map is named in messages and `/v1/map`.
pub const EXAMPLE_MAP_NAME: &str = "embedded:zones/example.toml";

/// The two encodings of a map file, chosen by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.toml`
    Toml,
    /// `.json`
    Json,
}

impl Format {
    /// The format a path's extension names.
    pub fn from_path(path: &Path) -> Result<Self, MapError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("toml") => Ok(Self::Toml),
            Some(e) if e.eq_ignore_ascii_case("json") => Ok(Self::Json),
            _ => Err(MapError::UnknownFormat {
                file: path.display().to_string(),
            }),
        }
    }
}

/// Why a map could not be turned into a snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The file could not be read.
    #[error("{file}: cannot read map: {source}")]
    Io {
        /// The path.
        file: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The extension is neither `.toml` nor `.json`.
    #[error("{file}: unknown map format (the file name must end in .toml or .json)")]
    UnknownFormat {
        /// The path.
        file: String,
    },
    /// The text is not valid TOML/JSON or does not fit the schema.
    #[error("{file}:{}: {message}", line.map_or("?".to_owned(), |l| l.to_string()))]
    Parse {
        /// The path.
        file: String,
        /// 1-based line, when the parser knows it.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// The map parsed but breaks validation rules; every problem is listed.
    #[error("{file}: {} error(s) in map:\n{}", issues.len(), IssueList(issues))]
    Invalid {
        /// The path.
        file: String,
        /// Every problem found, in file order where lines are known.
        issues: Vec<Issue>,
    },
}

struct IssueList<'a>(&'a [Issue]);

impl fmt::Display for IssueList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {issue}")?;
        }
        Ok(())
    }
}

impl MapError {
    /// One line for logs and start-up failures: the first problem and a count.
    pub fn summary(&self) -> String {
        match self {
            Self::Invalid { issues, .. } if issues.len() > 1 => {
                format!("{} (and {} more error(s))", issues[0], issues.len() - 1)
            }
            Self::Invalid { issues, .. } if issues.len() == 1 => issues[0].to_string(),
            other => other.to_string(),
        }
    }
}

/// A map's text with what is needed to name it in errors.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The text.
    pub text: &'a str,
    /// Its encoding.
    pub format: Format,
    /// File name for messages.
    pub name: &'a str,
}

/// Most TOML text given to the general TOML parser: everything but the
/// plain `[tenants]` lines, which a fast reader takes. The general parser
/// needs over ten bytes of memory per byte of text, so this bounds what a
/// file of junk can cost; a real map's cells, zone and other tables are a
/// few megabytes even with thousands of cells.
pub const TOML_GENERAL_MAX: usize = 16 << 20;

/// Parses a map's text, without validating it.
pub fn parse(src: Source<'_>) -> Result<MapFile, MapError> {
    match src.format {
        Format::Toml => {
            if let Some(split) = tenants_toml::split(src.text) {
                check_general_size(src, split.rest.len())?;
                // Only when the rest holds no tenants of its own (an inline
                // `tenants = {...}` would be a duplicate key for toml).
                if let Ok(mut file) = toml::from_str::<MapFile>(&split.rest)
                    && file.tenants.is_empty()
                {
                    file.tenants = split.tenants;
                    return Ok(file);
                }
            }
            check_general_size(src, src.text.len())?;
            parse_toml_fully(src)
        }
        Format::Json => serde_json::from_str(src.text).map_err(|e| MapError::Parse {
            file: src.name.to_owned(),
            line: Some(e.line()),
            message: e.to_string(),
        }),
    }
}

/// Refuses to give the general TOML parser more than [`TOML_GENERAL_MAX`]
/// bytes.
fn check_general_size(src: Source<'_>, len: usize) -> Result<(), MapError> {
    if len <= TOML_GENERAL_MAX {
        return Ok(());
    }
    Err(MapError::Parse {
        file: src.name.to_owned(),
        line: None,
        message: format!(
            "{len} bytes of this TOML map are outside plain `tenant = \"cell\"` lines of one \
             [tenants] table, over the limit of {TOML_GENERAL_MAX} bytes for the rest of a map: \
             not a map, or tenants written in another form (write them as plain lines of one \
             [tenants] table, or use JSON)"
        ),
    })
}

/// Parses TOML with the `toml` crate alone (no fast tenants reader).
fn parse_toml_fully(src: Source<'_>) -> Result<MapFile, MapError> {
    toml::from_str(src.text).map_err(|e| MapError::Parse {
        file: src.name.to_owned(),
        line: e.span().map(|s| {
            src.text[..s.start.min(src.text.len())]
                .matches('\n')
                .count()
                + 1
        }),
        message: e.message().to_owned(),
    })
}

/// Parses, validates and compiles a map's text into a snapshot.
pub fn load_str(src: Source<'_>) -> Result<Snapshot, MapError> {
    let file = parse(src)?;
    let version = file
        .version
        .clone()
        .unwrap_or_else(|| content_version(src.text));
    let checked = match validate::validate_owned(file) {
        Ok(c) => c,
        Err(issues) => {
            // The fast tenants reader lets exact duplicate keys through,
            // which TOML itself forbids: report what toml says first (when
            // the file is small enough for the general parser).
            if src.format == Format::Toml && src.text.len() <= TOML_GENERAL_MAX {
                parse_toml_fully(src)?;
            }
            return Err(MapError::Invalid {
                file: src.name.to_owned(),
                issues: validate::locate(issues, src),
            });
        }
    };
    Ok(compile(checked, version, src.name.to_owned()))
}

/// Reads, parses, validates and compiles the map at `path`.
pub fn load_file(path: &Path) -> Result<Snapshot, MapError> {
    let name = path.display().to_string();
    let format = Format::from_path(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| MapError::Io {
        file: name.clone(),
        source,
    })?;
    load_str(Source {
        text: &text,
        format,
        name: &name,
    })
}

/// Compiles the embedded example map.
pub fn load_example() -> Result<Snapshot, MapError> {
    load_str(Source {
        text: EXAMPLE_MAP,
        format: Format::Toml,
        name: EXAMPLE_MAP_NAME,
    })
}

/// The version of a map that names none: a prefix of its content hash.
pub fn content_version(text: &str) -> String {
    version_of_digest(&Sha256::digest(text.as_bytes()).into())
}

/// [`content_version`] of a text whose SHA-256 is `digest`.
pub fn version_of_digest(digest: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(&digest[..8]))
}

/// Parses a JSON map read from `reader` (as [`parse`] does from text), so
/// that the caller need not hold the whole text: a reload reads the file
/// in pieces and frees each once parsed (see
/// `live::reload::read::ChunkReader`), which keeps its peak memory about
/// the size of the file lower. Text that is not UTF-8 is refused by the
/// JSON parser, with its line.
pub fn parse_json_reader(reader: impl std::io::Read, name: &str) -> Result<MapFile, MapError> {
    serde_json::from_reader(reader).map_err(|e| MapError::Parse {
        file: name.to_owned(),
        line: Some(e.line()),
        message: e.to_string(),
    })
}
