//! trybuild cases live in tests/; this crate only hosts them.
