//! What a journal directory's records mean beyond their bytes. Amounts are
//! journaled as integer minor units, so the same bytes read at another money
//! scale would silently rescale every balance; the directory records its scale
//! once and refuses to be opened at another.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::scan::list_numbered;
use super::JournalError;

/// The file in a journal directory that records its money scale.
pub const META_FILE: &str = "ringledger.meta";

/// The money scale a journal directory was written with, from its meta
/// file; an error naming the file if it is missing or damaged (a journal's
/// amounts cannot be read without it).
pub fn read_scale(dir: impl AsRef<Path>) -> Result<u32, JournalError> {
    let path = dir.as_ref().join(META_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => parse_scale(&path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(JournalError::Refused {
            path,
            reason: format!(
                "{META_FILE} is missing, so the money scale of this journal's amounts is unknown; \
                 restore it (one line `scale=N`, N the decimal places the journal was written with)"
            ),
        }),
        Err(e) => Err(JournalError::io(&path, "read", e)),
    }
}

/// Exactly one `scale=N` line: with two, which one the journal was written
/// at is unknown, so the file is as damaged as with none.
fn parse_scale(path: &Path, text: &str) -> Result<u32, JournalError> {
    let damaged = |why: &str| JournalError::Refused {
        path: path.to_path_buf(),
        reason: format!("{why} in {META_FILE}; the file is damaged"),
    };
    let mut values = text.lines().filter_map(|l| l.strip_prefix("scale="));
    let value = values.next().ok_or_else(|| damaged("no `scale=N` line"))?;
    if values.next().is_some() {
        return Err(damaged("more than one `scale=N` line"));
    }
    value
        .trim()
        .parse::<u32>()
        .map_err(|_| damaged(&format!("`scale={value}` (not a number)")))
}

/// Records `scale` for a new journal directory, or checks it against the
/// scale the directory was written with.
///
/// Writes the file only for a directory with no journal yet: one that holds
/// segments or snapshots but no meta file is refused, since its amounts may
/// have been written at any scale. A directory with a meta file but no
/// journal (a start that failed before writing one) holds no amount, so it
/// takes the scale asked for.
///
/// Takes no lock, so call it while holding the directory's lock
/// ([`super::lock_dir`]), as the engine does.
pub fn check_scale(dir: impl AsRef<Path>, scale: u32) -> Result<(), JournalError> {
    let dir = dir.as_ref();
    let path = dir.join(META_FILE);
    let recorded = match fs::read_to_string(&path) {
        Ok(text) => Some(parse_scale(&path, &text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(JournalError::io(&path, "read", e)),
    };
    if recorded == Some(scale) {
        return Ok(());
    }
    let journal = if dir.exists() {
        list_numbered(dir, ".seg")?
            .into_iter()
            .chain(list_numbered(dir, ".snap")?)
            .next()
    } else {
        None
    };
    match (recorded, journal) {
        (Some(recorded), Some(_)) => Err(JournalError::Refused {
            path,
            reason: format!(
                "this journal holds amounts at money scale {recorded} (decimal places) but scale {scale} was asked for; \
                 every amount would be misread: run with scale {recorded}"
            ),
        }),
        (None, Some((_, file))) => Err(JournalError::Refused {
            path,
            reason: format!(
                "{META_FILE} is missing but the directory holds a journal ({}), so the money scale of its amounts is unknown; \
                 refusing to guess. Restore it (one line `scale=N`, N the decimal places the journal was written with)",
                file.display()
            ),
        }),
        (_, None) => write_scale(dir, &path, scale),
    }
}

fn write_scale(dir: &Path, path: &Path, scale: u32) -> Result<(), JournalError> {
    fs::create_dir_all(dir)
        .map_err(|e| JournalError::io(dir, "create the journal directory", e))?;
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let mut file = fs::File::create(&tmp).map_err(|e| JournalError::io(&tmp, "create", e))?;
    file.write_all(format!("scale={scale}\n").as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| JournalError::io(&tmp, "write", e))?;
    fs::rename(&tmp, path).map_err(|e| JournalError::io(path, "rename into place", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_refuses_another_scale() {
        let dir = tempfile::tempdir().unwrap();
        check_scale(dir.path(), 2).unwrap();
        check_scale(dir.path(), 2).unwrap();
        fs::write(dir.path().join("00000000000000000001.seg"), b"x").unwrap();
        check_scale(dir.path(), 2).unwrap();
        let err = check_scale(dir.path(), 3).unwrap_err().to_string();
        assert!(err.contains("scale 2") && err.contains("scale 3"), "{err}");
    }

    /// A start that failed after the meta file was written (a refused
    /// `--segment-bytes`) left no amounts behind, so it pins no scale.
    #[test]
    fn a_directory_with_no_journal_yet_takes_the_scale_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        check_scale(dir.path(), 2).unwrap();
        check_scale(dir.path(), 3).unwrap();
        assert_eq!(read_scale(dir.path()).unwrap(), 3);
    }

    #[test]
    fn a_meta_file_with_two_scale_lines_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(META_FILE), "scale=2\nscale=3\n").unwrap();
        let err = read_scale(dir.path()).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
        assert!(check_scale(dir.path(), 2).is_err());
        assert!(check_scale(dir.path(), 3).is_err());
    }

    #[test]
    fn a_journal_without_meta_is_refused_and_no_meta_is_made_up() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("00000000000000000001.seg"), b"x").unwrap();
        let err = check_scale(dir.path(), 2).unwrap_err().to_string();
        assert!(err.contains(META_FILE) && err.contains("missing"), "{err}");
        assert!(!dir.path().join(META_FILE).exists());
        assert!(read_scale(dir.path()).is_err());
    }
}
