//! The sandbox Composio upstream (being written).
