//! What a journal directory's records mean beyond their bytes. Amounts are
//! journaled as integer minor units, so the same bytes read at another money
//! scale would silently rescale every balance; the directory records its scale
//! once and refuses to be opened at another.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::JournalError;

/// The file in a journal directory that records its money scale.
pub const META_FILE: &str = "ringledger.meta";

/// Records `scale` for a new journal directory, or checks it against the
/// scale the directory was written with.
///
/// Writes the file only when it is missing; takes no lock, so call it while
/// holding the directory's lock ([`super::lock_dir`]), as the engine does.
pub fn check_scale(dir: impl AsRef<Path>, scale: u32) -> Result<(), JournalError> {
    let dir = dir.as_ref();
    let path = dir.join(META_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let recorded = text
                .lines()
                .find_map(|l| l.strip_prefix("scale="))
                .and_then(|v| v.trim().parse::<u32>().ok())
                .ok_or_else(|| JournalError::Refused {
                    path: path.clone(),
                    reason: format!("no `scale=N` line in {META_FILE}; the file is damaged"),
                })?;
            if recorded != scale {
                return Err(JournalError::Refused {
                    path,
                    reason: format!(
                        "this journal holds amounts at money scale {recorded} (decimal places) but scale {scale} was asked for; \
                         every amount would be misread: run with scale {recorded}"
                    ),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)
                .map_err(|e| JournalError::io(dir, "create the journal directory", e))?;
            let tmp = dir.join(format!("{META_FILE}.tmp"));
            let mut file =
                fs::File::create(&tmp).map_err(|e| JournalError::io(&tmp, "create", e))?;
            file.write_all(format!("scale={scale}\n").as_bytes())
                .and_then(|_| file.sync_all())
                .map_err(|e| JournalError::io(&tmp, "write", e))?;
            fs::rename(&tmp, &path).map_err(|e| JournalError::io(&path, "rename into place", e))?;
            Ok(())
        }
        Err(e) => Err(JournalError::io(&path, "read", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_refuses_another_scale() {
        let dir = tempfile::tempdir().unwrap();
        check_scale(dir.path(), 2).unwrap();
        check_scale(dir.path(), 2).unwrap();
        let err = check_scale(dir.path(), 3).unwrap_err().to_string();
        assert!(err.contains("scale 2") && err.contains("scale 3"), "{err}");
    }
}
