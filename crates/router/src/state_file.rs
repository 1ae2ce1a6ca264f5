//! The saved active color, so that it survives a restart.
//!
//! No file means blue. A file that cannot be read or parsed is logged as an
//! error and the router starts on blue: refusing to start would take the
//! entry point down entirely, while blue is a color that passed a deploy.
//! The unreadable file is left as it is for inspection until the next
//! switch replaces it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use vigie_telemetry::Color;

use crate::atomic_file;
use crate::guard_record::GuardRecord;

/// What the state file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    pub active: Color,
    /// When `active` became active.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Successful switches since the file was first written.
    pub switches: u64,
    /// The last guarded switch: running (resumed after a restart) or its verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("state file {path} is not valid (expected {{\"active\":\"blue|green\",\"since\":RFC 3339,\"switches\":N,\"guard\"?:{{...}}}}): {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
}

pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: PathBuf) -> Self {
        StateFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Ok(None)` when there is no file yet.
    pub fn load(&self) -> Result<Option<SavedState>, LoadError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LoadError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| LoadError::Parse {
                path: self.path.clone(),
                source,
            })
    }

    pub async fn save(&self, state: &SavedState) -> std::io::Result<()> {
        let mut json = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        json.push(b'\n');
        atomic_file::write(&self.path, json).await
    }
}

/// RFC 3339 with the UTC offset written as `Z`.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// Now, to the millisecond: finer digits only make the status harder to read.
pub fn now_ms() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_millisecond(now.millisecond()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saves_and_loads_and_reports_missing_or_corrupt_files() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path();
        let file = StateFile::new(dir.join("state.json"));
        assert!(matches!(file.load(), Ok(None)));
        let state = SavedState {
            active: Color::Green,
            since: OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time"),
            switches: 3,
            guard: None,
        };
        file.save(&state).await.expect("save");
        let text = std::fs::read_to_string(file.path()).expect("read");
        assert_eq!(
            text,
            "{\"active\":\"green\",\"since\":\"2023-11-14T22:13:20Z\",\"switches\":3}\n"
        );
        assert_eq!(file.load().expect("load"), Some(state.clone()));
        let guarded = SavedState {
            guard: Some(GuardRecord {
                switch: 3,
                color: Color::Green,
                from: Color::Blue,
                version: "1.1.0".into(),
                from_version: "1.0.0".into(),
                started: state.since,
                ends_at: state.since + time::Duration::minutes(2),
                window_seconds: 120,
                by_slo: true,
                verdict: None,
            }),
            ..state.clone()
        };
        file.save(&guarded).await.expect("save");
        assert_eq!(
            file.load().expect("load"),
            Some(guarded),
            "a running guard survives a restart"
        );
        std::fs::write(file.path(), "{\"active\":\"purple\"").expect("corrupt");
        assert!(matches!(file.load(), Err(LoadError::Parse { .. })));
    }
}
