//! Entry points for the fuzz targets in `fuzz/` and for the tests that replay their corpora.
//! Not part of the public API.
