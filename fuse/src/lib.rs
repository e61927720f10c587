//! puce-fuse: the FUSE view of spaces and snapshots (see issue "Users: puce mount").
