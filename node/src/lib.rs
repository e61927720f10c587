//! puce-node: replication between nodes (see issue "Nodes: replication over QUIC").
