//! Campaign attachments on disk: the one file a campaign sends to every
//! recipient, kept beside the store (not in it: a 100 MB value would be
//! copied through sled's log and cache) at `<root>/<id>/attachment`,
//! directories 0700, the file 0600. The root is `<state.dir>/campaigns` on
//! one node, and `<state.profiles_dir>/.campaigns` in a cluster, on the
//! storage every node mounts, so the node that takes a campaign over reads
//! the file its creator wrote ([`Attachments::of`]). The campaign's record holds what the file must be
//! ([`AttachmentMeta`]: type, name, size, SHA-256), so a file that went
//! missing or changed on disk is told apart from the one uploaded, and is
//! never sent.
//!
//! A file is written durably before its campaign's record is stored: to a
//! temporary name, fsynced, renamed, and the directories fsynced. A
//! creation that fails removes it; one that a crash interrupts leaves a
//! directory without a record, which [`Attachments::sweep`] removes at the
//! next start.
//!
//! Every call does blocking file I/O (up to 100 MB): call it on the
//! blocking pool.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use actix_web::web::Bytes;
use serde::{Deserialize, Serialize};

use crate::whatsapp::media::{self, Media};

/// What a campaign's attachment is, as uploaded; stored in the campaign's
/// record and shown in its view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttachmentMeta {
    /// `type/subtype`, as the upload's `Content-Type` gave it.
    #[schema(example = "application/pdf")]
    pub mimetype: String,
    /// The file's name, as uploaded (without folders).
    #[schema(example = "terms.pdf")]
    pub filename: String,
    /// Bytes.
    #[schema(example = 48213)]
    pub size: u64,
    /// Hex SHA-256 of the file (the simulator's message log shows the same
    /// digest for what arrived).
    #[schema(example = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]
    pub sha256: String,
}

impl AttachmentMeta {
    /// The metadata of `media` (hashes it unless its digest is known).
    pub fn of(media: &Media) -> Self {
        Self {
            mimetype: media.mimetype.clone(),
            filename: media.filename.clone(),
            size: media.data.len() as u64,
            sha256: media.sha256_hex(),
        }
    }
}

/// Why an attachment could not be read back as it was uploaded. The
/// messages name the file relative to the attachments' root.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("the attachment file is missing ({0}/attachment)")]
    Missing(String),
    #[error("the attachment file has {found} bytes, not the {expected} uploaded ({id}/attachment)")]
    Size { id: String, expected: u64, found: u64 },
    #[error("the attachment file's SHA-256 is not the uploaded file's ({0}/attachment changed on disk)")]
    Digest(String),
    #[error("reading the attachment ({id}/attachment): {error}")]
    Io { id: String, error: io::Error },
}

/// The attachment files of every campaign (see the module docs for where).
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Attachments {
    root: PathBuf,
}

/// The name of a campaign's file in its directory.
const FILE: &str = "attachment";
/// The name it is written under before the rename.
const TEMP: &str = "attachment.tmp";

impl Attachments {
    /// The attachments under `state_dir` (`state.dir`), at
    /// `<state_dir>/campaigns`; nothing is created until the first write.
    pub fn new(state_dir: &Path) -> Self {
        Self { root: state_dir.join("campaigns") }
    }

    /// The attachments of a daemon with `config`: under `state.dir` on one
    /// node (sled), under the shared `state.profiles_dir` in a cluster (the
    /// PostgreSQL store), at `.campaigns` (no session name starts with a
    /// dot, so no profile is ever there).
    pub fn of(config: &crate::config::Config) -> Self {
        match config.store.backend {
            crate::config::StoreBackend::Sled => Self::new(&config.state.dir),
            crate::config::StoreBackend::Postgres => Self { root: config.state.profiles().join(".campaigns") },
        }
    }

    /// How old a directory without a campaign record must be before
    /// [`Attachments::sweep`] removes it, on a daemon with `config`: at once
    /// on one node (the sweep runs before this daemon creates any
    /// campaign), an hour in a cluster (another node may be between writing
    /// a new campaign's file and storing its record).
    pub fn orphan_age(config: &crate::config::Config) -> std::time::Duration {
        match config.store.backend {
            crate::config::StoreBackend::Sled => std::time::Duration::ZERO,
            crate::config::StoreBackend::Postgres => std::time::Duration::from_secs(3600),
        }
    }

    /// Campaign `id`'s directory. Errors: `id` is not a campaign id (it is
    /// part of a path, so nothing else may get here).
    fn dir(&self, id: &str) -> io::Result<PathBuf> {
        if crate::campaign::valid_id(id) {
            Ok(self.root.join(id))
        } else {
            Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a campaign id: {id:?}")))
        }
    }

