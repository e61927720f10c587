//! Recovery at start: the journals of the write-back area replayed, so that changes not
//! committed before a crash (or a stop) are seen again and committed.

use std::collections::HashSet;
use std::sync::Arc;

use puce_core::snapshot::edit::{Content, Edit};
use puce_core::{Error, Result};

use super::PuceFs;
use super::stored::FsTrees;
use crate::space::{Space, Staged};

impl PuceFs {
    pub(super) fn recover(&self) -> Result<()> {
        let wb = self
            .wb
            .as_ref()
            .ok_or_else(|| Error::other("no write-back"))?;
        let snaps = self
            .snap_list()
            .map_err(|_| Error::other("lock poisoned"))?;
        let mut keep = HashSet::new();
        for (path, j) in wb.journals()? {
            if j.torn {
                tracing::warn!(
                    "the journal of space '{}' ended with a damaged record (a crash during a \
                     change): the changes before it are recovered",
                    j.space
                );
            }
            let base = match j.base {
                None => None,
                Some(id) => match snaps
                    .by_space
                    .get(&j.space)
                    .and_then(|v| v.iter().find(|(_, e)| e.id == id))
                {
                    Some((_, e)) => Some(e.clone()),
                    None => {
                        let lost = path.with_extension("lost");
                        let _ = std::fs::rename(&path, &lost);
                        tracing::error!(
                            "uncommitted changes of space '{}' were made on snapshot {id}, which \
                             is gone: set aside in {}",
                            j.space,
                            lost.display()
                        );
                        continue;
                    }
                },
            };
            let space = Arc::new(Space::new(&j.space, base.clone()));
            {
                let mut st = space.st.lock().map_err(|_| Error::other("lock poisoned"))?;
                let mut kept = Vec::new();
                for e in j.edits {
                    let missing_local = match &e {
                        Edit::Create {
                            content: Content::Local(id),
                            ..
                        }
                        | Edit::SetContent {
                            content: Content::Local(id),
                            ..
                        } => !wb.data_path(*id).exists(),
                        _ => false,
                    };
                    if missing_local {
                        tracing::error!("recovery: the content of {e:?} is missing; skipped");
                        continue;
                    }
                    match st.tree.apply(&FsTrees(self), &e) {
                        Ok(()) => kept.push(e),
                        Err(err) => tracing::warn!("recovery: {err}; skipped"),
                    }
                }
                for id in st.tree.local_ids() {
                    keep.insert(id);
                    st.staged.insert(id, Arc::new(Staged::new(id)));
                }
                st.journal = Some(crate::writeback::Journal::create(
                    &path,
                    &j.space,
                    base.as_ref().map(|b| &b.id),
                    &kept,
                )?);
                st.edits = kept;
                st.dirty = true;
                st.want_commit = true;
            }
            tracing::info!(
                "recovered uncommitted changes of space '{}'; committing them",
                j.space
            );
            self.spaces
                .write()
                .map_err(|_| Error::other("lock poisoned"))?
                .insert(j.space.clone(), space);
        }
        wb.sweep(&keep);
        Ok(())
    }
}
