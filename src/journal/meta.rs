//! What a journal directory's records mean beyond their bytes.
//!
//! Amounts are journaled as integer minor units, so the same bytes read at
//! another money scale would silently rescale every balance; and the
//! Ledger's retention limits (history per account, sessions, the
//! closed-reservation window) are part of its state, so the same records
//! replayed under other limits rebuild another state. The directory records
//! both once, in `ringledger.meta` (`key=value` lines), and refuses to be
//! opened with anything else: a replay reads them from the file instead of
//! needing them repeated on its command line.

use std::io;
use std::path::Path;

use super::scan::list_numbered;
use super::JournalError;
use crate::ledger::LedgerConfig;
use crate::storage::{OpenMode, OsStorage, Storage, StorageFile};

/// The file in a journal directory that records its money scale and the
/// Ledger limits it was written with.
pub const META_FILE: &str = "ringledger.meta";

/// What a journal was written with: everything a reader needs, beyond the
/// records, to rebuild the same state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Decimal places of money.
    pub scale: u32,
    pub ledger: LedgerConfig,
}

impl Meta {
    /// The lines of the file, one `key=value` per setting, in a fixed order.
    fn fields(&self) -> [(&'static str, u64); 5] {
        let LedgerConfig {
            history_per_account_max,
            sessions_max,
            session_idle_ms_max,
            closed_reservations_max,
        } = self.ledger;
        [
            ("scale", u64::from(self.scale)),
            (
                "history_per_account_max",
                u64::from(history_per_account_max),
            ),
            ("sessions_max", u64::from(sessions_max)),
            ("session_idle_ms_max", session_idle_ms_max),
            (
                "closed_reservations_max",
                u64::from(closed_reservations_max),
            ),
        ]
    }

    pub(crate) fn to_text(self) -> String {
        self.fields()
            .iter()
            .map(|(key, value)| format!("{key}={value}\n"))
            .collect()
    }

    /// Each key exactly once, each value a number that fits its setting: a
    /// missing, repeated or unreadable line leaves what the journal was
    /// written with unknown, so the file is as damaged as with none.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Meta, JournalError> {
        let damaged = |why: String| JournalError::Refused {
            path: path.to_path_buf(),
            reason: format!("{why} in {META_FILE}; the file is damaged"),
        };
        let value = |key: &str| -> Result<u64, JournalError> {
            let prefix = format!("{key}=");
            let mut values = text.lines().filter_map(|l| l.strip_prefix(prefix.as_str()));
            let value = values
                .next()
                .ok_or_else(|| damaged(format!("no `{key}=N` line")))?;
            if values.next().is_some() {
                return Err(damaged(format!("more than one `{key}=N` line")));
            }
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| damaged(format!("`{key}={value}` (not a number)")))
        };
        let narrow = |key: &str| -> Result<u32, JournalError> {
            u32::try_from(value(key)?).map_err(|_| damaged(format!("`{key}` is out of range")))
        };
        Ok(Meta {
            scale: narrow("scale")?,
            ledger: LedgerConfig {
                history_per_account_max: narrow("history_per_account_max")?,
                sessions_max: narrow("sessions_max")?,
                session_idle_ms_max: value("session_idle_ms_max")?,
                closed_reservations_max: narrow("closed_reservations_max")?,
            },
        })
    }
}

/// What a journal directory was written with, from its meta file; an error
/// naming the file if it is missing or damaged (a journal's records cannot
/// be read right without it).
pub fn read_meta(dir: impl AsRef<Path>) -> Result<Meta, JournalError> {
    read_meta_in(&OsStorage, dir)
}