    /// Writes campaign `id`'s attachment durably (temporary file, fsync,
    /// rename, fsync of the directories) and returns what it is. Nothing is
    /// left behind when it fails.
    ///
    /// Errors: the disk's (`ENOSPC` when it is full), or `id` is not a
    /// campaign id.
    pub fn write(&self, id: &str, media: &Media) -> io::Result<AttachmentMeta> {
        let dir = self.dir(id)?;
        let written = self.write_in(&dir, media);
        if written.is_err() {
            // Harmless if it fails: the directory has no record, and the
            // next start's sweep removes it.
            let _ = fs::remove_dir_all(&dir);
        }
        written
    }

    fn write_in(&self, dir: &Path, media: &Media) -> io::Result<AttachmentMeta> {
        let new_root = !self.root.exists();
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.root)?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .or_else(|e| if e.kind() == io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) })?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let temp = dir.join(TEMP);
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(&media.data)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, dir.join(FILE))?;
        // The rename, the campaign's directory and (if new) `campaigns/`
        // reach the disk before the record that names them.
        sync_dir(dir)?;
        sync_dir(&self.root)?;
        if new_root {
            if let Some(parent) = self.root.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(AttachmentMeta::of(media))
    }

    /// Reads campaign `id`'s attachment back and checks it is the file
    /// `meta` describes (size, then SHA-256). Reads at most `meta.size`
    /// bytes and one more.
    ///
    /// Errors: the file is missing, has another size or digest, or cannot
    /// be read.
    pub fn read(&self, id: &str, meta: &AttachmentMeta) -> Result<Media, AttachmentError> {
        let io_error = |error: io::Error| AttachmentError::Io { id: id.to_string(), error };
        let path = self.dir(id).map_err(io_error)?.join(FILE);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(AttachmentError::Missing(id.to_string())),
            Err(e) => return Err(io_error(e)),
        };
        let capacity = usize::try_from(meta.size).map_err(|_| io_error(io::Error::other("the size does not fit in memory")))?;
        let mut data = Vec::with_capacity(capacity);
        file.take(meta.size.saturating_add(1)).read_to_end(&mut data).map_err(io_error)?;
        if data.len() as u64 != meta.size {
            return Err(AttachmentError::Size { id: id.to_string(), expected: meta.size, found: data.len() as u64 });
        }
        let digest = media::sha256_hex(&data);
        if digest != meta.sha256 {
            return Err(AttachmentError::Digest(id.to_string()));
        }
        Ok(Media::with_sha256(meta.mimetype.clone(), meta.filename.clone(), Bytes::from(data), digest))
    }

    /// Removes campaign `id`'s attachment and directory (nothing if there
    /// is none).
    ///
    /// Errors: the disk's, or `id` is not a campaign id.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.dir(id)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes the directories of campaigns not in `keep` (a creation a
    /// crash interrupted between the file and the record) last modified at
    /// least `older_than` ago. Call it before this daemon can create a
    /// campaign. Returns how many were removed.
    ///
    /// Errors: the root cannot be listed (none is not an error).
    pub fn sweep(&self, keep: &HashSet<String>, older_than: std::time::Duration) -> io::Result<usize> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            // An age that cannot be read counts as new: kept this time.
            let old = older_than.is_zero()
                || entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= older_than));
            if crate::campaign::valid_id(id) && !keep.contains(id) && old {
                self.remove(id)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// fsyncs a directory, so the entries created or renamed in it are on disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "cmp_0123456789abcdef";

    fn pdf() -> Media {
        Media::new("application/pdf".into(), "terms.pdf".into(), Bytes::from_static(b"%PDF-1.4\nsome terms\n%%EOF\n"))
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn an_attachment_reads_back_as_written_and_private() {
        let state = tempfile::tempdir().unwrap();
        let store = Attachments::new(state.path());
        let media = pdf();
        let meta = store.write(ID, &media).unwrap();
        assert_eq!(
            meta,
            AttachmentMeta {
                mimetype: "application/pdf".into(),
                filename: "terms.pdf".into(),
                size: media.data.len() as u64,
                sha256: media::sha256_hex(&media.data),
            }
        );
        let dir = state.path().join("campaigns").join(ID);
        assert_eq!((mode(&state.path().join("campaigns")), mode(&dir), mode(&dir.join(FILE))), (0o700, 0o700, 0o600));
        assert!(!dir.join(TEMP).exists(), "the temporary file was renamed");
        let back = store.read(ID, &meta).unwrap();
        assert_eq!((back.mimetype.as_str(), back.filename.as_str(), &back.data[..]), ("application/pdf", "terms.pdf", &media.data[..]));
        assert_eq!(back.sha256_hex(), meta.sha256);
        // Written again (a retried creation): replaced, still one file.
        store.write(ID, &media).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_or_changed_file_is_refused() {
        let state = tempfile::tempdir().unwrap();
        let store = Attachments::new(state.path());
        let meta = store.write(ID, &pdf()).unwrap();
        let file = state.path().join("campaigns").join(ID).join(FILE);

        // The same size, other bytes.
        let mut bytes = fs::read(&file).unwrap();
        bytes[0] ^= 1;
        fs::write(&file, &bytes).unwrap();
        assert!(matches!(store.read(ID, &meta), Err(AttachmentError::Digest(_))));
        // Longer and shorter.
        fs::write(&file, b"%PDF-1.4\nsome terms\n%%EOF\nmore").unwrap();
        assert!(matches!(store.read(ID, &meta), Err(AttachmentError::Size { found, .. }) if found == meta.size + 1));
        fs::write(&file, b"%PDF").unwrap();
        assert!(matches!(store.read(ID, &meta), Err(AttachmentError::Size { found: 4, .. })));
        // Gone.
        fs::remove_file(&file).unwrap();
        let e = store.read(ID, &meta).unwrap_err();
        assert!(matches!(e, AttachmentError::Missing(_)), "{e}");
        assert!(!e.to_string().contains(&state.path().display().to_string()), "no machine path in {e}");
        // Not a campaign id: never a path.
        assert!(store.write("../x", &pdf()).is_err());
        assert!(matches!(store.read("../../etc/passwd", &meta), Err(AttachmentError::Io { .. })));
    }

    #[test]
    fn a_failed_write_leaves_nothing_and_the_sweep_removes_orphans() {
        let state = tempfile::tempdir().unwrap();
        let store = Attachments::new(state.path());
        // `campaigns/` cannot be created: a file is in its way.
        fs::write(state.path().join("campaigns"), b"").unwrap();
        assert!(store.write(ID, &pdf()).is_err());
        fs::remove_file(state.path().join("campaigns")).unwrap();

        let other = "cmp_fedcba9876543210";
        store.write(ID, &pdf()).unwrap();
        store.write(other, &pdf()).unwrap();
        fs::create_dir(state.path().join("campaigns").join("not-a-campaign")).unwrap();
        let keep: HashSet<String> = [ID.to_string()].into();
        // In a cluster only old orphans go: another node may be between
        // the file and the record of a new campaign.
        assert_eq!(store.sweep(&keep, std::time::Duration::from_secs(3600)).unwrap(), 0);
        assert!(state.path().join("campaigns").join(other).exists());
        assert_eq!(store.sweep(&keep, std::time::Duration::ZERO).unwrap(), 1);
        assert!(state.path().join("campaigns").join(ID).join(FILE).exists());
        assert!(!state.path().join("campaigns").join(other).exists());
        assert!(state.path().join("campaigns").join("not-a-campaign").exists(), "only campaign directories are swept");
        store.remove(ID).unwrap();
        store.remove(ID).unwrap();
        assert!(!state.path().join("campaigns").join(ID).exists());
        assert_eq!(Attachments::new(&state.path().join("none")).sweep(&keep, std::time::Duration::ZERO).unwrap(), 0);
    }
}

#[cfg(test)]
mod placement_tests {
    use super::*;

    #[test]
    fn a_cluster_keeps_attachments_on_the_shared_profiles_storage() {
        let mut config = crate::config::Config::default();
        config.state.dir = PathBuf::from("/var/lib/wasup");
        assert_eq!(Attachments::of(&config).root, PathBuf::from("/var/lib/wasup/campaigns"));
        assert_eq!(Attachments::orphan_age(&config), std::time::Duration::ZERO);
        config.store.backend = crate::config::StoreBackend::Postgres;
        config.state.profiles_dir = Some(PathBuf::from("/srv/wasup/profiles"));
        assert_eq!(Attachments::of(&config).root, PathBuf::from("/srv/wasup/profiles/.campaigns"));
        assert!(crate::session_state::validate_name(".campaigns").is_err(), "no session's profile can be there");
        assert_eq!(Attachments::orphan_age(&config), std::time::Duration::from_secs(3600));
    }
}
