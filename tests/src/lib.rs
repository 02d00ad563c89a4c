//! Cross-crate and interop tests for quay live in this crate's `tests/` folder.
