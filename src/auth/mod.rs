//! Caller authentication (being written).
