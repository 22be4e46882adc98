//! Example services; see src/bin.
