//! Restoring what is neither a file's content, a directory nor a symlink: fifos, sockets and
//! device nodes, and hard links (`docs/guide.md`, "Restore").
//!
//! A fifo is made again. A socket is not: it belongs to the process that listened on it, which
//! makes it again when it starts (restic and borg do not restore sockets either); it is
//! counted. A device node is made only when asked (`preserve_devices`: creating devices from a
//! snapshot, which may come from a partner, would hand out access to this machine's hardware);
//! otherwise it is counted and the caller warns. Hard links: the first name of a link group
//! restored is restored as usual; every later name of the group whose node is the same is made
//! a link to it once every file is written.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode};

use super::restore::{clear_slot, is_root, name_os, times};
use crate::error::{Error, Result};
use crate::format::tree::{Entry, Node};

/// What became of a special node.
pub(super) enum Made {
    /// The fifo or device node exists with its metadata.
    Created,
    /// A socket: not made.
    Socket,
    /// A device node not made (not asked to).
    Device,
}

/// Make the fifo, socket or device node `e` as `e.name` in `dir` (shown as `display`), with its
/// owner (as root), its mode bits in `mask`, and its time.
pub(super) fn make_special(
    dir: &OwnedFd,
    e: &Entry,
    display: &Path,
    preserve_devices: bool,
    mask: u32,
) -> Result<Made> {
    let (kind, rdev) = match e.node {
        Node::Fifo => (FileType::Fifo, 0),
        Node::Socket => return Ok(Made::Socket),
        Node::CharDevice { .. } | Node::BlockDevice { .. } if !preserve_devices => {
            return Ok(Made::Device);
        }
        Node::CharDevice { rdev } => (FileType::CharacterDevice, rdev),
        Node::BlockDevice { rdev } => (FileType::BlockDevice, rdev),
        _ => return Err(Error::other("internal: not a special file")),
    };
    let name = name_os(&e.name);
    clear_slot(dir, &e.name, display)?;
    rustix::fs::mknodat(dir, name, kind, Mode::from_raw_mode(0o600), rdev)
        .map_err(|er| Error::io("cannot create", display, er.into()))?;
    // No handle: opening a fifo would wait for a writer. The node was just made in a
    // directory opened without following symlinks.
    if is_root() {
        let _ = rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(e.uid)),
            Some(rustix::fs::Gid::from_raw(e.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        );
    }
    rustix::fs::chmodat(
        dir,
        name,
        Mode::from_raw_mode(e.mode & mask & 0o7777),
        AtFlags::empty(),
    )
    .map_err(|er| Error::io("cannot set the mode of", display, er.into()))?;
    rustix::fs::utimensat(dir, name, &times(e.mtime_ns), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|er| Error::io("cannot set the time of", display, er.into()))?;
    Ok(Made::Created)
}

/// One name of a restored file: its directory, its name, how it is shown.
struct Name {
    dir: Arc<OwnedFd>,
    name: Vec<u8>,
    display: PathBuf,
}

/// The hard links of a restore: the first name restored of each link group, and the later
/// names to link to it.
#[derive(Default)]
pub(super) struct Links {
    first: HashMap<u64, (Node, Name)>,
    later: Vec<(u64, Name)>,
}

impl Links {
    /// Whether `e` (to be restored in `dir`) is a later name of a link group already restored
    /// with the same node: then it is noted and made a link by [`Links::make`], not restored.
    pub(super) fn is_later(&mut self, e: &Entry, dir: &Arc<OwnedFd>, display: &Path) -> bool {
        let Some(group) = e.link.filter(|_| !e.is_dir()) else {
            return false;
        };
        let name = Name {
            dir: dir.clone(),
            name: e.name.clone(),
            display: display.to_path_buf(),
        };
        match self.first.get(&group) {
            Some((node, _)) if *node == e.node => {
                self.later.push((group, name));
                true
            }
            // Same group, other content: a damaged or hostile tree; restored as its own file.
            Some(_) => false,
            None => {
                self.first.insert(group, (e.node.clone(), name));
                false
            }
        }
    }

    /// Make every later name a hard link to its group's first name (once the first names are
    /// written); `error` gets what fails. Returns how many links were made.
    pub(super) fn make(self, mut error: impl FnMut(Error)) -> u64 {
        let mut made = 0;
        for (group, n) in self.later {
            let Some((_, first)) = self.first.get(&group) else {
                continue;
            };
            let r = clear_slot(&n.dir, &n.name, &n.display).and_then(|()| {
                rustix::fs::linkat(
                    &*first.dir,
                    name_os(&first.name),
                    &*n.dir,
                    name_os(&n.name),
                    AtFlags::empty(),
                )
                .map_err(|er| {
                    Error::io(
                        &format!("cannot link to {} as", first.display.display()),
                        &n.display,
                        er.into(),
                    )
                })
            });
            match r {
                Ok(()) => made += 1,
                Err(e) => error(e),
            }
        }
        made
    }
}
