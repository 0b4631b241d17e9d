//! Cluster runtime: sealed transport, persistence (membership and sync to come).