/// [`read_meta`] on `storage`.
pub fn read_meta_in<S: Storage>(storage: &S, dir: impl AsRef<Path>) -> Result<Meta, JournalError> {
    let path = dir.as_ref().join(META_FILE);
    match read_text(storage, &path) {
        Ok(text) => Meta::parse(&path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(JournalError::Refused {
            path,
            reason: format!(
                "{META_FILE} is missing, so the money scale and Ledger limits this journal was written with are unknown; \
                 restore it (see journal/README.md for its lines)"
            ),
        }),
        Err(e) => Err(JournalError::io(&path, "read", e)),
    }
}

/// The money scale a journal directory was written with (see [`read_meta`]).
pub fn read_scale(dir: impl AsRef<Path>) -> Result<u32, JournalError> {
    read_meta(dir).map(|meta| meta.scale)
}

/// Records `meta` for a new journal directory, or checks it against what
/// the directory was written with, naming the first setting that differs.
///
/// Writes the file only for a directory with no journal yet: one that holds
/// segments or snapshots but no meta file is refused, since its amounts may
/// have been written at any scale. A directory with a meta file but no
/// journal (a start that failed before writing one) holds no record, so it
/// takes what is asked for.
///
/// Takes no lock, so call it while holding the directory's lock
/// ([`super::lock_dir`]), as the engine does.
pub fn check_meta(dir: impl AsRef<Path>, meta: &Meta) -> Result<(), JournalError> {
    check_meta_in(&OsStorage, dir, meta)
}

/// [`check_meta`] on `storage`.
pub fn check_meta_in<S: Storage>(
    storage: &S,
    dir: impl AsRef<Path>,
    meta: &Meta,
) -> Result<(), JournalError> {
    let dir = dir.as_ref();
    let path = dir.join(META_FILE);
    let text = match read_text(storage, &path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(JournalError::io(&path, "read", e)),
    };
    let journal = if storage.info(dir).is_ok() {
        list_numbered(storage, dir, ".seg")?
            .into_iter()
            .chain(list_numbered(storage, dir, ".snap")?)
            .next()
    } else {
        None
    };
    match (text, journal) {
        (_, None) => write_meta(storage, dir, &path, meta),
        (Some(text), Some(_)) => {
            let recorded = Meta::parse(&path, &text)?;
            let differs = recorded
                .fields()
                .into_iter()
                .zip(meta.fields())
                .find(|(had, asked)| had != asked);
            match differs {
                None => Ok(()),
                Some(((key, had), (_, asked))) => Err(JournalError::Refused {
                    path,
                    reason: if key == "scale" {
                        format!(
                            "this journal holds amounts at money scale {had} (decimal places) but scale {asked} was asked for; \
                             every amount would be misread: run with scale {had}"
                        )
                    } else {
                        format!(
                            "this journal was written with {key}={had} but {key}={asked} was asked for; \
                             the same records would rebuild another state: run with {key}={had}"
                        )
                    },
                }),
            }
        }
        (None, Some((_, file))) => Err(JournalError::Refused {
            path,
            reason: format!(
                "{META_FILE} is missing but the directory holds a journal ({}), so the money scale of its amounts is unknown; \
                 refusing to guess. Restore it (see journal/README.md for its lines)",
                file.display()
            ),
        }),
    }
}

fn read_text<S: Storage>(storage: &S, path: &Path) -> io::Result<String> {
    String::from_utf8(storage.read(path)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn write_meta<S: Storage>(
    storage: &S,
    dir: &Path,
    path: &Path,
    meta: &Meta,
) -> Result<(), JournalError> {
    storage
        .create_dir_all(dir)
        .map_err(|e| JournalError::io(dir, "create the journal directory", e))?;
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let file = storage
        .open(&tmp, OpenMode::CreateTruncate)
        .map_err(|e| JournalError::io(&tmp, "create", e))?;
    file.write_all_at(meta.to_text().as_bytes(), 0)
        .and_then(|_| file.sync_all())
        .map_err(|e| JournalError::io(&tmp, "write", e))?;
    storage
        .rename(&tmp, path)
        .map_err(|e| JournalError::io(path, "rename into place", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn meta(scale: u32, history: u32) -> Meta {
        Meta {
            scale,
            ledger: LedgerConfig {
                history_per_account_max: history,
                ..LedgerConfig::default()
            },
        }
    }

    fn with_a_segment() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("00000000000000000001.seg"), b"x").unwrap();
        dir
    }

    #[test]
    fn a_journal_refuses_another_scale() {
        let dir = tempfile::tempdir().unwrap();
        check_meta(dir.path(), &meta(2, 32)).unwrap();
        check_meta(dir.path(), &meta(2, 32)).unwrap();
        fs::write(dir.path().join("00000000000000000001.seg"), b"x").unwrap();
        check_meta(dir.path(), &meta(2, 32)).unwrap();
        let err = check_meta(dir.path(), &meta(3, 32))
            .unwrap_err()
            .to_string();
        assert!(err.contains("scale 2") && err.contains("scale 3"), "{err}");
    }

    /// History retention is state: replaying under another limit rebuilds
    /// another Ledger, so a journal refuses it like another scale, and a
    /// reader gets the limit from the file.
    #[test]
    fn a_journal_refuses_other_ledger_limits_and_readers_get_them_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        check_meta(dir.path(), &meta(2, 100)).unwrap();
        fs::write(dir.path().join("00000000000000000001.seg"), b"x").unwrap();
        let err = check_meta(dir.path(), &meta(2, 32))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("history_per_account_max=100")
                && err.contains("history_per_account_max=32"),
            "{err}"
        );
        assert_eq!(read_meta(dir.path()).unwrap(), meta(2, 100));
    }

    /// A start that failed after the meta file was written (a refused
    /// `--segment-bytes`) left no records behind, so it pins nothing.
    #[test]
    fn a_directory_with_no_journal_yet_takes_what_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        check_meta(dir.path(), &meta(2, 32)).unwrap();
        check_meta(dir.path(), &meta(3, 7)).unwrap();
        assert_eq!(read_meta(dir.path()).unwrap(), meta(3, 7));
    }

    #[test]
    fn a_meta_file_with_a_repeated_missing_or_unreadable_line_is_damaged() {
        let good = meta(2, 32).to_text();
        let cases = [
            format!("{good}scale=3\n"),
            good.replace("sessions_max=4096\n", ""),
            good.replace("history_per_account_max=32", "history_per_account_max=x"),
            good.replace("scale=2", "scale=4294967296"),
        ];
        for text in cases {
            let dir = with_a_segment();
            fs::write(dir.path().join(META_FILE), &text).unwrap();
            let err = read_meta(dir.path()).unwrap_err().to_string();
            assert!(err.contains("damaged"), "{text}: {err}");
            assert!(check_meta(dir.path(), &meta(2, 32)).is_err(), "{text}");
        }
    }

    #[test]
    fn a_journal_without_meta_is_refused_and_no_meta_is_made_up() {
        let dir = with_a_segment();
        let err = check_meta(dir.path(), &meta(2, 32))
            .unwrap_err()
            .to_string();
        assert!(err.contains(META_FILE) && err.contains("missing"), "{err}");
        assert!(!dir.path().join(META_FILE).exists());
        assert!(read_scale(dir.path()).is_err());
    }
}
