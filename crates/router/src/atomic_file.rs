//! Replaces a file so that a reader sees either the old or the new content,
//! never a mix: write a temporary file in the same directory, fsync it,
//! rename it over the target, fsync the directory (so the rename itself
//! survives a crash).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `contents` to `path` atomically, creating the directory if needed.
/// Runs on the blocking pool: an fsync can take long on a busy disk.
pub async fn write(path: &Path, contents: Vec<u8>) -> std::io::Result<()> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || write_blocking(&path, &contents))
        .await
        .map_err(std::io::Error::other)?
}

pub fn write_blocking(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let temp = temp_path(path);
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        // The rename did not happen (or happened and only the dir fsync failed,
        // in which case the temp name no longer exists): nothing to keep.
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// `.<name>.tmp.<pid>.<n>` beside the target: same filesystem, so the rename
/// is atomic; a leading dot keeps it out of Prometheus' `*.json` glob.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp.{}.{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temp_file() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path();
        let path = dir.join("sub").join("f.json");
        write_blocking(&path, b"one").expect("first write");
        write_blocking(&path, b"two").expect("second write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "two");
        let names: Vec<_> = std::fs::read_dir(dir.join("sub"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.json")]);
    }

    #[test]
    fn reports_a_directory_that_cannot_be_created() {
        let err = write_blocking(Path::new("/proc/vigie-cannot/f.json"), b"x");
        assert!(err.is_err());
    }
}
